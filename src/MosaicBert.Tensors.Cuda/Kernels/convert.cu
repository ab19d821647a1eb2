// fp32 ↔ bf16 conversions (Backend.Convert, bf16 uploads and downloads, the attention fallback). fp32 → bf16 rounds
// to nearest even; bf16 → fp32 is exact.
#include "common.cuh"

extern "C" __global__ void f32_to_bf16(const float* x, bf16* y, i64 n)
{
    FOR_EACH(i, n) y[i] = from_f<bf16>(x[i]);
}

extern "C" __global__ void bf16_to_f32(const bf16* x, float* y, i64 n)
{
    FOR_EACH(i, n) y[i] = to_f(x[i]);
}

// Decoupled AdamW (Composer's DecoupledAdamW, PyTorch's Adam arithmetic), the same unfused fp32 operations in the same
// order as the CPU kernel, each forced to round on its own (__f*_rn never contract into FMAs), with the constants
// computed on the host exactly as the CPU does. So parameters and moments match the CPU bit for bit:
//   θ ← θ·keep;  m ← m·β1 + g·(1 − β1);  v ← v·β2 + (g·g)·(1 − β2);  θ ← θ − stepSize·(m / (√v / √bc2 + ε))
// adamw_bf16copy also writes the new θ rounded to bf16 into the compute copy of mixed-precision training, in the same
// pass (saves re-reading the fp32 block).
#include "common.cuh"

__forceinline__ float adamw_element(float* theta, const float* g, float* m, float* v, i64 i, float keep, float beta1,
    float oneMinusBeta1, float beta2, float oneMinusBeta2, float stepSize, float sqrtBc2, float eps)
{
    float t = __fmul_rn(theta[i], keep);
    float gv = g[i];
    float mv = __fadd_rn(__fmul_rn(m[i], beta1), __fmul_rn(gv, oneMinusBeta1));
    float vv = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(gv, gv), oneMinusBeta2));
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vv), sqrtBc2), eps);
    float updated = __fsub_rn(t, __fmul_rn(stepSize, __fdiv_rn(mv, denom)));
    theta[i] = updated;
    m[i] = mv;
    v[i] = vv;
    return updated;
}

extern "C" __global__ void adamw(float* theta, const float* g, float* m, float* v, i64 n, float keep, float beta1,
    float oneMinusBeta1, float beta2, float oneMinusBeta2, float stepSize, float sqrtBc2, float eps)
{
    FOR_EACH(i, n) adamw_element(theta, g, m, v, i, keep, beta1, oneMinusBeta1, beta2, oneMinusBeta2, stepSize, sqrtBc2, eps);
}

extern "C" __global__ void adamw_bf16copy(float* theta, const float* g, float* m, float* v, i64 n, float keep, float beta1,
    float oneMinusBeta1, float beta2, float oneMinusBeta2, float stepSize, float sqrtBc2, float eps, bf16* copy)
{
    FOR_EACH(i, n)
        copy[i] = from_f<bf16>(adamw_element(theta, g, m, v, i, keep, beta1, oneMinusBeta1, beta2, oneMinusBeta2, stepSize, sqrtBc2, eps));
}

// The same updates four elements at a time (16-byte loads and stores; the bf16 copy as one 8-byte store), for blocks
// whose pointers are 16-byte aligned; the n % 4 last elements one at a time. Identical arithmetic per element.
template <bool Copy> __forceinline__ void adamw_v4_t(float* theta, const float* g, float* m, float* v, i64 n, float keep, float beta1,
    float oneMinusBeta1, float beta2, float oneMinusBeta2, float stepSize, float sqrtBc2, float eps, bf16* copy)
{
    i64 n4 = n >> 2;
    FOR_EACH(q, n4)
    {
        float4 t4 = reinterpret_cast<float4*>(theta)[q], g4 = reinterpret_cast<const float4*>(g)[q];
        float4 m4 = reinterpret_cast<float4*>(m)[q], v4 = reinterpret_cast<float4*>(v)[q];
        float t[4] = { t4.x, t4.y, t4.z, t4.w }, gg[4] = { g4.x, g4.y, g4.z, g4.w };
        float mm[4] = { m4.x, m4.y, m4.z, m4.w }, vv[4] = { v4.x, v4.y, v4.z, v4.w };
        for (int k = 0; k < 4; k++) adamw_element(t, gg, mm, vv, k, keep, beta1, oneMinusBeta1, beta2, oneMinusBeta2, stepSize, sqrtBc2, eps);
        reinterpret_cast<float4*>(theta)[q] = make_float4(t[0], t[1], t[2], t[3]);
        reinterpret_cast<float4*>(m)[q] = make_float4(mm[0], mm[1], mm[2], mm[3]);
        reinterpret_cast<float4*>(v)[q] = make_float4(vv[0], vv[1], vv[2], vv[3]);
        if constexpr (Copy)
        {
            unsigned lo = (unsigned)from_f<bf16>(t[0]) | ((unsigned)from_f<bf16>(t[1]) << 16);
            unsigned hi = (unsigned)from_f<bf16>(t[2]) | ((unsigned)from_f<bf16>(t[3]) << 16);
            reinterpret_cast<uint2*>(copy)[q] = make_uint2(lo, hi);
        }
    }
    i64 i = 4 * n4 + (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
    {
        float updated = adamw_element(theta, g, m, v, i, keep, beta1, oneMinusBeta1, beta2, oneMinusBeta2, stepSize, sqrtBc2, eps);
        if constexpr (Copy) copy[i] = from_f<bf16>(updated);
    }
}
extern "C" __global__ void adamw_v4(float* theta, const float* g, float* m, float* v, i64 n, float keep, float beta1,
    float oneMinusBeta1, float beta2, float oneMinusBeta2, float stepSize, float sqrtBc2, float eps, bf16* copy)
{
    adamw_v4_t<false>(theta, g, m, v, n, keep, beta1, oneMinusBeta1, beta2, oneMinusBeta2, stepSize, sqrtBc2, eps, copy);
}
extern "C" __global__ void adamw_bf16copy_v4(float* theta, const float* g, float* m, float* v, i64 n, float keep, float beta1,
    float oneMinusBeta1, float beta2, float oneMinusBeta2, float stepSize, float sqrtBc2, float eps, bf16* copy)
{
    adamw_v4_t<true>(theta, g, m, v, n, keep, beta1, oneMinusBeta1, beta2, oneMinusBeta2, stepSize, sqrtBc2, eps, copy);
}

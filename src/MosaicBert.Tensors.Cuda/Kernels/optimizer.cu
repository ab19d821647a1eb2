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

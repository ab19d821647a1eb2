// GELU (exact erf form) and gated GELU, forward and backward, for float and bf16 tensors (computed in fp32). Φ is
// normcdff (a few ulp); the CPU uses a 1.2e-7 Chebyshev fit of erfc, so the two backends agree to ~2e-7 relative
// (more in the far negative tail, where the CPU's fp32 exp(−x²/2) loses ~1e-7·x² relative). Kernels read each
// element before writing it, so outputs may alias inputs.
#include "common.cuh"

// y = x·Φ(x)
template <typename T> __forceinline__ void gelu_forward_t(const T* x, T* y, i64 n)
{
    FOR_EACH(i, n)
    {
        float v = to_f(x[i]);
        y[i] = from_f<T>(v * gelu_phi(v));
    }
}
extern "C" __global__ void gelu_forward(const float* x, float* y, i64 n) { gelu_forward_t(x, y, n); }
extern "C" __global__ void gelu_forward_bf16(const bf16* x, bf16* y, i64 n) { gelu_forward_t(x, y, n); }

// dx = dy·(Φ(x) + x·φ(x))
template <typename T> __forceinline__ void gelu_backward_t(const T* x, const T* dy, T* dx, i64 n)
{
    FOR_EACH(i, n)
    {
        float v = to_f(x[i]);
        dx[i] = from_f<T>(to_f(dy[i]) * (gelu_phi(v) + v * normal_density(v)));
    }
}
extern "C" __global__ void gelu_backward(const float* x, const float* dy, float* dx, i64 n) { gelu_backward_t(x, dy, dx, n); }
extern "C" __global__ void gelu_backward_bf16(const bf16* x, const bf16* dy, bf16* dx, i64 n) { gelu_backward_t(x, dy, dx, n); }

// g = [u | v] per row (each half `inner` wide): h = GELU(u)·v, as (u·Φ(u))·v like the CPU.
template <typename T> __forceinline__ void gated_gelu_forward_t(const T* g, T* h, i64 rows, int inner)
{
    FOR_EACH(i, rows * inner)
    {
        i64 r = i / inner, c = i - r * inner;
        const T* row = g + r * 2 * inner;
        float u = to_f(row[c]), v = to_f(row[inner + c]);
        h[i] = from_f<T>((u * gelu_phi(u)) * v);
    }
}
extern "C" __global__ void gated_gelu_forward(const float* g, float* h, i64 rows, int inner) { gated_gelu_forward_t(g, h, rows, inner); }
extern "C" __global__ void gated_gelu_forward_bf16(const bf16* g, bf16* h, i64 rows, int inner) { gated_gelu_forward_t(g, h, rows, inner); }

// du = dh·v·GELU′(u), dv = dh·GELU(u), written to dg = [du | dv] (dg may be g itself).
template <typename T> __forceinline__ void gated_gelu_backward_t(const T* g, const T* dh, T* dg, i64 rows, int inner)
{
    FOR_EACH(i, rows * inner)
    {
        i64 r = i / inner, c = i - r * inner;
        i64 at = r * 2 * inner + c;
        float u = to_f(g[at]), v = to_f(g[at + inner]), d = to_f(dh[i]);
        float phi = gelu_phi(u);
        float du = d * v * (phi + u * normal_density(u));
        float dv = d * (u * phi);
        dg[at] = from_f<T>(du);
        dg[at + inner] = from_f<T>(dv);
    }
}
extern "C" __global__ void gated_gelu_backward(const float* g, const float* dh, float* dg, i64 rows, int inner) { gated_gelu_backward_t(g, dh, dg, rows, inner); }
extern "C" __global__ void gated_gelu_backward_bf16(const bf16* g, const bf16* dh, bf16* dg, i64 rows, int inner) { gated_gelu_backward_t(g, dh, dg, rows, inner); }

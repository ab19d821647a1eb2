// GELU (exact erf form) and gated GELU, forward and backward. Φ is normcdff (a few ulp); the CPU uses a 1.2e-7
// Chebyshev fit of erfc, so the two backends agree to ~2e-7 relative (more in the far negative tail, where the CPU's
// fp32 exp(−x²/2) loses ~1e-7·x² relative). Kernels read each element before writing it, so outputs may alias inputs.
#include "common.cuh"

// y = x·Φ(x)
extern "C" __global__ void gelu_forward(const float* x, float* y, i64 n)
{
    FOR_EACH(i, n)
    {
        float v = x[i];
        y[i] = v * gelu_phi(v);
    }
}

// dx = dy·(Φ(x) + x·φ(x))
extern "C" __global__ void gelu_backward(const float* x, const float* dy, float* dx, i64 n)
{
    FOR_EACH(i, n)
    {
        float v = x[i];
        dx[i] = dy[i] * (gelu_phi(v) + v * normal_density(v));
    }
}

// g = [u | v] per row (each half `inner` wide): h = GELU(u)·v, as (u·Φ(u))·v like the CPU.
extern "C" __global__ void gated_gelu_forward(const float* g, float* h, i64 rows, int inner)
{
    FOR_EACH(i, rows * inner)
    {
        i64 r = i / inner, c = i - r * inner;
        const float* row = g + r * 2 * inner;
        float u = row[c], v = row[inner + c];
        h[i] = (u * gelu_phi(u)) * v;
    }
}

// du = dh·v·GELU′(u), dv = dh·GELU(u), written to dg = [du | dv] (dg may be g itself).
extern "C" __global__ void gated_gelu_backward(const float* g, const float* dh, float* dg, i64 rows, int inner)
{
    FOR_EACH(i, rows * inner)
    {
        i64 r = i / inner, c = i - r * inner;
        i64 at = r * 2 * inner + c;
        float u = g[at], v = g[at + inner], d = dh[i];
        float phi = gelu_phi(u);
        float du = d * v * (phi + u * normal_density(u));
        float dv = d * (u * phi);
        dg[at] = du;
        dg[at + inner] = dv;
    }
}

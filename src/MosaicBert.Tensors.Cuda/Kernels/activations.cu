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

// ---- gated GELU with dropout, fused (MosaicBERT's MLP: h = dropout(GELU(u)·v)) ----
// Element (r, c) of h uses dropout counter offset + r·inner + c, as Dropout over the [rows, inner] tensor h would, so
// the fused kernels draw the same mask as the unfused pair. Threads own 8 consecutive columns (16-byte loads of bf16)
// when T = bf16 and inner % 8 == 0, else one; rows are a grid-stride loop over blockIdx.y (32-bit indices within a
// row, no 64-bit division). p = 0 turns dropout off (keepScale 1, threshold 0: every element kept).
#include "dropout_hash.cuh"

// Φ and φ for the fused kernels: normcdff/expf (a few ulp, the fp32 parity of the CPU) for fp32 tensors; for bf16
// tensors, whose results are rounded to 8 bits, the cheaper 0.5·(1 + erff(x/√2)) and __expf (errors below 1e-6
// absolute, far under bf16's 2⁻⁹ relative rounding), which makes these instruction-bound kernels about a third faster.
template <typename T> __forceinline__ float phi_of(float x)
{
    if constexpr (sizeof(T) == 2) return 0.5f * (1.f + erff(x * 0.70710678118654752f));
    else return gelu_phi(x);
}
template <typename T> __forceinline__ float density_of(float x)
{
    if constexpr (sizeof(T) == 2) return 0.3989422804014327f * __expf(-0.5f * x * x);
    else return normal_density(x);
}

// keepBits (may be null): the forward pass records each element's dropout decision as one bit (element e = r·inner + c
// of h is bit e % 8 of byte e / 8, i.e. bit e % 32 of 32-bit word e / 32), and the backward pass given the same bits
// reads them instead of hashing again — the hash is a third of these instruction-bound kernels. With V = 8 a thread
// owns a whole byte (plain store); with V = 1 bits are set and cleared with atomics (no zeroing needed).
__forceinline__ void record_bit(unsigned* bits, i64 e, bool keep)
{
    unsigned b = 1u << (e & 31);
    if (keep) atomicOr(bits + (e >> 5), b);
    else atomicAnd(bits + (e >> 5), ~b);
}

template <typename T, int V> __forceinline__ void gated_gelu_dropout_forward_t(const T* g, T* h, int rows, int inner,
    u64 key, unsigned threshold, float keepScale, i64 offset, unsigned* keepBits)
{
    int c = (blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (c >= inner) return;
    for (int r = blockIdx.y; r < rows; r += gridDim.y)
    {
        const T* row = g + (i64)r * 2 * inner;
        float u[V], v[V], y[V];
        load_v<T, V>(row + c, u);
        load_v<T, V>(row + inner + c, v);
        i64 e = (i64)r * inner + c, counter = offset + e;
        unsigned byte = 0;
        for (int k = 0; k < V; k++)
        {
            float f = dropout_factor(key, threshold, keepScale, counter + k);
            y[k] = __fmul_rn((u[k] * phi_of<T>(u[k])) * v[k], f);
            byte |= (f != 0.f ? 1u : 0u) << k;
        }
        store_v<T, V>(h + e, y);
        if (keepBits)
        {
            if constexpr (V == 8) reinterpret_cast<unsigned char*>(keepBits)[e >> 3] = (unsigned char)byte;
            else record_bit(keepBits, e, byte != 0);
        }
    }
}
extern "C" __global__ void gated_gelu_dropout_forward(const float* g, float* h, int rows, int inner, u64 key, unsigned threshold, float keepScale, i64 offset, unsigned* keepBits)
{
    gated_gelu_dropout_forward_t<float, 1>(g, h, rows, inner, key, threshold, keepScale, offset, keepBits);
}
extern "C" __global__ void gated_gelu_dropout_forward_bf16(const bf16* g, bf16* h, int rows, int inner, u64 key, unsigned threshold, float keepScale, i64 offset, unsigned* keepBits)
{
    gated_gelu_dropout_forward_t<bf16, 1>(g, h, rows, inner, key, threshold, keepScale, offset, keepBits);
}
extern "C" __global__ void gated_gelu_dropout_forward_bf16x8(const bf16* g, bf16* h, int rows, int inner, u64 key, unsigned threshold, float keepScale, i64 offset, unsigned* keepBits)
{
    gated_gelu_dropout_forward_t<bf16, 8>(g, h, rows, inner, key, threshold, keepScale, offset, keepBits);
}

// Backward: d = dh·mask; du = d·v·GELU′(u), dv = d·GELU(u), into dg = [du | dv] (dg may be g). The mask comes from
// keepBits when given (recorded by the forward pass), else from the hash.
template <typename T, int V> __forceinline__ void gated_gelu_dropout_backward_t(const T* g, const T* dh, T* dg, int rows, int inner,
    u64 key, unsigned threshold, float keepScale, i64 offset, const unsigned* keepBits)
{
    int c = (blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (c >= inner) return;
    for (int r = blockIdx.y; r < rows; r += gridDim.y)
    {
        i64 at = (i64)r * 2 * inner + c;
        float u[V], v[V], d[V], du[V], dv[V];
        load_v<T, V>(g + at, u);
        load_v<T, V>(g + at + inner, v);
        i64 e = (i64)r * inner + c, counter = offset + e;
        load_v<T, V>(dh + e, d);
        unsigned byte = 0;
        if (keepBits)
        {
            if constexpr (V == 8) byte = reinterpret_cast<const unsigned char*>(keepBits)[e >> 3];
            else byte = (keepBits[e >> 5] >> (e & 31)) & 1u;
        }
        for (int k = 0; k < V; k++)
        {
            float f = keepBits ? ((byte >> k) & 1u ? keepScale : 0.f) : dropout_factor(key, threshold, keepScale, counter + k);
            float dk = __fmul_rn(d[k], f);
            float phi = phi_of<T>(u[k]);
            du[k] = dk * v[k] * (phi + u[k] * density_of<T>(u[k]));
            dv[k] = dk * (u[k] * phi);
        }
        store_v<T, V>(dg + at, du);
        store_v<T, V>(dg + at + inner, dv);
    }
}
extern "C" __global__ void gated_gelu_dropout_backward(const float* g, const float* dh, float* dg, int rows, int inner, u64 key, unsigned threshold, float keepScale, i64 offset, const unsigned* keepBits)
{
    gated_gelu_dropout_backward_t<float, 1>(g, dh, dg, rows, inner, key, threshold, keepScale, offset, keepBits);
}
extern "C" __global__ void gated_gelu_dropout_backward_bf16(const bf16* g, const bf16* dh, bf16* dg, int rows, int inner, u64 key, unsigned threshold, float keepScale, i64 offset, const unsigned* keepBits)
{
    gated_gelu_dropout_backward_t<bf16, 1>(g, dh, dg, rows, inner, key, threshold, keepScale, offset, keepBits);
}
extern "C" __global__ void gated_gelu_dropout_backward_bf16x8(const bf16* g, const bf16* dh, bf16* dg, int rows, int inner, u64 key, unsigned threshold, float keepScale, i64 offset, const unsigned* keepBits)
{
    gated_gelu_dropout_backward_t<bf16, 8>(g, dh, dg, rows, inner, key, threshold, keepScale, offset, keepBits);
}

// Variable-length multi-head attention with ALiBi, forward and backward, in fp32, FlashAttention-style: the score
// matrix is never stored. A first, straightforward version: CUDA cores only (no tensor cores), one key (or query) at
// a time out of shared-memory tiles.
//
// Work is split into tiles of 64 tokens of one sequence; the host lists them as int4 (t0, t1, s0, s1): tokens
// [t0, t1) of the sequence occupying tokens [s0, s1). Block (tile, head). Within a block, each of the 64 rows (a
// query in the forward and dQ kernels, a key in the dK/dV kernel) is owned by T = D/32 consecutive threads, thread
// `part` holding the 32 columns c·T + part of the row (D = 32, 64 or 128 ≥ head dim, zero-padded): a dot product is
// 32 FMAs per thread plus a shuffle over the T threads, and shared-memory reads of one tile row by the T threads hit
// consecutive banks (no conflicts). Scores: s_ij = scale·(q_i·k_j) − slope_h·|pos_i − pos_j|.
// No atomics anywhere: dQ and dK/dV come from two kernels that each own their outputs, so results are deterministic.
#include "common.cuh"

#define TILE 64

// Sum over the T threads that share a row (consecutive lanes, T a power of two ≤ 4). Every lane must call it.
template <int T>
__forceinline__ float row_sum(float v)
{
#pragma unroll
    for (int o = 1; o < T; o <<= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// dst[j][c] = src[(j0 + j)·stride + c] for j < count and c < dh, else 0; dst is [TILE][D].
template <int D>
__forceinline__ void load_tile(float* dst, const float* src, i64 stride, int j0, int count, int dh)
{
    for (int e = threadIdx.x; e < TILE * D; e += blockDim.x)
    {
        int j = e / D, c = e % D;
        dst[e] = (j < count && c < dh) ? src[(i64)(j0 + j) * stride + c] : 0.f;
    }
}

// Loads the 32 columns c·T + part of one row (zero past dh or for an inactive row).
template <int T>
__forceinline__ void load_row(float (&r)[32], const float* src, bool active, int dh, int part)
{
#pragma unroll
    for (int c = 0; c < 32; c++)
    {
        int col = c * T + part;
        r[c] = active && col < dh ? src[col] : 0.f;
    }
}

template <int T>
__forceinline__ float dot_row(const float (&r)[32], const float* tileRow, int part)
{
    float s = 0.f;
#pragma unroll
    for (int c = 0; c < 32; c++) s = fmaf(r[c], tileRow[c * T + part], s);
    return s;
}

// Forward: online softmax over the keys of the sequence, one key at a time: when a score exceeds the running max m,
// the accumulators are rescaled by e^(m_old − m); then p = e^(s − m), l += p, o += p·v_j. At the end o /= l and
// lse = m + log l. Shared memory: K and V tiles [TILE][D] and the tile's positions.
template <int T>
__forceinline__ void attention_forward(const float* qkv, const int4* tiles, const int* pos, const float* slopes, float scale,
    float* ctx, float* lse, int d, int dh, int heads)
{
    constexpr int D = 32 * T;
    extern __shared__ float smem[];
    float* Ks = smem;
    float* Vs = Ks + TILE * D;
    int* Ps = (int*)(Vs + TILE * D);
    const int4 tile = tiles[blockIdx.x];
    const int h = blockIdx.y, row = threadIdx.x / T, part = threadIdx.x % T;
    const int i = tile.x + row;
    const bool active = i < tile.y;
    const i64 threeD = 3 * (i64)d;
    float q[32], o[32];
    load_row<T>(q, qkv + (i64)i * threeD + h * dh, active, dh, part);
#pragma unroll
    for (int c = 0; c < 32; c++) o[c] = 0.f;
    float m = NEG_INF, l = 0.f;
    const float slope = slopes[h];
    const int pi = active ? pos[i] : 0;
    for (int j0 = tile.z; j0 < tile.w; j0 += TILE)
    {
        int nk = min(TILE, tile.w - j0);
        __syncthreads();   // the previous tile has been consumed
        load_tile<D>(Ks, qkv + d + h * dh, threeD, j0, nk, dh);
        load_tile<D>(Vs, qkv + 2 * d + h * dh, threeD, j0, nk, dh);
        for (int j = threadIdx.x; j < nk; j += blockDim.x) Ps[j] = pos[j0 + j];
        __syncthreads();
        for (int j = 0; j < nk; j++)
        {
            float s = row_sum<T>(dot_row<T>(q, Ks + j * D, part)) * scale - slope * (float)iabs(pi - Ps[j]);
            if (s > m)
            {
                float corr = expf(m - s);   // 0 for the first key (m = −∞)
                l *= corr;
#pragma unroll
                for (int c = 0; c < 32; c++) o[c] *= corr;
                m = s;
            }
            float p = expf(s - m);
            l += p;
            const float* vr = Vs + j * D;
#pragma unroll
            for (int c = 0; c < 32; c++) o[c] = fmaf(p, vr[c * T + part], o[c]);
        }
    }
    if (!active) return;
    float inv = 1.f / l;
    float* out = ctx + (i64)i * d + h * dh;
#pragma unroll
    for (int c = 0; c < 32; c++)
    {
        int col = c * T + part;
        if (col < dh) out[col] = o[c] * inv;
    }
    if (part == 0) lse[(i64)i * heads + h] = m + logf(l);
}

extern "C" __global__ void __launch_bounds__(64) attention_forward_d32(const float* qkv, const int4* tiles, const int* pos,
    const float* slopes, float scale, float* ctx, float* lse, int d, int dh, int heads)
{ attention_forward<1>(qkv, tiles, pos, slopes, scale, ctx, lse, d, dh, heads); }
extern "C" __global__ void __launch_bounds__(128) attention_forward_d64(const float* qkv, const int4* tiles, const int* pos,
    const float* slopes, float scale, float* ctx, float* lse, int d, int dh, int heads)
{ attention_forward<2>(qkv, tiles, pos, slopes, scale, ctx, lse, d, dh, heads); }
extern "C" __global__ void __launch_bounds__(256) attention_forward_d128(const float* qkv, const int4* tiles, const int* pos,
    const float* slopes, float scale, float* ctx, float* lse, int d, int dh, int heads)
{ attention_forward<4>(qkv, tiles, pos, slopes, scale, ctx, lse, d, dh, heads); }

// D_i = dO_i·O_i per token and head.
extern "C" __global__ void attention_backward_delta(const float* ctx, const float* dctx, float* delta, i64 n, int d, int dh, int heads)
{
    FOR_EACH(e, n * heads)
    {
        i64 i = e / heads;
        int h = (int)(e - i * heads);
        const float* o = ctx + i * d + h * dh;
        const float* g = dctx + i * d + h * dh;
        float s = 0.f;
        for (int c = 0; c < dh; c++) s = fmaf(o[c], g[c], s);
        delta[e] = s;
    }
}

// dQ_i = Σ_j dS_ij·K_j with P_ij = exp(s_ij − lse_i), dS_ij = scale·P_ij·(dO_i·V_j − D_i). Block = query tile.
template <int T>
__forceinline__ void attention_backward_dq(const float* qkv, const int4* tiles, const int* pos, const float* slopes, float scale,
    const float* lse, const float* delta, const float* dctx, float* dqkv, int d, int dh, int heads)
{
    constexpr int D = 32 * T;
    extern __shared__ float smem[];
    float* Ks = smem;
    float* Vs = Ks + TILE * D;
    int* Ps = (int*)(Vs + TILE * D);
    const int4 tile = tiles[blockIdx.x];
    const int h = blockIdx.y, row = threadIdx.x / T, part = threadIdx.x % T;
    const int i = tile.x + row;
    const bool active = i < tile.y;
    const i64 threeD = 3 * (i64)d;
    float q[32], go[32], dq[32];
    load_row<T>(q, qkv + (i64)i * threeD + h * dh, active, dh, part);
    load_row<T>(go, dctx + (i64)i * d + h * dh, active, dh, part);
#pragma unroll
    for (int c = 0; c < 32; c++) dq[c] = 0.f;
    const float slope = slopes[h];
    const int pi = active ? pos[i] : 0;
    const float li = active ? lse[(i64)i * heads + h] : 0.f, di = active ? delta[(i64)i * heads + h] : 0.f;
    for (int j0 = tile.z; j0 < tile.w; j0 += TILE)
    {
        int nk = min(TILE, tile.w - j0);
        __syncthreads();
        load_tile<D>(Ks, qkv + d + h * dh, threeD, j0, nk, dh);
        load_tile<D>(Vs, qkv + 2 * d + h * dh, threeD, j0, nk, dh);
        for (int j = threadIdx.x; j < nk; j += blockDim.x) Ps[j] = pos[j0 + j];
        __syncthreads();
        for (int j = 0; j < nk; j++)
        {
            const float* kr = Ks + j * D;
            float s = row_sum<T>(dot_row<T>(q, kr, part)) * scale - slope * (float)iabs(pi - Ps[j]);
            float dp = row_sum<T>(dot_row<T>(go, Vs + j * D, part));
            float ds = (dp - di) * expf(s - li) * scale;
#pragma unroll
            for (int c = 0; c < 32; c++) dq[c] = fmaf(ds, kr[c * T + part], dq[c]);
        }
    }
    if (!active) return;
    float* out = dqkv + (i64)i * threeD + h * dh;
#pragma unroll
    for (int c = 0; c < 32; c++)
    {
        int col = c * T + part;
        if (col < dh) out[col] = dq[c];
    }
}

extern "C" __global__ void __launch_bounds__(64) attention_backward_dq_d32(const float* qkv, const int4* tiles, const int* pos,
    const float* slopes, float scale, const float* lse, const float* delta, const float* dctx, float* dqkv, int d, int dh, int heads)
{ attention_backward_dq<1>(qkv, tiles, pos, slopes, scale, lse, delta, dctx, dqkv, d, dh, heads); }
extern "C" __global__ void __launch_bounds__(128) attention_backward_dq_d64(const float* qkv, const int4* tiles, const int* pos,
    const float* slopes, float scale, const float* lse, const float* delta, const float* dctx, float* dqkv, int d, int dh, int heads)
{ attention_backward_dq<2>(qkv, tiles, pos, slopes, scale, lse, delta, dctx, dqkv, d, dh, heads); }
extern "C" __global__ void __launch_bounds__(256) attention_backward_dq_d128(const float* qkv, const int4* tiles, const int* pos,
    const float* slopes, float scale, const float* lse, const float* delta, const float* dctx, float* dqkv, int d, int dh, int heads)
{ attention_backward_dq<4>(qkv, tiles, pos, slopes, scale, lse, delta, dctx, dqkv, d, dh, heads); }

// dV_j = Σ_i P_ij·dO_i and dK_j = Σ_i dS_ij·Q_i. Block = key tile; query tiles of the sequence are staged in shared
// memory (Q and dO [TILE][D], and per query lse, D and position).
template <int T>
__forceinline__ void attention_backward_dkv(const float* qkv, const int4* tiles, const int* pos, const float* slopes, float scale,
    const float* lse, const float* delta, const float* dctx, float* dqkv, int d, int dh, int heads)
{
    constexpr int D = 32 * T;
    extern __shared__ float smem[];
    float* Qs = smem;
    float* Gs = Qs + TILE * D;
    float* Ls = Gs + TILE * D;
    float* Ds = Ls + TILE;
    int* Ps = (int*)(Ds + TILE);
    const int4 tile = tiles[blockIdx.x];
    const int h = blockIdx.y, row = threadIdx.x / T, part = threadIdx.x % T;
    const int j = tile.x + row;
    const bool active = j < tile.y;
    const i64 threeD = 3 * (i64)d;
    float k[32], v[32], dk[32], dv[32];
    load_row<T>(k, qkv + (i64)j * threeD + d + h * dh, active, dh, part);
    load_row<T>(v, qkv + (i64)j * threeD + 2 * d + h * dh, active, dh, part);
#pragma unroll
    for (int c = 0; c < 32; c++) dk[c] = dv[c] = 0.f;
    const float slope = slopes[h];
    const int pj = active ? pos[j] : 0;
    for (int i0 = tile.z; i0 < tile.w; i0 += TILE)
    {
        int nq = min(TILE, tile.w - i0);
        __syncthreads();
        load_tile<D>(Qs, qkv + h * dh, threeD, i0, nq, dh);
        load_tile<D>(Gs, dctx + h * dh, d, i0, nq, dh);
        for (int r = threadIdx.x; r < nq; r += blockDim.x)
        {
            Ls[r] = lse[(i64)(i0 + r) * heads + h];
            Ds[r] = delta[(i64)(i0 + r) * heads + h];
            Ps[r] = pos[i0 + r];
        }
        __syncthreads();
        for (int r = 0; r < nq; r++)
        {
            const float* qr = Qs + r * D;
            const float* gr = Gs + r * D;
            float s = row_sum<T>(dot_row<T>(k, qr, part)) * scale - slope * (float)iabs(Ps[r] - pj);
            float dp = row_sum<T>(dot_row<T>(v, gr, part));
            float p = expf(s - Ls[r]);
            float ds = (dp - Ds[r]) * p * scale;
#pragma unroll
            for (int c = 0; c < 32; c++)
            {
                dv[c] = fmaf(p, gr[c * T + part], dv[c]);
                dk[c] = fmaf(ds, qr[c * T + part], dk[c]);
            }
        }
    }
    if (!active) return;
    float* outK = dqkv + (i64)j * threeD + d + h * dh;
    float* outV = outK + d;
#pragma unroll
    for (int c = 0; c < 32; c++)
    {
        int col = c * T + part;
        if (col < dh)
        {
            outK[col] = dk[c];
            outV[col] = dv[c];
        }
    }
}

extern "C" __global__ void __launch_bounds__(64) attention_backward_dkv_d32(const float* qkv, const int4* tiles, const int* pos,
    const float* slopes, float scale, const float* lse, const float* delta, const float* dctx, float* dqkv, int d, int dh, int heads)
{ attention_backward_dkv<1>(qkv, tiles, pos, slopes, scale, lse, delta, dctx, dqkv, d, dh, heads); }
extern "C" __global__ void __launch_bounds__(128) attention_backward_dkv_d64(const float* qkv, const int4* tiles, const int* pos,
    const float* slopes, float scale, const float* lse, const float* delta, const float* dctx, float* dqkv, int d, int dh, int heads)
{ attention_backward_dkv<2>(qkv, tiles, pos, slopes, scale, lse, delta, dctx, dqkv, d, dh, heads); }
extern "C" __global__ void __launch_bounds__(256) attention_backward_dkv_d128(const float* qkv, const int4* tiles, const int* pos,
    const float* slopes, float scale, const float* lse, const float* delta, const float* dctx, float* dqkv, int d, int dh, int heads)
{ attention_backward_dkv<4>(qkv, tiles, pos, slopes, scale, lse, delta, dctx, dqkv, d, dh, heads); }

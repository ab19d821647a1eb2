// Variable-length multi-head attention with ALiBi for head dimension 64, bf16 in and out, fp32 accumulation on the
// tensor cores: FlashAttention-2's forward and backward (arXiv 2307.08691) with mma.sync m16n8k16 and ldmatrix.
//
// Layout: qkv [N, 3d] bf16 (Q block channels 0..d−1, K d..2d−1, V 2d..3d−1; head h owns h·64..h·64+63 of each),
// context / dContext [N, d] bf16, lse [N, H] fp32 (natural log), dQkv [N, 3d] bf16. Sequence b is tokens
// cu[b]..cu[b+1]−1; pos holds each token's padded column, and the score of query i and key j is
//     s_ij = scale·(q_i·k_j) − slope_h·|pos_i − pos_j|,
// computed from the int positions in registers (no bias matrix anywhere). Softmax runs in base 2 (exp2 is one SFU
// instruction): s′ = s·log2(e), so p = 2^(s′ − m′) and lse = (m′ + log2 l)·ln 2.
//
// Grid: x = sequence · tilesPerSeq + tile (64-token tiles; tiles past a sequence's end exit at once), y = head.
// Block: 4 warps; warp w owns rows 16w..16w+15 of the block's tile (queries in forward and dQ, keys in dK/dV), so
// every row's softmax statistics live in the 4 lanes of one mma "group" (reductions are two shuffles).
//
// Backward, deterministic (no atomics): a dQ kernel per query tile (S = QKᵀ, dP = dO·Vᵀ, dQ = dS·K; it also
// writes D_i = dO_i·O_i) and then a dK/dV kernel per key tile (Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, dV = Pᵀ·dO, dK = dSᵀ·Q),
// with P_ij = 2^(s′_ij − lse′_i) and dS_ij = P_ij·(dP_ij − D_i); dQ and dK carry the final factor `scale`.
// Shared tiles are [64][64] bf16 with 16-byte chunks XOR-swizzled by row (chunk ^ row%8), so the 8 row addresses of
// an ldmatrix phase and cp.async writes hit distinct banks. Rows past a sequence's end are zero-filled by cp.async
// and masked out of the softmax, and never stored.
#include "common.cuh"

#define HD 64              // head dimension
#define BT 64              // tokens per tile
#define THREADS 128        // 4 warps × 16 rows
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

typedef unsigned short bf16;   // raw bf16 bits
typedef unsigned int u32;

// ---- PTX wrappers ----

__forceinline__ u32 smem_u32(const void* p)
{
    u32 r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}

// 16 bytes global → shared, or 16 zero bytes when !valid (src must still be a mapped address).
__forceinline__ void cp_async16(void* dst, const void* src, bool valid)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(smem_u32(dst)), "l"(src), "r"(valid ? 16 : 0));
}

__forceinline__ void cp_async4(void* dst, const void* src, bool valid)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" :: "r"(smem_u32(dst)), "l"(src), "r"(valid ? 4 : 0));
}

__forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int Pending> __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(Pending)); }

__forceinline__ void ldsm_x4(u32& r0, u32& r1, u32& r2, u32& r3, const bf16* p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
        : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(smem_u32(p)));
}

__forceinline__ void ldsm_x4_t(u32& r0, u32& r1, u32& r2, u32& r3, const bf16* p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
        : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(smem_u32(p)));
}

// c += a·b for a 16×16 (row) by 16×8 (col) bf16 tile, fp32 accumulators.
__forceinline__ void mma(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats → bf16x2 (round to nearest even); lo in the low half (the lower column index).
__forceinline__ u32 pack_bf16(float lo, float hi)
{
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__forceinline__ float bf16_lo(u32 v) { return __uint_as_float(v << 16); }
__forceinline__ float bf16_hi(u32 v) { return __uint_as_float(v & 0xffff0000u); }

// ---- tiles ----

// Element offset of the 8-column chunk `chunk` of row `row` in a swizzled [BT][HD] tile.
__forceinline__ int swz(int row, int chunk) { return row * HD + ((chunk ^ (row & 7)) << 3); }

// Rows 0..count−1 of a [*, 64] bf16 matrix (row stride `stride` elements) into a tile; rows past count are zeros.
// 8 consecutive threads copy one row's 128 bytes (coalesced).
__forceinline__ void load_tile(bf16* tile, const bf16* src, i64 stride, int count)
{
    for (int e = threadIdx.x; e < BT * 8; e += THREADS)
    {
        int r = e >> 3, c = e & 7;
        bool valid = r < count;
        cp_async16(tile + swz(r, c), src + (valid ? (i64)r * stride : 0) + c * 8, valid);
    }
}

// count ints (or floats) into a [BT] array, zeros past count.
__forceinline__ void load_vec(void* dst, const void* src, int count)
{
    for (int j = threadIdx.x; j < BT; j += THREADS)
        cp_async4((u32*)dst + j, (const u32*)src + (j < count ? j : 0), j < count);
}

// A fragments (m16 × k64) of tile rows row0..row0+15: a[ks] covers columns 16ks..16ks+15. Lanes 0–15 address rows
// 0–15 of the column chunk 2ks, lanes 16–31 the same rows of chunk 2ks+1: the four 8×8 matrices come back as the
// mma A registers (rows 0–7 / 8–15 × columns 0–7 / 8–15).
__forceinline__ void load_a(u32 (&a)[4][4], const bf16* tile, int row0)
{
    int lane = threadIdx.x & 31, r = row0 + (lane & 15);
#pragma unroll
    for (int ks = 0; ks < 4; ks++) ldsm_x4(a[ks][0], a[ks][1], a[ks][2], a[ks][3], tile + swz(r, 2 * ks + (lane >> 4)));
}

// acc[16 × 64] += A[16 × 64] · tileᵀ, i.e. acc[i][n] = Σ_k A[i][k]·tile[n][k] (tile rows are the n index).
// The mma's B operand is k-major per column n, which is a row of the tile: plain ldmatrix. Per x4: lanes 0–7 rows
// n 0–7 chunk 2ks, 8–15 rows 0–7 chunk 2ks+1, 16–23 rows 8–15 chunk 2ks, 24–31 rows 8–15 chunk 2ks+1.
__forceinline__ void mma_a_tile_t(float (&acc)[8][4], const u32 (&a)[4][4], const bf16* tile)
{
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int np = 0; np < 4; np++)
    {
        int r = np * 16 + (lane & 7) + ((lane >> 4) << 3);
#pragma unroll
        for (int ks = 0; ks < 4; ks++)
        {
            u32 b0, b1, b2, b3;
            ldsm_x4(b0, b1, b2, b3, tile + swz(r, 2 * ks + ((lane >> 3) & 1)));
            mma(acc[2 * np], a[ks], b0, b1);
            mma(acc[2 * np + 1], a[ks], b2, b3);
        }
    }
}

// acc[16 × 64] += P[16 × 64] · tile, i.e. acc[i][n] = Σ_k P[i][k]·tile[k][n] (tile rows are the k index): the B
// operand is a column of the tile, so ldmatrix.trans. Per x4: lanes 0–7 rows k 0–7 chunk 2dp, 8–15 rows 8–15 chunk
// 2dp, 16–23 rows 0–7 chunk 2dp+1, 24–31 rows 8–15 chunk 2dp+1.
__forceinline__ void mma_p_tile(float (&acc)[8][4], const u32 (&p)[4][4], const bf16* tile)
{
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
    {
        int r = kk * 16 + (lane & 15);
#pragma unroll
        for (int dp = 0; dp < 4; dp++)
        {
            u32 b0, b1, b2, b3;
            ldsm_x4_t(b0, b1, b2, b3, tile + swz(r, 2 * dp + (lane >> 4)));
            mma(acc[2 * dp], p[kk], b0, b1);
            mma(acc[2 * dp + 1], p[kk], b2, b3);
        }
    }
}

// An accumulator (C layout: lane g = lane/4, t = lane%4 holds rows g and g+8, columns 8nt + 2t, +1) as bf16 A
// fragments for the next mma: the C layout of two adjacent 8-column tiles is exactly the A layout of one k16 step.
__forceinline__ void to_a(u32 (&p)[4][4], const float (&s)[8][4])
{
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
    {
        p[kk][0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
        p[kk][1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
        p[kk][2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        p[kk][3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
}

// Writes a warp's 16 × 64 accumulator, rows g scaled by mul0 and rows g+8 by mul1, as bf16 into rows row0.. of a tile,
// then (after __syncwarp) copies those rows that are < count to dst (row stride `stride`), 16 bytes per lane.
__forceinline__ void store_rows(bf16* dst, i64 stride, bf16* tile, int row0, int count, const float (&acc)[8][4],
    float mul0, float mul1)
{
    int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
    {
        *(u32*)(tile + swz(row0 + g, nt) + 2 * t) = pack_bf16(acc[nt][0] * mul0, acc[nt][1] * mul0);
        *(u32*)(tile + swz(row0 + g + 8, nt) + 2 * t) = pack_bf16(acc[nt][2] * mul1, acc[nt][3] * mul1);
    }
    __syncwarp();
#pragma unroll
    for (int e = lane; e < 16 * 8; e += 32)
    {
        int r = row0 + (e >> 3), c = e & 7;
        if (r < count) *(uint4*)(dst + (i64)r * stride + c * 8) = *(const uint4*)(tile + swz(r, c));
    }
}

__forceinline__ float group_max(float v)
{
    v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, 1));
    return fmaxf(v, __shfl_xor_sync(FULL_MASK, v, 2));
}

__forceinline__ float group_sum(float v)
{
    v += __shfl_xor_sync(FULL_MASK, v, 1);
    return v + __shfl_xor_sync(FULL_MASK, v, 2);
}

// The block's sequence and tile; false when the tile lies past the sequence's end.
struct TileInfo
{
    int s0, len, r0, rows;   // sequence start token and length; tile start within the sequence and its row count
};

__forceinline__ bool tile_info(const int* cu, int tilesPerSeq, TileInfo& ti)
{
    int b = blockIdx.x / tilesPerSeq, tile = blockIdx.x - b * tilesPerSeq;
    ti.s0 = cu[b];
    ti.len = cu[b + 1] - ti.s0;
    ti.r0 = tile * BT;
    ti.rows = min(BT, ti.len - ti.r0);
    return ti.r0 < ti.len;
}

// ---- forward ----

// Block (query tile, head). K/V tiles are double-buffered: the copy of tile kt+1 runs while tile kt is computed.
// At most 128 registers (4 blocks per SM instead of 3; a few bytes spill): 2% faster at B = 256, S = 128 on an H100.
extern "C" __global__ void __launch_bounds__(THREADS, 4) attention_bf16_forward(const bf16* __restrict__ qkv,
    const int* __restrict__ cu, const int* __restrict__ pos, const float* __restrict__ slopes, float scale,
    bf16* __restrict__ ctx, float* __restrict__ lse, int heads, int tilesPerSeq)
{
    __shared__ __align__(128) bf16 Qs[BT * HD];
    __shared__ __align__(128) bf16 Ks[2][BT * HD];
    __shared__ __align__(128) bf16 Vs[2][BT * HD];
    __shared__ int Ps[2][BT];
    TileInfo ti;
    if (!tile_info(cu, tilesPerSeq, ti)) return;
    const int h = blockIdx.y, d = heads * HD;
    const i64 ld = 3 * (i64)d;
    const bf16* Kg = qkv + (i64)ti.s0 * ld + d + h * HD;
    const bf16* Vg = Kg + d;
    const int* posSeq = pos + ti.s0;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int keyTiles = (ti.len + BT - 1) / BT;

    load_tile(Qs, qkv + (i64)(ti.s0 + ti.r0) * ld + h * HD, ld, ti.rows);
    load_tile(Ks[0], Kg, ld, min(BT, ti.len));
    load_tile(Vs[0], Vg, ld, min(BT, ti.len));
    load_vec(Ps[0], posSeq, min(BT, ti.len));
    cp_async_commit();

    const float sc = scale * LOG2E, sl = slopes[h] * LOG2E;
    const int i0 = ti.r0 + warp * 16 + g, i1 = i0 + 8;   // this lane's two query rows (within the sequence)
    const int p0 = i0 < ti.len ? posSeq[i0] : 0, p1 = i1 < ti.len ? posSeq[i1] : 0;
    float o[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; nt++) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
    float m0 = NEG_INF, m1 = NEG_INF, l0 = 0.f, l1 = 0.f;
    u32 qa[4][4];
    for (int kt = 0; kt < keyTiles; kt++)
    {
        const int buf = kt & 1;
        if (kt + 1 < keyTiles)
        {
            int j0 = (kt + 1) * BT, nk = min(BT, ti.len - j0);
            load_tile(Ks[buf ^ 1], Kg + (i64)j0 * ld, ld, nk);
            load_tile(Vs[buf ^ 1], Vg + (i64)j0 * ld, ld, nk);
            load_vec(Ps[buf ^ 1], posSeq + j0, nk);
            cp_async_commit();
            cp_async_wait<1>();
        }
        else cp_async_wait<0>();
        __syncthreads();
        if (kt == 0) load_a(qa, Qs, warp * 16);
        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
        mma_a_tile_t(s, qa, Ks[buf]);

        // Scores in base 2 with the bias; keys past the end at −∞.
        const int nk = min(BT, ti.len - kt * BT);
        float mx0 = NEG_INF, mx1 = NEG_INF;
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++)
            {
                int col = nt * 8 + 2 * t + e, pj = Ps[buf][col];
                bool ok = col < nk;
                s[nt][e] = ok ? s[nt][e] * sc - sl * (float)iabs(p0 - pj) : NEG_INF;
                s[nt][2 + e] = ok ? s[nt][2 + e] * sc - sl * (float)iabs(p1 - pj) : NEG_INF;
                mx0 = fmaxf(mx0, s[nt][e]);
                mx1 = fmaxf(mx1, s[nt][2 + e]);
            }
        // Every tile has a valid key, so the new maxima are finite; exp2(−∞ − finite) = 0 rescales the first tile.
        float mn0 = fmaxf(m0, group_max(mx0)), mn1 = fmaxf(m1, group_max(mx1));
        float c0 = exp2f(m0 - mn0), c1 = exp2f(m1 - mn1);
        m0 = mn0;
        m1 = mn1;
        l0 *= c0;
        l1 *= c1;
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
        {
            o[nt][0] *= c0;
            o[nt][1] *= c0;
            o[nt][2] *= c1;
            o[nt][3] *= c1;
            s[nt][0] = exp2f(s[nt][0] - m0);
            s[nt][1] = exp2f(s[nt][1] - m0);
            s[nt][2] = exp2f(s[nt][2] - m1);
            s[nt][3] = exp2f(s[nt][3] - m1);
            l0 += s[nt][0] + s[nt][1];
            l1 += s[nt][2] + s[nt][3];
        }
        u32 pa[4][4];
        to_a(pa, s);
        mma_p_tile(o, pa, Vs[buf]);
        __syncthreads();   // buffer `buf` is refilled in the next iteration
    }
    l0 = group_sum(l0);
    l1 = group_sum(l1);
    // The warp's own rows of Qs serve as the staging tile (its Q fragments are in registers).
    store_rows(ctx + (i64)(ti.s0 + ti.r0) * d + h * HD, d, Qs, warp * 16, ti.rows, o, 1.f / l0, 1.f / l1);
    if (t == 0)
    {
        if (i0 < ti.len) lse[(i64)(ti.s0 + i0) * heads + h] = (m0 + log2f(l0)) * LN2;
        if (i1 < ti.len) lse[(i64)(ti.s0 + i1) * heads + h] = (m1 + log2f(l1)) * LN2;
    }
}

// ---- backward ----

// D_i = dO_i·O_i for this lane's rows: lanes 2r and 2r+1 of warp w read half of row 16w + r each (32 values of O and
// dO), and the group's lanes fetch the sums of their rows g (lane 2g) and g+8 (lane 2g+16).
__forceinline__ void row_deltas(const bf16* ctxTile, const bf16* dctxTile, i64 stride, int rows, int row0, float& d0, float& d1)
{
    int lane = threadIdx.x & 31, r = row0 + (lane >> 1), half = lane & 1;
    float sum = 0.f;
    if (r < rows)
    {
        const uint4* o = (const uint4*)(ctxTile + (i64)r * stride + half * 32);
        const uint4* go = (const uint4*)(dctxTile + (i64)r * stride + half * 32);
#pragma unroll
        for (int c = 0; c < 4; c++)
        {
            uint4 a = o[c], b = go[c];
            sum = fmaf(bf16_lo(a.x), bf16_lo(b.x), sum); sum = fmaf(bf16_hi(a.x), bf16_hi(b.x), sum);
            sum = fmaf(bf16_lo(a.y), bf16_lo(b.y), sum); sum = fmaf(bf16_hi(a.y), bf16_hi(b.y), sum);
            sum = fmaf(bf16_lo(a.z), bf16_lo(b.z), sum); sum = fmaf(bf16_hi(a.z), bf16_hi(b.z), sum);
            sum = fmaf(bf16_lo(a.w), bf16_lo(b.w), sum); sum = fmaf(bf16_hi(a.w), bf16_hi(b.w), sum);
        }
    }
    sum += __shfl_xor_sync(FULL_MASK, sum, 1);
    int g = lane >> 2;
    d0 = __shfl_sync(FULL_MASK, sum, 2 * g);
    d1 = __shfl_sync(FULL_MASK, sum, 2 * g + 16);
}

// Block (query tile, head): dQ_i = scale·Σ_j dS_ij·K_j over the key tiles, and delta[i, h] = D_i for the dK/dV kernel.
// Q and dO are staged in the second K/V buffer, moved to registers, and that buffer then takes key tile 1.
extern "C" __global__ void __launch_bounds__(THREADS) attention_bf16_backward_dq(const bf16* __restrict__ qkv,
    const int* __restrict__ cu, const int* __restrict__ pos, const float* __restrict__ slopes, float scale,
    const bf16* __restrict__ ctx, const float* __restrict__ lse, const bf16* __restrict__ dctx,
    bf16* __restrict__ dqkv, float* __restrict__ delta, int heads, int tilesPerSeq)
{
    __shared__ __align__(128) bf16 Ks[2][BT * HD];
    __shared__ __align__(128) bf16 Vs[2][BT * HD];
    __shared__ int Ps[2][BT];
    TileInfo ti;
    if (!tile_info(cu, tilesPerSeq, ti)) return;
    const int h = blockIdx.y, d = heads * HD;
    const i64 ld = 3 * (i64)d;
    const bf16* Kg = qkv + (i64)ti.s0 * ld + d + h * HD;
    const bf16* Vg = Kg + d;
    const int* posSeq = pos + ti.s0;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int keyTiles = (ti.len + BT - 1) / BT;
    const i64 q0 = ti.s0 + ti.r0;   // first token of the tile

    load_tile(Ks[1], qkv + q0 * ld + h * HD, ld, ti.rows);
    load_tile(Vs[1], dctx + q0 * d + h * HD, d, ti.rows);
    load_tile(Ks[0], Kg, ld, min(BT, ti.len));
    load_tile(Vs[0], Vg, ld, min(BT, ti.len));
    load_vec(Ps[0], posSeq, min(BT, ti.len));
    cp_async_commit();

    float D0, D1;
    row_deltas(ctx + q0 * d + h * HD, dctx + q0 * d + h * HD, d, ti.rows, warp * 16, D0, D1);
    const int i0 = ti.r0 + warp * 16 + g, i1 = i0 + 8;
    const bool v0 = i0 < ti.len, v1 = i1 < ti.len;
    if (t == 0)
    {
        if (v0) delta[(i64)(ti.s0 + i0) * heads + h] = D0;
        if (v1) delta[(i64)(ti.s0 + i1) * heads + h] = D1;
    }
    const float sc = scale * LOG2E, sl = slopes[h] * LOG2E;
    const int p0 = v0 ? posSeq[i0] : 0, p1 = v1 ? posSeq[i1] : 0;
    const float L0 = v0 ? lse[(i64)(ti.s0 + i0) * heads + h] * LOG2E : 0.f;
    const float L1 = v1 ? lse[(i64)(ti.s0 + i1) * heads + h] * LOG2E : 0.f;

    cp_async_wait<0>();
    __syncthreads();
    u32 qa[4][4], ga[4][4];
    load_a(qa, Ks[1], warp * 16);
    load_a(ga, Vs[1], warp * 16);
    __syncthreads();   // buffer 1 is free for key tile 1

    float dq[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; nt++) dq[nt][0] = dq[nt][1] = dq[nt][2] = dq[nt][3] = 0.f;
    for (int kt = 0; kt < keyTiles; kt++)
    {
        const int buf = kt & 1;
        if (kt + 1 < keyTiles)
        {
            int j0 = (kt + 1) * BT, nk = min(BT, ti.len - j0);
            load_tile(Ks[buf ^ 1], Kg + (i64)j0 * ld, ld, nk);
            load_tile(Vs[buf ^ 1], Vg + (i64)j0 * ld, ld, nk);
            load_vec(Ps[buf ^ 1], posSeq + j0, nk);
            cp_async_commit();
            cp_async_wait<1>();
        }
        else cp_async_wait<0>();
        __syncthreads();
        float s[8][4], dp[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = dp[nt][0] = dp[nt][1] = dp[nt][2] = dp[nt][3] = 0.f;
        mma_a_tile_t(s, qa, Ks[buf]);
        mma_a_tile_t(dp, ga, Vs[buf]);
        const int nk = min(BT, ti.len - kt * BT);
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++)
            {
                int col = nt * 8 + 2 * t + e, pj = Ps[buf][col];
                bool ok = col < nk;
                float pr0 = ok && v0 ? exp2f(s[nt][e] * sc - sl * (float)iabs(p0 - pj) - L0) : 0.f;
                float pr1 = ok && v1 ? exp2f(s[nt][2 + e] * sc - sl * (float)iabs(p1 - pj) - L1) : 0.f;
                s[nt][e] = pr0 * (dp[nt][e] - D0);
                s[nt][2 + e] = pr1 * (dp[nt][2 + e] - D1);
            }
        u32 dsa[4][4];
        to_a(dsa, s);
        mma_p_tile(dq, dsa, Ks[buf]);
        __syncthreads();
    }
    store_rows(dqkv + q0 * ld + h * HD, ld, Ks[0], warp * 16, ti.rows, dq, scale, scale);
}

// Block (key tile, head): dV_j = Σ_i P_ij·dO_i and dK_j = scale·Σ_i dS_ij·Q_i over the query tiles, computed
// transposed (rows = this warp's keys) so that Pᵀ and dSᵀ come out of the mma in the A layout of the next one.
// K and V are staged in the second Q/dO buffer, moved to registers, and that buffer then takes query tile 1.
extern "C" __global__ void __launch_bounds__(THREADS) attention_bf16_backward_dkv(const bf16* __restrict__ qkv,
    const int* __restrict__ cu, const int* __restrict__ pos, const float* __restrict__ slopes, float scale,
    const float* __restrict__ lse, const bf16* __restrict__ dctx, const float* __restrict__ delta,
    bf16* __restrict__ dqkv, int heads, int tilesPerSeq)
{
    __shared__ __align__(128) bf16 Qs[2][BT * HD];
    __shared__ __align__(128) bf16 Gs[2][BT * HD];
    __shared__ float Ls[2][BT];
    __shared__ float Ds[2][BT];
    __shared__ int Ps[2][BT];
    TileInfo ti;
    if (!tile_info(cu, tilesPerSeq, ti)) return;
    const int h = blockIdx.y, d = heads * HD;
    const i64 ld = 3 * (i64)d;
    const bf16* Qg = qkv + (i64)ti.s0 * ld + h * HD;
    const bf16* Gg = dctx + (i64)ti.s0 * d + h * HD;
    const float* lseSeq = lse + (i64)ti.s0 * heads + h;     // stride heads
    const float* deltaSeq = delta + (i64)ti.s0 * heads + h;
    const int* posSeq = pos + ti.s0;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int queryTiles = (ti.len + BT - 1) / BT;
    const i64 k0 = ti.s0 + ti.r0;   // first token of the key tile

    // Query tile i0's vectors: lse, D (strided by heads, so one 4-byte copy each) and positions.
    auto load_query_tile = [&](int b, int i0)
    {
        int nq = min(BT, ti.len - i0);
        load_tile(Qs[b], Qg + (i64)i0 * ld, ld, nq);
        load_tile(Gs[b], Gg + (i64)i0 * d, d, nq);
        for (int j = threadIdx.x; j < BT; j += THREADS)
        {
            bool valid = j < nq;
            i64 at = (i64)(i0 + (valid ? j : 0)) * heads;
            cp_async4(&Ls[b][j], lseSeq + at, valid);
            cp_async4(&Ds[b][j], deltaSeq + at, valid);
            cp_async4(&Ps[b][j], posSeq + i0 + (valid ? j : 0), valid);
        }
    };
    load_tile(Qs[1], qkv + k0 * ld + d + h * HD, ld, ti.rows);
    load_tile(Gs[1], qkv + k0 * ld + 2 * d + h * HD, ld, ti.rows);
    load_query_tile(0, 0);
    cp_async_commit();

    const float sc = scale * LOG2E, sl = slopes[h] * LOG2E;
    const int j0 = ti.r0 + warp * 16 + g, j1 = j0 + 8;   // this lane's two key rows (within the sequence)
    const int p0 = j0 < ti.len ? posSeq[j0] : 0, p1 = j1 < ti.len ? posSeq[j1] : 0;
    cp_async_wait<0>();
    __syncthreads();
    u32 ka[4][4], va[4][4];
    load_a(ka, Qs[1], warp * 16);
    load_a(va, Gs[1], warp * 16);
    __syncthreads();

    float dk[8][4], dv[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; nt++) dk[nt][0] = dk[nt][1] = dk[nt][2] = dk[nt][3] = dv[nt][0] = dv[nt][1] = dv[nt][2] = dv[nt][3] = 0.f;
    for (int qt = 0; qt < queryTiles; qt++)
    {
        const int buf = qt & 1;
        if (qt + 1 < queryTiles)
        {
            load_query_tile(buf ^ 1, (qt + 1) * BT);
            cp_async_commit();
            cp_async_wait<1>();
        }
        else cp_async_wait<0>();
        __syncthreads();
        float st[8][4], dpt[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
            st[nt][0] = st[nt][1] = st[nt][2] = st[nt][3] = dpt[nt][0] = dpt[nt][1] = dpt[nt][2] = dpt[nt][3] = 0.f;
        mma_a_tile_t(st, ka, Qs[buf]);
        mma_a_tile_t(dpt, va, Gs[buf]);
        const int nq = min(BT, ti.len - qt * BT);
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++)
            {
                int col = nt * 8 + 2 * t + e, pi = Ps[buf][col];
                float li = Ls[buf][col] * LOG2E, di = Ds[buf][col];
                bool ok = col < nq;
                float pr0 = ok ? exp2f(st[nt][e] * sc - sl * (float)iabs(p0 - pi) - li) : 0.f;
                float pr1 = ok ? exp2f(st[nt][2 + e] * sc - sl * (float)iabs(p1 - pi) - li) : 0.f;
                st[nt][e] = pr0;
                st[nt][2 + e] = pr1;
                dpt[nt][e] = pr0 * (dpt[nt][e] - di);
                dpt[nt][2 + e] = pr1 * (dpt[nt][2 + e] - di);
            }
        u32 pa[4][4];
        to_a(pa, st);
        mma_p_tile(dv, pa, Gs[buf]);
        to_a(pa, dpt);
        mma_p_tile(dk, pa, Qs[buf]);
        __syncthreads();
    }
    store_rows(dqkv + k0 * ld + d + h * HD, ld, Qs[0], warp * 16, ti.rows, dk, scale, scale);
    store_rows(dqkv + k0 * ld + 2 * d + h * HD, ld, Gs[0], warp * 16, ti.rows, dv, 1.f, 1.f);
}

// Deterministic reductions: column sums over rows (bias and LayerNorm parameter gradients) and the squared norm.
// Nothing uses atomics; every sum runs in an order fixed by the shapes alone, so results are bitwise reproducible.
#include "common.cuh"

// Column sums, first level: block (x, y) sums rows [y·chunk, (y+1)·chunk) of columns x·blockDim + tid, in row order,
// into partial[y, column]. With sum/mean/rstd given (LayerNorm), partialG gets Σ dy·x̂ with x̂ = (sum − μ)·rstd and
// partialB gets Σ dy; otherwise only partialB (SumRowsInto). Reads are coalesced along the columns.
// dy and sum are float or bf16 (partials always fp32).
template <typename T> __forceinline__ void column_sums_partial_t(const T* dy, const T* sum, const float* mean, const float* rstd,
    float* partialG, float* partialB, int rows, int width, int chunk)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= width) return;
    int r0 = blockIdx.y * chunk, r1 = min(rows, r0 + chunk);
    float g = 0.f, b = 0.f;
    for (int r = r0; r < r1; r++)
    {
        float v = to_f(dy[(i64)r * width + c]);
        b += v;
        if (sum) g = fmaf(v, (to_f(sum[(i64)r * width + c]) - mean[r]) * rstd[r], g);
    }
    partialB[(i64)blockIdx.y * width + c] = b;
    if (sum) partialG[(i64)blockIdx.y * width + c] = g;
}
extern "C" __global__ void column_sums_partial(const float* dy, const float* sum, const float* mean, const float* rstd,
    float* partialG, float* partialB, int rows, int width, int chunk)
{
    column_sums_partial_t(dy, sum, mean, rstd, partialG, partialB, rows, width, chunk);
}
extern "C" __global__ void column_sums_partial_bf16(const bf16* dy, const bf16* sum, const float* mean, const float* rstd,
    float* partialG, float* partialB, int rows, int width, int chunk)
{
    column_sums_partial_t(dy, sum, mean, rstd, partialG, partialB, rows, width, chunk);
}

// Second level: out[c] += Σ_chunks partial[k, c], chunks in order.
extern "C" __global__ void column_sums_finish(const float* partial, int chunks, int width, float* out)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= width) return;
    float s = 0.f;
    for (int k = 0; k < chunks; k++) s += partial[(i64)k * width + c];
    out[c] += s;
}

// Σ x² in double. Block b owns the fixed element range [b·8192, (b+1)·8192), so the partition does not depend on the
// grid; each x² is exact in double; the block's tree order is fixed by blockDim.
extern "C" __global__ void sum_of_squares_partial(const float* x, i64 n, double* partial)
{
    __shared__ double scratch[32];
    i64 start = (i64)blockIdx.x * 8192, end = start + 8192 < n ? start + 8192 : n;
    double s = 0.0;
    for (i64 i = start + threadIdx.x; i < end; i += blockDim.x)
    {
        double v = x[i];
        s = fma(v, v, s);
    }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// One block: total = Σ partial[k] (strided per thread, then the block tree).
extern "C" __global__ void sum_of_squares_finish(const double* partial, int count, double* total)
{
    __shared__ double scratch[32];
    double s = 0.0;
    for (int k = threadIdx.x; k < count; k += blockDim.x) s += partial[k];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) *total = s;
}

// ---- vectorized column sums (the backward pass's bias, dγ and dβ sums over 10⁴–10⁵ token rows) ----
// Block = 32 × 8 threads: threadIdx.x owns V consecutive columns (one 16-byte load per row), threadIdx.y is one of 8
// row lanes. Block (x, y) covers columns [x·32·V, (x+1)·32·V) and rows [y·chunk, (y+1)·chunk); lane t sums rows
// r0 + t, r0 + t + 8, ... in order, then the 8 lane sums are added in lane order through shared memory and written to
// partial[y, column]. Many rows in flight per SM is what the scalar kernel lacked. The order still depends on the
// shapes alone (deterministic, no atomics). width must be a multiple of V.
template <typename T, int V> __forceinline__ void column_sums_partial_v(const T* dy, const T* sum, const float* mean, const float* rstd,
    float* partialG, float* partialB, int rows, int width, int chunk)
{
    __shared__ float sb[8][V][32], sg[8][V][32];
    int c = (blockIdx.x * 32 + threadIdx.x) * V, lane = threadIdx.y;
    bool active = c < width;
    int r0 = blockIdx.y * chunk, r1 = min(rows, r0 + chunk);
    float b[V], g[V];
    for (int k = 0; k < V; k++) b[k] = g[k] = 0.f;
    if (active)
    {
        for (int r = r0 + lane; r < r1; r += 8)
        {
            float v[V];
            load_v<T, V>(dy + (i64)r * width + c, v);
            for (int k = 0; k < V; k++) b[k] += v[k];
            if (sum)
            {
                float s[V];
                load_v<T, V>(sum + (i64)r * width + c, s);
                float mu = mean[r], rs = rstd[r];
                for (int k = 0; k < V; k++) g[k] = fmaf(v[k], (s[k] - mu) * rs, g[k]);
            }
        }
    }
    for (int k = 0; k < V; k++) { sb[lane][k][threadIdx.x] = b[k]; sg[lane][k][threadIdx.x] = g[k]; }
    __syncthreads();
    if (lane != 0 || !active) return;
    for (int t = 1; t < 8; t++)
        for (int k = 0; k < V; k++) { b[k] += sb[t][k][threadIdx.x]; g[k] += sg[t][k][threadIdx.x]; }
    store_v<float, V == 8 ? 4 : V>(partialB + (i64)blockIdx.y * width + c, b);
    if (V == 8) store_v<float, 4>(partialB + (i64)blockIdx.y * width + c + 4, b + 4);
    if (sum)
    {
        store_v<float, V == 8 ? 4 : V>(partialG + (i64)blockIdx.y * width + c, g);
        if (V == 8) store_v<float, 4>(partialG + (i64)blockIdx.y * width + c + 4, g + 4);
    }
}
extern "C" __global__ void column_sums_partial_v4(const float* dy, const float* sum, const float* mean, const float* rstd,
    float* partialG, float* partialB, int rows, int width, int chunk)
{
    column_sums_partial_v<float, 4>(dy, sum, mean, rstd, partialG, partialB, rows, width, chunk);
}
extern "C" __global__ void column_sums_partial_bf16x8(const bf16* dy, const bf16* sum, const float* mean, const float* rstd,
    float* partialG, float* partialB, int rows, int width, int chunk)
{
    column_sums_partial_v<bf16, 8>(dy, sum, mean, rstd, partialG, partialB, rows, width, chunk);
}

// Second level for many chunks: block = 32 columns × 8 lanes; lane t adds chunks t, t + 8, ... in order, then the 8
// lanes in order; outB[c] += total (and outG likewise when partialG is given).
extern "C" __global__ void column_sums_finish_v(const float* partialB, const float* partialG, int chunks, int width, float* outB, float* outG)
{
    __shared__ float sb[8][32], sg[8][32];
    int c = blockIdx.x * 32 + threadIdx.x, lane = threadIdx.y;
    float b = 0.f, g = 0.f;
    if (c < width)
        for (int k = lane; k < chunks; k += 8)
        {
            b += partialB[(i64)k * width + c];
            if (partialG) g += partialG[(i64)k * width + c];
        }
    sb[lane][threadIdx.x] = b;
    sg[lane][threadIdx.x] = g;
    __syncthreads();
    if (lane != 0 || c >= width) return;
    for (int t = 1; t < 8; t++) { b += sb[t][threadIdx.x]; g += sg[t][threadIdx.x]; }
    outB[c] += b;
    if (partialG) outG[c] += g;
}

// ---- device-side scalars (no host wait inside a training step) ----
// Clipping decided on the device: total = Σx² from sum_of_squares_finish; norm = √total (IEEE double, as the host's
// Math.Sqrt); when norm > maxNorm, x ← x·(float)(maxNorm/norm) — the host path's Scale, bit for bit.
extern "C" __global__ void clip_by_norm(float* x, i64 n, const double* total, double maxNorm)
{
    double norm = sqrt(*total);
    if (!(norm > maxNorm && norm > 0.0)) return;
    float factor = (float)(maxNorm / norm);
    FOR_EACH(i, n) x[i] = x[i] * factor;
}

// One block: out = (Σ x in double) / n; threads sum strided elements, then the block tree (fixed order).
extern "C" __global__ void mean_to_double(const float* x, i64 n, double* out)
{
    __shared__ double scratch[32];
    double s = 0.0;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) s += (double)x[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) *out = n > 0 ? s / (double)n : __longlong_as_double(0x7ff8000000000000ll);
}

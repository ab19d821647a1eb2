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

// LayerNorm forward and the per-row part of its backward, for float or bf16 tensors: one warp per row (rows are
// d ≤ a few thousand wide), lane l owning columns l, l + 32, ... . Statistics always in fp32 with two passes (mean,
// then centred squares) as the CPU does; with bf16 tensors (the recipe's low-precision LayerNorm: bf16 inputs,
// weights and outputs, fp32 statistics) the stored sum is rounded to bf16 first and the statistics are those of the
// stored values, so the backward pass sees exactly what the forward normalised. The column sums of the backward
// (dγ, dβ) are in reduce.cu.
#include "common.cuh"
#include "layernorm_v.cuh"

// sum = x (+ residual); μ = mean(sum); rstd = 1/√(mean((sum − μ)²) + eps); y = (sum − μ)·rstd·γ + β.
// residual may be null; sum may alias x or residual (each element is read before it is written, by the same lane).
template <typename T> __forceinline__ void layernorm_forward_t(const T* x, const T* residual, const T* gamma, const T* beta,
    float eps, T* sum, T* y, float* mean, float* rstd, int rows, int d)
{
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;   // whole warps leave together
    i64 base = (i64)row * d;
    float s = 0.f;
    for (int c = lane; c < d; c += 32)
    {
        T stored = from_f<T>(residual ? to_f(x[base + c]) + to_f(residual[base + c]) : to_f(x[base + c]));
        sum[base + c] = stored;
        s += to_f(stored);
    }
    float mu = warp_sum(s) / d;
    float q = 0.f;
    for (int c = lane; c < d; c += 32)
    {
        float dv = to_f(sum[base + c]) - mu;
        q = fmaf(dv, dv, q);
    }
    float inv = 1.f / sqrtf(warp_sum(q) / d + eps);
    for (int c = lane; c < d; c += 32)
        y[base + c] = from_f<T>(fmaf((to_f(sum[base + c]) - mu) * inv, to_f(gamma[c]), to_f(beta[c])));
    if (lane == 0)
    {
        mean[row] = mu;
        rstd[row] = inv;
    }
}
extern "C" __global__ void layernorm_forward(const float* x, const float* residual, const float* gamma, const float* beta,
    float eps, float* sum, float* y, float* mean, float* rstd, int rows, int d)
{
    layernorm_forward_t(x, residual, gamma, beta, eps, sum, y, mean, rstd, rows, d);
}
extern "C" __global__ void layernorm_forward_bf16(const bf16* x, const bf16* residual, const bf16* gamma, const bf16* beta,
    float eps, bf16* sum, bf16* y, float* mean, float* rstd, int rows, int d)
{
    layernorm_forward_t(x, residual, gamma, beta, eps, sum, y, mean, rstd, rows, d);
}

// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) with x̂ = (sum − μ)·rstd and g = dy·γ; written, or added when accumulate ≠ 0.
// dx may alias dy: every lane reads its own columns of dy before writing the same columns of dx.
template <typename T> __forceinline__ void layernorm_backward_dx_t(const T* dy, const T* sum, const float* mean, const float* rstd,
    const T* gamma, T* dx, int rows, int d, int accumulate)
{
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    i64 base = (i64)row * d;
    float mu = mean[row], inv = rstd[row];
    float sg = 0.f, sgx = 0.f;
    for (int c = lane; c < d; c += 32)
    {
        float g = to_f(dy[base + c]) * to_f(gamma[c]);
        sg += g;
        sgx = fmaf(g, (to_f(sum[base + c]) - mu) * inv, sgx);
    }
    float meanG = warp_sum(sg) / d, meanGX = warp_sum(sgx) / d;
    for (int c = lane; c < d; c += 32)
    {
        float g = to_f(dy[base + c]) * to_f(gamma[c]);
        float xh = (to_f(sum[base + c]) - mu) * inv;
        float v = inv * (g - meanG - xh * meanGX);
        dx[base + c] = from_f<T>(accumulate ? to_f(dx[base + c]) + v : v);
    }
}
extern "C" __global__ void layernorm_backward_dx(const float* dy, const float* sum, const float* mean, const float* rstd,
    const float* gamma, float* dx, int rows, int d, int accumulate)
{
    layernorm_backward_dx_t(dy, sum, mean, rstd, gamma, dx, rows, d, accumulate);
}
extern "C" __global__ void layernorm_backward_dx_bf16(const bf16* dy, const bf16* sum, const float* mean, const float* rstd,
    const bf16* gamma, bf16* dx, int rows, int d, int accumulate)
{
    layernorm_backward_dx_t(dy, sum, mean, rstd, gamma, dx, rows, d, accumulate);
}

// ---- vectorized variants for the model's widths: d = 32·V·k with k ≤ K ----
// Same math and the same bf16 rounding of the stored sum as above; lane l owns the V consecutive columns
// (j·32 + l)·V .. +V for j < d/(32·V), read with 16-byte accesses and kept in registers between the passes (one read
// of each input). Only the order of the fp32 additions inside a lane differs from the scalar kernels.
// Drop: sum = dropout(x) + residual, with dropout(x) rounded to T first — exactly the unfused Dropout (dropout.cu)
// then LayerNorm, without the extra pass over x (MosaicBERT's attention output: LN(dropout(ctx·Woᵀ + bo) + x)).
template <typename T, int V, int K, bool Drop = false> __forceinline__ void layernorm_forward_v(const T* x, const T* residual, const T* gamma,
    const T* beta, float eps, T* sum, T* y, float* mean, float* rstd, int rows, int d,
    u64 key = 0, unsigned threshold = 0, float keepScale = 1.f, i64 offset = 0)
{
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    int parts = d / (32 * V);
    i64 base = (i64)row * d;
    float s[K][V];
    float acc = 0.f;
#pragma unroll
    for (int j = 0; j < K; j++)
    {
        if (j >= parts) break;
        int c = (j * 32 + lane) * V;
        float r[V];
        load_v<T, V>(x + base + c, s[j]);
        if constexpr (Drop)
            for (int k = 0; k < V; k++)
                s[j][k] = to_f(from_f<T>(__fmul_rn(s[j][k], dropout_factor(key, threshold, keepScale, offset + base + c + k))));
        if (residual)
        {
            load_v<T, V>(residual + base + c, r);
            for (int k = 0; k < V; k++) s[j][k] = to_f(from_f<T>(s[j][k] + r[k]));
        }
        if (sum != x || residual || Drop) store_v<T, V>(sum + base + c, s[j]);
        for (int k = 0; k < V; k++) acc += s[j][k];
    }
    layernorm_v_finish<T, V, K, false>(s, acc, parts, lane, row, base, d, eps, gamma, beta, y, mean, rstd, 0, 0, 1.f, 0);
}
extern "C" __global__ void layernorm_forward_v4(const float* x, const float* residual, const float* gamma, const float* beta,
    float eps, float* sum, float* y, float* mean, float* rstd, int rows, int d)
{
    layernorm_forward_v<float, 4, 8>(x, residual, gamma, beta, eps, sum, y, mean, rstd, rows, d);
}
extern "C" __global__ void layernorm_forward_bf16x8(const bf16* x, const bf16* residual, const bf16* gamma, const bf16* beta,
    float eps, bf16* sum, bf16* y, float* mean, float* rstd, int rows, int d)
{
    layernorm_forward_v<bf16, 8, 4>(x, residual, gamma, beta, eps, sum, y, mean, rstd, rows, d);
}

template <typename T, int V, int K> __forceinline__ void layernorm_backward_dx_v(const T* dy, const T* sum, const float* mean,
    const float* rstd, const T* gamma, T* dx, int rows, int d, int accumulate)
{
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    int parts = d / (32 * V);
    i64 base = (i64)row * d;
    float mu = mean[row], inv = rstd[row];
    float g[K][V], xh[K][V];
    float sg = 0.f, sgx = 0.f;
#pragma unroll
    for (int j = 0; j < K; j++)
    {
        if (j >= parts) break;
        int c = (j * 32 + lane) * V;
        float gm[V];
        load_v<T, V>(dy + base + c, g[j]);
        load_v<T, V>(sum + base + c, xh[j]);
        load_v<T, V>(gamma + c, gm);
        for (int k = 0; k < V; k++)
        {
            g[j][k] *= gm[k];
            xh[j][k] = (xh[j][k] - mu) * inv;
            sg += g[j][k];
            sgx = fmaf(g[j][k], xh[j][k], sgx);
        }
    }
    float meanG = warp_sum(sg) / d, meanGX = warp_sum(sgx) / d;
#pragma unroll
    for (int j = 0; j < K; j++)
    {
        if (j >= parts) break;
        int c = (j * 32 + lane) * V;
        float prev[V], out[V];
        if (accumulate) load_v<T, V>(dx + base + c, prev);
        for (int k = 0; k < V; k++)
        {
            float v = inv * (g[j][k] - meanG - xh[j][k] * meanGX);
            out[k] = accumulate ? prev[k] + v : v;
        }
        store_v<T, V>(dx + base + c, out);
    }
}
extern "C" __global__ void layernorm_backward_dx_v4(const float* dy, const float* sum, const float* mean, const float* rstd,
    const float* gamma, float* dx, int rows, int d, int accumulate)
{
    layernorm_backward_dx_v<float, 4, 8>(dy, sum, mean, rstd, gamma, dx, rows, d, accumulate);
}
extern "C" __global__ void layernorm_backward_dx_bf16x8(const bf16* dy, const bf16* sum, const float* mean, const float* rstd,
    const bf16* gamma, bf16* dx, int rows, int d, int accumulate)
{
    layernorm_backward_dx_v<bf16, 8, 4>(dy, sum, mean, rstd, gamma, dx, rows, d, accumulate);
}

extern "C" __global__ void layernorm_dropout_forward_v4(const float* x, const float* residual, const float* gamma, const float* beta,
    float eps, float* sum, float* y, float* mean, float* rstd, int rows, int d, u64 key, unsigned threshold, float keepScale, i64 offset)
{
    layernorm_forward_v<float, 4, 8, true>(x, residual, gamma, beta, eps, sum, y, mean, rstd, rows, d, key, threshold, keepScale, offset);
}
extern "C" __global__ void layernorm_dropout_forward_bf16x8(const bf16* x, const bf16* residual, const bf16* gamma, const bf16* beta,
    float eps, bf16* sum, bf16* y, float* mean, float* rstd, int rows, int d, u64 key, unsigned threshold, float keepScale, i64 offset)
{
    layernorm_forward_v<bf16, 8, 4, true>(x, residual, gamma, beta, eps, sum, y, mean, rstd, rows, d, key, threshold, keepScale, offset);
}

// LayerNorm forward and the per-row part of its backward: one warp per row (rows are d ≤ a few thousand wide), lane
// l owning columns l, l + 32, ... . Statistics in fp32 with two passes (mean, then centred squares) as the CPU does.
// The column sums of the backward (dγ, dβ) are in reduce.cu.
#include "common.cuh"

// sum = x (+ residual); μ = mean(sum); rstd = 1/√(mean((sum − μ)²) + eps); y = (sum − μ)·rstd·γ + β.
// residual may be null; sum may alias x or residual (each element is read before it is written, by the same lane).
extern "C" __global__ void layernorm_forward(const float* x, const float* residual, const float* gamma, const float* beta,
    float eps, float* sum, float* y, float* mean, float* rstd, int rows, int d)
{
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;   // whole warps leave together
    i64 base = (i64)row * d;
    float s = 0.f;
    for (int c = lane; c < d; c += 32)
    {
        float v = residual ? x[base + c] + residual[base + c] : x[base + c];
        sum[base + c] = v;
        s += v;
    }
    float mu = warp_sum(s) / d;
    float q = 0.f;
    for (int c = lane; c < d; c += 32)
    {
        float dv = sum[base + c] - mu;
        q = fmaf(dv, dv, q);
    }
    float inv = 1.f / sqrtf(warp_sum(q) / d + eps);
    for (int c = lane; c < d; c += 32)
        y[base + c] = fmaf((sum[base + c] - mu) * inv, gamma[c], beta[c]);
    if (lane == 0)
    {
        mean[row] = mu;
        rstd[row] = inv;
    }
}

// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) with x̂ = (sum − μ)·rstd and g = dy·γ; written, or added when accumulate ≠ 0.
// dx may alias dy: every lane reads its own columns of dy before writing the same columns of dx.
extern "C" __global__ void layernorm_backward_dx(const float* dy, const float* sum, const float* mean, const float* rstd,
    const float* gamma, float* dx, int rows, int d, int accumulate)
{
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    i64 base = (i64)row * d;
    float mu = mean[row], inv = rstd[row];
    float sg = 0.f, sgx = 0.f;
    for (int c = lane; c < d; c += 32)
    {
        float g = dy[base + c] * gamma[c];
        sg += g;
        sgx = fmaf(g, (sum[base + c] - mu) * inv, sgx);
    }
    float meanG = warp_sum(sg) / d, meanGX = warp_sum(sgx) / d;
    for (int c = lane; c < d; c += 32)
    {
        float g = dy[base + c] * gamma[c];
        float xh = (sum[base + c] - mu) * inv;
        float v = inv * (g - meanG - xh * meanGX);
        dx[base + c] = accumulate ? dx[base + c] + v : v;
    }
}

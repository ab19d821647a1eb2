// Softmax cross-entropy, one block per row: loss = logsumexp(x) − x[label], computed as max + log Σ exp(x − max);
// the gradient (optional) is softmax(x)·scale − scale·onehot, as exp(x − max)·(scale/Σ) then −scale at the label,
// the CPU's operations. Labels are validated on the host.
#include "common.cuh"

// logits fp32; gradient (optional) float or bf16.
template <typename G> __forceinline__ void cross_entropy_t(const float* logits, const int* labels, float* losses, G* gradient,
    float gradientScale, int rows, int v)
{
    __shared__ float scratch[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* x = logits + (i64)r * v;
    int label = labels[r];
    float xl = x[label];   // read before the barriers in block_sum: the gradient may overwrite the logits in place
    float m = NEG_INF;
    for (int c = threadIdx.x; c < v; c += blockDim.x) m = fmaxf(m, x[c]);
    m = block_max(m, scratch);
    float s = 0.f;
    for (int c = threadIdx.x; c < v; c += blockDim.x) s += expf(x[c] - m);
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) losses[r] = m + logf(s) - xl;
    if (gradient)
    {
        float k = gradientScale / s;
        G* g = gradient + (i64)r * v;
        for (int c = threadIdx.x; c < v; c += blockDim.x)
        {
            float e = expf(x[c] - m) * k;
            g[c] = from_f<G>(c == label ? e - gradientScale : e);
        }
    }
}
extern "C" __global__ void cross_entropy(const float* logits, const int* labels, float* losses, float* gradient,
    float gradientScale, int rows, int v)
{
    cross_entropy_t(logits, labels, losses, gradient, gradientScale, rows, v);
}
extern "C" __global__ void cross_entropy_bf16grad(const float* logits, const int* labels, float* losses, bf16* gradient,
    float gradientScale, int rows, int v)
{
    cross_entropy_t(logits, labels, losses, gradient, gradientScale, rows, v);
}

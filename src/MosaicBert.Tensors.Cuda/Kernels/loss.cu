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

// ---- vectorized variant (v a multiple of 4, rows 16-byte aligned): two passes over the row instead of three ----
// Pass 1 keeps a running (max m, Σ exp(x − m)) per thread, rescaling Σ when m grows (the online softmax), then the
// pairs are combined across the block in a fixed order: (m₁, s₁) ⊕ (m₂, s₂) = (M, s₁·e^(m₁−M) + s₂·e^(m₂−M)).
// Pass 2 writes the gradient as above. 16-byte loads; the same results as the scalar kernel up to fp32 rounding.
__forceinline__ void softmax_combine(float& m, float& s, float m2, float s2)
{
    float mx = fmaxf(m, m2);
    if (mx == NEG_INF) return;   // both empty
    s = s * expf(m - mx) + s2 * expf(m2 - mx);
    m = mx;
}

template <typename G> __forceinline__ void cross_entropy_v4_t(const float* logits, const int* labels, float* losses, G* gradient,
    float gradientScale, int rows, int v)
{
    __shared__ float sm[32], ss[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* x = logits + (i64)r * v;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    int label = labels[r], n4 = v >> 2;
    float xl = x[label];   // read before the barriers: the gradient may overwrite the logits in place
    float m = NEG_INF, s = 0.f;
    for (int c = threadIdx.x; c < n4; c += blockDim.x)
    {
        float4 q = x4[c];
        float mx = fmaxf(fmaxf(q.x, q.y), fmaxf(q.z, q.w));
        if (mx > m)
        {
            s = m == NEG_INF ? 0.f : s * expf(m - mx);
            m = mx;
        }
        s += (expf(q.x - m) + expf(q.y - m)) + (expf(q.z - m) + expf(q.w - m));
    }
    for (int o = 16; o > 0; o >>= 1) softmax_combine(m, s, __shfl_xor_sync(FULL_MASK, m, o), __shfl_xor_sync(FULL_MASK, s, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) { sm[warp] = m; ss[warp] = s; }
    __syncthreads();
    m = sm[0];
    s = ss[0];
    for (int w = 1; w < warps; w++) softmax_combine(m, s, sm[w], ss[w]);
    if (threadIdx.x == 0) losses[r] = m + logf(s) - xl;
    if (!gradient) return;
    float k = gradientScale / s;
    G* g = gradient + (i64)r * v;
    for (int c = threadIdx.x; c < n4; c += blockDim.x)
    {
        float4 q = x4[c];
        float e[4] = { expf(q.x - m) * k, expf(q.y - m) * k, expf(q.z - m) * k, expf(q.w - m) * k };
        int l = label - 4 * c;
        if (l >= 0 && l < 4) e[l] -= gradientScale;
        if constexpr (sizeof(G) == 2)
        {
            unsigned lo = (unsigned)from_f<bf16>(e[0]) | ((unsigned)from_f<bf16>(e[1]) << 16);
            unsigned hi = (unsigned)from_f<bf16>(e[2]) | ((unsigned)from_f<bf16>(e[3]) << 16);
            reinterpret_cast<uint2*>(g)[c] = make_uint2(lo, hi);
        }
        else reinterpret_cast<float4*>(g)[c] = make_float4(e[0], e[1], e[2], e[3]);
    }
}
extern "C" __global__ void cross_entropy_v4(const float* logits, const int* labels, float* losses, float* gradient,
    float gradientScale, int rows, int v)
{
    cross_entropy_v4_t(logits, labels, losses, gradient, gradientScale, rows, v);
}
extern "C" __global__ void cross_entropy_v4_bf16grad(const float* logits, const int* labels, float* losses, bf16* gradient,
    float gradientScale, int rows, int v)
{
    cross_entropy_v4_t(logits, labels, losses, gradient, gradientScale, rows, v);
}

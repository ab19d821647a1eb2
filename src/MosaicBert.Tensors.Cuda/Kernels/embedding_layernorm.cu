// Embeddings, LayerNorm and dropout in one pass (the encoder's input), for the model widths the vectorized LayerNorm
// of layernorm.cu handles (d = 32·V·k ≤ 1024, 16-byte aligned rows). Its own file: a new kernel family compiles on
// its own, so a problem here cannot keep layernorm.cu's kernels from loading.
#include "common.cuh"
#include "layernorm_v.cuh"

// sum[t] = word[ids[t]] + type[types[t]] (+ position[positions[t]]), added in that order in fp32 and rounded to T (as
// embedding_sum), then the LayerNorm of layernorm_forward_v, then y = dropout(y) over y's elements with counters
// offset + t·d + c (p = 0: threshold 0, every element kept, factor 1) — the unfused EmbeddingSum, LayerNorm and
// Dropout bit for bit, without writing and re-reading the sum and y in between. Indices are validated on the host.
template <typename T, int V, int K> __forceinline__ void embedding_layernorm_v(const int* ids, const int* types, const int* positions,
    const T* word, const T* type, const T* position, const T* gamma, const T* beta, float eps, T* sum, T* y, float* mean, float* rstd,
    int rows, int d, u64 key, unsigned threshold, float keepScale, i64 offset)
{
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    int parts = d / (32 * V);
    i64 base = (i64)row * d;
    const T* w = word + (i64)ids[row] * d;
    const T* ty = type + (i64)types[row] * d;
    const T* ps = position ? position + (i64)positions[row] * d : nullptr;
    float s[K][V];
    float acc = 0.f;
#pragma unroll
    for (int j = 0; j < K; j++)
    {
        if (j >= parts) break;
        int c = (j * 32 + lane) * V;
        float a[V], b[V], e[V];
        load_v<T, V>(w + c, a);
        load_v<T, V>(ty + c, b);
        if (ps) load_v<T, V>(ps + c, e);
        for (int k = 0; k < V; k++)
        {
            float v = a[k] + b[k];
            if (ps) v += e[k];
            s[j][k] = to_f(from_f<T>(v));
            acc += s[j][k];
        }
        store_v<T, V>(sum + base + c, s[j]);
    }
    layernorm_v_finish<T, V, K, true>(s, acc, parts, lane, row, base, d, eps, gamma, beta, y, mean, rstd, key, threshold, keepScale, offset);
}
extern "C" __global__ void embedding_layernorm_v4(const int* ids, const int* types, const int* positions, const float* word,
    const float* type, const float* position, const float* gamma, const float* beta, float eps, float* sum, float* y, float* mean,
    float* rstd, int rows, int d, u64 key, unsigned threshold, float keepScale, i64 offset)
{
    embedding_layernorm_v<float, 4, 8>(ids, types, positions, word, type, position, gamma, beta, eps, sum, y, mean, rstd, rows, d,
        key, threshold, keepScale, offset);
}
extern "C" __global__ void embedding_layernorm_bf16x8(const int* ids, const int* types, const int* positions, const bf16* word,
    const bf16* type, const bf16* position, const bf16* gamma, const bf16* beta, float eps, bf16* sum, bf16* y, float* mean,
    float* rstd, int rows, int d, u64 key, unsigned threshold, float keepScale, i64 offset)
{
    embedding_layernorm_v<bf16, 8, 4>(ids, types, positions, word, type, position, gamma, beta, eps, sum, y, mean, rstd, rows, d,
        key, threshold, keepScale, offset);
}

// The second half of the vectorized LayerNorm kernels (layernorm.cu, embedding_layernorm.cu): a warp holds one row,
// lane l the V consecutive columns (j·32 + l)·V .. +V for j < parts, in registers s[j] (the stored sum, as fp32).
#pragma once
#include "common.cuh"
#include "dropout_hash.cuh"

// From the lane's values and their lane total acc: μ and rstd = 1/√(mean((s − μ)²) + eps) over the warp (two passes,
// the mean then centred squares, as the CPU does); y = (s − μ)·rstd·γ + β, stored as T — with DropY, y rounded to T is
// then dropped out (counters offset + base + column; threshold 0 keeps every element); lane 0 stores μ and rstd.
template <typename T, int V, int K, bool DropY> __forceinline__ void layernorm_v_finish(const float (&s)[K][V], float acc, int parts,
    int lane, int row, i64 base, int d, float eps, const T* gamma, const T* beta, T* y, float* mean, float* rstd,
    u64 key, unsigned threshold, float keepScale, i64 offset)
{
    float mu = warp_sum(acc) / d;
    float q = 0.f;
#pragma unroll
    for (int j = 0; j < K; j++)
    {
        if (j >= parts) break;
        for (int k = 0; k < V; k++) { float dv = s[j][k] - mu; q = fmaf(dv, dv, q); }
    }
    float inv = 1.f / sqrtf(warp_sum(q) / d + eps);
#pragma unroll
    for (int j = 0; j < K; j++)
    {
        if (j >= parts) break;
        int c = (j * 32 + lane) * V;
        float gm[V], bt[V], out[V];
        load_v<T, V>(gamma + c, gm);
        load_v<T, V>(beta + c, bt);
        for (int k = 0; k < V; k++)
        {
            out[k] = fmaf((s[j][k] - mu) * inv, gm[k], bt[k]);
            if constexpr (DropY)
            {
                float ln = to_f(from_f<T>(out[k]));
                out[k] = threshold == 0 ? ln : __fmul_rn(ln, dropout_factor(key, threshold, keepScale, offset + base + c + k));
            }
        }
        store_v<T, V>(y + base + c, out);
    }
    if (lane == 0)
    {
        mean[row] = mu;
        rstd[row] = inv;
    }
}

// Inverted dropout with the backend-independent counter-based generator of MosaicBert.Tensors.Cpu.DropoutRandom,
// bit for bit (all arithmetic on unsigned 64-bit integers modulo 2^64):
//   mix(z)        = z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^ (z >> 31)
//   hash(seed, c) = mix(mix(seed) + (c + 1)·0x9E3779B97F4A7C15)     (key = mix(seed) comes from the host)
//   keep          ⟺ (hash >> 40) ≥ threshold = ceil(p·2^24)
// with c = (u64)(offset + i) for element i. mask = keep ? keepScale : 0 with keepScale = 1f/(1f − p) computed on the
// host in fp32, and y = x·mask (one IEEE multiply), so mask and y equal the CPU's exactly.
#include "common.cuh"

#include "dropout_hash.cuh"

// mask may be null (the backward pass then regenerates it with dropout_backward).
template <typename T> __forceinline__ void dropout_t(const T* x, T* y, float* mask, i64 n, u64 key, unsigned threshold, float keepScale, i64 offset)
{
    FOR_EACH(i, n)
    {
        float m = dropout_factor(key, threshold, keepScale, offset + i);
        float v = to_f(x[i]);   // read before writing: y may be x
        if (mask) mask[i] = m;
        y[i] = from_f<T>(__fmul_rn(v, m));
    }
}
extern "C" __global__ void dropout(const float* x, float* y, float* mask, i64 n, u64 key, unsigned threshold, float keepScale, i64 offset)
{
    dropout_t(x, y, mask, n, key, threshold, keepScale, offset);
}
extern "C" __global__ void dropout_bf16(const bf16* x, bf16* y, float* mask, i64 n, u64 key, unsigned threshold, float keepScale, i64 offset)
{
    dropout_t(x, y, mask, n, key, threshold, keepScale, offset);
}

// dx = dy·mask with the mask regenerated from the forward's counters: Multiply(dy, storedMask) bit for bit.
template <typename T> __forceinline__ void dropout_backward_t(const T* dy, T* dx, i64 n, u64 key, unsigned threshold, float keepScale, i64 offset)
{
    FOR_EACH(i, n) dx[i] = from_f<T>(__fmul_rn(to_f(dy[i]), dropout_factor(key, threshold, keepScale, offset + i)));
}
extern "C" __global__ void dropout_backward(const float* dy, float* dx, i64 n, u64 key, unsigned threshold, float keepScale, i64 offset)
{
    dropout_backward_t(dy, dx, n, key, threshold, keepScale, offset);
}
extern "C" __global__ void dropout_backward_bf16(const bf16* dy, bf16* dx, i64 n, u64 key, unsigned threshold, float keepScale, i64 offset)
{
    dropout_backward_t(dy, dx, n, key, threshold, keepScale, offset);
}

// Inverted dropout with the backend-independent counter-based generator of MosaicBert.Tensors.Cpu.DropoutRandom,
// bit for bit (all arithmetic on unsigned 64-bit integers modulo 2^64):
//   mix(z)        = z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^ (z >> 31)
//   hash(seed, c) = mix(mix(seed) + (c + 1)·0x9E3779B97F4A7C15)     (key = mix(seed) comes from the host)
//   keep          ⟺ (hash >> 40) ≥ threshold = ceil(p·2^24)
// with c = (u64)(offset + i) for element i. mask = keep ? keepScale : 0 with keepScale = 1f/(1f − p) computed on the
// host in fp32, and y = x·mask (one IEEE multiply), so mask and y equal the CPU's exactly.
#include "common.cuh"

__forceinline__ u64 splitmix64_mix(u64 z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

extern "C" __global__ void dropout(const float* x, float* y, float* mask, i64 n, u64 key, unsigned threshold, float keepScale, i64 offset)
{
    FOR_EACH(i, n)
    {
        u64 c = (u64)(offset + i);
        unsigned bits = (unsigned)(splitmix64_mix(key + (c + 1ull) * 0x9E3779B97F4A7C15ull) >> 40);
        float m = bits >= threshold ? keepScale : 0.f;
        float v = x[i];   // read before writing: y may be x
        mask[i] = m;
        y[i] = __fmul_rn(v, m);
    }
}

// The counter-based dropout generator shared by dropout.cu and the fused kernels (see dropout.cu for the formula).
#pragma once
#include "common.cuh"

__forceinline__ u64 splitmix64_mix(u64 z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__forceinline__ float dropout_factor(u64 key, unsigned threshold, float keepScale, i64 counter)
{
    u64 c = (u64)counter;
    unsigned bits = (unsigned)(splitmix64_mix(key + (c + 1ull) * 0x9E3779B97F4A7C15ull) >> 40);
    return bits >= threshold ? keepScale : 0.f;
}


// Shared helpers of the MosaicBERT kernels (compiled by NVRTC with -default-device: plain functions are device code).
#pragma once

typedef long long i64;
typedef unsigned long long u64;

// Grid-stride loop over [0, n) with a 64-bit index: any grid size covers any n, so the host picks the grid for
// occupancy, not for n.
#define FOR_EACH(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)(n); i += (i64)gridDim.x * blockDim.x)

#define FULL_MASK 0xffffffffu
// −∞ without math.h (NVRTC offers no standard headers).
#define NEG_INF __int_as_float(0xff800000)

__forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__forceinline__ double warp_sum(double v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum over the block, returned to every thread. blockDim.x must be a multiple of 32 (≤ 1024); scratch holds 32
// values. The order of additions depends only on blockDim, so the result is deterministic.
template <typename T>
__forceinline__ T block_sum(T v, T* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();                  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : (T)0;
    return warp_sum(v);
}

__forceinline__ float block_max(float v, float* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : NEG_INF;
    return warp_max(v);
}

__forceinline__ int iabs(int v) { return v < 0 ? -v : v; }

// The exact GELU: GELU(x) = x·Φ(x), Φ the standard normal CDF (normcdff: CUDA's accurate erfc-based CDF, a few ulp).
__forceinline__ float gelu_phi(float x) { return normcdff(x); }
// φ(x) = exp(−x²/2)/√(2π), so GELU′(x) = Φ(x) + x·φ(x).
__forceinline__ float normal_density(float x) { return 0.3989422804014327f * expf(-0.5f * x * x); }

// bfloat16 as its 16 bits (no cuda_bf16.h needed: NVRTC offers no standard headers here). to_f widens exactly;
// from_f<bf16> rounds to nearest even like the host's BFloat16.FromFloat (NaN kept, made quiet). Kernels are written
// once as templates over the stored type T (float or bf16) and compute in fp32; for T = float, to_f/from_f are the
// identity, so the fp32 instantiations perform exactly the operations of the former fp32-only kernels.
typedef unsigned short bf16;

__forceinline__ float to_f(float v) { return v; }
__forceinline__ float to_f(bf16 v) { return __uint_as_float(((unsigned)v) << 16); }

template <typename T> __forceinline__ T from_f(float v);
template <> __forceinline__ float from_f<float>(float v) { return v; }
template <> __forceinline__ bf16 from_f<bf16>(float v)
{
    unsigned u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
}

// Vector loads and stores of V consecutive elements widened to fp32: V = 8 bf16 or V = 4 float is one 16-byte access
// (the address must be 16-byte aligned); V = 1 is a plain element.
template <typename T, int V> __forceinline__ void load_v(const T* p, float* out)
{
    if constexpr (V == 8)
    {
        uint4 raw = *reinterpret_cast<const uint4*>(p);
        unsigned w[4] = { raw.x, raw.y, raw.z, raw.w };
        for (int k = 0; k < 4; k++)
        {
            out[2 * k] = __uint_as_float(w[k] << 16);
            out[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
        }
    }
    else if constexpr (V == 4)
    {
        float4 raw = *reinterpret_cast<const float4*>(p);
        out[0] = raw.x; out[1] = raw.y; out[2] = raw.z; out[3] = raw.w;
    }
    else out[0] = to_f(p[0]);
}

template <typename T, int V> __forceinline__ void store_v(T* p, const float* v)
{
    if constexpr (V == 8)
    {
        unsigned w[4];
        for (int k = 0; k < 4; k++) w[k] = (unsigned)from_f<bf16>(v[2 * k]) | ((unsigned)from_f<bf16>(v[2 * k + 1]) << 16);
        *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
    }
    else if constexpr (V == 4) *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    else p[0] = from_f<T>(v[0]);
}

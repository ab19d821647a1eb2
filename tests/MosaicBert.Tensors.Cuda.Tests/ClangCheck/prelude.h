// Declarations that let clang's CUDA front end (no CUDA toolkit: -nocudainc -nocudalib) type-check the kernels,
// which NVRTC compiles with -default-device and no headers. Device builtins the kernels call are declared here;
// their definitions do not matter for a -fsyntax-only check. Used by KernelSourceClangCheckTests.
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __host__ __attribute__((host))
#define __shared__ __attribute__((shared))
#define __forceinline__ __device__ __attribute__((always_inline)) inline
#include "__clang_cuda_builtin_vars.h"
struct uint4 { unsigned x, y, z, w; }; struct uint2 { unsigned x, y; }; struct float4 { float x, y, z, w; }; struct float2 { float x, y; };
struct int4 { int x, y, z, w; };
__device__ uint4 make_uint4(unsigned, unsigned, unsigned, unsigned); __device__ uint2 make_uint2(unsigned, unsigned); __device__ float4 make_float4(float, float, float, float);
__device__ float normcdff(float); __device__ float erff(float); __device__ float expf(float); __device__ float __expf(float); __device__ float sqrtf(float); __device__ float logf(float); __device__ float fmaxf(float, float);
__device__ float fminf(float, float); __device__ float fabsf(float); __device__ float fmaf(float, float, float); __device__ double fma(double, double, double); __device__ double sqrt(double); __device__ float rsqrtf(float);
__device__ float exp2f(float); __device__ float log2f(float); __device__ float __logf(float); __device__ float __frcp_rn(float);
__device__ float __fmul_rn(float, float); __device__ float __fadd_rn(float, float); __device__ float __fsub_rn(float, float); __device__ float __fdiv_rn(float, float); __device__ float __fsqrt_rn(float);
__device__ float __uint_as_float(unsigned); __device__ unsigned __float_as_uint(float); __device__ float __int_as_float(int); __device__ int __float_as_int(float); __device__ double __longlong_as_double(long long);
__device__ float __shfl_xor_sync(unsigned, float, int); __device__ double __shfl_xor_sync(unsigned, double, int); __device__ int __shfl_xor_sync(unsigned, int, int);
__device__ float __shfl_sync(unsigned, float, int); __device__ int __shfl_sync(unsigned, int, int); __device__ unsigned __shfl_sync(unsigned, unsigned, int);
__device__ unsigned atomicOr(unsigned*, unsigned); __device__ unsigned atomicAnd(unsigned*, unsigned); __device__ float atomicAdd(float*, float);
 __device__ int min(int, int); __device__ int max(int, int); __device__ long long min(long long, long long); __device__ long long max(long long, long long);
__device__ unsigned __ballot_sync(unsigned, int); __device__ int __popc(unsigned); __device__ unsigned __activemask();
#define __align__(n) __attribute__((aligned(n)))
__device__ float tanhf(float); __device__ void __syncwarp(unsigned mask = 0xffffffffu);
#define __launch_bounds__(...) __attribute__((launch_bounds(__VA_ARGS__)))

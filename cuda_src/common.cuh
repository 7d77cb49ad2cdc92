// common.cuh — the small header every cuda_src/*.cu shares (llm.c dev/cuda style).
// Host-side error checking for host-mode files, ceil_div, warp/block reductions, 16-byte vector access, and
// dtype conversion so that one templated kernel serves float, __half and __nv_bfloat16.
#pragma once
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>
#include <float.h>

#define CUDA_CHECK(call)                                                                   \
  do {                                                                                     \
    cudaError_t err_ = (call);                                                             \
    if (err_ != cudaSuccess) {                                                             \
      fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorName(err_), __FILE__,    \
              __LINE__, cudaGetErrorString(err_));                                         \
      return (int)err_;                                                                    \
    }                                                                                      \
  } while (0)

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }
__host__ __device__ constexpr long long ceil_div_ll(long long a, long long b) { return (a + b - 1) / b; }

// ---- dtype conversion: load as float, compute in float, store back in the storage type
template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// ---- warp-level reductions (full warp; every lane gets the result)
__device__ __forceinline__ float warp_reduce_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_reduce_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide reductions through shared memory (blockDim.x a multiple of 32, <= 1024). Every thread gets the result.
__device__ __forceinline__ float block_reduce_sum(float v) {
  __shared__ float shared[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = warp_reduce_sum(v);
  __syncthreads();  // shared[] may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = (lane < nwarps) ? shared[lane] : 0.f;
  return warp_reduce_sum(v);
}
__device__ __forceinline__ float block_reduce_max(float v) {
  __shared__ float shared[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = warp_reduce_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = (lane < nwarps) ? shared[lane] : -FLT_MAX;
  return warp_reduce_max(v);
}

// ---- 16-byte vector access: one LDG.128 / STG.128 per thread moves 4 floats or 8 halves
template <typename T> struct Vec16 { static constexpr int N = 16 / sizeof(T); };
__device__ __forceinline__ int4 load16(const void* p) { return *reinterpret_cast<const int4*>(p); }
__device__ __forceinline__ void store16(void* p, int4 v) { *reinterpret_cast<int4*>(p) = v; }

// ---- 2^x in one MUFU.EX2: PTX ex2.approx.ftz.f32 (an approximation of 2^x to a few ulp; .ftz flushes subnormal
// inputs and results to sign-preserving zero; 2^-inf = +0). exp2f() wraps the same MUFU in a denormal fix-up (an
// FSETP and two FMULs); a softmax whose p < 2^-126 rounds to 0 in fp16/bf16 anyway does not need it.
__device__ __forceinline__ float ex2_approx_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

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

#include <type_traits>

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

// =====================================================================================================================
// Inline PTX of the sm_80-era kernels (matmul v8/v8b, attention v2, quant_gemm v4-v7): every asm statement of those
// files is one of these helpers, so that one source serves nvcc and the CPU interpreter (harness/interp: its asm
// handlers run this very asm text with PTX ISA semantics; issue 28). Hopper's (mbarrier, TMA, wgmma) are in sm90.cuh.
__device__ __forceinline__ uint32_t smem_u32(const void* p) {  // cvta.to.shared: the 32-bit shared-window address
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16-byte global->shared copy that bypasses L1 (.cg). pred false: src-size 0, so nothing is read and the 16 bytes are
// zero-filled -- they are still written: a thread with nothing to copy must not issue one onto bytes another fills.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool pred) {
  const int n = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// all but the N most recent of this thread's commit groups have landed (other threads' copies need a barrier too)
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
// Four 8x8 b16 matrices; lane i supplies the address of row (i % 8) of matrix (i / 8); register j of lane l holds
// row l / 4, columns 2 (l % 4) and 2 (l % 4) + 1 of matrix j (.trans: the transposed matrix).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t saddr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(saddr)
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t saddr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(saddr)
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) { ldmatrix_x4(r, smem_u32(p)); }
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) { ldmatrix_x4_trans(r, smem_u32(p)); }
// D(16x8, f32) += A(16x16, row) * B(16x8, col), T = __half or __nv_bfloat16. Fragments (g = lane / 4, t = lane % 4):
//   a0 (g, 2t..2t+1) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..);  b0 (k 2t..2t+1, n g) b1 (k 2t+8.., n g);
//   d0,d1 (g, 2t..2t+1) d2,d3 (g+8, 2t..2t+1).
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  static_assert(std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value, "fp16 or bf16 operands");
  if constexpr (std::is_same<T, __half>::value) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  mma_16816<T>(d, a, b[0], b[1]);
}
// Any 3-input bitwise function in one LOP3: LUT = F(0xF0, 0xCC, 0xAA), e.g. (a & b) | c = 0xEA.
template <int LUT> __device__ __forceinline__ uint32_t lop3(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, %4;" : "=r"(d) : "r"(a), "r"(b), "r"(c), "n"(LUT));
  return d;
}

// matmul.cu — C[M,N] = A[M,K] @ B[K,N], all row-major and contiguous (llm.c dev/cuda style: numbered variants).
//
// Kernel arguments, every variant: (const T* A, const T* B, T* C, int M, int N, int K). Every variant is correct for
// any M, N, K >= 1 (edge tiles, K not a multiple of the tile, M = 1): loads outside the matrices read zero, stores
// outside C are skipped. Offsets are computed in size_t so M*K and K*N may exceed 2^31.
//
// Napkin math (anchors.md): 2*M*N*K FLOPs over (M*K + K*N + M*N)*s bytes. At 4096^3 fp32 that is 137 GFLOP over
// 201 MB: intensity ~680 FLOP/B, far above the H100 ridge, so every rung below is about feeding the FMA units from
// registers instead of memory. The expectations quoted per rung are the published SGEMM ladder (siboehm, A6000,
// % of cuBLAS at 4096^2): 1.3 -> 8.5 -> 12.8 -> 36.5 -> 68.7 -> 78.4 -> (autotuned 84.8) -> 93.7; the same untuned
// kernels reach ~71% of cuBLAS on an H100.
//
// Launch geometry (harness/families/_matmul_cuda.py): grid.x walks N-tiles, grid.y walks M-tiles, except v1.
// v9 (wgmma + TMA, sm_90a only, host-mode launcher) lives in matmul_sm90.cu.
#include "common.cuh"

// =====================================================================================================================
// v1 — naive. One thread per C element, 32x32 threads per block, threadIdx.x walks *rows* of C. Neighbouring lanes
// therefore read A elements K*4 bytes apart and write C elements N*4 bytes apart: every warp-wide load of A is 32
// separate transactions, and B is a broadcast. Each FMA needs two global loads (8 bytes per 2 FLOPs, 0.25 FLOP/B
// before caches). Expectation: ~1% of cuBLAS.
// Launch: grid (ceil(M/32), ceil(N/32)), block (32, 32).
__global__ void sgemm_v1_naive(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                               int M, int N, int K) {
  const int row = blockIdx.x * 32 + threadIdx.x;
  const int col = blockIdx.y * 32 + threadIdx.y;
  if (row >= M || col >= N) return;
  float acc = 0.f;
  for (int k = 0; k < K; ++k) acc += A[(size_t)row * K + k] * B[(size_t)k * N + col];
  C[(size_t)row * N + col] = acc;
}

// =====================================================================================================================
// v2 — global-memory coalescing. Same arithmetic, but consecutive threads of a warp now take consecutive *columns*
// of C: the warp's B loads and C stores become one 128-byte transaction each, and its A load is a broadcast. Same
// bytes requested, ~32x fewer transactions on B and C. Expectation: ~6.5x over v1 (8.5% of cuBLAS).
// Launch: grid (ceil(N/BS), ceil(M/BS)), block BS*BS (1-D).
template <int BS>
__global__ void __launch_bounds__(BS * BS) sgemm_v2_coalesced(const float* __restrict__ A, const float* __restrict__ B,
                                                            float* __restrict__ C, int M, int N, int K) {
  const int row = blockIdx.y * BS + threadIdx.x / BS;
  const int col = blockIdx.x * BS + threadIdx.x % BS;
  if (row >= M || col >= N) return;
  float acc = 0.f;
  for (int k = 0; k < K; ++k) acc += A[(size_t)row * K + k] * B[(size_t)k * N + col];
  C[(size_t)row * N + col] = acc;
}

// =====================================================================================================================
// v3 — shared-memory tiling. The block stages a BSxBS tile of A and of B in shared memory, then every thread runs BS
// FMAs out of shared memory. Each global element is now read by one thread instead of BS threads: global traffic
// drops by BS (32x), but each FMA still costs two shared-memory loads, so the kernel becomes shared-memory bound.
// Expectation: ~1.5x over v2 (12.8% of cuBLAS).
// Launch: grid (ceil(N/BS), ceil(M/BS)), block BS*BS (1-D).
template <int BS>
__global__ void __launch_bounds__(BS * BS) sgemm_v3_smem(const float* __restrict__ A, const float* __restrict__ B,
                                                       float* __restrict__ C, int M, int N, int K) {
  __shared__ float As[BS * BS];
  __shared__ float Bs[BS * BS];
  const int tr = threadIdx.x / BS, tc = threadIdx.x % BS;
  const int row = blockIdx.y * BS + tr, col = blockIdx.x * BS + tc;
  float acc = 0.f;
  for (int k0 = 0; k0 < K; k0 += BS) {
    // zero-filled edges: the FMA loop below then needs no bounds checks
    As[tr * BS + tc] = (row < M && k0 + tc < K) ? A[(size_t)row * K + k0 + tc] : 0.f;
    Bs[tr * BS + tc] = (k0 + tr < K && col < N) ? B[(size_t)(k0 + tr) * N + col] : 0.f;
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BS; ++kk) acc += As[tr * BS + kk] * Bs[kk * BS + tc];
    __syncthreads();  // the next iteration overwrites As/Bs
  }
  if (row < M && col < N) C[(size_t)row * N + col] = acc;
}

// =====================================================================================================================
// Shared helpers for the register-blocked rungs: a BMxBK tile of A and a BKxBN tile of B, cooperatively loaded by NT
// threads with zero-filled edges. Plain (scalar) version; As is row-major [BM][BK], Bs row-major [BK][BN].
template <int BM, int BN, int BK, int NT>
__device__ __forceinline__ void load_tiles_scalar(const float* __restrict__ A, const float* __restrict__ B,
                                                  float* As, float* Bs, int M, int N, int K, int bm, int bn, int k0) {
#pragma unroll
  for (int i = threadIdx.x; i < BM * BK; i += NT) {
    const int r = i / BK, c = i % BK;
    As[i] = (bm + r < M && k0 + c < K) ? A[(size_t)(bm + r) * K + k0 + c] : 0.f;
  }
#pragma unroll
  for (int i = threadIdx.x; i < BK * BN; i += NT) {
    const int r = i / BN, c = i % BN;
    Bs[i] = (k0 + r < K && bn + c < N) ? B[(size_t)(k0 + r) * N + bn + c] : 0.f;
  }
}

// =====================================================================================================================
// v4 — 1-D block tiling. Each thread computes TM results down one column of C. The B value (one shared load) is
// reused TM times from a register, so shared-memory loads per FMA drop from 2 to ~(1 + 1/TM). With BM=BN=64, BK=8,
// TM=8: 512 threads, 4 KB of shared memory, 8 accumulators per thread. Expectation: ~2.9x over v3 (36.5%).
// Launch: grid (ceil(N/BN), ceil(M/BM)), block BM*BN/TM.
template <int BM, int BN, int BK, int TM>
__global__ void __launch_bounds__(BM * BN / TM) sgemm_v4_blocktile1d(const float* __restrict__ A,
                                                                    const float* __restrict__ B, float* __restrict__ C,
                                                                    int M, int N, int K) {
  constexpr int NT = BM * BN / TM;
  static_assert(BM % TM == 0, "BM must be a multiple of TM");
  __shared__ float As[BM * BK];
  __shared__ float Bs[BK * BN];
  const int bm = blockIdx.y * BM, bn = blockIdx.x * BN;
  const int tcol = threadIdx.x % BN, trow = threadIdx.x / BN;  // this thread: rows trow*TM .. +TM-1, column tcol
  float acc[TM] = {0.f};
  for (int k0 = 0; k0 < K; k0 += BK) {
    load_tiles_scalar<BM, BN, BK, NT>(A, B, As, Bs, M, N, K, bm, bn, k0);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      const float b = Bs[kk * BN + tcol];
#pragma unroll
      for (int i = 0; i < TM; ++i) acc[i] += As[(trow * TM + i) * BK + kk] * b;
    }
    __syncthreads();
  }
  const int col = bn + tcol;
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int row = bm + trow * TM + i;
    if (row < M && col < N) C[(size_t)row * N + col] = acc[i];
  }
}

// =====================================================================================================================
// v5 — 2-D block tiling. Each thread computes a TMxTN sub-tile as an outer product: per k it loads TM values of A
// and TN values of B into registers and does TM*TN FMAs, so shared loads per FMA fall to (TM+TN)/(TM*TN) = 1/4 at
// 8x8. BM=BN=128, BK=8, TM=TN=8: 256 threads, 64 accumulators each, 8 KB shared. Expectation: ~1.9x over v4 (68.7%).
// Launch: grid (ceil(N/BN), ceil(M/BM)), block (BM/TM)*(BN/TN).
template <int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__((BM / TM) * (BN / TN)) sgemm_v5_blocktile2d(const float* __restrict__ A,
                                                                             const float* __restrict__ B,
                                                                             float* __restrict__ C, int M, int N,
                                                                             int K) {
  constexpr int NT = (BM / TM) * (BN / TN);
  __shared__ float As[BM * BK];
  __shared__ float Bs[BK * BN];
  const int bm = blockIdx.y * BM, bn = blockIdx.x * BN;
  const int tcol = threadIdx.x % (BN / TN), trow = threadIdx.x / (BN / TN);
  float acc[TM * TN] = {0.f};
  float regM[TM], regN[TN];
  for (int k0 = 0; k0 < K; k0 += BK) {
    load_tiles_scalar<BM, BN, BK, NT>(A, B, As, Bs, M, N, K, bm, bn, k0);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
#pragma unroll
      for (int i = 0; i < TM; ++i) regM[i] = As[(trow * TM + i) * BK + kk];
#pragma unroll
      for (int j = 0; j < TN; ++j) regN[j] = Bs[kk * BN + tcol * TN + j];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i * TN + j] += regM[i] * regN[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int row = bm + trow * TM + i;
    if (row >= M) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int col = bn + tcol * TN + j;
      if (col < N) C[(size_t)row * N + col] = acc[i * TN + j];
    }
  }
}

// =====================================================================================================================
// Vectorised tile loader (v6, v7). A is stored *transposed* in shared memory, AsT[BK][BM], so that the TM values a
// thread needs per k are contiguous (LDS.128) instead of BK floats apart. Global loads are float4 (LDG.128: 4x fewer
// load instructions) when the row length is a multiple of 4 and the base pointer 16-byte aligned; then a 4-float
// chunk starting at a multiple of 4 is either wholly inside the matrix or wholly outside. Otherwise (K or N not a
// multiple of 4, or a misaligned view) the same tile is loaded element by element.
template <int BM, int BN, int BK, int NT>
__device__ __forceinline__ void load_tiles_vec(const float* __restrict__ A, const float* __restrict__ B, float* AsT,
                                               float* Bs, int M, int N, int K, int bm, int bn, int k0, bool vecA,
                                               bool vecB) {
  static_assert(BK % 4 == 0 && BN % 4 == 0, "tiles must be multiples of 4 floats");
  if (vecA) {
#pragma unroll
    for (int i = threadIdx.x; i < BM * BK / 4; i += NT) {
      const int r = i / (BK / 4), c = (i % (BK / 4)) * 4;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (bm + r < M && k0 + c < K) v = *reinterpret_cast<const float4*>(&A[(size_t)(bm + r) * K + k0 + c]);
      AsT[(c + 0) * BM + r] = v.x;
      AsT[(c + 1) * BM + r] = v.y;
      AsT[(c + 2) * BM + r] = v.z;
      AsT[(c + 3) * BM + r] = v.w;
    }
  } else {
#pragma unroll
    for (int i = threadIdx.x; i < BM * BK; i += NT) {
      const int r = i / BK, c = i % BK;
      AsT[c * BM + r] = (bm + r < M && k0 + c < K) ? A[(size_t)(bm + r) * K + k0 + c] : 0.f;
    }
  }
  if (vecB) {
#pragma unroll
    for (int i = threadIdx.x; i < BK * BN / 4; i += NT) {
      const int r = i / (BN / 4), c = (i % (BN / 4)) * 4;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (k0 + r < K && bn + c < N) v = *reinterpret_cast<const float4*>(&B[(size_t)(k0 + r) * N + bn + c]);
      *reinterpret_cast<float4*>(&Bs[r * BN + c]) = v;
    }
  } else {
#pragma unroll
    for (int i = threadIdx.x; i < BK * BN; i += NT) {
      const int r = i / BN, c = i % BN;
      Bs[i] = (k0 + r < K && bn + c < N) ? B[(size_t)(k0 + r) * N + bn + c] : 0.f;
    }
  }
}

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Store 4 consecutive results of one C row: one STG.128 when allowed, else guarded scalar stores.
__device__ __forceinline__ void store4(float* __restrict__ C, int row, int col, int M, int N, bool vecC, float a,
                                      float b, float c, float d) {
  if (row >= M) return;
  float* p = C + (size_t)row * N + col;
  if (vecC && col < N) {  // N % 4 == 0 and col % 4 == 0: col < N implies col + 3 < N
    *reinterpret_cast<float4*>(p) = make_float4(a, b, c, d);
  } else {
    if (col + 0 < N) p[0] = a;
    if (col + 1 < N) p[1] = b;
    if (col + 2 < N) p[2] = c;
    if (col + 3 < N) p[3] = d;
  }
}

// =====================================================================================================================
// v6 — vectorised memory access. v5's arithmetic with 16-byte global loads/stores (when K, N are multiples of 4 and
// the pointers aligned; scalar fallback otherwise) and A transposed in shared memory so that both register fills
// are LDS.128: per k a thread issues TM/4 + TN/4 = 4 shared loads for 64 FMAs instead of 16. Expectation: ~1.15x
// over v5 (78.4% of cuBLAS).
// Launch: grid (ceil(N/BN), ceil(M/BM)), block (BM/TM)*(BN/TN).
template <int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__((BM / TM) * (BN / TN)) sgemm_v6_vectorized(const float* __restrict__ A,
                                                                            const float* __restrict__ B,
                                                                            float* __restrict__ C, int M, int N,
                                                                            int K) {
  constexpr int NT = (BM / TM) * (BN / TN);
  static_assert(TM % 4 == 0 && TN % 4 == 0 && BM % 4 == 0, "register tiles are read as float4");
  __shared__ __align__(16) float AsT[BK * BM];
  __shared__ __align__(16) float Bs[BK * BN];
  const int bm = blockIdx.y * BM, bn = blockIdx.x * BN;
  const int tcol = threadIdx.x % (BN / TN), trow = threadIdx.x / (BN / TN);
  const bool vecA = (K % 4 == 0) && aligned16(A);
  const bool vecB = (N % 4 == 0) && aligned16(B);
  const bool vecC = (N % 4 == 0) && aligned16(C);
  float acc[TM * TN] = {0.f};
  float regM[TM], regN[TN];
  for (int k0 = 0; k0 < K; k0 += BK) {
    load_tiles_vec<BM, BN, BK, NT>(A, B, AsT, Bs, M, N, K, bm, bn, k0, vecA, vecB);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
#pragma unroll
      for (int i = 0; i < TM; i += 4) {
        const float4 v = *reinterpret_cast<const float4*>(&AsT[kk * BM + trow * TM + i]);
        regM[i] = v.x; regM[i + 1] = v.y; regM[i + 2] = v.z; regM[i + 3] = v.w;
      }
#pragma unroll
      for (int j = 0; j < TN; j += 4) {
        const float4 v = *reinterpret_cast<const float4*>(&Bs[kk * BN + tcol * TN + j]);
        regN[j] = v.x; regN[j + 1] = v.y; regN[j + 2] = v.z; regN[j + 3] = v.w;
      }
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i * TN + j] += regM[i] * regN[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < TM; ++i) {
#pragma unroll
    for (int j = 0; j < TN; j += 4) {
      const float* a = &acc[i * TN + j];
      store4(C, bm + trow * TM + i, bn + tcol * TN + j, M, N, vecC, a[0], a[1], a[2], a[3]);
    }
  }
}

// =====================================================================================================================
// v7 — warp tiling. One more level of the hierarchy between the block tile and the thread tile: each warp owns a
// WMxWN tile of C, which it covers in WMITER x WNITER steps of a (WM/WMITER)x(WN/WNITER) sub-tile; a thread computes
// TMxTN of every sub-tile. The 32 lanes of a warp then read a compact 8x4 footprint of shared memory per k (fewer
// bank conflicts, better register-cache locality), and warps map onto the SM's 4 schedulers with independent work.
// BM=BN=128, BK=16, WM=WN=64, WNITER=4, TM=8, TN=4, 128 threads: 128 accumulators per thread, 16 KB shared.
// Expectation: ~1.2x over v6 (93.7% of cuBLAS on A6000).
// Launch: grid (ceil(N/BN), ceil(M/BM)), block NT.
template <int BM, int BN, int BK, int WM, int WN, int WNITER, int TM, int TN, int NT>
__global__ void __launch_bounds__(NT) sgemm_v7_warptile(const float* __restrict__ A, const float* __restrict__ B,
                                                        float* __restrict__ C, int M, int N, int K) {
  constexpr int NWARPS = NT / 32;
  static_assert((BM / WM) * (BN / WN) == NWARPS, "block tile must split into one warp tile per warp");
  constexpr int WMITER = (WM * WN) / (32 * TM * TN * WNITER);
  static_assert(WMITER >= 1 && WMITER * 32 * TM * TN * WNITER == WM * WN, "warp tile must split into lane tiles");
  constexpr int WSUBM = WM / WMITER, WSUBN = WN / WNITER;
  static_assert((WSUBM / TM) * (WSUBN / TN) == 32, "a warp sub-tile is 32 lane tiles");
  static_assert(TM % 4 == 0 && TN % 4 == 0, "register tiles are read as float4");

  __shared__ __align__(16) float AsT[BK * BM];
  __shared__ __align__(16) float Bs[BK * BN];
  const int bm = blockIdx.y * BM, bn = blockIdx.x * BN;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wrow = warp / (BN / WN), wcol = warp % (BN / WN);
  const int lrow = lane / (WSUBN / TN), lcol = lane % (WSUBN / TN);
  const bool vecA = (K % 4 == 0) && aligned16(A);
  const bool vecB = (N % 4 == 0) && aligned16(B);
  const bool vecC = (N % 4 == 0) && aligned16(C);

  float acc[WMITER * TM * WNITER * TN] = {0.f};
  float regM[WMITER * TM], regN[WNITER * TN];
  for (int k0 = 0; k0 < K; k0 += BK) {
    load_tiles_vec<BM, BN, BK, NT>(A, B, AsT, Bs, M, N, K, bm, bn, k0, vecA, vecB);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
#pragma unroll
      for (int wm = 0; wm < WMITER; ++wm)
#pragma unroll
        for (int i = 0; i < TM; i += 4) {
          const float4 v =
              *reinterpret_cast<const float4*>(&AsT[kk * BM + wrow * WM + wm * WSUBM + lrow * TM + i]);
          float* r = &regM[wm * TM + i];
          r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
        }
#pragma unroll
      for (int wn = 0; wn < WNITER; ++wn)
#pragma unroll
        for (int j = 0; j < TN; j += 4) {
          const float4 v = *reinterpret_cast<const float4*>(&Bs[kk * BN + wcol * WN + wn * WSUBN + lcol * TN + j]);
          float* r = &regN[wn * TN + j];
          r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
        }
#pragma unroll
      for (int i = 0; i < WMITER * TM; ++i)
#pragma unroll
        for (int j = 0; j < WNITER * TN; ++j) acc[i * (WNITER * TN) + j] += regM[i] * regN[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int wm = 0; wm < WMITER; ++wm)
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int row = bm + wrow * WM + wm * WSUBM + lrow * TM + i;
#pragma unroll
      for (int wn = 0; wn < WNITER; ++wn)
#pragma unroll
        for (int j = 0; j < TN; j += 4) {
          const int col = bn + wcol * WN + wn * WSUBN + lcol * TN + j;
          const float* a = &acc[(wm * TM + i) * (WNITER * TN) + wn * TN + j];
          store4(C, row, col, M, N, vecC, a[0], a[1], a[2], a[3]);
        }
    }
}

// =====================================================================================================================
// Tensor-core building blocks (sm_80+): cp.async, ldmatrix, mma.sync m16n8k16 with fp32 accumulation (common.cuh).
template <typename T> struct Pair;
template <> struct Pair<__half> { using type = __half2; };
template <> struct Pair<__nv_bfloat16> { using type = __nv_bfloat162; };

// =====================================================================================================================
// v8 — tensor cores (mma.sync m16n8k16, fp16/bf16 in, fp32 accumulate). The block computes a BMxBN tile with
// WARPS_M x WARPS_N warps; each warp owns a (BM/WARPS_M)x(BN/WARPS_N) tile = MI x NI mma tiles of 16x8. Per BK slice,
// tiles of A [BM][BK] and B [BK][BN] arrive in shared memory through a STAGES-deep cp.async ring (loads for slice
// kt+STAGES-1 fly while slice kt is multiplied), rows padded by 8 elements (16 bytes) so the 8 row addresses of each
// ldmatrix hit 8 distinct 16-byte bank groups. Fragments come from ldmatrix (A) and ldmatrix.trans (B is K-major in
// memory but the mma wants it column-wise). Edge tiles: 16-byte chunks outside A/B are zero-filled by cp.async
// (src-size 0); when K or N is not a multiple of 8 (or a pointer is not 16-byte aligned) chunks would straddle the
// edge, so the tile is loaded element by element instead. Stores are guarded (paired when N is even).
// At 128x128x32, 8 warps of 64x32: 64 fp32 accumulators per thread, 3 stages x 18.5 KB = 55.5 KB dynamic shared.
// Expectation: the SIMT ladder tops out near 50 TF/s fp32; mma.sync without TMA/wgmma typically reaches ~50-70% of
// cuBLAS bf16 on an H100 (~400-550 of ~790 TF/s at 4096^3), i.e. ~10x the best SGEMM.
// Launch: grid (ceil(N/BN), ceil(M/BM)), block 32*WARPS_M*WARPS_N,
//         dynamic shared STAGES*(BM*(BK+8) + BK*(BN+8))*sizeof(T) bytes.
template <typename T, int BM, int BN, int BK, int WARPS_M, int WARPS_N, int STAGES>
__global__ void __launch_bounds__(32 * WARPS_M * WARPS_N)
    hgemm_v8_mma(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C, int M, int N, int K) {
  constexpr int NT = 32 * WARPS_M * WARPS_N;
  constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;
  constexpr int MI = WM / 16, NI = WN / 8;
  constexpr int LDA = BK + 8, LDB = BN + 8;  // padded row strides (elements)
  constexpr int A_STAGE = BM * LDA, B_STAGE = BK * LDB;
  static_assert(WM % 16 == 0 && WN % 16 == 0 && BK % 16 == 0, "warp tile must be a multiple of 16x16, BK of 16");
  static_assert(STAGES >= 2, "need at least double buffering");
  static_assert((A_STAGE * sizeof(T)) % 16 == 0 && (B_STAGE * sizeof(T)) % 16 == 0, "stages must stay 16B aligned");

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* As = reinterpret_cast<T*>(smem_raw);
  T* Bs = As + STAGES * A_STAGE;

  const int bm = blockIdx.y * BM, bn = blockIdx.x * BN;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wm = warp / WARPS_N, wn = warp % WARPS_N;
  const bool async_ok = (K % 8 == 0) && (N % 8 == 0) && aligned16(A) && aligned16(B);
  const int KT = (K + BK - 1) / BK;

  // One BK slice into ring slot `s`. A: BM*BK/8 chunks of 8 elements; B: BK*BN/8 chunks.
  auto load_slice = [&](int s, int kt) {
    const int k0 = kt * BK;
    T* as = As + s * A_STAGE;
    T* bs = Bs + s * B_STAGE;
    if (async_ok) {
#pragma unroll
      for (int c = tid; c < BM * BK / 8; c += NT) {
        const int r = c / (BK / 8), k = (c % (BK / 8)) * 8;
        const bool ok = (bm + r < M) && (k0 + k < K);
        const T* src = ok ? &A[(size_t)(bm + r) * K + k0 + k] : A;  // a valid address even when not read
        cp_async_16(&as[r * LDA + k], src, ok);
      }
#pragma unroll
      for (int c = tid; c < BK * BN / 8; c += NT) {
        const int r = c / (BN / 8), n = (c % (BN / 8)) * 8;
        const bool ok = (k0 + r < K) && (bn + n < N);
        const T* src = ok ? &B[(size_t)(k0 + r) * N + bn + n] : B;
        cp_async_16(&bs[r * LDB + n], src, ok);
      }
    } else {  // synchronous element-wise path; the raw 16-bit patterns are copied, 0 is +0.0 in fp16 and bf16
      const uint16_t* A16 = reinterpret_cast<const uint16_t*>(A);
      const uint16_t* B16 = reinterpret_cast<const uint16_t*>(B);
      uint16_t* as16 = reinterpret_cast<uint16_t*>(as);
      uint16_t* bs16 = reinterpret_cast<uint16_t*>(bs);
#pragma unroll 4
      for (int i = tid; i < BM * BK; i += NT) {
        const int r = i / BK, k = i % BK;
        as16[r * LDA + k] = (bm + r < M && k0 + k < K) ? A16[(size_t)(bm + r) * K + k0 + k] : (uint16_t)0;
      }
#pragma unroll 4
      for (int i = tid; i < BK * BN; i += NT) {
        const int r = i / BN, n = i % BN;
        bs16[r * LDB + n] = (k0 + r < K && bn + n < N) ? B16[(size_t)(k0 + r) * N + bn + n] : (uint16_t)0;
      }
    }
  };

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  // Prologue: slices 0..STAGES-2 in flight, one commit group each (empty groups keep the count uniform).
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < KT) load_slice(s, s);
    cp_async_commit();
  }

  for (int kt = 0; kt < KT; ++kt) {
    // Committed so far: STAGES-1+kt groups, the oldest kt+1 of which hold slices 0..kt. Allowing STAGES-2 to be
    // pending therefore guarantees slice kt has landed (for this thread); the barrier makes every thread's copies
    // visible and also guarantees everyone has finished reading slot (kt-1)%STAGES, which is refilled next.
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    {
      const int nk = kt + STAGES - 1;
      if (nk < KT) load_slice(nk % STAGES, nk);
      cp_async_commit();
    }
    const T* as = As + (kt % STAGES) * A_STAGE;
    const T* bs = Bs + (kt % STAGES) * B_STAGE;
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      uint32_t afrag[MI][4], bfrag[NI][2];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        // lanes 0-15: rows 0-15 at k 0; lanes 16-31: rows 0-15 at k 8 -> a0..a3 of the m16k16 fragment
        const int r = wm * WM + mi * 16 + (lane % 16);
        ldmatrix_x4(afrag[mi], &as[r * LDA + kk + (lane / 16) * 8]);
      }
#pragma unroll
      for (int nj = 0; nj < NI / 2; ++nj) {
        // lanes 0-15: k rows 0-15 at n 0; lanes 16-31: k rows 0-15 at n 8 -> (b0,b1) of two n8 tiles
        uint32_t r[4];
        const int n = wn * WN + nj * 16 + (lane / 16) * 8;
        ldmatrix_x4_trans(r, &bs[(kk + (lane % 16)) * LDB + n]);
        bfrag[2 * nj][0] = r[0];
        bfrag[2 * nj][1] = r[1];
        bfrag[2 * nj + 1][0] = r[2];
        bfrag[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) mma_16816<T>(acc[mi][ni], afrag[mi], bfrag[ni]);
    }
  }
  cp_async_wait<0>();  // only empty groups can remain; drain them before exit

  // Epilogue: c0,c1 at (row g, cols 2q, 2q+1), c2,c3 at (row g+8, same cols); g = lane/4, q = lane%4.
  using T2 = typename Pair<T>::type;
  const bool pair_ok = (N % 2 == 0) && ((reinterpret_cast<uintptr_t>(C) & 3) == 0);
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < NI; ++ni) {
      const int col = bn + wn * WN + ni * 8 + (lane % 4) * 2;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = bm + wm * WM + mi * 16 + lane / 4 + h * 8;
        if (row >= M || col >= N) continue;
        T* p = C + (size_t)row * N + col;
        const float v0 = acc[mi][ni][2 * h], v1 = acc[mi][ni][2 * h + 1];
        if (pair_ok) {  // N even and col even: col < N implies col + 1 < N
          T2 v;
          v.x = from_float<T>(v0);
          v.y = from_float<T>(v1);
          *reinterpret_cast<T2*>(p) = v;
        } else {
          p[0] = from_float<T>(v0);
          if (col + 1 < N) p[1] = from_float<T>(v1);
        }
      }
    }
}

// =====================================================================================================================
// v8b — the portable (sm_80+) mma.sync rung, tuned (CPU-verified, GPU-pending). Same warp/fragment structure as v8
// (128x128x32, 8 warps of 64x32, ldmatrix + ldmatrix.trans, m16n8k16, fp32 accumulation); what changes:
// (1) XOR-swizzled shared memory instead of padded rows. ldmatrix reads 8 rows of 16 B per phase; A's 64-B rows put
//     rows r and r+2 on the same four banks (4-way conflict unpadded), B's 256-B rows put all 8 rows on the same
//     banks (8-way). Swizzle: A's 16-B chunk c of row r lives at c ^ ((r/2) % 4), B's at c ^ (r % 8): every 8-row
//     phase hits 8 distinct 16-B bank groups, like v8's padding, but a stage is 16 KB instead of 18.5 KB, so 4 stages
//     take 64 KB (v8: 3 stages, 55.5 KB) — one more slice in flight (~2.6 us of DRAM latency hidden at ~600 TF/s
//     needs ~3 slices of 128x128x32 per SM in flight) and still two CTAs per SM on an H100 (2 x 64 KB < 227 KB).
// (2) Grouped tile order (as the Triton kernels and v10): 1-D grid, GROUP_M = 8 tile rows per band, so the CTAs
//     resident at once share A and B panels in L2 (matters at 8192^3, where A + B = 256 MB >> 50 MB of L2).
// (3) The cp.async wait moves before the ldmatrix of the slice and the next slice's copies are issued right after the
//     barrier (as v8), with STAGES-2 = 2 groups allowed in flight.
// Expectation: v8's 241 TF/s (32% of cuBLAS) -> ~300-380 TF/s; the rest of the way to 70% needs larger warp tiles
// (64x64: 8 ldmatrix per 32 mma instead of 6 per 16) and an smem-staged, 16-B-store epilogue — template parameters
// here (BM, BN, WARPS_M, WARPS_N, STAGES) so a GPU session can sweep them.
// Launch: grid (ceil(M/BM) * ceil(N/BN)), block 32*WARPS_M*WARPS_N, dynamic shared STAGES*(BM+BN)*BK*sizeof(T) bytes.
// V8B_TILE_ORDER_BEGIN
constexpr int V8B_GROUP_M = 8;
__host__ __device__ __forceinline__ void v8b_tile_coords(int t, int tiles_m, int tiles_n, int& pm, int& pn) {
  const int per_group = V8B_GROUP_M * tiles_n;
  const int first_m = (t / per_group) * V8B_GROUP_M;
  const int rows = min(tiles_m - first_m, V8B_GROUP_M);
  const int r = t % per_group;
  pm = first_m + r % rows;
  pn = r / rows;
}
// V8B_TILE_ORDER_END

// Element offsets inside one stage. A [BM][BK], BK = 32: 4 chunks of 8 per row; B [BK][BN]: BN/8 chunks per row.
template <int BK> __device__ __forceinline__ int v8b_sw_a(int r, int k) {
  static_assert(BK == 32 || BK == 64, "A rows must be 4 or 8 16-byte chunks");
  constexpr int CH = BK / 8, ROWS_PER_128B = 8 / CH;  // rows sharing one 128-B bank line
  return r * BK + (((k >> 3) ^ ((r / ROWS_PER_128B) % CH)) << 3) + (k & 7);
}
template <int BN> __device__ __forceinline__ int v8b_sw_b(int r, int n) {
  static_assert(BN % 64 == 0, "B rows must be whole 128-B bank lines");
  return r * BN + (((n >> 3) ^ (r & 7)) << 3) + (n & 7);
}

// __launch_bounds__(..., 2): two CTAs per SM (<= 128 registers a thread at 256 threads); uncapped, ptxas takes 168 and
// the SM holds one CTA, so a CTA's barrier stalls would idle the tensor cores.
template <typename T, int BM, int BN, int BK, int WARPS_M, int WARPS_N, int STAGES>
__global__ void __launch_bounds__(32 * WARPS_M * WARPS_N, 2)
    hgemm_v8b_mma_swizzle(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C, int M, int N, int K) {
  constexpr int NT = 32 * WARPS_M * WARPS_N;
  constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;
  constexpr int MI = WM / 16, NI = WN / 8;
  constexpr int A_STAGE = BM * BK, B_STAGE = BK * BN;
  static_assert(WM % 16 == 0 && WN % 16 == 0 && BK % 16 == 0, "warp tile must be a multiple of 16x16, BK of 16");
  static_assert(STAGES >= 2, "need at least double buffering");

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* As = reinterpret_cast<T*>(smem_raw);
  T* Bs = As + STAGES * A_STAGE;

  const int tiles_m = (M + BM - 1) / BM, tiles_n = (N + BN - 1) / BN;
  int pm, pn;
  v8b_tile_coords(blockIdx.x, tiles_m, tiles_n, pm, pn);
  const int bm = pm * BM, bn = pn * BN;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wm = warp / WARPS_N, wn = warp % WARPS_N;
  const bool async_ok = (K % 8 == 0) && (N % 8 == 0) && aligned16(A) && aligned16(B);
  const int KT = (K + BK - 1) / BK;

  auto load_slice = [&](int s, int kt) {
    const int k0 = kt * BK;
    T* as = As + s * A_STAGE;
    T* bs = Bs + s * B_STAGE;
    if (async_ok) {
#pragma unroll
      for (int c = tid; c < BM * BK / 8; c += NT) {
        const int r = c / (BK / 8), k = (c % (BK / 8)) * 8;
        const bool ok = (bm + r < M) && (k0 + k < K);
        const T* src = ok ? &A[(size_t)(bm + r) * K + k0 + k] : A;
        cp_async_16(&as[v8b_sw_a<BK>(r, k)], src, ok);
      }
#pragma unroll
      for (int c = tid; c < BK * BN / 8; c += NT) {
        const int r = c / (BN / 8), n = (c % (BN / 8)) * 8;
        const bool ok = (k0 + r < K) && (bn + n < N);
        const T* src = ok ? &B[(size_t)(k0 + r) * N + bn + n] : B;
        cp_async_16(&bs[v8b_sw_b<BN>(r, n)], src, ok);
      }
    } else {  // element-wise fallback (K or N not a multiple of 8, or a misaligned view), same swizzled layout;
              // not unrolled: unrolled 4x it costs ~40 registers and spills under the 128-register cap
      const uint16_t* A16 = reinterpret_cast<const uint16_t*>(A);
      const uint16_t* B16 = reinterpret_cast<const uint16_t*>(B);
      uint16_t* as16 = reinterpret_cast<uint16_t*>(as);
      uint16_t* bs16 = reinterpret_cast<uint16_t*>(bs);
#pragma unroll 1
      for (int i = tid; i < BM * BK; i += NT) {
        const int r = i / BK, k = i % BK;
        as16[v8b_sw_a<BK>(r, k)] = (bm + r < M && k0 + k < K) ? A16[(size_t)(bm + r) * K + k0 + k] : (uint16_t)0;
      }
#pragma unroll 1
      for (int i = tid; i < BK * BN; i += NT) {
        const int r = i / BN, n = i % BN;
        bs16[v8b_sw_b<BN>(r, n)] = (k0 + r < K && bn + n < N) ? B16[(size_t)(k0 + r) * N + bn + n] : (uint16_t)0;
      }
    }
  };

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < KT) load_slice(s, s);
    cp_async_commit();
  }

  for (int kt = 0; kt < KT; ++kt) {
    // STAGES-1+kt groups committed, the oldest kt+1 hold slices 0..kt: STAGES-2 pending means slice kt landed; the
    // barrier publishes every thread's copies and retires all reads of slot (kt-1) % STAGES, refilled just below
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    {
      const int nk = kt + STAGES - 1;
      if (nk < KT) load_slice(nk % STAGES, nk);
      cp_async_commit();
    }
    const T* as = As + (kt % STAGES) * A_STAGE;
    const T* bs = Bs + (kt % STAGES) * B_STAGE;
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      uint32_t afrag[MI][4], bfrag[NI][2];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        const int r = wm * WM + mi * 16 + (lane % 16);
        ldmatrix_x4(afrag[mi], &as[v8b_sw_a<BK>(r, kk + (lane / 16) * 8)]);
      }
#pragma unroll
      for (int nj = 0; nj < NI / 2; ++nj) {
        uint32_t r[4];
        const int n = wn * WN + nj * 16 + (lane / 16) * 8;
        ldmatrix_x4_trans(r, &bs[v8b_sw_b<BN>(kk + (lane % 16), n)]);
        bfrag[2 * nj][0] = r[0];
        bfrag[2 * nj][1] = r[1];
        bfrag[2 * nj + 1][0] = r[2];
        bfrag[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) mma_16816<T>(acc[mi][ni], afrag[mi], bfrag[ni]);
    }
  }
  cp_async_wait<0>();

  using T2 = typename Pair<T>::type;
  const bool pair_ok = (N % 2 == 0) && ((reinterpret_cast<uintptr_t>(C) & 3) == 0);
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < NI; ++ni) {
      const int col = bn + wn * WN + ni * 8 + (lane % 4) * 2;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = bm + wm * WM + mi * 16 + lane / 4 + h * 8;
        if (row >= M || col >= N) continue;
        T* p = C + (size_t)row * N + col;
        const float v0 = acc[mi][ni][2 * h], v1 = acc[mi][ni][2 * h + 1];
        if (pair_ok) {
          T2 v;
          v.x = from_float<T>(v0);
          v.y = from_float<T>(v1);
          *reinterpret_cast<T2*>(p) = v;
        } else {
          p[0] = from_float<T>(v0);
          if (col + 1 < N) p[1] = from_float<T>(v1);
        }
      }
    }
}

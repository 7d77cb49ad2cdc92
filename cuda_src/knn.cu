// knn.cu — exact k-nearest-neighbour search, llm.c dev/cuda style: numbered variants, each one idea.
//
// Queries x [Q, D], base y [N, D] (row-major, contiguous), T = float | __half | __nv_bfloat16, distances in fp32:
// metric 0 = squared L2 (v1/v2 sum (x-y)^2, no norms; v3 uses |x|^2 + |y|^2 - 2 x.y with knn_sqnorms), 1 = -x.y,
// 2 = 1 - x.y * xinv * yinv where xinv/yinv are the fp32 inverse row norms from knn_norms (normalisation as a tiny
// pre-pass, applied inside the distance loop).
// Outputs: dist [Q, k] fp32 ascending, idx [Q, k] int64. Ties go to the LOWER index everywhere: selection works on
// 64-bit keys (orderable fp32 bits << 32 | index), so an unsigned compare orders by (distance, index).
//
// Napkin math (headline 1M x 128 fp32, 10k queries, k = 10): 2.56 TFLOP; the base is 512 MB. At the fp32 SIMT roof
// (~67 TF) that is ~38 ms = ~260k queries/s; a Q x N fp32 matrix would be 40 GB written + read (~25 ms more at
// 3.3 TB/s): fusing the selection is worth ~1.7x before any tensor-core work.
#include "common.cuh"
#include "topk.cuh"
#include <mma.h>

// ---- pre-pass for metric 2 (cos): one warp per row, fp32 inverse norm. Identical rows get identical bits (same
// lane order), which keeps exact ties exact.
template <typename T>
__device__ __forceinline__ float warp_row_sumsq(const T* __restrict__ a, int row, int D, int lane) {
  float s = 0.f;
  for (int i = lane; i < D; i += 32) { float v = to_float(a[(long long)row * D + i]); s = fmaf(v, v, s); }
  return warp_reduce_sum(s);
}

template <typename T>
__global__ void knn_norms(const T* __restrict__ a, int rows, int D, float* __restrict__ inv_norm) {
  int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (row >= rows) return;
  float s = warp_row_sumsq(a, row, D, lane);
  if (lane == 0) inv_norm[row] = s > 0.f ? 1.0f / sqrtf(s) : 1.0f;
}

// The same pre-pass for v3's metric 0 (l2 = |x|^2 + |y|^2 - 2 x.y): fp32 squared norms, same lane order.
template <typename T>
__global__ void knn_sqnorms(const T* __restrict__ a, int rows, int D, float* __restrict__ sq_norm) {
  int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (row >= rows) return;
  float s = warp_row_sumsq(a, row, D, lane);
  if (lane == 0) sq_norm[row] = s;
}

// ---- 64x64 distance tile shared by v1 and v2: 256 threads, each 4 x 4 (v1) / 2 x 4 (v2) outputs from smem.
__device__ __forceinline__ float finish(float acc, int metric, float xi, float yi) {
  return metric == 0 ? acc : (metric == 1 ? -acc : 1.0f - acc * xi * yi);
}

// =================================================================================================================
// v1 (twopass): a tiled SIMT distance kernel writes the whole Q x N fp32 matrix to scratch, then one block per query
// selects the k smallest. Simple and general (any k <= 1024) but every distance makes a 4-byte round trip through
// DRAM: 2*Q*N*4 extra bytes, 80 GB at the headline shape (the launcher processes queries in chunks so the scratch
// stays ~2 GB).
template <typename T>
__global__ void __launch_bounds__(256) knn_v1_dist(const T* __restrict__ x, const T* __restrict__ y,
                                                    const float* __restrict__ xinv, const float* __restrict__ yinv,
                                                    float* __restrict__ dist, int Q, int N, int D, int metric) {
  constexpr int BT = 64, BD = 16;
  __shared__ float xs[BD][BT + 1];
  __shared__ float ys[BD][BT + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int q0 = blockIdx.y * BT, n0 = blockIdx.x * BT;
  float acc[4][4] = {};
  for (int d0 = 0; d0 < D; d0 += BD) {
    for (int e = threadIdx.x; e < BT * BD; e += 256) {
      int r = e / BD, c = e % BD, d = d0 + c;
      xs[c][r] = (q0 + r < Q && d < D) ? to_float(x[(long long)(q0 + r) * D + d]) : 0.f;
      ys[c][r] = (n0 + r < N && d < D) ? to_float(y[(long long)(n0 + r) * D + d]) : 0.f;
    }
    __syncthreads();
    if (metric == 0) {
#pragma unroll
      for (int c = 0; c < BD; ++c)
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) { float t = xs[c][ty + 16 * i] - ys[c][tx + 16 * j]; acc[i][j] = fmaf(t, t, acc[i][j]); }
    } else {
#pragma unroll
      for (int c = 0; c < BD; ++c)
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(xs[c][ty + 16 * i], ys[c][tx + 16 * j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    int q = q0 + ty + 16 * i;
    if (q >= Q) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int n = n0 + tx + 16 * j;
      if (n < N) dist[(long long)q * N + n] = finish(acc[i][j], metric, metric == 2 ? xinv[q] : 0.f,
                                                     metric == 2 ? yinv[n] : 0.f);
    }
  }
}

// One block (256 threads) per query row of the scratch matrix. buf = [KB best | KB candidates], KB = max(256,
// next_pow2(k)) (dynamic shared memory, 2*KB*8 bytes <= 16 KB). Keys below the current k-th join the candidates
// (atomicAdd slot); when the next sweep could overflow them, the block bitonic-sorts all 2*KB keys and keeps the
// smallest KB. Threshold pruning makes most sweeps cost one compare per distance.
__global__ void __launch_bounds__(256) knn_v1_select(const float* __restrict__ dist, int N, int k, int KB,
                                                      float* __restrict__ out_d, long long* __restrict__ out_i) {
  extern __shared__ unsigned long long buf[];
  __shared__ int cnt;
  __shared__ unsigned long long kth;
  const float* row = dist + (long long)blockIdx.x * N;
  for (int i = threadIdx.x; i < 2 * KB; i += blockDim.x) buf[i] = EMPTY_KEY;
  if (threadIdx.x == 0) { cnt = 0; kth = EMPTY_KEY; }
  __syncthreads();
  for (int base = 0; base < N; base += blockDim.x) {
    int n = base + threadIdx.x;
    unsigned long long key = n < N ? pack_key(row[n], n) : EMPTY_KEY;
    if (key < kth) buf[KB + atomicAdd(&cnt, 1)] = key;
    __syncthreads();
    bool flush = cnt > KB - (int)blockDim.x;  // the next sweep might not fit
    __syncthreads();
    if (flush) {
      bitonic_sort<true>(buf, 2 * KB, threadIdx.x, blockDim.x);
      for (int i = KB + threadIdx.x; i < 2 * KB; i += blockDim.x) buf[i] = EMPTY_KEY;
      if (threadIdx.x == 0) { cnt = 0; kth = buf[k - 1]; }
      __syncthreads();
    }
  }
  bitonic_sort<true>(buf, 2 * KB, threadIdx.x, blockDim.x);
  for (int j = threadIdx.x; j < k; j += blockDim.x) {
    out_d[(long long)blockIdx.x * k + j] = key_dist(buf[j]);
    out_i[(long long)blockIdx.x * k + j] = key_idx(buf[j]);
  }
}

// v3's exact l2 finish for one query (called by all 32 lanes of its warp). The list holds the kc best keys by the
// expansion |x|^2 + |y|^2 - 2 x.y (the selection ran with threshold rank kc, not k). Steps: sort; last = the kc-th
// expansion distance (every row never kept has one >= last); each lane recomputes exact fp32 distances sum (x-y)^2
// for candidates lane, lane+32, ... (x from the shared query tile, y rows from global memory: kc*D*sizeof(T) bytes
// per query, ~0.2% of the tile traffic at k = 10); sort again by (exact distance, index) and write the k best.
// Certificate (kernels.knn_search.expansion_error with u_prod = 0, no centring): with nx = |x|, dk the exact
// k-th, Y = nx + sqrt(dk), E = 2 g (nx + Y)^2, g = (D+4) 2^-23: last - E > dk (1+g) proves that no row outside
// the candidates reaches (or ties) the k-th; ok[q] = 0 sends the query to the launcher's direct-difference pass.
// (__noinline__: inlined into knn_v3_tc<__half,64>, ptxas spilled 4 B at sm_80; called once per query at the end)
template <int KB, typename T>
__device__ __noinline__ void warp_rerank_l2(unsigned long long* list, int kc, int k, int lane, const T* xs_row,
                                               const T* __restrict__ y, int N, int D, float xnorm2,
                                               float* __restrict__ out_d, long long* __restrict__ out_i,
                                               int* __restrict__ ok) {
  bitonic_sort<false>(list, 2 * KB, lane, 32);
  const unsigned long long last_key = list[kc - 1];
  for (int j = lane; j < 2 * KB; j += 32) {
    unsigned long long key = EMPTY_KEY;
    if (j < kc && list[j] != EMPTY_KEY) {
      const int n = (int)key_idx(list[j]);
      const T* yr = y + (long long)n * D;
      float acc = 0.f;
#pragma unroll 4
      for (int d = 0; d < D; ++d) { float t = to_float(xs_row[d]) - to_float(yr[d]); acc = fmaf(t, t, acc); }
      key = pack_key(acc, n);
    }
    __syncwarp();  // every lane has read list[] before any lane overwrites its slots
    list[j] = key;
  }
  bitonic_sort<false>(list, 2 * KB, lane, 32);
  for (int j = lane; j < k; j += 32) {
    out_d[j] = key_dist(list[j]);
    out_i[j] = key_idx(list[j]);
  }
  if (lane == 0) {
    int certified = 1;
    if (last_key != EMPTY_KEY && kc < N) {  // fewer than kc keys kept means every row was a candidate
      const float g = (float)(D + 4) * 1.1920929e-7f;  // (D+4) * 2^-23
      const float dk = fmaxf(key_dist(list[k - 1]), 0.f), nx = sqrtf(fmaxf(xnorm2, 0.f));
      const float yb = nx + sqrtf(dk), e = 2.f * g * (nx + yb) * (nx + yb);
      certified = key_dist(last_key) - e > dk * (1.f + g);
    }
    *ok = certified;
  }
  __syncwarp();
}

// =================================================================================================================
// v2 (fused): the same SIMT distance tile (32 queries x 64 base rows per step) lands in shared memory instead of
// DRAM, and each warp selects for 4 queries right away: lanes compare two distances each with the query's k-th key,
// __ballot_sync + __popc give each survivor its slot in the query's candidate list (no atomics), and when the next
// tile could overflow the list the warp bitonic-sorts [best | candidates] (2*KB keys) in shared memory. Removes the
// 2*Q*N*4 scratch bytes of v1 (~1.7x at the headline by the napkin math above). k <= KB <= 128: the per-query lists
// take 32 * 2 * KB * 8 bytes = 64 KB of shared memory at KB = 128.
template <typename T, int KB>
__global__ void __launch_bounds__(256) knn_v2_fused(const T* __restrict__ x, const T* __restrict__ y,
                                                     const float* __restrict__ xinv, const float* __restrict__ yinv,
                                                     float* __restrict__ out_d, long long* __restrict__ out_i,
                                                     int Q, int N, int D, int k, int metric) {
  constexpr int BQ = 32, BN = 64, BD = 32;
  static_assert(KB >= BN, "a whole tile of candidates must fit the list");
  extern __shared__ unsigned long long smem[];
  unsigned long long* lists = smem;                   // [BQ][2*KB]
  float* xs = reinterpret_cast<float*>(smem + BQ * 2 * KB);  // [BD][BQ+1]
  float* ys = xs + BD * (BQ + 1);                    // [BD][BN+1]
  float* ds = ys + BD * (BN + 1);                    // [BQ][BN+1]
  __shared__ int cnt[BQ];
  __shared__ unsigned long long kth[BQ];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int tx = tid % 16, ty = tid / 16;
  const int q0 = blockIdx.x * BQ;
  for (int i = tid; i < BQ * 2 * KB; i += 256) lists[i] = EMPTY_KEY;
  if (tid < BQ) { cnt[tid] = 0; kth[tid] = EMPTY_KEY; }
  __syncthreads();

  for (int n0 = 0; n0 < N; n0 += BN) {
    float acc[2][4] = {};
    for (int d0 = 0; d0 < D; d0 += BD) {
      for (int e = tid; e < BQ * BD; e += 256) {
        int r = e / BD, c = e % BD, d = d0 + c;
        xs[c * (BQ + 1) + r] = (q0 + r < Q && d < D) ? to_float(x[(long long)(q0 + r) * D + d]) : 0.f;
      }
      for (int e = tid; e < BN * BD; e += 256) {
        int r = e / BD, c = e % BD, d = d0 + c;
        ys[c * (BN + 1) + r] = (n0 + r < N && d < D) ? to_float(y[(long long)(n0 + r) * D + d]) : 0.f;
      }
      __syncthreads();
      if (metric == 0) {
#pragma unroll 8
        for (int c = 0; c < BD; ++c) {
          float a0 = xs[c * (BQ + 1) + ty], a1 = xs[c * (BQ + 1) + ty + 16];
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            float b = ys[c * (BN + 1) + tx + 16 * j], t0 = a0 - b, t1 = a1 - b;
            acc[0][j] = fmaf(t0, t0, acc[0][j]);
            acc[1][j] = fmaf(t1, t1, acc[1][j]);
          }
        }
      } else {
#pragma unroll 8
        for (int c = 0; c < BD; ++c) {
          float a0 = xs[c * (BQ + 1) + ty], a1 = xs[c * (BQ + 1) + ty + 16];
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            float b = ys[c * (BN + 1) + tx + 16 * j];
            acc[0][j] = fmaf(a0, b, acc[0][j]);
            acc[1][j] = fmaf(a1, b, acc[1][j]);
          }
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      int ql = ty + 16 * i, q = q0 + ql;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        int n = n0 + tx + 16 * j;
        float xi = (metric == 2 && q < Q) ? xinv[q] : 0.f, yi = (metric == 2 && n < N) ? yinv[n] : 0.f;
        ds[ql * (BN + 1) + tx + 16 * j] = finish(acc[i][j], metric, xi, yi);
      }
    }
    __syncthreads();
    // warp-level selection: warp w owns queries 4w..4w+3 (lists, cnt and kth are private to it: __syncwarp only)
    for (int qq = 0; qq < BQ / 8; ++qq) {
      const int ql = warp * (BQ / 8) + qq;
      if (q0 + ql >= Q) break;
      const float* drow = ds + ql * (BN + 1);
      warp_select_tile<KB, BN>(lists + ql * 2 * KB, cnt[ql], kth[ql], [&](int nl) { return drow[nl]; }, n0, N, k,
                               lane);
    }
    __syncthreads();  // ds is rewritten by the next tile
  }
  for (int qq = 0; qq < BQ / 8; ++qq) {
    const int ql = warp * (BQ / 8) + qq, q = q0 + ql;
    if (q >= Q) break;
    warp_select_finish<KB>(lists + ql * 2 * KB, k, lane, out_d + (long long)q * k, out_i + (long long)q * k);
  }
}

// =================================================================================================================
// v3 (tc): x.y^T on tensor cores for fp16/bf16 inputs. Per block 32 queries, 256 threads = 8 warps; the block walks
// the base 64 rows at a time, each warp computes one 16x16 dot-product fragment with WMMA (16x16x16, fp16/bf16 in,
// fp32 accumulate; bf16 needs sm_80) and stores it to shared memory, and the SAME warp selection as v2
// (warp_select_tile) consumes the 32x64 tile, turning dot products into distances as it reads them with norms from
// a pre-pass: l2 = |x|^2 + |y|^2 - 2 x.y (knn_sqnorms), ip = -x.y, cos = 1 - x.y * xinv * yinv (knn_norms). The
// query tile stays in shared memory for the whole kernel (D zero-padded to a multiple of 16: D <= 1024); the base
// tile is staged 64 columns at a time (16-byte loads when D % 8 == 0, rows >= N and columns >= D zero-filled).
// What it should change: the distance math moves from fp32 FMA (v2) to HMMA, ~16x the FLOP/clk (H100: ~990 vs ~67
// TFLOP/s dense), so the 2QND FLOPs stop mattering and the selection (one pack_key + compare + ballot per distance,
// plus the list sorts) becomes the bottleneck; l2 via norms also drops v2's per-element subtract. Accuracy: fp16
// and bf16 products are exact in fp32, so only the fp32 accumulation rounds (the check's tol_q); on the 1/8-grid
// data (dups=1) every distance is exact and exact ties still go to the lower index.
// Exactness (l2): the expansion cancels against |x|^2 (offset data: ~1000 per coordinate loses the neighbours), so
// the selection keeps kc = k + margin candidates (threshold rank kc) and warp_rerank_l2 ranks them by exact
// differences and certifies each query; the launcher re-runs refused queries with v2. What it should change: the
// same tensor-core speed with v2's exactness, at kc*D extra loads per query.
template <typename T, int KB>
__global__ void __launch_bounds__(256) knn_v3_tc(const T* __restrict__ x, const T* __restrict__ y,
                                                  const float* __restrict__ xnorm, const float* __restrict__ ynorm,
                                                  float* __restrict__ out_d, long long* __restrict__ out_i,
                                                  int* __restrict__ ok, int Q, int N, int D, int k, int kc,
                                                  int metric, int vec) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  constexpr int BQ = 32, BN = 64, BD = 64;               // query tile, base tile, base-tile depth per stage
  constexpr int LDY = BD + 8, LDD = BN + 4;              // padded strides (elements): 16-byte multiples
  static_assert(KB >= BN, "a whole tile of candidates must fit the list");
  const int Dp = (D + 15) & ~15, LDX = Dp + 8;           // D rounded up to the MMA depth
  extern __shared__ __align__(32) unsigned char v3_smem[];  // WMMA pointers need 32 B
  unsigned long long* lists = reinterpret_cast<unsigned long long*>(v3_smem);  // [BQ][2*KB]
  T* xs = reinterpret_cast<T*>(lists + BQ * 2 * KB);    // [BQ][LDX]  queries, whole (padded) depth
  T* ys = xs + BQ * LDX;                                 // [BN][LDY]  base rows, one BD-column stage
  float* ds = reinterpret_cast<float*>(ys + BN * LDY);   // [BQ][LDD]  dot products of the tile
  float* xn = ds + BQ * LDD;                             // [BQ]       query norm (l2: |x|^2, cos: 1/|x|)
  float* yn = xn + BQ;                                   // [BN]       base norm of the tile's rows
  __shared__ int cnt[BQ];
  __shared__ unsigned long long kth[BQ];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp >> 2, wn = warp & 3;               // this warp's 16x16 fragment of the 32x64 tile
  const int q0 = blockIdx.x * BQ;
  {  // the launcher's shared-memory size must cover the layout above (a mismatch would corrupt silently)
    unsigned dyn;
    asm volatile("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dyn));
    const unsigned need = BQ * 2 * KB * 8 + (BQ * LDX + BN * LDY) * (int)sizeof(T) + (BQ * LDD + BQ + BN) * 4;
    if (dyn < need) __trap();
  }
  const T zero = from_float<T>(0.f);
  for (int i = tid; i < BQ * 2 * KB; i += 256) lists[i] = EMPTY_KEY;
  if (tid < BQ) {
    cnt[tid] = 0;
    kth[tid] = EMPTY_KEY;
    xn[tid] = (metric != 1 && q0 + tid < Q) ? xnorm[q0 + tid] : 0.f;
  }
  // query tile: rows >= Q and columns D..Dp-1 are zeros
  if (vec) {  // D % 8 == 0 and 16-byte aligned rows: 8 elements per load
    for (int e = tid; e < BQ * (Dp / 8); e += 256) {
      int r = e / (Dp / 8), d = 8 * (e % (Dp / 8));
      int4 v = make_int4(0, 0, 0, 0);
      if (q0 + r < Q && d < D) v = load16(x + (long long)(q0 + r) * D + d);
      store16(xs + r * LDX + d, v);
    }
  } else {
    for (int e = tid; e < BQ * Dp; e += 256) {
      int r = e / Dp, d = e % Dp;
      xs[r * LDX + d] = (q0 + r < Q && d < D) ? x[(long long)(q0 + r) * D + d] : zero;
    }
  }

  for (int n0 = 0; n0 < N; n0 += BN) {
    if (tid < BN) yn[tid] = (metric != 1 && n0 + tid < N) ? ynorm[n0 + tid] : 0.f;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.f);
    for (int d0 = 0; d0 < Dp; d0 += BD) {
      // base stage: rows n0..n0+BN-1, columns d0..d0+BD-1 (zeros past N and D)
      if (vec) {
        for (int e = tid; e < BN * (BD / 8); e += 256) {
          int r = e / (BD / 8), c = 8 * (e % (BD / 8)), d = d0 + c;
          int4 v = make_int4(0, 0, 0, 0);
          if (n0 + r < N && d < D) v = load16(y + (long long)(n0 + r) * D + d);
          store16(ys + r * LDY + c, v);
        }
      } else {
        for (int e = tid; e < BN * BD; e += 256) {
          int r = e / BD, c = e % BD, d = d0 + c;
          ys[r * LDY + c] = (n0 + r < N && d < D) ? y[(long long)(n0 + r) * D + d] : zero;
        }
      }
      __syncthreads();  // (first stage: also the query tile, xn, yn and the cleared lists)
      const int kend = min(BD, Dp - d0);
      for (int kk = 0; kk < kend; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;  // x[q][d]
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;  // y^T[d][n] = ys[n][d]
        wmma::load_matrix_sync(a, xs + (16 * wm) * LDX + d0 + kk, LDX);
        wmma::load_matrix_sync(b, ys + (16 * wn) * LDY + kk, LDY);
        wmma::mma_sync(acc, a, b, acc);
      }
      if (d0 + BD < Dp) __syncthreads();  // ys is refilled by the next stage
    }
    // ds was last read by the previous tile's selection, which ended in a barrier
    wmma::store_matrix_sync(ds + (16 * wm) * LDD + 16 * wn, acc, LDD, wmma::mem_row_major);
    __syncthreads();
    // warp-level selection exactly as v2: warp w owns queries 4w..4w+3; distances from dot products on the fly
    for (int qq = 0; qq < BQ / 8; ++qq) {
      const int ql = warp * (BQ / 8) + qq;
      if (q0 + ql >= Q) break;
      const float* drow = ds + ql * LDD;
      const float xq = xn[ql];
      warp_select_tile<KB, BN>(
          lists + ql * 2 * KB, cnt[ql], kth[ql],
          [&](int nl) {
            float dot = drow[nl];
            return metric == 0 ? (xq + yn[nl]) - 2.0f * dot : (metric == 1 ? -dot : 1.0f - dot * xq * yn[nl]);
          },
          n0, N, metric == 0 ? kc : k, lane);
    }
    __syncthreads();  // ds, ys and yn are rewritten by the next tile
  }
  for (int qq = 0; qq < BQ / 8; ++qq) {
    const int ql = warp * (BQ / 8) + qq, q = q0 + ql;
    if (q >= Q) break;
    if (metric == 0)
      warp_rerank_l2<KB>(lists + ql * 2 * KB, kc, k, lane, xs + ql * LDX, y, N, D, xn[ql], out_d + (long long)q * k,
                         out_i + (long long)q * k, ok + q);
    else
      warp_select_finish<KB>(lists + ql * 2 * KB, k, lane, out_d + (long long)q * k, out_i + (long long)q * k);
  }
#else
  __trap();  // WMMA with bf16 needs sm_80+: the launcher's supports() keeps older GPUs away
#endif
}

// =================================================================================================================
// v4 (tf32 + WarpSelect): fp32 inputs on tensor cores, exact by re-rank. Idea: v3's structure with two changes.
// (1) x.y^T runs as WMMA m16n16k8 TF32 on CENTRED fp32 data, x' = x - c, y' = y - c with c = the CTA's OWN centre
// (subtracted while staging; inputs rounded to tf32 with cvt.rna, so one product errs by <= 2^-10 relative). The
// launcher orders the queries with kernels.knn_search.group_queries so each CTA's 32 come from one cluster; CTA b is
// centred at their mean, centres[b] (Q <= 32: the queries' mean; Q = 1: the query itself, so the expansion is the
// direct difference up to the tf32 rounding of y - x). The expansion |x'|^2 + |y'|^2 - 2 x'.y' error bound grows
// with |x'|.|y'| of the rows near x: ~8-10 within a cluster (D = 64) instead of ~400-550 at the base mean. The
// norms depend on the CTA's centre, so both are made in-kernel from the centred fp32 values BEFORE the tf32
// rounding (the certificate's model: fp32 norms of the unrounded rows, the dot's input rounding charged by u_prod):
// |x'|^2 by one warp per query (v4_centred_sqnorm; knn_v4_merge recomputes it with centres[q / 32], same bits),
// |y'|^2 of each 128-row tile from the staged values (one FMA per value across the BD-deep stages, one 8-thread
// xor tree per tile). Emulated order: v4_row_sqnorm_emulated / v4_stage_sqnorm_emulated in tests/knn_emulation.py.
// (2) Selection is FAISS's
// WarpSelect instead of v3's shared-memory list + ballot: per query a warp queue of KB keys (KW = KB/32 per lane,
// position p = 32*j + lane, sorted ascending) and per lane a thread queue of NT keys (R = KW + NT a power of two).
// A distance whose key beats the warp's kc-th key goes into the lane's thread queue; after each 32-column step, if
// any lane's queue is full (__any_sync), the warp bitonic-sorts the 32*R keys in registers (stride < 32:
// __shfl_xor_sync; stride >= 32: register swaps, static indices only) and keeps the KB best. Keys are (orderable
// fp32 bits << 32 | index): unique, so ties go to the lower index. The kc = k + margin best by the expansion are
// re-ranked by exact fp32 differences sum (x - y)^2 on the ORIGINAL rows (kc*D*4 bytes per query), and each query
// is certified as in kernels.knn_search.certified/expansion_error (u_prod = 2^-10, centred): refused queries go
// to v2 in the launcher. The distance tile lives in shared memory only (never global).
// Registers vs local memory: a warp owns 4 queries; keeping 4 queries' queues in registers (reg[4][R], 178 regs,
// 128 B of stack, LDL x32 / STL x36, 9572 SHFL from merges unrolled per query and per column step) gave 1 block
// per SM. Now the queues live in shared memory ([32 queries][R][32 lanes] keys: 32 KB for KB = 32/64, 64 KB for
// KB = 128; each lane only touches its own column, so no __syncwarp) and only the merge holds R keys in
// registers, with static indices; the query and column-step loops stay rolled, so the merge is emitted once per
// call site (main loop, final flush, merge kernel). The distance tile aliases the base stage (free after the MMA).
// Split-N (Q small, e.g. Q = 1 latency): with grid.x = ceil(Q/32) < ~2 waves a CTA would walk the whole base
// alone; the launcher adds grid.y = S slices of ns rows (a multiple of 128). Each CTA selects the kc best keys of
// its slice into part[Q][S][KB] (EMPTY past kc) and knn_v4_merge (one warp per query) streams the S*KB keys through
// the same WarpSelect, re-ranks the kc best exactly and certifies. Soundness of `last` (the merged kc-th key L):
// a row dropped in slice s has key >= L_s (slice s's kc-th; keys are unique, so >), and slice s's kc keys are all
// in the union, so at least kc keys are <= L_s, hence L <= L_s; a row kept by its slice but not merged has key > L.
// Every non-candidate therefore has expansion key >= L, which is what certified() needs -- the same certificate as
// without the split (and the same candidates: each global top-kc row is in its slice's top kc). Using min_s L_s
// instead (>= L) or merging S-1 slices is unsound; tests/test_knn.py's emulation rejects both.
// Certified fraction on data=offset (issue 20), v4_emulated on _S(1024, 4000, 64, 10, data="offset"), seeds 0-2
// (32 CTAs, ~4 per cluster): base-mean centre (the flow before, |x - mu| ~ 350-400): 0.00 / 0.00 / 0.00 with tf32
// products (the error bound ~2^-9 |x'||y'| dwarfs the gap at rank kc); seed 0 with 3xTF32 0.36 and exact products
// 0.40 (there the fp32 accumulation term 2 gamma (|x'| + |y'|)^2, gamma = (D+4) 2^-23, dominates; at D = 128,
// Q = 64 all three were 0.00). Per-CTA centres: tf32 0.866 / 0.810 / 0.821, 3xTF32 0.979 / 0.969 / 0.974, exact
// products 0.979 / 0.973 / 0.978. Every CTA whose 32 queries
// come from one cluster (25-27 of 32) certifies 100% with tf32; the refusals are the 5-7 CTAs that straddle two
// clusters (|x - c| ~ 40-160 median, up to ~600), where 3xTF32 would help but costs 3x the MMA: a grouping that
// never straddles (cluster-aligned CTAs, some part-filled) is the cheaper fix; no 3xTF32 instance is built.
// Napkin math (1M x 128, Q = 10k, k = 10): 2.56 TFLOP; dense TF32 on H100/H200 is ~495 TF, so the MMA part is
// ~5 ms; the base (512 MB) is re-read once per 32-query block from L2/HBM: 313 blocks x 512 MB = 160 GB, most
// from L2 (a wave of 132 x 2 blocks walks the base in step) -> ~15-30 ms; the selection costs one pack + compare
// per distance (1e10 of them, ~20 instr each / 32 lanes at ~60 T instr/s... ~10 ms) plus ~kc*ln(N/kc) ~ 330
// insertions and ~100 merges of ~700 instructions per query. Target 150k QPS = 67 ms per 10k queries: the
// budget is there if selection and staging overlap. Q = 1: one CTA walked 512 MB at one SM's share of bandwidth
// (~20-25 GB/s... tens of ms); split into 521 slices of 1920 rows (2 waves of 132 SMs x 2 blocks) it is one pass
// over the base at HBM speed (~0.2 ms) plus one warp merging 521*32 keys (~10 us). Per-CTA centres cost the
// in-kernel norms: |y'|^2 is one FMA per staged value, 313 CTAs x 1M x 128 = 4e10 FMAs (1/32 of the MMA's MACs)
// plus 24 SHFL/FADD per thread per tile: ~1.7e9 warp instructions, ~2 ms of issue at 132 SMs x 4 x 1.75 GHz (~3%
// of the 67 ms budget); |x'|^2 is Q*D FMAs; group_queries is a Q x 64 x D expansion + a 64-step host chain (~1 ms,
// one sync). Gone: the base-mean pass and the two centred-norm passes over x and y. What it should change vs v3:
// fp32 data on tensor cores (v3 is fp16/bf16 only; fp32 today is v2's SIMT FMA at ~67 TF peak, ~7 TF measured for
// triton_fused), the list sorts in shared memory (2*KB keys, log^2 stages with __syncwarp) become register sorts
// run only when a thread queue fills, 2 blocks/SM instead of 1 (112-116 registers, 0 local memory, 387-1097
// SHFL instead of 9572), Q = 1 latency by split-N, and 16-byte loads for fp32 rows (D % 4 == 0).
// (CPU-verified, GPU-pending: compiled and X-rayed here, run on the CPU interpreter by tests/test_ptx80_rungs.py;
// never run on a GPU.)
// |x - c|^2 of one row in fp32 for one warp: lane-strided FMAs, then warp_reduce_sum (xor butterfly). The main
// kernel (c = its CTA's centre in shared memory) and knn_v4_merge (c = the same row from global) get the same bits.
__device__ __forceinline__ float v4_centred_sqnorm(const float* __restrict__ xr, const float* __restrict__ c, int D,
                                                   int lane) {
  float s = 0.f;
  for (int i = lane; i < D; i += 32) { const float v = xr[i] - c[i]; s = fmaf(v, v, s); }
  return warp_reduce_sum(s);
}

// Ascending bitonic sort of the 32*R keys r[j] of lanes 0..31 (position 32*j + lane), all in registers.
template <int R>
__device__ __forceinline__ void ws_sort(unsigned long long (&r)[R], int lane) {
#pragma unroll
  for (int size = 2; size <= 32 * R; size <<= 1) {
#pragma unroll
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      if (stride >= 32) {
        const int sj = stride >> 5;
#pragma unroll
        for (int j = 0; j < R; ++j) {
          if (j & sj) continue;
          const bool up = ((32 * j + lane) & size) == 0;
          const unsigned long long a = r[j], b = r[j | sj];
          const unsigned long long lo = a < b ? a : b, hi = a < b ? b : a;
          r[j] = up ? lo : hi;
          r[j | sj] = up ? hi : lo;
        }
      } else {
#pragma unroll
        for (int j = 0; j < R; ++j) {
          const unsigned long long o = __shfl_xor_sync(0xffffffffu, r[j], stride);
          const bool up = ((32 * j + lane) & size) == 0, lower = (lane & stride) == 0;
          const unsigned long long mn = r[j] < o ? r[j] : o, mx = r[j] < o ? o : r[j];
          r[j] = (lower == up) ? mn : mx;
        }
      }
    }
  }
}

template <int KB>
struct WsShape {
  static constexpr int KW = KB / 32, NT = KB == 32 ? 3 : KW, R = KW + NT;  // R: 4, 4, 8 for KB = 32, 64, 128
  static_assert((R & (R - 1)) == 0, "the register sort needs a power-of-two size");
};

// One query's queues in shared memory, st[32*j + lane]: j < KW the warp queue (sorted), KW <= j < R this lane's
// thread queue (EMPTY past its fill). Sort all 32*R keys in registers, keep the KB best, clear the thread queues;
// returns the kc-th key (EMPTY_KEY while fewer than kc were kept).
template <int KW, int R>
__device__ __forceinline__ unsigned long long ws_merge(unsigned long long* st, int kc, int lane) {
  unsigned long long r[R];
#pragma unroll
  for (int j = 0; j < R; ++j) r[j] = st[32 * j + lane];
  ws_sort<R>(r, lane);
#pragma unroll
  for (int j = 0; j < R; ++j) st[32 * j + lane] = j < KW ? r[j] : EMPTY_KEY;
  __syncwarp();  // position p sits at st[p]: read back from shared memory (a register pick by p became LDL)
  const unsigned long long w = st[kc - 1];
  __syncwarp();  // before the next step's thread-queue writes
  return w;
}

// One 32-key step of WarpSelect for one query (all 32 lanes, one key each): a key beating the kc-th goes to the
// lane's thread queue (tc = its fill); a merge when any lane's queue is full.
template <int KW, int NT>
__device__ __forceinline__ void ws_push(unsigned long long key, unsigned long long* st, unsigned long long& wk,
                                        int& tc, int kc, int lane) {
  if (key < wk) {
    st[32 * (KW + tc) + lane] = key;
    ++tc;
  }
  if (__any_sync(0xffffffffu, tc == NT)) {
    wk = ws_merge<KW, KW + NT>(st, kc, lane);
    tc = 0;
  }
}

// Exact re-rank of the kc candidates st[32*j + lane] (p = 32*j + lane < kc) + certificate, for one query (all 32
// lanes). last_key: the kc-th expansion key (EMPTY_KEY: fewer than kc rows, all of them candidates).
template <int KW>
__device__ __forceinline__ void v4_finish(unsigned long long* st, unsigned long long last_key,
                                          const float* __restrict__ xr, const float* __restrict__ y, float xn2,
                                          int N, int D, int k, int kc, int vec, float* __restrict__ od,
                                          long long* __restrict__ oi, int* __restrict__ okp, int lane) {
  unsigned long long r[KW];
#pragma unroll
  for (int j = 0; j < KW; ++j) {
    const int p = 32 * j + lane;
    const unsigned long long c = st[32 * j + lane];
    r[j] = EMPTY_KEY;
    if (p < kc && c != EMPTY_KEY) {
      const int n = (int)key_idx(c);
      const float* yr = y + (long long)n * D;
      float acc = 0.f;
      if (vec) {
        for (int d = 0; d < D; d += 4) {
          const float4 a = *reinterpret_cast<const float4*>(xr + d), b = *reinterpret_cast<const float4*>(yr + d);
          float t = a.x - b.x; acc = fmaf(t, t, acc);
          t = a.y - b.y; acc = fmaf(t, t, acc);
          t = a.z - b.z; acc = fmaf(t, t, acc);
          t = a.w - b.w; acc = fmaf(t, t, acc);
        }
      } else {
        for (int d = 0; d < D; ++d) { const float t = xr[d] - yr[d]; acc = fmaf(t, t, acc); }
      }
      r[j] = pack_key(acc, n);
    }
  }
  ws_sort<KW>(r, lane);
#pragma unroll
  for (int j = 0; j < KW; ++j) {
    const int p = 32 * j + lane;
    st[p] = r[j];
    if (p < k) {
      od[p] = key_dist(r[j]);
      oi[p] = key_idx(r[j]);
    }
  }
  __syncwarp();
  const float dk = fmaxf(key_dist(st[k - 1]), 0.f);
  __syncwarp();  // st is reused by the warp's next query
  if (lane == 0) {
    int cert = 1;
    if (last_key != EMPTY_KEY && kc < N) {  // expansion_error(nx, dk, D, 2^-10, centred=True), then certified()
      const float g = (float)(D + 4) * 1.1920929e-7f;  // (D+4) * 2^-23
      const float nx = sqrtf(fmaxf(xn2, 0.f)), sk = sqrtf(dk);
      const float rr = 1.01f * 5.9604645e-8f * (2.f * nx + sk), yb = nx + sk + rr;
      const float err = 2.f * (2.f * 9.765625e-4f * nx * yb + g * (nx + yb) * (nx + yb) + 2.f * sk * rr + rr * rr);
      cert = key_dist(last_key) - err > dk * (1.f + g);
    }
    *okp = cert;
  }
}

// Queries q0 = 32*blockIdx.x .. q0+31 (grouped by the launcher), centred at centres[blockIdx.x][0..D); base rows
// [ns*blockIdx.y, min(N, ns*(blockIdx.y+1))); gridDim.y == 1: the whole base, re-rank here; gridDim.y = S > 1: the
// slice's kc best keys go to part[q][blockIdx.y][0..KB) and knn_v4_merge finishes.
template <int KB>
__global__ void __launch_bounds__(256, 2) knn_v4_tf32_ws(const float* __restrict__ x, const float* __restrict__ y,
                                                         const float* __restrict__ centres, float* __restrict__ out_d,
                                                         long long* __restrict__ out_i, int* __restrict__ ok,
                                                         unsigned long long* __restrict__ part, int Q, int N, int D,
                                                         int k, int kc, int vec, int ns) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  constexpr int BQ = 32, BN = 128, BD = 32, QW = BQ / 8;  // queries per warp: QW
  constexpr int LDY = BD + 4, LDD = BN + 4;               // padded strides (floats), 16-byte multiples
  constexpr int STAGE = BN * LDY > BQ * LDD ? BN * LDY : BQ * LDD;
  constexpr int KW = WsShape<KB>::KW, NT = WsShape<KB>::NT, R = WsShape<KB>::R;
  static_assert(QW * 8 <= 32, "thread-queue fills are packed 8 bits per query into one register");
  const int Dp = (D + 7) & ~7, LDX = Dp + 4;              // depth rounded up to the MMA's k = 8
  extern __shared__ __align__(32) unsigned char v4_smem[];
  unsigned long long* st = reinterpret_cast<unsigned long long*>(v4_smem);  // [BQ][R][32] queues
  unsigned long long* wks = st + BQ * R * 32;             // [BQ]      each query's kc-th key
  float* xs = reinterpret_cast<float*>(wks + BQ);         // [BQ][LDX] centred, tf32-rounded queries
  float* ys = xs + BQ * LDX;                              // [BN][LDY] centred, tf32-rounded base stage
  float* ds = ys;                                         // [BQ][LDD] dot tile: reuses the stage after the MMA
  float* mus = ys + STAGE;                                // [Dp]      this CTA's centre c (zeros past D)
  float* xn = mus + Dp;                                   // [BQ]      |x - c|^2 (fp32, unrounded)
  float* yn = xn + BQ;                                    // [BN]      |y - c|^2 of the tile's rows (fp32, unrounded)
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp >> 2, wn = warp & 3;                // rows 16*wm.., columns 32*wn.. (two 16x16 fragments)
  const int q0 = blockIdx.x * BQ, S = gridDim.y, s = blockIdx.y;
  const int nb = s * ns, ne = min(N, nb + ns);
  {
    unsigned dyn;
    asm volatile("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dyn));
    if (dyn < (unsigned)(BQ * R * 32 + BQ) * 8u + (unsigned)(BQ * LDX + STAGE + Dp + BQ + BN) * 4u) __trap();
  }
  for (int i = tid; i < BQ * R * 32; i += 256) st[i] = EMPTY_KEY;
  if (tid < BQ) wks[tid] = EMPTY_KEY;
  for (int i = tid; i < Dp; i += 256) mus[i] = i < D ? centres[(long long)blockIdx.x * D + i] : 0.f;
  __syncthreads();
#pragma unroll 1
  for (int qq = 0; qq < QW; ++qq) {  // each warp the norms of its own QW queries (read by that warp only)
    const int ql = warp * QW + qq;
    const bool in = q0 + ql < Q;  // past Q: 0 columns, but the butterfly's shuffles stay unconditional
    const float s2 = v4_centred_sqnorm(x + (long long)(in ? q0 + ql : 0) * D, mus, in ? D : 0, lane);
    if (lane == 0) xn[ql] = s2;
  }
  if (vec) {  // D % 4 == 0, 16-byte aligned rows: one float4 per load
    for (int e = tid; e < BQ * (Dp / 4); e += 256) {
      const int r = e / (Dp / 4), d = 4 * (e % (Dp / 4));
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (q0 + r < Q && d < D) {
        v = *reinterpret_cast<const float4*>(x + (long long)(q0 + r) * D + d);
        v = make_float4(wmma::__float_to_tf32(v.x - mus[d]), wmma::__float_to_tf32(v.y - mus[d + 1]),
                        wmma::__float_to_tf32(v.z - mus[d + 2]), wmma::__float_to_tf32(v.w - mus[d + 3]));
      }
      *reinterpret_cast<float4*>(xs + r * LDX + d) = v;
    }
  } else {
    for (int e = tid; e < BQ * Dp; e += 256) {
      const int r = e / Dp, d = e % Dp;
      xs[r * LDX + d] = (q0 + r < Q && d < D) ? wmma::__float_to_tf32(x[(long long)(q0 + r) * D + d] - mus[d]) : 0.f;
    }
  }

  unsigned tcp = 0;  // thread-queue fill of this lane for query QW*warp + qq: bits 8*qq .. 8*qq+7
  for (int n0 = nb; n0 < ne; n0 += BN) {
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[2];
    wmma::fill_fragment(acc[0], 0.f);
    wmma::fill_fragment(acc[1], 0.f);
    // |y - c|^2 of the tile's rows from the centred fp32 values BEFORE the tf32 rounding (what the certificate
    // assumes). Each stage hands a thread 4 columns of rows tid/8 + 32i (i < 4; 8 threads a row, lanes 8j..8j+7
    // of one warp): one FMA per value into yp[i] across all stages, then one xor tree over the row's 8 threads
    // per tile. D = 128: 64 FMAs + 12 SHFL + 12 FADD per thread per tile next to 32x128x128 MACs of MMA.
    constexpr int YR = BN * (BD / 4) / 256;
    float yp[YR];
#pragma unroll
    for (int i = 0; i < YR; ++i) yp[i] = 0.f;
    for (int d0 = 0; d0 < Dp; d0 += BD) {
#pragma unroll
      for (int i = 0; i < YR; ++i) {
        const int e = tid + 256 * i, r = e / (BD / 4), c = 4 * (e % (BD / 4)), d = d0 + c;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (n0 + r < ne && d < D) {
          const float* src = y + (long long)(n0 + r) * D + d;
          if (vec) {  // D % 4 == 0, 16-byte aligned rows: one float4 per load
            v = *reinterpret_cast<const float4*>(src);
          } else {
            v.x = src[0];
            if (d + 1 < D) v.y = src[1];
            if (d + 2 < D) v.z = src[2];
            if (d + 3 < D) v.w = src[3];
          }
          v = make_float4(v.x - mus[d], v.y - mus[d + 1], v.z - mus[d + 2], v.w - mus[d + 3]);  // 0 past D
        }
        yp[i] = fmaf(v.w, v.w, fmaf(v.z, v.z, fmaf(v.y, v.y, fmaf(v.x, v.x, yp[i]))));
        *reinterpret_cast<float4*>(ys + r * LDY + c) =
            make_float4(wmma::__float_to_tf32(v.x), wmma::__float_to_tf32(v.y), wmma::__float_to_tf32(v.z),
                        wmma::__float_to_tf32(v.w));
      }
      __syncthreads();
      const int kend = min(BD, Dp - d0);
#pragma unroll 1  // unrolled, the 4 steps' fragments took the kernel past 128 registers (a 4 B spill at KB >= 64)
      for (int kk = 0; kk < kend; kk += 8) {
        wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> a;
        wmma::load_matrix_sync(a, xs + (16 * wm) * LDX + d0 + kk, LDX);
#pragma unroll
        for (int f = 0; f < 2; ++f) {
          wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> b;
          wmma::load_matrix_sync(b, ys + (32 * wn + 16 * f) * LDY + kk, LDY);
          wmma::mma_sync(acc[f], a, b, acc[f]);
        }
      }
      __syncthreads();  // ys is refilled by the next stage or overwritten by the dot tile
    }
#pragma unroll
    for (int i = 0; i < YR; ++i) {  // constant trip count, whole warps: the shuffles are provably converged
      float s2 = yp[i];
      s2 += __shfl_xor_sync(0xffffffffu, s2, 1);
      s2 += __shfl_xor_sync(0xffffffffu, s2, 2);
      s2 += __shfl_xor_sync(0xffffffffu, s2, 4);
      if ((tid & 7) == 0) yn[tid / 8 + 32 * i] = s2;  // read after the barrier below (the dot tile's)
    }
#pragma unroll
    for (int f = 0; f < 2; ++f)
      wmma::store_matrix_sync(ds + (16 * wm) * LDD + 32 * wn + 16 * f, acc[f], LDD, wmma::mem_row_major);
    __syncthreads();
    // WarpSelect: warp w owns queries QW*w .. QW*w+QW-1, one at a time; lane reads columns lane, lane+32, ...
#pragma unroll 1
    for (int qq = 0; qq < QW; ++qq) {
      const int ql = warp * QW + qq;
      if (q0 + ql >= Q) break;  // warp-uniform
      unsigned long long* sq = st + ql * (R * 32);
      unsigned long long wk = wks[ql];
      int tc = (tcp >> (8 * qq)) & 0xff;
      const float* drow = ds + ql * LDD;
      const float xq = xn[ql];
#pragma unroll 1
      for (int h = 0; h < BN / 32; ++h) {
        const int nl = lane + 32 * h, n = n0 + nl;
        const unsigned long long key = n < ne ? pack_key((xq + yn[nl]) - 2.0f * drow[nl], n) : EMPTY_KEY;
        ws_push<KW, NT>(key, sq, wk, tc, kc, lane);
      }
      if (lane == 0) wks[ql] = wk;
      tcp = (tcp & ~(0xffu << (8 * qq))) | ((unsigned)tc << (8 * qq));
    }
    __syncthreads();  // the stage/dot tile and yn are rewritten by the next tile
  }

  // final flush, then the exact re-rank + certificate (or the slice's list for knn_v4_merge), one query at a time
#pragma unroll 1
  for (int qq = 0; qq < QW; ++qq) {
    const int ql = warp * QW + qq, q = q0 + ql;
    if (q >= Q) break;
    unsigned long long* sq = st + ql * (R * 32);
    const unsigned long long last_key = ws_merge<KW, R>(sq, kc, lane);
    if (S > 1) {
      unsigned long long* dst = part + ((long long)q * S + s) * KB;
#pragma unroll
      for (int j = 0; j < KW; ++j) dst[32 * j + lane] = 32 * j + lane < kc ? sq[32 * j + lane] : EMPTY_KEY;
    } else {
      v4_finish<KW>(sq, last_key, x + (long long)q * D, y, xn[ql], N, D, k, kc, vec, out_d + (long long)q * k,
                    out_i + (long long)q * k, ok + q, lane);
    }
  }
#else
  __trap();  // TF32 WMMA needs sm_80+
#endif
}

// Split-N second stage: one warp per query streams the S slices' kc-best lists (part[q][S][KB], EMPTY past kc)
// through WarpSelect, then re-ranks the kc best and certifies with last = the merged kc-th key (see above) and
// |x - c|^2 recomputed with query q's own centre, centres[q / 32] (the main kernel's CTA row; same bits).
// (256, 4): with (256) alone ptxas chose 40-48 registers and spilled 28-60 B around the register sort.
template <int KB>
__global__ void __launch_bounds__(256, 4) knn_v4_merge(const float* __restrict__ x, const float* __restrict__ y,
                                                       const float* __restrict__ centres,
                                                       const unsigned long long* __restrict__ part,
                                                       float* __restrict__ out_d, long long* __restrict__ out_i,
                                                       int* __restrict__ ok, int Q, int N, int D, int k, int kc,
                                                       int S, int vec) {
  constexpr int KW = WsShape<KB>::KW, NT = WsShape<KB>::NT, R = WsShape<KB>::R;
  __shared__ unsigned long long st_all[8][R * 32];  // 8 KB (KB = 32, 64) or 16 KB (KB = 128)
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, q = blockIdx.x * 8 + warp;
  if (q >= Q) return;  // whole warps; no block barrier below
  unsigned long long* sq = st_all[warp];
#pragma unroll
  for (int j = 0; j < R; ++j) sq[32 * j + lane] = EMPTY_KEY;
  unsigned long long wk = EMPTY_KEY;
  int tc = 0;
  const unsigned long long* src = part + (long long)q * S * KB;
#pragma unroll 1
  for (int c = lane; c < S * KB; c += 32) ws_push<KW, NT>(src[c], sq, wk, tc, kc, lane);  // S*KB % 32 == 0
  const unsigned long long last_key = ws_merge<KW, R>(sq, kc, lane);
  const float xn2 = v4_centred_sqnorm(x + (long long)q * D, centres + (long long)(q / 32) * D, D, lane);
  v4_finish<KW>(sq, last_key, x + (long long)q * D, y, xn2, N, D, k, kc, vec, out_d + (long long)q * k,
                out_i + (long long)q * k, ok + q, lane);
}

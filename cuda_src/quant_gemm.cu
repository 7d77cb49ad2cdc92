// quant_gemm.cu — quantized GEMM y[M,N] = x[M,K] · dequant(W)[K,N] as hand-written CUDA (llm.c dev/cuda style).
//
// Layouts match kernels/quant.py: int8 weights qw [K,N] row-major with an fp32 scale per column; int4 weights packed
// two per byte along K, packed [K/2,N] uint8 (byte (p,n): k=2p in the low nibble, k=2p+1 in the high one), scale T
// [K/g,N] and optional zero uint8 [K/g,N] (symmetric: zero = 8); per-token int8 activations xq [M,K] with fp32 scale
// [M]. Every kernel accumulates in fp32 (int32 for dp4a) and is templated on the activation type T (__half or
// __nv_bfloat16). Decode napkin math (M=1, K=4096, N=14336): weights 58.7 MB int8 / 29.4 MB int4 vs 117 MB bf16, so
// these are DRAM-bound and win by the byte ratio; v3 (dp4a) targets M >= 256 where int8 math matters.
#include "common.cuh"

// ------------------------------------------------------------------------------------------------------------------
// qgemm_v1_w8a16: the simplest correct kernel. One thread per output y[m,n]: walks K, loads qw[k,n] (a warp reads 32
// consecutive bytes of one weight row: coalesced, but 1 byte per thread per load) and x[m,k] (a broadcast), converts
// int8 -> float on the fly and applies the column scale once at the end (it commutes with the K sum). The weight
// matrix is re-read once per row of x (from L2 for small M). Baseline rung: expect well under half of DRAM bandwidth
// because each thread has one 1-byte load in flight per iteration.
// Grid (ceil(N/128), M), block 128.
template <typename T>
__global__ void qgemm_v1_w8a16(const T* __restrict__ x, const int8_t* __restrict__ qw, const float* __restrict__ scale,
                               T* __restrict__ y, int M, int N, int K) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  const int m = blockIdx.y;
  if (n >= N || m >= M) return;
  const T* xr = x + (long long)m * K;
  float acc = 0.f;
#pragma unroll 8
  for (int k = 0; k < K; ++k) acc += to_float(xr[k]) * (float)qw[(long long)k * N + n];
  y[(long long)m * N + n] = from_float<T>(acc * scale[n]);
}

// ------------------------------------------------------------------------------------------------------------------
// qgemm_v2_w4a16: packed int4 with group scales/zeros and 16-byte weight loads. Each thread owns 16 consecutive
// columns: one LDG.128 of a packed row brings 32 weights (16 columns x 2 k), 8x more bytes per load than v1 and half
// the bytes of int8. K is cut into chunks of 32 k (16 packed rows; a chunk never straddles a group since g % 32 == 0)
// and the 32 "k-slices" of a 128-thread block stride over the chunks, so a decode GEMM (M=1) still has N/64 blocks of
// 128 threads each streaming rows in parallel; per chunk the thread loads its 16 scales (and zeros) once and
// dequantizes with one FMA per weight (w = q*s - z*s). Each block computes MT rows of x, reusing every dequantized
// weight MT times. The 32 k-slice partials are reduced with warp shuffles (8 slices per warp) and 4 KB of shared
// memory (4 warps). Requires N % 16 == 0 (aligned 16-byte loads) and K % 32 == 0.
// zero is read only when has_zero != 0 (asymmetric); pass any valid pointer otherwise.
// Grid (ceil(N/64), ceil(M/MT)), block 128.
template <typename T, int MT>
__global__ void __launch_bounds__(128) qgemm_v2_w4a16(const T* __restrict__ x, const uint8_t* __restrict__ packed,
                                                      const T* __restrict__ scale, const uint8_t* __restrict__ zero,
                                                      int has_zero, T* __restrict__ y, int M, int N, int K,
                                                      int group) {
  constexpr int COLS = 16, CT = 4, SLICES = 32, CHUNK_K = 32;  // 4 column-threads x 32 k-slices = 128 threads
  __shared__ float red[4][MT][CT * COLS];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int ct = tid % CT, slice = tid / CT;
  const int n0 = blockIdx.x * (CT * COLS) + ct * COLS;
  const int m0 = blockIdx.y * MT;
  const bool col_ok = n0 < N;  // N % 16 == 0: a thread's 16 columns are all in range or all out
  float acc[MT][COLS];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < COLS; ++j) acc[i][j] = 0.f;

  if (col_ok) {
    for (int ch = slice; ch < K / CHUNK_K; ch += SLICES) {
      const int k0 = ch * CHUNK_K, g = k0 / group;
      float s[COLS], zs[COLS];
      const T* sp = scale + (long long)g * N + n0;  // 32 bytes, 32-byte aligned (N % 16 == 0)
      int4 sv0 = load16(sp), sv1 = load16(sp + 8);
      const T* s8a = reinterpret_cast<const T*>(&sv0);
      const T* s8b = reinterpret_cast<const T*>(&sv1);
#pragma unroll
      for (int j = 0; j < 8; ++j) { s[j] = to_float(s8a[j]); s[j + 8] = to_float(s8b[j]); }
      if (has_zero) {
        int4 zv = load16(zero + (long long)g * N + n0);
        const uint8_t* zb = reinterpret_cast<const uint8_t*>(&zv);
#pragma unroll
        for (int j = 0; j < COLS; ++j) zs[j] = (float)zb[j] * s[j];
      } else {
#pragma unroll
        for (int j = 0; j < COLS; ++j) zs[j] = 8.f * s[j];
      }
#pragma unroll 4
      for (int r = 0; r < CHUNK_K / 2; ++r) {
        const int p = k0 / 2 + r;  // packed row: k = 2p (low nibble) and 2p + 1 (high nibble)
        int4 wv = load16(packed + (long long)p * N + n0);
        const uint8_t* wb = reinterpret_cast<const uint8_t*>(&wv);
        float xa[MT], xb[MT];
#pragma unroll
        for (int i = 0; i < MT; ++i) {
          const bool ok = m0 + i < M;
          xa[i] = ok ? to_float(x[(long long)(m0 + i) * K + 2 * p]) : 0.f;
          xb[i] = ok ? to_float(x[(long long)(m0 + i) * K + 2 * p + 1]) : 0.f;
        }
#pragma unroll
        for (int j = 0; j < COLS; ++j) {
          const float w0 = fmaf((float)(wb[j] & 0xF), s[j], -zs[j]);
          const float w1 = fmaf((float)(wb[j] >> 4), s[j], -zs[j]);
#pragma unroll
          for (int i = 0; i < MT; ++i) acc[i][j] = fmaf(xb[i], w1, fmaf(xa[i], w0, acc[i][j]));
        }
      }
    }
  }
  // lanes ct, ct+4, ..., ct+28 of a warp hold the same columns: reduce over lane bits 2..4
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < COLS; ++j) {
      float v = acc[i][j];
      v += __shfl_xor_sync(0xffffffffu, v, 4);
      v += __shfl_xor_sync(0xffffffffu, v, 8);
      v += __shfl_xor_sync(0xffffffffu, v, 16);
      if (lane < CT) red[warp][i][ct * COLS + j] = v;
    }
  __syncthreads();
  for (int idx = tid; idx < MT * CT * COLS; idx += blockDim.x) {
    const int i = idx / (CT * COLS), c = idx % (CT * COLS);
    const int m = m0 + i, n = blockIdx.x * (CT * COLS) + c;
    if (m < M && n < N) y[(long long)m * N + n] = from_float<T>(red[0][i][c] + red[1][i][c] + red[2][i][c] + red[3][i][c]);
  }
}

// ------------------------------------------------------------------------------------------------------------------
// qgemm_v3_w8a8_dp4a: int8 x int8 -> int32 with __dp4a (4 multiply-adds per instruction, 4x the fp32 SIMT rate per
// issue slot) and the per-token/per-channel scale epilogue y = acc * xs[m] * ws[n]. Shared-memory tiled: a 64x64
// output tile per 256-thread block, 4x4 outputs per thread, K in steps of 32. dp4a wants 4 consecutive k of both
// operands in one 32-bit word: x rows are K-contiguous already, the row-major weight tile is transposed by k-quads
// while it is staged (4 rows of char4 -> 4 words of 4 k each, 6 byte-permutes), so the inner loop is 5 shared loads
// per 16 dp4a. Exact int32 accumulation (K * 127^2 < 2^31 for K < 133k). Requires K % 4 == 0 and N % 4 == 0 (aligned
// 4-byte loads). Grid (ceil(N/64), ceil(M/64)), block 256.
template <typename T>
__global__ void __launch_bounds__(256) qgemm_v3_w8a8_dp4a(const int8_t* __restrict__ xq, const float* __restrict__ xs,
                                                          const int8_t* __restrict__ qw, const float* __restrict__ ws,
                                                          T* __restrict__ y, int M, int N, int K) {
  constexpr int BM = 64, BN = 64, BK = 32, KQ = BK / 4;
  __shared__ int As[BM][KQ + 1];       // +1: the 8 rows a warp's staging writes hit distinct banks
  __shared__ __align__(16) int Bs[KQ][BN];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int bm0 = blockIdx.y * BM, bn0 = blockIdx.x * BN;
  int acc[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += BK) {
    // stage A: 64 rows x 8 words, 2 words per thread
#pragma unroll
    for (int w = tid; w < BM * KQ; w += 256) {
      const int r = w / KQ, q = w % KQ, m = bm0 + r, k = k0 + q * 4;
      As[r][q] = (m < M && k < K) ? *reinterpret_cast<const int*>(xq + (long long)m * K + k) : 0;
    }
    // stage B: 8 k-quads x 16 column-quads; a unit = 4 rows x 4 bytes, transposed to 4 words of 4 k each
    if (tid < KQ * (BN / 4)) {
      const int q = tid / (BN / 4), cq = tid % (BN / 4), n = bn0 + cq * 4, k = k0 + q * 4;
      unsigned r0 = 0, r1 = 0, r2 = 0, r3 = 0;
      if (n < N && k < K) {  // K % 4 == 0 and N % 4 == 0: the whole 4x4 unit is in range or out
        const int8_t* b = qw + (long long)k * N + n;
        r0 = *reinterpret_cast<const unsigned*>(b);
        r1 = *reinterpret_cast<const unsigned*>(b + N);
        r2 = *reinterpret_cast<const unsigned*>(b + 2LL * N);
        r3 = *reinterpret_cast<const unsigned*>(b + 3LL * N);
      }
      const unsigned lo01 = __byte_perm(r0, r1, 0x5140), lo23 = __byte_perm(r2, r3, 0x5140);
      const unsigned hi01 = __byte_perm(r0, r1, 0x7362), hi23 = __byte_perm(r2, r3, 0x7362);
      int4 out;
      out.x = (int)__byte_perm(lo01, lo23, 0x5410);  // column n:   k, k+1, k+2, k+3
      out.y = (int)__byte_perm(lo01, lo23, 0x7632);  // column n+1
      out.z = (int)__byte_perm(hi01, hi23, 0x5410);  // column n+2
      out.w = (int)__byte_perm(hi01, hi23, 0x7632);  // column n+3
      *reinterpret_cast<int4*>(&Bs[q][cq * 4]) = out;
    }
    __syncthreads();
#pragma unroll
    for (int q = 0; q < KQ; ++q) {
      const int4 b = *reinterpret_cast<const int4*>(&Bs[q][tx * 4]);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int a = As[ty * 4 + i][q];
        acc[i][0] = __dp4a(a, b.x, acc[i][0]);
        acc[i][1] = __dp4a(a, b.y, acc[i][1]);
        acc[i][2] = __dp4a(a, b.z, acc[i][2]);
        acc[i][3] = __dp4a(a, b.w, acc[i][3]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = bm0 + ty * 4 + i;
    if (m >= M) continue;
    const float sm = xs[m];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = bn0 + tx * 4 + j;
      if (n < N) y[(long long)m * N + n] = from_float<T>((float)acc[i][j] * sm * ws[n]);
    }
  }
}

// softmax.cu — row softmax, llm.c dev/cuda style: numbered variants, slowest first.
//
//   y[m, n] = exp(x[m, n] - max_n x[m, :]) / sum_n exp(x[m, n] - max_n x[m, :])      x, y: [M, N] row-major
//
// Every kernel takes (const T* x, T* y, int M, int N) with T = float, __half or __nv_bfloat16; loads convert to
// float, all arithmetic is fp32, stores round back to T. Subtracting the row max is what keeps exp() finite: the
// harness' inputs carry rows shifted by ~±100, where exp(x) overflows (or underflows to 0/0) without it.
//
// Napkin math: ~5 FLOPs per element (max, sub, exp, add, mul) against 2·s bytes (read once, write once), i.e.
// < 1.3 FLOP/byte — deeply memory bound (H100 ridge ~20 FLOP/B for fp32 SIMT). The floor is 2·M·N·s bytes at
// ~3.0 TB/s achievable: 4096 x 8192 fp32 = 268 MB -> ~90 us. A kernel that reads the row k times pays (k+1)/2x that
// unless the re-reads hit L2 (50 MB on H100: a block's row is re-read while still resident for rows up to a few
// hundred KB, so on-chip re-reads are cheap when M·N·s is large but the rows in flight fit L2).
#include "common.cuh"

// Online-softmax update of a running (max m, sum s) with one value: one exp in the common case (v <= m); the
// rescale exp only when the max grows. m starts at -FLT_MAX (finite), so a -inf input adds exp(-inf) = 0 instead
// of the NaN that (-inf) - (-inf) would give.
__device__ __forceinline__ void online_update(float& m, float& s, float v) {
  if (v > m) {
    s *= __expf(m - v);
    m = v;
  }
  s += __expf(v - m);
}

// ------------------------------------------------------------------------------------------------------------------
// softmax_v1_naive — one thread per row, three passes over the row: max, sum of exp(x - max), normalise.
// The slow baseline rung. Bytes: 3 reads + 1 write = 4·N·s per row (2x the floor) even with perfect caching, and
// the access pattern is the real problem: the 32 lanes of a warp walk 32 different rows N·s bytes apart, so every
// load instruction touches 32 cache lines and the row is streamed by a single thread (latency bound, no memory-level
// parallelism within a row). Expect ~1-5% of DRAM bandwidth; rows with M < #SMs x threads leave the GPU idle.
// Launch: block 128 threads, grid ceil(M / 128).
template <typename T>
__global__ void softmax_v1_naive(const T* __restrict__ x, T* __restrict__ y, int M, int N) {
  const int row = blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= M) return;
  const T* xr = x + (size_t)row * N;
  T* yr = y + (size_t)row * N;
  float mx = -INFINITY;
  for (int i = 0; i < N; ++i) mx = fmaxf(mx, to_float(xr[i]));
  // Kahan-compensated: one thread adds N terms in sequence, and a plain fp32 running sum drifts by ~1e-4 relative at
  // N = 262144 (above the fp32 tolerance); the 3 extra FLOPs per element are free in a memory-bound loop.
  float sum = 0.f, comp = 0.f;
  for (int i = 0; i < N; ++i) {
    const float term = __expf(to_float(xr[i]) - mx) - comp;
    const float next = sum + term;
    comp = (next - sum) - term;
    sum = next;
  }
  const float inv = 1.f / sum;
  for (int i = 0; i < N; ++i) yr[i] = from_float<T>(__expf(to_float(xr[i]) - mx) * inv);
}

// ------------------------------------------------------------------------------------------------------------------
// softmax_v2_warp — one warp per row: lane l handles elements l, l+32, l+64, ... so each load instruction is one
// coalesced 32·s-byte segment, and the max/sum are warp shuffles (no shared memory, no __syncthreads).
// Rows of N <= 32·V2_REGS (1024) are loaded once into registers (V2_REGS floats per lane, fully unrolled so they
// stay in registers): 1 read + 1 write = the 2·N·s floor. Longer rows use a strided loop with an online
// (running max, running sum) pass and a normalise pass: 2 reads + 1 write. Should be ~10x v1 for N <= 1024; long
// rows are limited by one warp's memory-level parallelism (a 262144-wide row is streamed by 32 threads).
// Launch: block 128 threads (4 rows), grid ceil(M / 4).
constexpr int V2_REGS = 32;

template <typename T>
__global__ void softmax_v2_warp(const T* __restrict__ x, T* __restrict__ y, int M, int N) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= M) return;  // whole warp leaves together: the shuffles below see all 32 lanes
  const T* xr = x + (size_t)row * N;
  T* yr = y + (size_t)row * N;
  if (N <= 32 * V2_REGS) {
    float v[V2_REGS];
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < V2_REGS; ++j) {
      const int i = j * 32 + lane;
      v[j] = i < N ? to_float(xr[i]) : -INFINITY;  // padding: exp(-inf - max) = 0 below
      mx = fmaxf(mx, v[j]);
    }
    mx = warp_reduce_max(mx);
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < V2_REGS; ++j) {
      v[j] = __expf(v[j] - mx);
      sum += v[j];
    }
    const float inv = 1.f / warp_reduce_sum(sum);
#pragma unroll
    for (int j = 0; j < V2_REGS; ++j) {
      const int i = j * 32 + lane;
      if (i < N) yr[i] = from_float<T>(v[j] * inv);
    }
    return;
  }
  float m = -FLT_MAX, s = 0.f;
  for (int i = lane; i < N; i += 32) online_update(m, s, to_float(xr[i]));
  const float row_max = warp_reduce_max(m);
  const float inv = 1.f / warp_reduce_sum(s * __expf(m - row_max));
  for (int i = lane; i < N; i += 32) yr[i] = from_float<T>(__expf(to_float(xr[i]) - row_max) * inv);
}

// ------------------------------------------------------------------------------------------------------------------
// softmax_v3_block — one block per row (128..1024 threads), 16-byte vector loads/stores (LDG.128: 4 floats or 8
// halves per instruction, 4-8x fewer memory instructions than v2) when the row's x and y start 16-byte aligned,
// scalar accesses otherwise (N·s not a multiple of 16 makes alternate rows misaligned) and for the N % VEC tail.
// Online softmax: pass 1 reads the row once keeping a per-thread (running max, running sum), merged by two block
// reductions; pass 2 reads it again and writes y. 2 reads + 1 write, but the re-read of a just-read row mostly hits
// L2, so DRAM traffic approaches the 2·N·s floor; a whole block per row gives long rows the memory-level
// parallelism v2 lacks (small M, e.g. 64 x 262144, still only fills 64 SMs).
// Launch: block clamp(next_pow2(ceil(N / (4·VEC))), 128, 1024) threads (~4 vectors per thread), grid M.
template <typename T>
__global__ void softmax_v3_block(const T* __restrict__ x, T* __restrict__ y, int M, int N) {
  constexpr int VEC = 16 / sizeof(T);
  union Pack {
    int4 raw;
    T e[VEC];
  };
  const int row = blockIdx.x;
  if (row >= M) return;
  const T* xr = x + (size_t)row * N;
  T* yr = y + (size_t)row * N;
  const bool aligned = ((reinterpret_cast<uintptr_t>(xr) | reinterpret_cast<uintptr_t>(yr)) & 15) == 0;
  const int nvec = aligned ? N / VEC : 0;  // block-uniform: every thread takes the same path
  const int tail = nvec * VEC;

  float m = -FLT_MAX, s = 0.f;
  for (int v = threadIdx.x; v < nvec; v += blockDim.x) {
    Pack p;
    p.raw = load16(xr + (size_t)v * VEC);
    float f[VEC];
    float vmax = -FLT_MAX;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      f[k] = to_float(p.e[k]);
      vmax = fmaxf(vmax, f[k]);
    }
    if (vmax > m) {  // one rescale per vector instead of one per element
      s *= __expf(m - vmax);
      m = vmax;
    }
#pragma unroll
    for (int k = 0; k < VEC; ++k) s += __expf(f[k] - m);
  }
  for (int i = tail + threadIdx.x; i < N; i += blockDim.x) online_update(m, s, to_float(xr[i]));

  const float row_max = block_reduce_max(m);
  // threads that saw no element have (m, s) = (-FLT_MAX, 0) and add 0
  const float inv = 1.f / block_reduce_sum(s * __expf(m - row_max));

  for (int v = threadIdx.x; v < nvec; v += blockDim.x) {
    Pack p;
    p.raw = load16(xr + (size_t)v * VEC);
#pragma unroll
    for (int k = 0; k < VEC; ++k) p.e[k] = from_float<T>(__expf(to_float(p.e[k]) - row_max) * inv);
    store16(yr + (size_t)v * VEC, p.raw);
  }
  for (int i = tail + threadIdx.x; i < N; i += blockDim.x) yr[i] = from_float<T>(__expf(to_float(xr[i]) - row_max) * inv);
}

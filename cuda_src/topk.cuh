// topk.cuh — running top-k on packed (distance, index) keys, shared by knn.cu and ann.cu.
//
// A key is the orderable bits of an fp32 distance in the high 32 bits and a 32-bit index in the low ones, so one
// unsigned compare orders by (distance, index): exact ties go to the lower index, and EMPTY_KEY sorts last.
// bitonic_sort orders a key array in shared memory (a block or a warp); warp_select_tile / warp_select_finish
// keep one query's running top-k in a [KB best | KB candidates] list (ballot slots, no atomics).
#pragma once
#include "common.cuh"

// ---- packed keys ---------------------------------------------------------------------------------------------
__device__ __forceinline__ unsigned long long pack_key(float d, int idx) {
  unsigned int b = __float_as_uint(d);
  if (b == 0x80000000u) b = 0u;                          // -0.0 ties with +0.0
  b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);        // monotone map float -> unsigned
  return ((unsigned long long)b << 32) | (unsigned int)idx;
}
__device__ __forceinline__ float key_dist(unsigned long long key) {
  unsigned int b = (unsigned int)(key >> 32);
  b = (b & 0x80000000u) ? (b & 0x7FFFFFFFu) : ~b;
  return __uint_as_float(b);
}
__device__ __forceinline__ long long key_idx(unsigned long long key) { return (long long)(key & 0xFFFFFFFFull); }
#define EMPTY_KEY 0xFFFFFFFFFFFFFFFFull

// Ascending bitonic sort of a[0..n) (n a power of two) by `nthreads` cooperating threads numbered `t`; `sync` is the
// barrier of that group (__syncthreads for a block, __syncwarp for a warp).
template <bool BLOCK>
__device__ __forceinline__ void bitonic_sort(unsigned long long* a, int n, int t, int nthreads) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      if (BLOCK) __syncthreads(); else __syncwarp();
      for (int i = t; i < (n >> 1); i += nthreads) {
        int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
        bool asc = (lo & size) == 0;
        unsigned long long A = a[lo], B = a[hi];
        if ((A > B) == asc) { a[lo] = B; a[hi] = A; }
      }
    }
  }
  if (BLOCK) __syncthreads(); else __syncwarp();
}

// ---- warp-level running top-k of one query (v2 and v3). The query's list is 2*KB keys in shared memory: [KB best |
// KB candidates]; `cnt` counts the candidates, `kth` is the k-th best key so far (EMPTY_KEY until k keys were
// kept). warp_select_tile offers one tile of BN distances (base rows n0 .. n0+BN-1; rows >= N are skipped):
// if the tile could overflow the candidates, the warp first bitonic-sorts the whole list (best KB stay in front,
// the candidate half is cleared, kth refreshed); then lanes compare two keys each with kth, __ballot_sync +
// __popc give each survivor its slot (no atomics). dist(nl) returns the distance of tile column nl. Keys are
// (distance, index), so ties go to the lower index. Called by all 32 lanes of one warp; __syncwarp only.
template <int KB, int BN, typename DistFn>
__device__ __forceinline__ void warp_select_tile(unsigned long long* list, int& cnt, unsigned long long& kth,
                                                 DistFn dist, int n0, int N, int k, int lane) {
  static_assert(KB >= BN, "a whole tile of candidates must fit the list");
  int c = cnt;
  if (c + BN > KB) {
    bitonic_sort<false>(list, 2 * KB, lane, 32);
    for (int i = KB + lane; i < 2 * KB; i += 32) list[i] = EMPTY_KEY;
    __syncwarp();
    if (lane == 0) kth = list[k - 1];
    c = 0;
    __syncwarp();
  }
  const unsigned long long th = kth;
#pragma unroll
  for (int h = 0; h < BN / 32; ++h) {
    int nl = lane + 32 * h, n = n0 + nl;
    unsigned long long key = n < N ? pack_key(dist(nl), n) : EMPTY_KEY;
    bool take = key < th;
    unsigned m = __ballot_sync(0xffffffffu, take);
    if (take) list[KB + c + __popc(m & ((1u << lane) - 1u))] = key;
    c += __popc(m);
  }
  if (lane == 0) cnt = c;
  __syncwarp();
}

// Final sort of one query's list and the k smallest keys out (out_d / out_i point at the query's row).
template <int KB>
__device__ __forceinline__ void warp_select_finish(unsigned long long* list, int k, int lane,
                                                   float* __restrict__ out_d, long long* __restrict__ out_i) {
  bitonic_sort<false>(list, 2 * KB, lane, 32);
  for (int j = lane; j < k; j += 32) {
    out_d[j] = key_dist(list[j]);
    out_i[j] = key_idx(list[j]);
  }
}

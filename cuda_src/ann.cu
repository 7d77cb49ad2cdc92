// ann.cu — IVF search (the ann family, harness/families/ann.py): coarse top-nprobe selection, IVF-Flat and IVF-PQ
// list scans fused with a running top-k, and the exact re-rank of PQ candidates. Plain CUDA C++: no inline PTX, no
// tensor-core intrinsics (issue 27's interpreter runs this file on the CPU).
//
// Index layout: centroids [nlist, D] fp32; off [nlist + 1] int64 (list l = entries off[l] .. off[l+1]-1); ids [N]
// int64 (base id of every entry); IVF-Flat vecs [N, D] fp32 in entry order; IVF-PQ codes [N, m] uint8 and codebooks
// cb [m, 256, D/m] fp32 of the residuals x - c. Queries x [Q, D] fp32, probe [Q, nprobe] int64 (the lists to scan).
// Outputs dist [Q, k] fp32 ascending, idx [Q, k] int64 (base ids; -1 / +inf where the probed lists hold fewer than
// k entries). Selection is knn.cu's warp select on packed (distance, entry) keys (topk.cuh).
//
// Napkin math at the headline (1M x 128 fp32, nlist 4096 -> L = 244 entries a list, Q = 10k, k = 10, nprobe 32):
//   coarse   cuBLAS SGEMM 2*Q*nlist*D = 10.7 GFLOP (~0.2 ms) + ann_select over the Q x nlist fp32 matrix
//            (164 MB written and read: ~0.1 ms).
//   flat     per query nprobe*L*4D = 4.0 MB of vectors, 3 FLOP per 4 bytes: 40 GB for 10k queries, ~12 ms at
//            3.35 TB/s (H100) if no probe hits L2 -> ~0.8 M queries/s; memory-bound by 20x on the FMA roof.
//   pq m=16  per (query, list) the LUT build reads the 128 KB codebook (L2-resident) and does 256*D*3 = 98 kFLOP,
//            the scan reads L*m = 3.9 KB of codes and does L*m smem loads; per query 125 KB of codes (1.25 GB for
//            10k: 0.37 ms at 3.35 TB/s) against 3.1 MFLOP of LUT work (31 GFLOP: ~0.6 ms at the ~50 TFLOP/s fp32
//            FMA roof, more through smem): the LUT build, not the codes, bounds v1 at L = 244.
#include "common.cuh"
#include "topk.cuh"

#define ANN_WARPS 8

// Lane r ends with the sum over the warp of v[r] (row r's partial sums, one per lane): a butterfly that halves the
// row set at every stage, 16 + 8 + 4 + 2 + 1 = 31 shuffles for 32 rows (not 32 x 5 for 32 separate reductions).
// One template per stage: every index into v is a constant, so v stays in registers.
template <int S>
__device__ __forceinline__ void transpose_stage(float (&v)[32], int lane) {
  const bool upper = (lane & S) != 0;
#pragma unroll
  for (int i = 0; i < S; ++i) {
    const float send = upper ? v[i] : v[i + S];
    const float keep = upper ? v[i + S] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, S);
  }
}

__device__ __forceinline__ float transpose_reduce(float (&v)[32], int lane) {
  transpose_stage<16>(v, lane);
  transpose_stage<8>(v, lane);
  transpose_stage<4>(v, lane);
  transpose_stage<2>(v, lane);
  transpose_stage<1>(v, lane);
  return v[0];
}

// The per-warp running lists of one CTA: init, and after the scan the CTA-wide merge of the 8 warps' best KB keys
// (block bitonic sort of 8*KB keys) into merged[0 .. 8*KB).
template <int KB>
__device__ __forceinline__ void lists_init(unsigned long long* lists, int* cnt, unsigned long long* kth, int tid) {
  for (int i = tid; i < ANN_WARPS * 2 * KB; i += blockDim.x) lists[i] = EMPTY_KEY;
  if (tid < ANN_WARPS) { cnt[tid] = 0; kth[tid] = EMPTY_KEY; }
}

template <int KB>
__device__ __forceinline__ void lists_merge(unsigned long long* lists, unsigned long long* merged, int tid) {
  const int lane = tid & 31, warp = tid >> 5;
  unsigned long long* list = lists + warp * 2 * KB;
  bitonic_sort<false>(list, 2 * KB, lane, 32);
  for (int i = lane; i < KB; i += 32) merged[warp * KB + i] = list[i];
  bitonic_sort<true>(merged, ANN_WARPS * KB, tid, blockDim.x);  // starts with __syncthreads
}

// Top k of merged keys (entry indices) out as (distance, base id).
__device__ __forceinline__ void write_entries(const unsigned long long* merged, const long long* __restrict__ ids,
                                              int k, int tid, float* __restrict__ out_d,
                                              long long* __restrict__ out_i) {
  for (int j = tid; j < k; j += blockDim.x) {
    const unsigned long long key = merged[j];
    out_d[j] = key == EMPTY_KEY ? INFINITY : key_dist(key);
    out_i[j] = key == EMPTY_KEY ? -1LL : ids[key_idx(key)];
  }
}

// =================================================================================================================
// ann_select: the coarse step's selection. cd [Q, nlist] holds |c|^2 - 2 x.c from cuBLAS (the launcher); one warp
// per query walks its row 32 centroids at a time with warp_select_tile and writes the nprobe nearest list ids.
// 8 queries per CTA; each warp's [KB best | KB candidates] list lives in dynamic shared memory (8 * 2 * KB * 8 B).
// The X-ray's "4-byte loads" lint stands: a warp step reads 128 contiguous bytes (whole sectors) and the matrix is
// 164 MB at the headline (~0.05 ms); float4 loads would need a 128-wide tile, i.e. KB >= 128 for every nprobe.
template <int KB>
__global__ void __launch_bounds__(256) ann_select(const float* __restrict__ cd, int Q, int nlist, int nprobe,
                                                   long long* __restrict__ probe) {
  extern __shared__ unsigned long long sel_lists[];
  __shared__ int cnt[ANN_WARPS];
  __shared__ unsigned long long kth[ANN_WARPS];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  lists_init<KB>(sel_lists, cnt, kth, tid);
  __syncthreads();
  const int q = blockIdx.x * ANN_WARPS + warp;
  if (q >= Q) return;  // warps are independent from here on: no block barrier follows
  unsigned long long* list = sel_lists + warp * 2 * KB;
  const float* row = cd + (long long)q * nlist;
  for (int n0 = 0; n0 < nlist; n0 += 32)
    warp_select_tile<KB, 32>(list, cnt[warp], kth[warp], [&](int nl) { return row[n0 + nl]; }, n0, nlist, nprobe,
                             lane);
  bitonic_sort<false>(list, 2 * KB, lane, 32);
  for (int j = lane; j < nprobe; j += 32) probe[(long long)q * nprobe + j] = key_idx(list[j]);
}

// =================================================================================================================
// ann_flat_scan (v1): one CTA per query, the probed lists one after another; the 8 warps split each list into tiles
// of 32 entries (tile t -> warp t % 8: a 244-entry list is one tile per warp). A warp reads its tile's 32 rows
// coalesced (lane l takes dims l, l+32, ... of every row; float4 when D % 4 == 0), keeps 32 partial sums of
// (x - v)^2 in registers and transpose_reduce hands lane r row r's distance: direct differences in fp32, the
// exact distances the verdict asks of IVF-Flat. warp_select_tile keeps each warp's k best (distance, entry) keys;
// the CTA merges the 8 lists at the end. What it should change against the Triton scan: 32 rows in flight per warp
// (memory-level parallelism for a bandwidth-bound scan), no L2 round trip of partial lists between programs.
// __launch_bounds__(256, 3): 80 registers (32 partial sums), no spills, 3 CTAs = 24 warps per SM, each with 32
// row loads in flight (at (256) ptxas chose 64 registers and spilled; at (256, 4) it must, 64 again).
template <int KB>
__global__ void __launch_bounds__(256, 3)
    ann_flat_scan(const float* __restrict__ x, const long long* __restrict__ probe, const long long* __restrict__ off,
                  const float* __restrict__ vecs, const long long* __restrict__ ids, int D, int nprobe, int k, int vec4,
                  float* __restrict__ out_d, long long* __restrict__ out_i) {
  extern __shared__ unsigned long long flat_smem[];
  unsigned long long* lists = flat_smem;                          // [8][2 KB]
  unsigned long long* merged = lists + ANN_WARPS * 2 * KB;        // [8 KB]
  float* xs = reinterpret_cast<float*>(merged + ANN_WARPS * KB);  // [D] (16-byte aligned)
  __shared__ int cnt[ANN_WARPS];
  __shared__ unsigned long long kth[ANN_WARPS];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const long long q = blockIdx.x;
  lists_init<KB>(lists, cnt, kth, tid);
  for (int d = tid; d < D; d += blockDim.x) xs[d] = x[q * D + d];
  __syncthreads();
  unsigned long long* list = lists + warp * 2 * KB;
  for (int p = 0; p < nprobe; ++p) {
    const long long l = probe[q * nprobe + p];
    const int start = (int)off[l], end = (int)off[l + 1];
    for (int t0 = start + 32 * warp; t0 < end; t0 += 32 * ANN_WARPS) {
      float part[32];
#pragma unroll
      for (int r = 0; r < 32; ++r) part[r] = 0.f;
      if (vec4) {
        for (int d = 4 * lane; d < D; d += 128) {
          const float4 xv = *reinterpret_cast<const float4*>(xs + d);
#pragma unroll
          for (int r = 0; r < 32; ++r) {
            if (t0 + r < end) {
              const float4 v = *reinterpret_cast<const float4*>(vecs + (long long)(t0 + r) * D + d);
              const float a = xv.x - v.x, b = xv.y - v.y, c = xv.z - v.z, e = xv.w - v.w;
              part[r] = fmaf(a, a, fmaf(b, b, fmaf(c, c, fmaf(e, e, part[r]))));
            }
          }
        }
      } else {
        for (int d = lane; d < D; d += 32) {
          const float xd = xs[d];
#pragma unroll
          for (int r = 0; r < 32; ++r) {
            if (t0 + r < end) {
              const float t = xd - vecs[(long long)(t0 + r) * D + d];
              part[r] = fmaf(t, t, part[r]);
            }
          }
        }
      }
      const float mine = transpose_reduce(part, lane);
      warp_select_tile<KB, 32>(list, cnt[warp], kth[warp], [&](int) { return mine; }, t0, end, k, lane);
    }
  }
  lists_merge<KB>(lists, merged, tid);
  write_entries(merged, ids, k, tid, out_d + q * k, out_i + q * k);
}

// Table sum of 4 codes packed little-endian in one 32-bit word; lw points at the first code's sub-quantizer.
__device__ __forceinline__ float lut4(const float* lw, unsigned v) {
  return lw[v & 0xFF] + lw[256 + ((v >> 8) & 0xFF)] + lw[512 + ((v >> 16) & 0xFF)] + lw[768 + (v >> 24)];
}

// =================================================================================================================
// ann_pq_scan (v1): one CTA per query, the probed lists one after another. Per list: the residual r = x - c_l
// (smem), then the lookup table lut[j][c] = |r_j - C_j[c]|^2 (m x 256 fp32 in shared memory: thread t builds code
// t of every sub-quantizer, reading C_j[t] coalesced across the warp, direct differences), then the 8 warps scan
// the list's codes 32 entries at a time (lane = entry: m code bytes, 32-bit words when m % 4 == 0, and m table
// loads from shared memory) into warp_select_tile. vec = codes and codebook 16-byte aligned: 16-byte loads where m
// and D/m allow. kr = k (no re-rank) or k * r candidates; with rerank the CTA
// merge's kr best get exact distances sum (x - base[id])^2 (one warp per candidate, lanes over dims, kr * 4D bytes
// per query) and the k best of those are written. What it should change against the Triton scan: the table in
// shared memory (no L1/L2 scratch round trip) and one CTA-wide table build per (query, list).
template <int KB>
__global__ void __launch_bounds__(256) ann_pq_scan(const float* __restrict__ x, const float* __restrict__ cent,
                                                    const long long* __restrict__ probe,
                                                    const long long* __restrict__ off,
                                                    const unsigned char* __restrict__ codes,
                                                    const float* __restrict__ cb, const long long* __restrict__ ids,
                                                    const float* __restrict__ base, int D, int m, int nprobe, int k,
                                                    int kr, int rerank, int vec, float* __restrict__ out_d,
                                                    long long* __restrict__ out_i) {
  extern __shared__ unsigned long long pq_smem[];
  unsigned long long* lists = pq_smem;                             // [8][2 KB]
  unsigned long long* merged = lists + ANN_WARPS * 2 * KB;         // [8 KB]
  float* lut = reinterpret_cast<float*>(merged + ANN_WARPS * KB);  // [m][256]
  float* res = lut + m * 256;                                      // [D]
  float* xs = res + D;                                             // [D]
  __shared__ int cnt[ANN_WARPS];
  __shared__ unsigned long long kth[ANN_WARPS];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const long long q = blockIdx.x;
  const int dsub = D / m;
  lists_init<KB>(lists, cnt, kth, tid);
  for (int d = tid; d < D; d += blockDim.x) xs[d] = x[q * D + d];
  unsigned long long* list = lists + warp * 2 * KB;
  for (int p = 0; p < nprobe; ++p) {
    const long long l = probe[q * nprobe + p];
    const int start = (int)off[l], end = (int)off[l + 1];
    __syncthreads();  // the previous list's scan no longer reads lut / res (and xs is complete)
    for (int d = tid; d < D; d += blockDim.x) res[d] = xs[d] - cent[l * D + d];
    __syncthreads();
    for (int j = 0; j < m; ++j) {  // blockDim.x == 256 == codes per sub-quantizer
      const float* c = cb + ((long long)j * 256 + tid) * dsub;
      const float* r = res + j * dsub;
      float s = 0.f;
      int i = 0;
      if (vec && (dsub & 3) == 0)  // 16-byte codebook loads: a warp reads 32 x dsub consecutive floats
        for (; i < dsub; i += 4) {
          const float4 v = *reinterpret_cast<const float4*>(c + i);
          const float a0 = r[i] - v.x, a1 = r[i + 1] - v.y, a2 = r[i + 2] - v.z, a3 = r[i + 3] - v.w;
          s = fmaf(a3, a3, fmaf(a2, a2, fmaf(a1, a1, fmaf(a0, a0, s))));
        }
      for (; i < dsub; ++i) { const float t = r[i] - c[i]; s = fmaf(t, t, s); }
      lut[j * 256 + tid] = s;
    }
    __syncthreads();
    for (int t0 = start + 32 * warp; t0 < end; t0 += 32 * ANN_WARPS) {
      const int e = t0 + lane;
      float a = 0.f;
      if (e < end) {
        const unsigned char* ce = codes + (long long)e * m;
        if (vec && (m & 15) == 0) {  // 16 codes per 16-byte load (m = 16: one load an entry)
          const uint4* cw = reinterpret_cast<const uint4*>(ce);
          for (int w = 0; w < (m >> 4); ++w) {
            const uint4 v = cw[w];
            const float* lw = lut + (16 * w) * 256;
            a += lut4(lw, v.x) + lut4(lw + 1024, v.y) + lut4(lw + 2048, v.z) + lut4(lw + 3072, v.w);
          }
        } else if ((m & 3) == 0) {
          const unsigned* cw = reinterpret_cast<const unsigned*>(ce);
          for (int w = 0; w < (m >> 2); ++w) a += lut4(lut + (4 * w) * 256, cw[w]);
        } else {
          for (int j = 0; j < m; ++j) a += lut[j * 256 + ce[j]];
        }
      }
      warp_select_tile<KB, 32>(list, cnt[warp], kth[warp], [&](int) { return a; }, t0, end, kr, lane);
    }
  }
  lists_merge<KB>(lists, merged, tid);
  if (!rerank) {
    write_entries(merged, ids, k, tid, out_d + q * k, out_i + q * k);
    return;
  }
  // exact re-rank of the kr best: keys (exact distance, base id) into lists[0 .. KB), the rest empty
  for (int c = warp; c < KB; c += ANN_WARPS) {
    unsigned long long key = EMPTY_KEY;
    if (c < kr && merged[c] != EMPTY_KEY) {
      const long long id = ids[key_idx(merged[c])];
      const float* row = base + id * D;
      float s = 0.f;
      for (int d = lane; d < D; d += 32) { const float t = xs[d] - row[d]; s = fmaf(t, t, s); }
      key = pack_key(warp_reduce_sum(s), (int)id);
    }
    if (lane == 0) lists[c] = key;
  }
  bitonic_sort<true>(lists, KB, tid, blockDim.x);
  for (int j = tid; j < k; j += blockDim.x) {
    const unsigned long long key = lists[j];
    out_d[q * k + j] = key == EMPTY_KEY ? INFINITY : key_dist(key);
    out_i[q * k + j] = key == EMPTY_KEY ? -1LL : key_idx(key);
  }
}

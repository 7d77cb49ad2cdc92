// attention.cu — fused attention forward (prefill) and split-K decode, raw CUDA (llm.c dev/cuda style).
//
// O = softmax(Q K^T * scale) V per (batch, head), plus LSE = log(sum_j exp(s_ij)) (natural log, fp32).
//   q [B, H, Nq, D], k/v [B, Hkv, Nkv, D], o [B, H, Nq, D]   contiguous, T = __half or __nv_bfloat16
//   lse [B, H, Nq] float32.  GQA: head h reads kv head h / (H / Hkv).
//   causal: bottom-right aligned, query i sees keys j <= i + (Nkv - Nq); a row that sees nothing gets O = 0,
//   LSE = -inf.
// Every kernel keeps scores in the log2 domain: s2 = (q.k) * scale * log2(e), so exp is exp2f (MUFU.EX2) and
// LSE = (m2 + log2(l)) * ln(2).  Masked scores are -inf; the running max of a row that has seen only -inf is
// replaced by 0 before exponentiating (exp2(-inf - 0) = 0 instead of exp2(-inf + inf) = NaN).
//
// Napkin math (H100, bf16, B=4, H=32, N=4096, D=128, non-causal): 4*B*H*N^2*D = 1.1 TFLOP against
// (Q+K+V+O) = 4*B*H*N*D*2 = 537 MB: ~2000 FLOP/B, far above the ridge (295 FLOP/B): prefill is compute-bound and
// only tensor cores (989 TF) can get near the FlashAttention figures (FA2 ~350 TF, FA3 ~600 TF).
// Decode (Nq = 1) does 4*Nkv*D FLOPs per head against 2*Nkv*D*2 bytes of cache per kv head: 1 FLOP/B (x H/Hkv),
// memory-bound, so the only number that matters is GB/s while reading the cache once.
#include "common.cuh"

#include <type_traits>

#define ATTN_LN2 0.6931471805599453f
#define ATTN_NO_LIMIT 0x7fffffff

// =====================================================================================================================
// Shared SIMT engine (v1 and decode): K/V tiles of 32 keys staged in shared memory as fp32; one lane per key for the
// scores (a D-long dot product with Q read as broadcast float4), the softmax row statistics by warp shuffles, then
// P.V with p_j broadcast by __shfl_sync and lane owning output columns lane, lane+32, ... (D/32 of them).
// Each warp owns R query rows (row = r * NWARPS + warp, so a partly filled block spreads its rows over all warps).
// =====================================================================================================================
template <int D, int ROWS>
struct SimtSmem {
  float q[ROWS][D];    // Q rows pre-scaled by scale*log2(e); row stride D*4 bytes keeps float4 reads aligned
  float k[32][D + 1];  // +1 float: lane j reads k[j][d], banks (j*(D+1) + d) % 32 = (j + d) % 32 are distinct
  float v[32][D];      // all lanes read one row: consecutive words, conflict-free
  int limit[ROWS];     // last key row r may see (inclusive); -1 marks an absent row (beyond Nq)
};

// Stage nrows contiguous Q rows starting at qb (rows >= nrows are zero) as fp32 * scale_log2.
template <typename T, int D, int ROWS, int NT>
__device__ __forceinline__ void simt_stage_q(SimtSmem<D, ROWS>& sm, const T* __restrict__ qb, int nrows,
                                             float scale_log2) {
  constexpr int CPR = D / 8;  // 16-byte chunks per row
  for (int c = threadIdx.x; c < ROWS * CPR; c += NT) {
    const int r = c / CPR, col = (c % CPR) * 8;
    int4 raw = make_int4(0, 0, 0, 0);
    if (r < nrows) raw = load16(qb + (size_t)r * D + col);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) sm.q[r][col + i] = to_float<T>(e[i]) * scale_log2;
  }
}

// Attend the block's staged Q rows to keys [k_begin, k_end) of one kv head (kb/vb: [Nkv, D] row-major).
// Returns per warp: o[r][i] = unnormalised sum_j p_j v[j][lane + 32 i], m[r] = running max (log2 domain, the same
// in every lane), l[r] = this lane's partial sum of p (warp-reduce it for the row total).
// Reads sm.q and sm.limit only after its first __syncthreads, so the caller may stage them just before calling.
template <typename T, int D, int NWARPS, int R>
__device__ __forceinline__ void simt_attend(SimtSmem<D, NWARPS * R>& sm, const T* __restrict__ kb,
                                            const T* __restrict__ vb, int k_begin, int k_end, bool warp_active,
                                            float (&o)[R][D / 32], float (&m)[R], float (&l)[R]) {
  constexpr int NT = NWARPS * 32, CPR = D / 8, CH = 32 * CPR / NT;  // 16-byte chunks per thread per tile
  static_assert((32 * CPR) % NT == 0, "tile chunks must split evenly over the block");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int i = 0; i < D / 32; ++i) o[r][i] = 0.f;
  }
  for (int t0 = k_begin; t0 < k_end; t0 += 32) {
    // issue every global load of the tile before the barrier: they fly while slower warps finish the last tile
    int4 kr[CH], vr[CH];
#pragma unroll
    for (int i = 0; i < CH; ++i) {
      const int c = threadIdx.x + i * NT, key = t0 + c / CPR, col = (c % CPR) * 8;
      kr[i] = vr[i] = make_int4(0, 0, 0, 0);  // keys past k_end are zero: p = 0 must not meet NaN garbage
      if (key < k_end) {
        kr[i] = load16(kb + (size_t)key * D + col);
        vr[i] = load16(vb + (size_t)key * D + col);
      }
    }
    __syncthreads();  // every warp is done with the previous tile
#pragma unroll
    for (int i = 0; i < CH; ++i) {
      const int c = threadIdx.x + i * NT, row = c / CPR, col = (c % CPR) * 8;
      const T* ke = reinterpret_cast<const T*>(&kr[i]);
      const T* ve = reinterpret_cast<const T*>(&vr[i]);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        sm.k[row][col + e] = to_float<T>(ke[e]);
        sm.v[row][col + e] = to_float<T>(ve[e]);
      }
    }
    __syncthreads();
    if (!warp_active) continue;  // warp-uniform: a warp with no present row only helps load

    // scores: lane = key; per 4 d: 4 LDS of K + R broadcast LDS.128 of Q for 4R FMAs
    const int key = t0 + lane;
    float s[R];
#pragma unroll
    for (int r = 0; r < R; ++r) s[r] = 0.f;
#pragma unroll 4
    for (int d = 0; d < D; d += 4) {
      const float k0 = sm.k[lane][d], k1 = sm.k[lane][d + 1], k2 = sm.k[lane][d + 2], k3 = sm.k[lane][d + 3];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float4 qv = *reinterpret_cast<const float4*>(&sm.q[r * NWARPS + warp][d]);
        s[r] = fmaf(qv.x, k0, fmaf(qv.y, k1, fmaf(qv.z, k2, fmaf(qv.w, k3, s[r]))));
      }
    }
    // online softmax: new max over the tile, rescale what was accumulated so far by alpha = exp2(m_old - m_new)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const bool ok = key < k_end && key <= sm.limit[r * NWARPS + warp];
      const float x = ok ? s[r] : -INFINITY;
      const float mn = fmaxf(m[r], warp_reduce_max(x));
      const float base = (mn == -INFINITY) ? 0.f : mn;
      const float alpha = exp2f(m[r] - base);
      s[r] = exp2f(x - base);
      l[r] = l[r] * alpha + s[r];  // per-lane partial: one warp sum at the end instead of one per tile
      m[r] = mn;
#pragma unroll
      for (int i = 0; i < D / 32; ++i) o[r][i] *= alpha;
    }
    // P.V: p_j lives in lane j; broadcast it and stream row j of V (32 consecutive floats per LDS)
#pragma unroll 4
    for (int j = 0; j < 32; ++j) {
      float vv[D / 32];
#pragma unroll
      for (int i = 0; i < D / 32; ++i) vv[i] = sm.v[j][lane + 32 * i];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float p = __shfl_sync(0xffffffffu, s[r], j);
#pragma unroll
        for (int i = 0; i < D / 32; ++i) o[r][i] = fmaf(p, vv[i], o[r][i]);
      }
    }
  }
}

// =====================================================================================================================
// attn_v1_tiled — FlashAttention-1/2 on CUDA cores. One block (4 warps) per (query tile of 16 rows, head, batch);
// K/V stream through shared memory 32 keys at a time with an online softmax, so S and P never touch DRAM: DRAM
// traffic drops from O(N^2) (naive attention materialises B*H*N^2 scores) to Q + O once and K/V once per query tile
// (mostly L2 hits). The math is plain fp32 FMA: at best 67 TF on H100, and shared-memory bound well below that
// (~0.5 LDS per FMA) — the point of v2 is to move both GEMMs onto tensor cores.
// Causal: the block stops at the last key its last row may see, so masked tiles above the diagonal are skipped.
// =====================================================================================================================
constexpr int V1_WARPS = 4, V1_R = 4, V1_ROWS = V1_WARPS * V1_R;

template <typename T, int D>
__global__ void __launch_bounds__(V1_WARPS * 32)
    attn_v1_tiled(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ o,
                  float* __restrict__ lse, int H, int Hkv, int Nq, int Nkv, int causal, float scale_log2) {
  __shared__ __align__(16) SimtSmem<D, V1_ROWS> sm;
  const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * V1_ROWS;
  const int hkv = h / (H / Hkv), diag = Nkv - Nq;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const size_t bh = (size_t)b * H + h;
  const size_t kv_off = ((size_t)b * Hkv + hkv) * (size_t)Nkv * D;
  const int nrows = min(V1_ROWS, Nq - q0);

  simt_stage_q<T, D, V1_ROWS, V1_WARPS * 32>(sm, q + (bh * Nq + q0) * D, nrows, scale_log2);
  for (int r = threadIdx.x; r < V1_ROWS; r += V1_WARPS * 32)
    sm.limit[r] = r < nrows ? (causal ? q0 + r + diag : ATTN_NO_LIMIT) : -1;
  const int k_end = causal ? min(Nkv, q0 + nrows + diag) : Nkv;  // keys past the last row's diagonal: skipped

  float acc[V1_R][D / 32], m[V1_R], l[V1_R];
  simt_attend<T, D, V1_WARPS, V1_R>(sm, k + kv_off, v + kv_off, 0, k_end, warp < nrows, acc, m, l);

#pragma unroll
  for (int r = 0; r < V1_R; ++r) {
    const int row = r * V1_WARPS + warp;  // warp-uniform
    if (row < nrows) {
      const float L = warp_reduce_sum(l[r]);
      const float inv = L > 0.f ? 1.f / L : 0.f;
      T* orow = o + (bh * Nq + q0 + row) * D;
#pragma unroll
      for (int i = 0; i < D / 32; ++i) orow[lane + 32 * i] = from_float<T>(acc[r][i] * inv);  // 64 B per store
      if (lane == 0) lse[bh * Nq + q0 + row] = L > 0.f ? (m[r] + log2f(L)) * ATTN_LN2 : -INFINITY;
    }
  }
}

// =====================================================================================================================
// attn_v2_mma — FlashAttention-2 on tensor cores. Block = 4 warps x 16 query rows (BM = 64), K/V tiles of BN = 64
// keys. S = Q K^T and O += P V are mma.sync.m16n8k16 (16-bit in, fp32 accumulate: 2048 FMAs per warp instruction
// against 32 for an FFMA), so the kernel leaves the 67 TF SIMT ceiling for the 989 TF tensor one (~15x).
//  * Q is read from shared memory once (ldmatrix) and then lives in registers as A fragments (D/16 x 4 regs).
//  * K fragments come from ldmatrix (rows = keys, so the "col" B operand needs no transpose); V uses ldmatrix.trans.
//  * The S accumulator of two adjacent 8-key n-tiles is exactly the A fragment of a 16-key k-step, so P stays in
//    registers: converted to 16 bits and fed to the P.V mma without a shared-memory round trip.
//  * Row max / row sum need only the 4 lanes of a quad (shfl_xor 1, 2); l stays a per-lane partial until the end.
//  * Loads are cp.async with FA2's overlap: V_t is fetched while Q K_t^T and the softmax run, K_{t+1} while P V_t
//    runs (one buffer each, 3 x 64 x D x 2 B = 48 KB at D = 128).
//  * Shared tiles are XOR-swizzled by 16-byte chunk (chunk ^ (row % 8)): the 8 row addresses of every 8x8 ldmatrix
//    land in 8 different bank groups, where the unswizzled 128/256-byte row stride would make them 8-way conflicts.
//  * Tails: rows/keys past Nq/Nkv are zero-filled by cp.async (src-size 0); only tiles that cross Nkv or the causal
//    diagonal pay for the mask; causal blocks stop at their last visible key tile.
// =====================================================================================================================
constexpr int V2_WARPS = 4, V2_BM = 16 * V2_WARPS, V2_BN = 64;

// cp.async, ldmatrix and mma.sync m16n8k16 (fp32 accumulate): common.cuh's helpers.

// two fp32 -> one 32-bit register of 16-bit values; `lo` (the smaller column index) goes in the low half
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

// element offset of 16-byte chunk `chunk` (8 elements) of row `row` in a swizzled [rows][D] 16-bit tile
template <int D>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}
// The same offset split into a per-lane part and a compile-time part, so that the unrolled loops address every
// ldmatrix as one of 4 per-lane byte offsets plus an immediate: for rows row0 + r with row0 a multiple of 8 and chunk
// 8*c8 + c (c < 8), swz = row0*D + 64*c8 + [r*D + ((c ^ (r & 7)) << 3)]  — the bracket depends on the lane (r) and
// on c, i.e. on (16-wide step & 3) for an x4 ldmatrix whose lanes pick chunk 2*step + {0, 1}.
template <int D>
__device__ __forceinline__ uint32_t lane_swz_bytes(int r, int c) {
  return 2u * (uint32_t)(r * D + ((c ^ (r & 7)) << 3));
}

// cp.async rows [row0, row0 + ROWS) of a [n, D] matrix into a swizzled tile; rows >= n are zero-filled
template <typename T, int D, int ROWS>
__device__ __forceinline__ void cp_tile(uint16_t* s, const T* __restrict__ g, int row0, int n) {
  constexpr int CPR = D / 8, NT = V2_WARPS * 32;
  static_assert((ROWS * CPR) % NT == 0, "tile chunks must split evenly over the block");
#pragma unroll
  for (int i = 0; i < ROWS * CPR / NT; ++i) {
    const int c = threadIdx.x + i * NT, r = c / CPR, ch = c % CPR;
    const bool ok = row0 + r < n;
    cp_async_16(s + swz<D>(r, ch), ok ? g + (size_t)(row0 + r) * D + ch * 8 : g, ok);
  }
}

// (128, 2): two blocks per SM is what 48 KB of smem and ~250 registers at D = 128 allow anyway; saying so stops ptxas
// (sm_80, D = 64) from capping itself at 128 registers and spilling.
template <typename T, int D>
__global__ void __launch_bounds__(V2_WARPS * 32, 2)
    attn_v2_mma(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ o,
                float* __restrict__ lse, int H, int Hkv, int Nq, int Nkv, int causal, float scale_log2) {
  static_assert(D % 16 == 0 && D >= 64, "head dim must be a multiple of 16 (>= 64 for the swizzle)");
  constexpr int BM = V2_BM, BN = V2_BN, CPR = D / 8;
  __shared__ __align__(128) uint16_t sQ[BM * D];
  __shared__ __align__(128) uint16_t sK[BN * D];
  __shared__ __align__(128) uint16_t sV[BN * D];

  const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * BM;
  const int hkv = h / (H / Hkv), diag = Nkv - Nq;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const size_t bh = (size_t)b * H + h;
  const T* qb = q + bh * Nq * D;
  const T* kb = k + ((size_t)b * Hkv + hkv) * (size_t)Nkv * D;
  const T* vb = v + ((size_t)b * Hkv + hkv) * (size_t)Nkv * D;
  const int last_row = min(q0 + BM, Nq) - 1;
  const int k_end = causal ? min(Nkv, last_row + diag + 1) : Nkv;
  const int n_tiles = k_end > 0 ? ceil_div(k_end, BN) : 0;

  // prologue: Q and K_0 in flight together; Q then moves to registers for the whole kernel
  cp_tile<T, D, BM>(sQ, qb, q0, Nq);
  if (n_tiles > 0) cp_tile<T, D, BN>(sK, kb, 0, Nkv);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)  // lanes 0-15: rows 0-15 at chunk 2kk (a0, a1); lanes 16-31: chunk 2kk+1
    ldmatrix_x4(qf[kk], smem_u32(&sQ[swz<D>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4))]));

  float acc[D / 8][4];  // O: D/8 n-tiles of 8 columns
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};  // rows g and g + 8 of this warp
  const int row_g = q0 + warp * 16 + (lane >> 2);
  const int mi = lane >> 3, mr = lane & 7;  // which 8x8 matrix this lane addresses in an x4 ldmatrix, and its row
  // K (non-trans): matrices (keys +0, chunk 2kk), (+0, 2kk+1), (+8, 2kk), (+8, 2kk+1) -> b0 b1 of n-tiles 2np, 2np+1
  // V (trans):     matrices (keys +0, chunk 2dp), (+8, 2dp), (+0, 2dp+1), (+8, 2dp+1) -> b0 b1 of d-tiles 2dp, 2dp+1
  const uint32_t sK_a = smem_u32(sK), sV_a = smem_u32(sV);
  uint32_t koff[4], voff[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    koff[j] = lane_swz_bytes<D>(mr + (mi >> 1) * 8, 2 * j + (mi & 1));
    voff[j] = lane_swz_bytes<D>(mr + (mi & 1) * 8, 2 * j + (mi >> 1));
  }

  for (int t = 0; t < n_tiles; ++t) {
    const int n0 = t * BN;
    cp_async_wait_all();
    __syncthreads();  // K_t has landed; every warp finished P V_{t-1}, so sV may be overwritten
    cp_tile<T, D, BN>(sV, vb, n0, Nkv);
    cp_async_commit();

    // S = Q K_t^T: x4 ldmatrix gives (b0, b1) of key n-tiles 2np and 2np+1 for one 16-wide d step
    float s[BN / 8][4];
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < BN / 16; ++np) {
        uint32_t kf[4];
        ldmatrix_x4(kf, sK_a + koff[kk & 3] + 2u * (np * 16 * D + (kk >> 2) * 64));
        mma_16816<T>(s[2 * np], qf[kk], kf[0], kf[1]);
        mma_16816<T>(s[2 * np + 1], qf[kk], kf[2], kf[3]);
      }
    }

    // scale into the log2 domain; mask only tiles that cross Nkv or the causal diagonal of the block's first row
    const bool need_mask = (n0 + BN > Nkv) || (causal && n0 + BN - 1 > q0 + diag);
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = n0 + nt * 8 + (lane & 3) * 2 + (e & 1), row = row_g + (e >> 1) * 8;
        float x = s[nt][e] * scale_log2;
        if (need_mask && (col >= Nkv || (causal && col > row + diag))) x = -INFINITY;
        s[nt][e] = x;
      }
    }

    // online softmax for rows g (elements 0, 1) and g + 8 (elements 2, 3); a row lives in the 4 lanes of a quad
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * hr], s[nt][2 * hr + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float mn = fmaxf(m_run[hr], mx);
      const float base = (mn == -INFINITY) ? 0.f : mn;
      const float alpha = exp2f(m_run[hr] - base);
      m_run[hr] = mn;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) {
        s[nt][2 * hr] = exp2f(s[nt][2 * hr] - base);
        s[nt][2 * hr + 1] = exp2f(s[nt][2 * hr + 1] - base);
        sum += s[nt][2 * hr] + s[nt][2 * hr + 1];
      }
      l_run[hr] = l_run[hr] * alpha + sum;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        acc[dt][2 * hr] *= alpha;
        acc[dt][2 * hr + 1] *= alpha;
      }
    }

    cp_async_wait_all();
    __syncthreads();  // V_t has landed; every warp finished reading K_t
    if (t + 1 < n_tiles) cp_tile<T, D, BN>(sK, kb, n0 + BN, Nkv);
    cp_async_commit();

    // O += P V_t: P's A fragment for keys 16kk..16kk+15 is S n-tiles 2kk (a0, a1) and 2kk+1 (a2, a3);
    // x4.trans gives (b0, b1) of output n-tiles 2dp and 2dp+1
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      const uint32_t pa[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                              pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t vf[4];
        ldmatrix_x4_trans(vf, sV_a + voff[dp & 3] + 2u * (kk * 16 * D + (dp >> 2) * 64));
        mma_16816<T>(acc[2 * dp], pa, vf[0], vf[1]);
        mma_16816<T>(acc[2 * dp + 1], pa, vf[2], vf[3]);
      }
    }
  }

  // epilogue: normalise, stage the 16-bit tile in sQ (swizzled) so that global stores are 16-byte and coalesced
  cp_async_wait_all();
  __syncthreads();  // nothing in flight, nobody reads sQ/sK/sV any more
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    float L = l_run[hr];
    L += __shfl_xor_sync(0xffffffffu, L, 1);
    L += __shfl_xor_sync(0xffffffffu, L, 2);
    const float inv = L > 0.f ? 1.f / L : 0.f;
    const int lrow = warp * 16 + (lane >> 2) + hr * 8;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
      *reinterpret_cast<uint32_t*>(&sQ[swz<D>(lrow, dt) + (lane & 3) * 2]) =
          pack2<T>(acc[dt][2 * hr] * inv, acc[dt][2 * hr + 1] * inv);
    if ((lane & 3) == 0 && q0 + lrow < Nq)
      lse[bh * Nq + q0 + lrow] = L > 0.f ? (m_run[hr] + log2f(L)) * ATTN_LN2 : -INFINITY;
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < BM * CPR / (V2_WARPS * 32); ++i) {
    const int c = threadIdx.x + i * V2_WARPS * 32, r = c / CPR, ch = c % CPR;
    if (q0 + r < Nq) store16(o + (bh * Nq + q0 + r) * D + ch * 8, load16(&sQ[swz<D>(r, ch)]));
  }
}

// =====================================================================================================================
// decode_v1_splitk — flash-decoding. With 1..4 queries per sequence a (batch, head) has too little work for a block,
// and B*H blocks cannot fill 132 SMs, so the valid cache of each sequence is cut into num_splits slices: block
// (split, kv head x row group, batch) attends every query row of its kv head's group (G = H/Hkv heads x Nq) to one
// slice, so each cache byte is read once (bytes = 2*B*Hkv*Nkv*D*s), and writes unnormalised (o, m, l) in fp32 to
// scratch. decode_v1_combine then merges the num_splits partials of a row by log-sum-exp. Math is the SIMT engine:
// `rows` FMAs per 2-byte cache element, i.e. rows/2 FMA/B, under the H100 SIMT ridge (29 T FMA/s / 3.35 TB/s =
// ~8.6 FMA/B) while a block holds <= 16 rows; R (rows per warp: 1, 2, 4) is picked on the host so that warps do not
// compute rows that do not exist.
// Splits past a sequence's length (seqlens vary) do no work and write m = -inf, l = 0, o = 0.
// =====================================================================================================================
constexpr int DEC_WARPS = 4;

template <typename T, int D, int R>
__global__ void __launch_bounds__(DEC_WARPS * 32)
    decode_v1_splitk(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                     const int* __restrict__ seqlens, float* __restrict__ o_part, float* __restrict__ m_part,
                     float* __restrict__ l_part, int H, int Hkv, int Nq, int Nkv, int split_len, float scale_log2) {
  constexpr int ROWS = DEC_WARPS * R;
  __shared__ __align__(16) SimtSmem<D, ROWS> sm;
  const int split = blockIdx.x, S = gridDim.x, b = blockIdx.z;
  const int G = H / Hkv, rows_total = G * Nq, n_rg = ceil_div(rows_total, ROWS);
  const int hkv = blockIdx.y / n_rg, r0 = (blockIdx.y % n_rg) * ROWS;
  const int nrows = min(ROWS, rows_total - r0);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // q rows of the G heads of one kv head are consecutive in [B, H, Nq, D]: row (g, i) is row g*Nq + i of the group
  const size_t row0 = ((size_t)b * H + (size_t)hkv * G) * Nq + r0;
  const size_t kv_off = ((size_t)b * Hkv + hkv) * (size_t)Nkv * D;
  const int seqlen = min(seqlens[b], Nkv);
  const int k_begin = split * split_len, k_end = min(k_begin + split_len, seqlen);

  simt_stage_q<T, D, ROWS, DEC_WARPS * 32>(sm, q + row0 * D, nrows, scale_log2);
  for (int r = threadIdx.x; r < ROWS; r += DEC_WARPS * 32) sm.limit[r] = r < nrows ? ATTN_NO_LIMIT : -1;

  float acc[R][D / 32], m[R], l[R];
  simt_attend<T, D, DEC_WARPS, R>(sm, k + kv_off, v + kv_off, k_begin, k_end, warp < nrows, acc, m, l);

#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int row = r * DEC_WARPS + warp;  // warp-uniform
    if (row < nrows) {
      const float L = warp_reduce_sum(l[r]);
      const size_t p = (row0 + row) * S + split;
#pragma unroll
      for (int i = 0; i < D / 32; ++i) o_part[p * D + lane + 32 * i] = acc[r][i];
      if (lane == 0) {
        m_part[p] = m[r];
        l_part[p] = L;
      }
    }
  }
}

// One block of D threads per output row (b, h, i): O = sum_s o_s 2^(m_s - M) / sum_s l_s 2^(m_s - M).
// Reads S*(D+2)*4 bytes per row: at S <= 32 and Nkv >= 1k this is a few % of the cache bytes.
template <typename T, int D>
__global__ void __launch_bounds__(D)
    decode_v1_combine(const float* __restrict__ o_part, const float* __restrict__ m_part,
                      const float* __restrict__ l_part, T* __restrict__ o, float* __restrict__ lse, int S) {
  const size_t row = blockIdx.x;
  const int d = threadIdx.x;
  const float* mp = m_part + row * S;
  const float* lp = l_part + row * S;
  float M = -INFINITY;
  for (int s = 0; s < S; ++s) M = fmaxf(M, mp[s]);
  const float base = (M == -INFINITY) ? 0.f : M;
  float L = 0.f, acc = 0.f;
  for (int s = 0; s < S; ++s) {
    const float w = exp2f(mp[s] - base);  // empty split: m = -inf -> w = 0
    L = fmaf(lp[s], w, L);
    acc = fmaf(o_part[(row * S + s) * D + d], w, acc);
  }
  o[row * D + d] = from_float<T>(L > 0.f ? acc / L : 0.f);
  if (d == 0) lse[row] = L > 0.f ? (M + log2f(L)) * ATTN_LN2 : -INFINITY;
}

// =====================================================================================================================
// attn_v3_wgmma — FlashAttention-3-style forward on Hopper (sm_90a only, host mode; CPU-verified, GPU-pending).
// Idea: v2 issues mma.sync m16n8k16 from every warp with operands it first moved from shared memory into registers
// (ldmatrix), and loads with cp.async from all threads; on H100 that path tops out near ~2/3 of the dense peak
// (v2 measured 289 TF at B4 H16 N4096 D128 bf16). v3 moves to the Hopper data path:
//  * a producer warpgroup (one thread) streams K and V tiles of BN = 128 keys with TMA (UTMALDG: one instruction per
//    64-column box, zero-filled past Nkv, 128-B swizzled) into a STAGES-deep ring, completion counted in bytes on
//    full barriers (separate for K and V, so Q K^T starts before V has landed); consumers free a slot on `empty`;
//  * two consumer warpgroups, 64 query rows each (BM = 128 per CTA), compute S = Q K^T with wgmma m64n128k16 (HGMMA,
//    Q and K both read by the tensor cores straight from swizzled shared memory through matrix descriptors), the
//    online softmax in registers (exp2 of log2e-scaled scores, quad shuffles for row max/sum), convert P to 16 bits
//    in registers and accumulate O += P V with wgmma m64nDk16 whose A operand is P in registers (the S accumulator
//    layout of two adjacent 8-column groups is the A fragment of a k16 step, as in v2) and B = V from shared memory
//    (N-major: imm-trans-b = 1);
//  * setmaxnreg: producer 24 registers, consumers 240 (128 x 24 + 256 x 240 = 64,512 of 65,536).
// Napkin math (H100 SXM, bf16, B=4 H=16 N=4096 D=128, non-causal): 4*B*H*N^2*D = 550 GFLOP against
// (Q+K+V+O) 4*B*H*N*D*2 B = 268 MB: ~2000 FLOP/B, 7x past the ridge (~295 FLOP/B): compute-bound, 0.56 ms at the
// 989 TF peak. Per CTA k-tile (D = 128): 2 x 64x128x128 x 2 GEMMs = 8.4 MFLOP against 32 KB K + 32 KB V by TMA and
// 2 x (16 + 32 + 32) KB read by the wgmmas (Q, K, V; P comes from registers): 224 KB for 8.4 MFLOP = 37 FLOP/B,
// above the 32 FLOP/B the 128 B/clk/SM shared port needs at 4096 FLOP/clk/SM, where v2's ldmatrix path re-reads
// K/V per warp (4 warps x 64 rows: ~16 FLOP/B).
// What it should change vs v2: from 289 TF to roughly 400-500 TF: the two consumer warpgroups overlap each other's
// softmax with their GEMMs only through the warp scheduler. Left out of this first rung (what FA3 adds for its
// ~650 TF): the explicit ping-pong between consumers (named barriers), the intra-warpgroup overlap of softmax(t)
// with Q K^T(t+1), a TMA store epilogue (O goes out as 4-byte stores from registers), persistent CTAs.
// Layouts: q/k/v are 3-D tensor maps {D, N, B*H(kv)} (D innermost), boxes {64, rows, 1}: rows past N of a head are
// zero-filled instead of being read from the next head. A [rows][64] box has 128-B rows; D = 128 is two boxes.
// Masking: keys >= Nkv (zero-filled, but their score 0 is not -inf) and causal keys j > i + Nkv - Nq get -inf; only
// tiles that cross Nkv or the consumer's first-row diagonal pay for it, in a separate compiled copy of the tile body
// (FA3's split): the unmasked copy has no per-element predicates. A CTA whose rows see no key loads nothing and
// writes O = 0, LSE = -inf. Causal CTAs stop at the tile holding their last row's last visible key.
// Hot-loop model (harness/hotloop.py; sm_90a, D = 128, 8 consumer warps/SM, per 128-key tile): one loop with the
// masks built on every tile and exp2f(s * scale - m) was 1437 instr/iter/warp, issue 2874 vs tensor 2048 cycles,
// ALU pipe 3164 (791 ALU instructions at 16 lanes/clk per sub-partition): ALU-bound. Split loops + p = ex2.approx.ftz
// (fma(s, scale, -m scale)): unmasked 595 instr, issue 1190 (non-tensor 1158 = 0.57 x tensor), MUFU 1056 vs tensor
// 2048: tensor-bound; masked tiles 791 instr. Still exposed: wgmma.wait_group 0 after each GEMM leaves 874 issue
// cycles per tile outside any MMA, 2922 cycles if both consumers run in step (what FA3's ping-pong and the overlap
// of softmax(t) with Q K^T(t + 1) hide). GPU: pending.
// ATTN_V3_CONSTS_BEGIN
namespace attn90 {
constexpr int BM = 64, CONSUMERS = 2, ROWS = BM * CONSUMERS, BN = 128, THREADS = 128 * (1 + CONSUMERS);
constexpr int PRODUCER_REGS = 24, CONSUMER_REGS = 240;
constexpr int BOX = 64 * 128;  // bytes of one [64 rows][64 cols] 16-bit box (Q); K/V boxes are [BN][64]: BN * 128
static_assert(128 * PRODUCER_REGS + 128 * CONSUMERS * CONSUMER_REGS <= 65536, "register file");
template <int D> struct Cfg {
  static constexpr int STAGES = D == 64 ? 3 : 2;        // D=64: 16 KB + 3 x 32 KB; D=128: 32 KB + 2 x 64 KB
  static constexpr int Q_BYTES = ROWS * D * 2;          // 16 / 32 KB
  static constexpr int KV_BYTES = BN * D * 2;           // one K (or V) tile: 16 / 32 KB
  static constexpr int SMEM = Q_BYTES + STAGES * 2 * KV_BYTES + 1024;  // + slack to align to the 1 KB swizzle atom
  static_assert(SMEM <= 227 * 1024, "exceeds the opt-in shared memory of an H100 block");
};
}  // namespace attn90
// ATTN_V3_CONSTS_END

#include "sm90.cuh"  // mbarrier, TMA, setmaxnreg, the cuTensorMapEncodeTiled entry point

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
namespace attn90 {
// ATTN_V3_DESC_BEGIN
// wgmma matrix descriptor, 128-byte swizzle (layout 1 in bits 62-63), byte offsets >> 4; every tile is 1 KB aligned
// (base offset 0). K-major operand: 128-B rows along K, SBO = 1 KB between 8-row groups. N-major: one 128-B row
// (64 N) per k, SBO = 1 KB between 8-k groups, LBO = bytes between 64-column boxes.
__host__ __device__ __forceinline__ uint64_t make_desc_u32(uint32_t saddr, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  uint64_t d = 0;
  d |= (uint64_t)((saddr & 0x3FFFF) >> 4);
  d |= (uint64_t)((lbo_bytes >> 4) & 0x3FFF) << 16;
  d |= (uint64_t)((sbo_bytes >> 4) & 0x3FFF) << 32;
  d |= (uint64_t)1 << 62;
  return d;
}
// ATTN_V3_DESC_END
__device__ __forceinline__ uint64_t make_desc(const void* p, uint32_t lbo, uint32_t sbo) {
  return make_desc_u32(smem_u32(p), lbo, sbo);
}
using hopper::mbar_arrive;
using hopper::mbar_expect_tx;
using hopper::mbar_init;
using hopper::mbar_wait;
using hopper::setmaxnreg_dec;
using hopper::setmaxnreg_inc;
using hopper::tma_load_3d;
using hopper::wgmma_commit;
using hopper::wgmma_fence;
using hopper::wgmma_wait0;

// D[64xN] (+)= A[64x16] * B[16xN]. wgmma_ss: A K-major and B K-major (keys x d, i.e. K itself) from shared memory;
// wgmma_rs: A from registers (the m16n8k16-style fragment of each warp's 16 rows), B N-major (V: keys x d) from
// shared memory with imm-trans-b = 1. scale_d = 0 overwrites D.
template <typename T, int N> __device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t da, uint64_t db, int scale_d);
template <typename T, int N> __device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t db, int scale_d);
template <> __device__ __forceinline__ void wgmma_ss<__half, 128>(float (&d)[64], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(scale_d));
}
template <> __device__ __forceinline__ void wgmma_rs<__half, 64>(float (&d)[32], const uint32_t (&a)[4], uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
}
template <> __device__ __forceinline__ void wgmma_rs<__half, 128>(float (&d)[64], const uint32_t (&a)[4], uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
}
template <> __device__ __forceinline__ void wgmma_ss<__nv_bfloat16, 128>(float (&d)[64], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(scale_d));
}
template <> __device__ __forceinline__ void wgmma_rs<__nv_bfloat16, 64>(float (&d)[32], const uint32_t (&a)[4], uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
}
template <> __device__ __forceinline__ void wgmma_rs<__nv_bfloat16, 128>(float (&d)[64], const uint32_t (&a)[4], uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
}
template <typename T> struct Pair16;
template <> struct Pair16<__half> { using type = __half2; };
template <> struct Pair16<__nv_bfloat16> { using type = __nv_bfloat162; };
}  // namespace attn90
#endif

// ATTN_V3_KERNEL_BEGIN
// Launch: grid (ceil(Nq / 128), H, B), block 384, dynamic shared Cfg<D>::SMEM. Maps: {D, N, B*H(kv)}, box {64, 64, 1}
// (Q) and {64, 128, 1} (K, V), 128-B swizzle, OOB zero-fill.
template <typename T, int D>
__global__ void __launch_bounds__(attn90::THREADS, 1)
    attn_v3_wgmma(const __grid_constant__ CUtensorMap tmQ, const __grid_constant__ CUtensorMap tmK,
                  const __grid_constant__ CUtensorMap tmV, T* __restrict__ o, float* __restrict__ lse, int H, int Hkv,
                  int Nq, int Nkv, int causal, float scale_log2) {
  using namespace attn90;
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(D == 64 || D == 128, "head dim 64 or 128");
  constexpr int STAGES = Cfg<D>::STAGES, KV_BYTES = Cfg<D>::KV_BYTES, DB = D / 64;  // DB: 64-column boxes per row
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* sQ = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  unsigned char* ring = sQ + Cfg<D>::Q_BYTES;  // stage s: K tile at 2s, V tile at 2s + 1 (KV_BYTES each)
  __shared__ __align__(8) uint64_t qbar, fullK[STAGES], fullV[STAGES], empty[STAGES];

  const int tid = threadIdx.x, wg = tid / 128;
  const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ROWS;
  const int bh = b * H + h, bkv = b * Hkv + h / (H / Hkv), diag = Nkv - Nq;
  const int last_row = min(q0 + ROWS, Nq) - 1;
  const int k_end = causal ? min(Nkv, last_row + diag + 1) : Nkv;
  const int n_tiles = k_end > 0 ? (k_end + BN - 1) / BN : 0;

  if (tid == 0) {
    mbar_init(&qbar, 1);
#pragma unroll
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(&fullK[s], 1);
      mbar_init(&fullV[s], 1);
      mbar_init(&empty[s], CONSUMERS * 4);  // lane 0 of every consumer warp
    }
    hopper::fence_mbarrier_init();
  }
  __syncthreads();  // the last block-wide barrier: the roles synchronise through mbarriers from here on

  if (wg == 0) {  // ------------------------------------------------------------------------------------- producer
    setmaxnreg_dec<PRODUCER_REGS>();
    if (tid == 0 && n_tiles > 0) {
      mbar_expect_tx(&qbar, Cfg<D>::Q_BYTES);
#pragma unroll
      for (int c = 0; c < CONSUMERS; ++c)
#pragma unroll
        for (int j = 0; j < DB; ++j) tma_load_3d(sQ + (c * DB + j) * BOX, &tmQ, &qbar, j * 64, q0 + c * BM, bh);
      for (int t = 0; t < n_tiles; ++t) {
        const int s = t % STAGES;
        // pass p refills a slot freed in pass p-1; a fresh barrier counts as "parity 1 complete": pass 0 waits for none
        mbar_wait(&empty[s], ((t / STAGES) & 1) ^ 1);
        unsigned char* sk = ring + (2 * s) * KV_BYTES;
        mbar_expect_tx(&fullK[s], KV_BYTES);  // OOB box elements are zero-filled and still counted
#pragma unroll
        for (int j = 0; j < DB; ++j) tma_load_3d(sk + j * BN * 128, &tmK, &fullK[s], j * 64, t * BN, bkv);
        mbar_expect_tx(&fullV[s], KV_BYTES);
#pragma unroll
        for (int j = 0; j < DB; ++j) tma_load_3d(sk + KV_BYTES + j * BN * 128, &tmV, &fullV[s], j * 64, t * BN, bkv);
      }
    }
  } else {  // ------------------------------------------------------------------------------------------ consumers
    setmaxnreg_inc<CONSUMER_REGS>();
    const int c = wg - 1, warp = (tid % 128) / 32, lane = tid % 32;
    const int qc0 = q0 + c * BM;                    // this warpgroup's first query row
    const int row_g = qc0 + warp * 16 + lane / 4;   // accumulator rows row_g (e = 0, 1) and row_g + 8 (e = 2, 3)
    const unsigned char* qa = sQ + c * DB * BOX;
    float acc[D / 2];  // O: m64nDk16 accumulator, acc[4i + e] -> row row_g + 8 (e >> 1), col 8i + 2 (lane % 4) + (e & 1)
#pragma unroll
    for (int i = 0; i < D / 2; ++i) acc[i] = 0.f;
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
    if (n_tiles > 0) mbar_wait(&qbar, 0);

    // One k tile: S = Q K^T, online softmax, O += P V. MASK is a compile-time split (FA3's): only the tiles that cross
    // Nkv or this warpgroup's causal diagonal build the per-element predicates (~500 ALU instructions per tile per
    // warp); the others run without them. Scores stay raw (unscaled): the row max is taken on raw scores (scale > 0
    // keeps the order) and p = 2^(s * scale_log2 - m * scale_log2) is one FFMA + one MUFU.EX2 (ftz) per element,
    // where exp2f(s * scale - m) cost an FMUL, an FADD and exp2f's denormal fix-up (FSETP + 2 FMUL) around the MUFU.
    auto tile = [&](const int t, auto mask) {
      constexpr bool MASK = decltype(mask)::value;
      const int s = t % STAGES, ph = (t / STAGES) & 1, n0 = t * BN;
      const unsigned char* sk = ring + (2 * s) * KV_BYTES;
      const unsigned char* sv = sk + KV_BYTES;
      float sc[BN / 2];
      mbar_wait(&fullK[s], ph);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {  // k16 step: +32 B along the 128-B rows; the next box every 4 steps
        const uint64_t da = make_desc(qa + (kk / 4) * BOX + (kk % 4) * 32, 16, 1024);
        const uint64_t db = make_desc(sk + (kk / 4) * BN * 128 + (kk % 4) * 32, 16, 1024);
        wgmma_ss<T, BN>(sc, da, db, kk != 0);
      }
      wgmma_commit();
      wgmma_wait0();

      if constexpr (MASK) {  // keys past Nkv (zero-filled by TMA: score 0, not -inf) and causal keys past the diagonal
#pragma unroll
        for (int i = 0; i < BN / 8; ++i)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int col = n0 + i * 8 + (lane % 4) * 2 + (e & 1), row = row_g + (e >> 1) * 8;
            if (col >= Nkv || (causal && col > row + diag)) sc[4 * i + e] = -INFINITY;
          }
      }
      // online softmax on raw scores; a row lives in the 4 lanes of a quad
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        float mx = -INFINITY;
#pragma unroll
        for (int i = 0; i < BN / 8; ++i) mx = fmaxf(mx, fmaxf(sc[4 * i + 2 * hr], sc[4 * i + 2 * hr + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mn = fmaxf(m_run[hr], mx);
        // a row with only -inf so far: base 0, every p = 2^-inf = 0
        const float nbase = (mn == -INFINITY) ? 0.f : -mn * scale_log2;
        const float alpha = ex2_approx_ftz(fmaf(m_run[hr], scale_log2, nbase));
        m_run[hr] = mn;
        float sum = 0.f;
#pragma unroll
        for (int i = 0; i < BN / 8; ++i) {
          sc[4 * i + 2 * hr] = ex2_approx_ftz(fmaf(sc[4 * i + 2 * hr], scale_log2, nbase));
          sc[4 * i + 2 * hr + 1] = ex2_approx_ftz(fmaf(sc[4 * i + 2 * hr + 1], scale_log2, nbase));
          sum += sc[4 * i + 2 * hr] + sc[4 * i + 2 * hr + 1];
        }
        l_run[hr] = l_run[hr] * alpha + sum;  // per-lane partial: one quad sum at the end
#pragma unroll
        for (int i = 0; i < D / 8; ++i) {
          acc[4 * i + 2 * hr] *= alpha;  // ATTN_V3_RESCALE
          acc[4 * i + 2 * hr + 1] *= alpha;
        }
      }
      // P as the register A operand: keys 16kk..16kk+15 are S column groups 2kk (a0, a1) and 2kk + 1 (a2, a3)
      uint32_t pa[BN / 16][4];
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        pa[kk][0] = pack2<T>(sc[8 * kk + 0], sc[8 * kk + 1]);
        pa[kk][1] = pack2<T>(sc[8 * kk + 2], sc[8 * kk + 3]);
        pa[kk][2] = pack2<T>(sc[8 * kk + 4], sc[8 * kk + 5]);
        pa[kk][3] = pack2<T>(sc[8 * kk + 6], sc[8 * kk + 7]);
      }
      mbar_wait(&fullV[s], ph);
      wgmma_fence();  // acc and pa were written by ordinary instructions
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk)  // k16 step: +16 key rows x 128 B; LBO: the next 64 columns of d
        wgmma_rs<T, D>(acc, pa[kk], make_desc(sv + kk * 16 * 128, BN * 128, 1024), 1);
      wgmma_commit();
      wgmma_wait0();
      if (lane == 0) mbar_arrive(&empty[s]);  // this warp's reads of K and V in slot s are complete
    };
    // tiles [0, n_full) need no mask: all their keys are < Nkv and, causal, <= this warpgroup's first row + diag
    const int n_full = max(0, min(min(n_tiles, Nkv / BN), causal ? (qc0 + diag + 1 >= 0 ? (qc0 + diag + 1) / BN : 0)
                                                                  : n_tiles));
    for (int t = 0; t < n_full; ++t) tile(t, std::false_type{});
    for (int t = n_full; t < n_tiles; ++t) tile(t, std::true_type{});

    // epilogue: normalise; rows past Nq are not stored; a row that saw no key gets O = 0, LSE = -inf
    using T2 = typename Pair16<T>::type;
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float L = l_run[hr];
      L += __shfl_xor_sync(0xffffffffu, L, 1);
      L += __shfl_xor_sync(0xffffffffu, L, 2);
      const float inv = L > 0.f ? 1.f / L : 0.f;
      const int row = row_g + hr * 8;
      if (row < Nq) {
        T* orow = o + ((size_t)bh * Nq + row) * D;
#pragma unroll
        for (int i = 0; i < D / 8; ++i) {
          T2 v2;
          v2.x = from_float<T>(acc[4 * i + 2 * hr] * inv);
          v2.y = from_float<T>(acc[4 * i + 2 * hr + 1] * inv);
          *reinterpret_cast<T2*>(orow + i * 8 + (lane % 4) * 2) = v2;
        }
        if (lane % 4 == 0)
          lse[(size_t)bh * Nq + row] = L > 0.f ? (m_run[hr] * scale_log2 + log2f(L)) * ATTN_LN2 : -INFINITY;
      }
    }
  }
#else
  __trap();  // built for an arch without wgmma: never launched (the launcher and supports() require sm_90a)
#endif
}
// ATTN_V3_KERNEL_END

// ---------------------------------------------------------------------------------------------------- host side

// [heads, n, D] contiguous 16-bit as {D, n, heads}, box {64, rows, 1}, 128-B swizzle, OOB (rows >= n) zero-filled
static int attn_encode_3d(CUtensorMap* map, CUtensorMapDataType dt, const void* base, int D, int n, int heads,
                          int rows) {
  cuuint64_t dims[3] = {(cuuint64_t)D, (cuuint64_t)n, (cuuint64_t)heads};
  cuuint64_t strides[2] = {(cuuint64_t)D * 2, (cuuint64_t)n * D * 2};  // bytes, multiples of 16
  cuuint32_t box[3] = {64, (cuuint32_t)rows, 1};
  cuuint32_t estr[3] = {1, 1, 1};
  hopper::EncodeTiledFn encode = hopper::encode_tiled_fn();
  if (encode == nullptr) return 999;
  return (int)encode(map, dt, 3, const_cast<void*>(base), dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
                     CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

template <typename T, int D>
static int launch_v3(CUtensorMapDataType dt, const void* q, const void* k, const void* v, void* o, void* lse, int B,
                     int H, int Hkv, int Nq, int Nkv, int causal, float scale_log2, cudaStream_t stream) {
  CUtensorMap tq, tk, tv;
  int r = attn_encode_3d(&tq, dt, q, D, Nq, B * H, attn90::BM);
  if (!r) r = attn_encode_3d(&tk, dt, k, D, Nkv, B * Hkv, attn90::BN);
  if (!r) r = attn_encode_3d(&tv, dt, v, D, Nkv, B * Hkv, attn90::BN);
  if (r) { fprintf(stderr, "cuTensorMapEncodeTiled failed: %d\n", r); return 1000 + r; }
  CUDA_CHECK(cudaFuncSetAttribute(attn_v3_wgmma<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, attn90::Cfg<D>::SMEM));
  dim3 grid((Nq + attn90::ROWS - 1) / attn90::ROWS, H, B);
  attn_v3_wgmma<T, D><<<grid, attn90::THREADS, attn90::Cfg<D>::SMEM, stream>>>(
      tq, tk, tv, reinterpret_cast<T*>(o), reinterpret_cast<float*>(lse), H, Hkv, Nq, Nkv, causal, scale_log2);
  CUDA_CHECK(cudaGetLastError());
  return 0;
}

// dtype: 0 = fp16, 1 = bf16; D in {64, 128}; q [B,H,Nq,D], k/v [B,Hkv,Nkv,D], o [B,H,Nq,D] contiguous and 16-byte
// aligned; lse [B,H,Nq] fp32. Returns 0, a CUDA error code, 1000 + CUresult, or -1 for bad arguments.
extern "C" int launch_attn_v3_wgmma(int dtype, const void* q, const void* k, const void* v, void* o, void* lse, int B,
                                    int H, int Hkv, int Nq, int Nkv, int D, int causal, float scale_log2,
                                    void* stream) {
  if (B < 1 || H < 1 || Hkv < 1 || H % Hkv || Nq < 1 || Nkv < 1 || B > 65535 || H > 65535) return -1;
  if ((reinterpret_cast<uintptr_t>(q) | reinterpret_cast<uintptr_t>(k) | reinterpret_cast<uintptr_t>(v) |
       reinterpret_cast<uintptr_t>(o)) & 15) return -1;
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  const CUtensorMapDataType f16 = CU_TENSOR_MAP_DATA_TYPE_FLOAT16, b16 = CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  if (dtype == 0 && D == 64) return launch_v3<__half, 64>(f16, q, k, v, o, lse, B, H, Hkv, Nq, Nkv, causal, scale_log2, s);
  if (dtype == 0 && D == 128) return launch_v3<__half, 128>(f16, q, k, v, o, lse, B, H, Hkv, Nq, Nkv, causal, scale_log2, s);
  if (dtype == 1 && D == 64) return launch_v3<__nv_bfloat16, 64>(b16, q, k, v, o, lse, B, H, Hkv, Nq, Nkv, causal, scale_log2, s);
  if (dtype == 1 && D == 128) return launch_v3<__nv_bfloat16, 128>(b16, q, k, v, o, lse, B, H, Hkv, Nq, Nkv, causal, scale_log2, s);
  return -1;
}

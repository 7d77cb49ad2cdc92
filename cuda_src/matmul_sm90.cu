// matmul_sm90.cu — Hopper-only matmul: wgmma (warpgroup MMA) fed by TMA (tensor-memory accelerator), host mode.
// Built as CudaSource("matmul_sm90.cu", archs=("sm_90a",)); wgmma and setmaxnreg exist only on sm_90a.
//
// C[M,N] = A[M,K] @ B[K,N], fp16/bf16 in, fp32 accumulate, C in the input dtype; all row-major and contiguous.
// Host mode: the TMA descriptors (CUtensorMap) must be encoded on the host with cuTensorMapEncodeTiled, so this
// file ships its own launcher, `launch_hgemm_v9_wgmma(dtype, A, B, C, M, N, K, stream)`, called through ctypes
// (harness/families/_matmul_cuda.py). Requirements: K and N multiples of 8 (TMA global strides are multiples of 16
// bytes) and 16-byte aligned base pointers; M, N, K otherwise arbitrary — TMA zero-fills out-of-bounds box elements,
// the epilogue guards its stores.
#include "common.cuh"
#include "sm90.cuh"  // mbarrier, TMA, wgmma waits, setmaxnreg, the cuTensorMapEncodeTiled entry point

// =====================================================================================================================
// v9 — wgmma + TMA. One warpgroup (128 threads) computes a 128x128 tile of C as two m64n128k16 wgmmas per k16 step;
// both operands are read by the tensor cores straight from shared memory through 64-bit matrix descriptors, so no
// ldmatrix and no register fragments for A/B. TMA moves each BK=64 slice (A: one 128x64 box, B: two 64x64 boxes,
// 32 KB) with a single thread issuing the copies, into a STAGES-deep ring guarded by mbarriers (transaction-count
// completion), laid out with the 128-byte swizzle that both TMA and wgmma understand (no bank conflicts, no padding).
// A is K-major (rows of K contiguous); B is row-major [K,N], i.e. N-major, which wgmma reads with imm-trans-b = 1.
// What it should change over v8: no address arithmetic or ldmatrix in the main loop, 4x larger MMA per instruction,
// asynchronous bulk copies: typically ~1.3-1.6x over mma.sync at 4096^3 bf16. It is not warp-specialised and waits
// for each k-slice's wgmma before refilling the slot, so it stays well short of the ~800 TF/s anchor of persistent,
// producer/consumer, clustered Hopper GEMMs (anchors.md).

namespace sm90 {

constexpr int BM = 128, BN = 128, BK = 64, STAGES = 4, THREADS = 128;
constexpr int A_BYTES = BM * BK * 2;               // 16 KB: one TMA box {64 (K), 128 (M)}
constexpr int B_BOX_BYTES = BK * 64 * 2;           // 8 KB: one TMA box {64 (N), 64 (K)}
constexpr int B_BYTES = 2 * B_BOX_BYTES;           // 16 KB: BN = 128 as two 64-column boxes
constexpr int STAGE_BYTES = A_BYTES + B_BYTES;     // 32 KB
constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + 1024;  // + slack to align the ring to 1024 B (128-B swizzle atom)

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

using hopper::mbar_expect_tx;
using hopper::mbar_init;
using hopper::mbar_wait;
using hopper::tma_load_2d;
using hopper::wgmma_commit;
using hopper::wgmma_fence;
using hopper::wgmma_wait0;

// ---- wgmma matrix descriptor, 128-byte swizzle (layout type 1 in bits 62-63); byte offsets encoded >> 4.
// K-major (A): rows of 64 elements = 128 B; SBO = 1024 B between 8-row groups; LBO unused (1).
// N-major (B): 64 N-contiguous elements per 128-B row, one row per k; SBO = 1024 B between 8-k groups,
//              LBO = 8 KB between the two 64-column boxes (the next 64 columns of N).
__device__ __forceinline__ uint64_t make_desc(const void* p, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  uint64_t d = 0;
  d |= (uint64_t)((smem_u32(p) & 0x3FFFF) >> 4);
  d |= (uint64_t)((lbo_bytes >> 4) & 0x3FFF) << 16;
  d |= (uint64_t)((sbo_bytes >> 4) & 0x3FFF) << 32;
  d |= (uint64_t)1 << 62;  // 128-byte swizzle; base offset (bits 49-51) 0 because every tile is 1024-B aligned
  return d;
}

// D[64x128] += A[64x16] (K-major, smem) * B[16x128] (N-major, smem: imm-trans-b = 1). scale-d = 1 always: the
// accumulators start at zero, so the first k-step needs no special case.
template <typename T> __device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t da, uint64_t db);
template <> __device__ __forceinline__ void wgmma_m64n128k16<__nv_bfloat16>(float (&d)[64], uint64_t da,
                                                                            uint64_t db) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(1));
}
template <> __device__ __forceinline__ void wgmma_m64n128k16<__half>(float (&d)[64], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(1));
}

template <typename T> struct Pair;
template <> struct Pair<__half> { using type = __half2; };
template <> struct Pair<__nv_bfloat16> { using type = __nv_bfloat162; };

}  // namespace sm90

// Launch: grid (ceil(N/128), ceil(M/128)), block 128, dynamic shared sm90::SMEM_BYTES (opt-in above 48 KB).
// tmA: A as {K, M} (K innermost), box {64, 128}; tmB: B as {N, K}, box {64, 64}; both 128-B swizzled, OOB = 0.
template <typename T>
__global__ void __launch_bounds__(sm90::THREADS) hgemm_v9_wgmma(const __grid_constant__ CUtensorMap tmA,
                                                                 const __grid_constant__ CUtensorMap tmB,
                                                                 T* __restrict__ C, int M, int N, int K) {
  using namespace sm90;
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* ring = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  __shared__ __align__(8) uint64_t full[STAGES];

  const int tid = threadIdx.x;
  const int bm = blockIdx.y * BM, bn = blockIdx.x * BN;
  const int KT = (K + BK - 1) / BK;

  if (tid == 0) {
#pragma unroll
    for (int s = 0; s < STAGES; ++s) mbar_init(&full[s], 1);
    hopper::fence_mbarrier_init();
  }
  __syncthreads();

  auto issue = [&](int s, int kt) {  // thread 0 only
    unsigned char* a = ring + s * STAGE_BYTES;
    unsigned char* b = a + A_BYTES;
    mbar_expect_tx(&full[s], STAGE_BYTES);  // OOB box elements are zero-filled and still counted
    tma_load_2d(a, &tmA, &full[s], kt * BK, bm);
    tma_load_2d(b, &tmB, &full[s], bn, kt * BK);
    tma_load_2d(b + B_BOX_BYTES, &tmB, &full[s], bn + 64, kt * BK);
  };
  if (tid == 0) {
    for (int s = 0; s < STAGES && s < KT; ++s) issue(s, s);
  }

  float acc[2][64];
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[h][i] = 0.f;

  for (int kt = 0; kt < KT; ++kt) {
    const int s = kt % STAGES;
    mbar_wait(&full[s], (kt / STAGES) & 1);
    const unsigned char* a = ring + s * STAGE_BYTES;
    const unsigned char* b = a + A_BYTES;
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      // k16 step: +32 B along A's swizzled 128-B rows; +16 rows x 128 B = 2 KB down B's k rows
      const uint64_t db = make_desc(b + kk * 16 * 128, B_BOX_BYTES, 1024);
#pragma unroll
      for (int h = 0; h < 2; ++h) {  // rows h*64 .. h*64+63 of the 128-row tile: +64 rows x 128 B = 8 KB
        const uint64_t da = make_desc(a + h * 64 * 128 + kk * 32, 16, 1024);
        wgmma_m64n128k16<T>(acc[h], da, db);
      }
    }
    wgmma_commit();
    wgmma_wait0();
    __syncthreads();  // every warp's wgmma has finished reading slot s: it may be refilled
    if (tid == 0 && kt + STAGES < KT) issue(s, kt + STAGES);
  }

  // Accumulator layout of m64nNk16 (per warp w of the warpgroup, lane l, g = l/4, q = l%4):
  // acc[i*4 + {0,1}] -> row 16w + g, cols 8i + 2q + {0,1};  acc[i*4 + {2,3}] -> row 16w + g + 8, same cols.
  using T2 = typename Pair<T>::type;
  const int warp = tid / 32, lane = tid % 32;
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int i = 0; i < BN / 8; ++i) {
      const int col = bn + i * 8 + (lane % 4) * 2;  // even; N % 8 == 0, so col < N implies col + 1 < N
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int row = bm + h * 64 + warp * 16 + lane / 4 + e * 8;
        if (row < M && col < N) {
          T2 v;
          v.x = from_float<T>(acc[h][i * 4 + 2 * e]);
          v.y = from_float<T>(acc[h][i * 4 + 2 * e + 1]);
          *reinterpret_cast<T2*>(C + (size_t)row * N + col) = v;
        }
      }
    }
#else
  // Compiled for an arch without wgmma: never launched (the launcher and supports() require sm_90a).
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------------- host side
using hopper::EncodeTiledFn;
using hopper::encode_tiled_fn;

static int encode_2d(CUtensorMap* map, CUtensorMapDataType dt, const void* base, uint64_t inner, uint64_t outer,
                     uint32_t box_inner, uint32_t box_outer) {
  cuuint64_t dims[2] = {inner, outer};
  cuuint64_t strides[1] = {inner * 2};  // bytes between consecutive outer rows (must be a multiple of 16)
  cuuint32_t box[2] = {box_inner, box_outer};
  cuuint32_t estr[2] = {1, 1};
  EncodeTiledFn encode = encode_tiled_fn();
  if (encode == nullptr) return 999;  // driver too old for TMA
  CUresult r = encode(map, dt, 2, const_cast<void*>(base), dims, strides, box, estr,
                                      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return (int)r;
}

template <typename T>
static int launch_v9(CUtensorMapDataType dt, const void* A, const void* B, void* C, int M, int N, int K,
                     cudaStream_t stream) {
  CUtensorMap tmA, tmB;
  int r = encode_2d(&tmA, dt, A, (uint64_t)K, (uint64_t)M, 64, 128);
  if (r) { fprintf(stderr, "cuTensorMapEncodeTiled(A) failed: %d\n", r); return 1000 + r; }
  r = encode_2d(&tmB, dt, B, (uint64_t)N, (uint64_t)K, 64, 64);
  if (r) { fprintf(stderr, "cuTensorMapEncodeTiled(B) failed: %d\n", r); return 1000 + r; }
  CUDA_CHECK(cudaFuncSetAttribute(hgemm_v9_wgmma<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, sm90::SMEM_BYTES));
  dim3 grid(ceil_div(N, sm90::BN), ceil_div(M, sm90::BM)), block(sm90::THREADS);
  hgemm_v9_wgmma<T><<<grid, block, sm90::SMEM_BYTES, stream>>>(tmA, tmB, reinterpret_cast<T*>(C), M, N, K);
  CUDA_CHECK(cudaGetLastError());
  return 0;
}

// dtype: 0 = fp16, 1 = bf16. Returns 0 on success, a CUDA error code, 1000 + CUresult, or -1 for bad arguments.
extern "C" int launch_hgemm_v9_wgmma(int dtype, const void* A, const void* B, void* C, int M, int N, int K,
                                     void* stream) {
  if (M < 1 || N < 1 || K < 1 || K % 8 || N % 8) return -1;
  if ((reinterpret_cast<uintptr_t>(A) | reinterpret_cast<uintptr_t>(B)) & 15) return -1;
  if (reinterpret_cast<uintptr_t>(C) & 3) return -1;
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  if (dtype == 0) return launch_v9<__half>(CU_TENSOR_MAP_DATA_TYPE_FLOAT16, A, B, C, M, N, K, s);
  if (dtype == 1) return launch_v9<__nv_bfloat16>(CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, A, B, C, M, N, K, s);
  return -1;
}

// =====================================================================================================================
// Warp-specialised, persistent Hopper GEMMs (v10 bf16/fp16, v11 fp8 e4m3). Shared machinery first.
//
// Roles: warpgroup 0 is the producer: one thread issues every TMA copy into a STAGES-deep ring, gated by two mbarriers
// per slot — full[s] (TMA transaction bytes landed) and empty[s] (every consumer warp finished reading the slot).
// Warpgroups 1..2 are consumers: each owns 64 rows of the CTA tile and only waits on full[s], issues wgmmas and
// arrives on empty[s]. The producer gives most of its registers away (setmaxnreg.dec 40) so that the consumers can
// hold their accumulators (setmaxnreg.inc 232): 128 x 40 + 256 x 232 = 64,512 of the 65,536 registers of an SM.
// Persistent CTAs: grid = min(#tiles, #SMs); CTA b walks tiles b, b + grid, ... in the grouped order of
// `ws_tile_coords` and the ring (slot, phase) runs on across tiles, so the producer streams the next tile's first
// slices while the consumers are still storing the previous tile (the epilogue hides behind TMA; no CTA launch tail).
// Tails: TMA zero-fills every out-of-bounds element of a box (M and N edge tiles, the last K slice when K is not a
// multiple of BK: zero products add nothing) and still counts the full box bytes; the epilogue guards its stores.
namespace sm90ws {

using sm90::smem_u32;

// GROUP_M consecutive tile indices walk down GROUP_M tile rows before moving one tile column right, so the ~132 tiles
// in flight at once (one per SM) touch GROUP_M row panels of A and ~132/GROUP_M column panels of B instead of one
// or two rows of A and *every* column panel of B. At 8192^3 with 128x256 tiles (64 x 32 tiles): a wave of 132 tiles
// reads 8 A panels + 16.5 B panels = 8x128 + 16.5x256 = 5,248 rows of K per k-step, against 4.1x128 + 32x256 = 8,720
// in row-major order: 40% less L2->SM and DRAM->L2 traffic per wave.
// WS_TILE_ORDER_BEGIN (tests/test_matmul_cuda.py compiles this block with g++ and checks it is a bijection)
constexpr int GROUP_M = 8;
__host__ __device__ __forceinline__ void ws_tile_coords(int t, int tiles_m, int tiles_n, int& pm, int& pn) {
  const int per_group = GROUP_M * tiles_n;        // tiles in one band of GROUP_M tile rows
  const int first_m = (t / per_group) * GROUP_M;  // the band's first tile row
  const int rows = min(tiles_m - first_m, GROUP_M);  // the last band may be shorter
  const int r = t % per_group;
  pm = first_m + r % rows;
  pn = r / rows;
}
// WS_TILE_ORDER_END

using hopper::fence_operands;
using hopper::mbar_arrive;
using hopper::setmaxnreg_dec;
using hopper::setmaxnreg_inc;
using hopper::wgmma_wait;

// D[64x256] (+)= A[64x16] (K-major) * B[16x256] (N-major, imm-trans-b = 1); scale_d = 0 overwrites D.
// D[64x128] (+)= A[64x32] * B[32x128], e4m3 x e4m3 -> f32: fp8 wgmma has no transpose, both operands are K-major.
template <typename T> __device__ __forceinline__ void wgmma_m64n256k16(float (&d)[128], uint64_t da, uint64_t db, int scale_d);
template <> __device__ __forceinline__ void wgmma_m64n256k16<__nv_bfloat16>(float (&d)[128], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db), "r"(scale_d));
}
template <> __device__ __forceinline__ void wgmma_m64n256k16<__half>(float (&d)[128], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wgmma_m64n128k32_e4m3(float (&d)[64], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(scale_d));
}

constexpr int PRODUCER_REGS = 40, CONSUMER_REGS = 232;
constexpr int CONSUMERS = 2, THREADS = 128 * (1 + CONSUMERS);  // 384
constexpr int EMPTY_ARRIVALS = CONSUMERS * 4;                   // lane 0 of every consumer warp
static_assert(128 * PRODUCER_REGS + 128 * CONSUMERS * CONSUMER_REGS <= 65536, "register file");

// ---- v10 (bf16/fp16): 128x256x64 tiles, 4 stages. A box {64 (K), 128 (M)} = 16 KB; B as four {64 (N), 64 (K)}
// boxes = 32 KB; 48 KB per stage, 192 KB ring + 1 KB alignment slack (of 227 KB).
namespace v10 {
constexpr int BM = 128, BN = 256, BK = 64, STAGES = 4;
constexpr int A_BYTES = BM * BK * 2, B_BOX_BYTES = 64 * BK * 2, B_BYTES = (BN / 64) * B_BOX_BYTES;
constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + 1024;
static_assert(SMEM_BYTES <= 227 * 1024, "ring exceeds the opt-in shared memory of an H100 block");
}  // namespace v10

// ---- v11 (fp8 e4m3 -> bf16): 128x128x128 tiles, 6 stages. BK = 128 fp8 = one 128-B swizzle row. A box
// {128 (K), 128 (M)} = 16 KB, B^T box {128 (K), 128 (N)} = 16 KB; 32 KB per stage, 192 KB ring + 1 KB slack.
// 128 (not 256) columns because every consumer keeps two accumulators (below): 2 x 64 fp32 registers per thread.
namespace v11 {
constexpr int BM = 128, BN = 128, BK = 128, STAGES = 6;
constexpr int A_BYTES = BM * BK, B_BYTES = BN * BK;
constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + 1024;
static_assert(SMEM_BYTES <= 227 * 1024, "ring exceeds the opt-in shared memory of an H100 block");
}  // namespace v11

}  // namespace sm90ws

// =====================================================================================================================
// v10 — warp-specialised, persistent wgmma + TMA (CPU-verified, GPU-pending). Over v9: (1) a producer warpgroup keeps
// STAGES-1 slices in flight at all times, while v9's single warpgroup stops issuing copies during its own wgmma wait;
// (2) the consumers keep one wgmma group in flight (wait_group 1) and free the *previous* slot, so the tensor cores
// never idle on a slot release; (3) 128x256 tiles. Shared-memory port napkin (128 B/clk/SM against 989 TF/s / 132
// SMs / 1.83 GHz = 4096 dense bf16 FLOP/clk/SM: a kernel must do >= 32 FLOP per shared byte moved): per 64-deep
// k-slice v9 moves 32 KB in by TMA and 4 x 2 x (2 + 4) KB out to its m64n128 wgmmas = 80 KB for 2.1 MFLOP, 26 FLOP/B,
// so shared memory alone caps it at ~80% of peak; v10 moves 48 KB in and 4 x 2 x (2 + 8) KB out (m64n256) = 128 KB
// for 4.2 MFLOP, 32 FLOP/B: no longer port-bound;
// (4) persistent CTAs in grouped order (~40% less L2 traffic per wave at 8192^3, see GROUP_M). Expectation: v9's
// 441 TF/s -> ~600-700 TF/s at 4096^3 (75-90% of cuBLAS); the remaining gap to CUTLASS-class kernels is the
// epilogue (registers -> global with 4-byte stores while both consumers stall; a ping-pong schedule or a TMA store
// would hide it) and clusters with TMA multicast (halve L2->SM traffic for A or B).
// Launch: grid min(#tiles, #SMs), block 384, dynamic shared v10::SMEM_BYTES.
// tmA: A as {K, M}, box {64, 128}; tmB: B as {N, K}, box {64, 64}; 128-B swizzle, OOB zero-fill.
template <typename T>
__global__ void __launch_bounds__(sm90ws::THREADS, 1) hgemm_v10_wgmma_ws(const __grid_constant__ CUtensorMap tmA,
                                                                      const __grid_constant__ CUtensorMap tmB,
                                                                      T* __restrict__ C, int M, int N, int K) {
  using namespace sm90ws;
  using namespace sm90ws::v10;
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* ring = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];

  const int tid = threadIdx.x, wg = tid / 128;
  const int tiles_m = (M + BM - 1) / BM, tiles_n = (N + BN - 1) / BN, tiles = tiles_m * tiles_n;
  const int KT = (K + BK - 1) / BK;

  if (tid == 0) {
#pragma unroll
    for (int s = 0; s < STAGES; ++s) {
      sm90::mbar_init(&full[s], 1);
      sm90::mbar_init(&empty[s], EMPTY_ARRIVALS);
    }
    hopper::fence_mbarrier_init();
  }
  __syncthreads();  // the last block-wide barrier: from here on the roles synchronise through mbarriers only

  if (wg == 0) {  // ------------------------------------------------------------------------------- producer
    setmaxnreg_dec<PRODUCER_REGS>();
    if (tid == 0) {
      int it = 0;  // ring position, continued across tiles: slot it % STAGES, pass it / STAGES
      for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
        int pm, pn;
        ws_tile_coords(t, tiles_m, tiles_n, pm, pn);
        for (int kt = 0; kt < KT; ++kt, ++it) {
          const int s = it % STAGES;
          // pass p refills a slot freed in pass p-1; a fresh barrier counts as "parity 1 complete", so pass 0 waits
          // for nothing
          sm90::mbar_wait(&empty[s], ((it / STAGES) & 1) ^ 1);
          unsigned char* a = ring + s * STAGE_BYTES;
          unsigned char* b = a + A_BYTES;
          sm90::mbar_expect_tx(&full[s], STAGE_BYTES);
          sm90::tma_load_2d(a, &tmA, &full[s], kt * BK, pm * BM);
#pragma unroll
          for (int j = 0; j < BN / 64; ++j) sm90::tma_load_2d(b + j * B_BOX_BYTES, &tmB, &full[s], pn * BN + j * 64, kt * BK);
        }
      }
    }
  } else {  // ---------------------------------------------------------------------------------------- consumers
    setmaxnreg_inc<CONSUMER_REGS>();
    const int c = wg - 1;  // rows 64c .. 64c+63 of the tile
    const int warp = (tid % 128) / 32, lane = tid % 32;
    using T2 = typename sm90::Pair<T>::type;
    int it = 0;
    for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
      int pm, pn;
      ws_tile_coords(t, tiles_m, tiles_n, pm, pn);
      float acc[128];
#pragma unroll
      for (int i = 0; i < 128; ++i) acc[i] = 0.f;
      int prev = -1;
      for (int kt = 0; kt < KT; ++kt, ++it) {
        const int s = it % STAGES;
        sm90::mbar_wait(&full[s], (it / STAGES) & 1);
        const unsigned char* a = ring + s * STAGE_BYTES + c * 64 * 128;  // +64 rows x 128 B
        const unsigned char* b = ring + s * STAGE_BYTES + A_BYTES;
        sm90::wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
          // k16 step: +32 B along A's 128-B swizzled rows; +16 k-rows x 128 B = 2 KB down every B box;
          // LBO = 8 KB between the four 64-column boxes
          const uint64_t da = sm90::make_desc(a + kk * 32, 16, 1024);
          const uint64_t db = sm90::make_desc(b + kk * 16 * 128, B_BOX_BYTES, 1024);
          wgmma_m64n256k16<T>(acc, da, db, 1);
        }
        sm90::wgmma_commit();
        wgmma_wait<1>();  // this slice's group may still run; the previous one has finished reading its slot
        if (prev >= 0 && lane == 0) mbar_arrive(&empty[prev]);
        prev = s;
      }
      wgmma_wait<0>();
      if (prev >= 0 && lane == 0) mbar_arrive(&empty[prev]);

      // m64nNk16 accumulator layout (warp w of the warpgroup, g = lane/4, q = lane%4): acc[4i + {0,1}] -> row
      // 16w + g, cols 8i + 2q + {0,1}; acc[4i + {2,3}] -> row 16w + g + 8. N % 8 == 0: col < N implies col+1 < N.
      const int row0 = pm * BM + c * 64 + warp * 16 + lane / 4;
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) {
        const int col = pn * BN + i * 8 + (lane % 4) * 2;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int row = row0 + e * 8;
          if (row < M && col < N) {
            T2 v;
            v.x = from_float<T>(acc[i * 4 + 2 * e]);
            v.y = from_float<T>(acc[i * 4 + 2 * e + 1]);
            *reinterpret_cast<T2*>(C + (size_t)row * N + col) = v;
          }
        }
      }
    }
  }
#else
  __trap();  // built for an arch without wgmma: never launched (the launcher and supports() require sm_90a)
#endif
}

// =====================================================================================================================
// v11 — FP8 e4m3 wgmma (QGMMA), warp-specialised and persistent like v10 (CPU-verified, GPU-pending).
// C = (A·a_scale) @ (B·b_scale) in bf16, per-tensor scales read on the device (no host sync). fp8 wgmma reads both
// operands K-major from shared memory (no imm-trans for 8-bit types), so the kernel takes Bt = B^T [N, K] (K
// contiguous): the weight layout the matmul family pre-arranges outside the timed call (input b_t; as Machete
// pre-shuffles its weights and cuBLASLt's fp8 GEMM wants B column-major, which torch_scaled_mm gets from the same b_t).
// For a caller holding a row-major B the copy costs K·N bytes read + written, 2 x 64 MB at 8192^3 ~ 45 us at ~3 TB/s
// against a ~0.7 ms GEMM (~6%): cuda_v11_fp8_wgmma_relayout times it with the call, so its record minus this one is the
// layout's cost.
// Accumulation: Hopper's fp8 tensor-core
// accumulator keeps ~14 significant bits (DeepSeek-V3 §3.3.2: up to ~2% relative error at K = 4096), so every
// BK = 128 slice (4 x k32) goes into a fresh accumulator (scale-d = 0 on its first wgmma) that is then added to
// the fp32 total with FADDs — what torch._scaled_mm does with use_fast_accum=False. Napkin (as v10, at fp8's 8192
// FLOP/clk/SM: >= 64 FLOP per shared byte needed): per slice 32 KB in by TMA + 8 x (2 + 4) KB out to the m64n128k32
// wgmmas = 80 KB for 4.2 MFLOP = 52 FLOP/B, a shared-memory cap at ~80% of the fp8 peak (128x256 would reach 64
// FLOP/B but needs 2 x 128 accumulator registers per thread with the promotion: over the 232 budget).
// The FADD promotion (64 per thread per slice) needs the slice's wgmmas complete: two slices are issued back to back
// into two partial buffers, wait_group 1 retires the first (its FADDs and slot release run while the second slice is
// on the tensor cores), wait_group 0 the second. Hot-loop model (harness/hotloop.py, sm_90a, 8 consumer warps/SM):
// with wait_group 0 after every slice, 153 instr per slice, tensor 512 cycles, 118 instructions per warp after the
// wait (236 issue cycles): 748 cycles per slice if the consumers run in step (1.46 x tensor); now 296 instr per 2
// slices, tensor 1024, 112 exposed (224 cycles): 1248 per 2 slices (1.22 x). (ptxas serialises every wgmma when a
// partial is read after a wait_group 1 whose group an earlier loop iteration issued: hence the pairwise structure.)
// Expectation: ~0.9-1.2 PF/s at 8192^3 (torch._scaled_mm: ~1.2-1.4 PF/s). GPU: pending.
// Launch: grid min(#tiles, #SMs), block 384, dynamic shared v11::SMEM_BYTES.
// tmA: A as {K, M}, box {128, 128}; tmB: Bt as {K, N}, box {128, 128}; 128-B swizzle, OOB zero-fill.
__global__ void __launch_bounds__(sm90ws::THREADS, 1) qgemm_v11_fp8_wgmma_ws(const __grid_constant__ CUtensorMap tmA,
                                                                          const __grid_constant__ CUtensorMap tmB,
                                                                          __nv_bfloat16* __restrict__ C,
                                                                          const float* __restrict__ a_scale,
                                                                          const float* __restrict__ b_scale, int M,
                                                                          int N, int K) {
  using namespace sm90ws;
  using namespace sm90ws::v11;
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* ring = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];

  const int tid = threadIdx.x, wg = tid / 128;
  const int tiles_m = (M + BM - 1) / BM, tiles_n = (N + BN - 1) / BN, tiles = tiles_m * tiles_n;
  const int KT = (K + BK - 1) / BK;

  if (tid == 0) {
#pragma unroll
    for (int s = 0; s < STAGES; ++s) {
      sm90::mbar_init(&full[s], 1);
      sm90::mbar_init(&empty[s], EMPTY_ARRIVALS);
    }
    hopper::fence_mbarrier_init();
  }
  __syncthreads();

  if (wg == 0) {  // ------------------------------------------------------------------------------- producer
    setmaxnreg_dec<PRODUCER_REGS>();
    if (tid == 0) {
      int it = 0;
      for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
        int pm, pn;
        ws_tile_coords(t, tiles_m, tiles_n, pm, pn);
        for (int kt = 0; kt < KT; ++kt, ++it) {
          const int s = it % STAGES;
          sm90::mbar_wait(&empty[s], ((it / STAGES) & 1) ^ 1);
          unsigned char* a = ring + s * STAGE_BYTES;
          sm90::mbar_expect_tx(&full[s], STAGE_BYTES);
          sm90::tma_load_2d(a, &tmA, &full[s], kt * BK, pm * BM);
          sm90::tma_load_2d(a + A_BYTES, &tmB, &full[s], kt * BK, pn * BN);
        }
      }
    }
  } else {  // ---------------------------------------------------------------------------------------- consumers
    setmaxnreg_inc<CONSUMER_REGS>();
    const int c = wg - 1;
    const int warp = (tid % 128) / 32, lane = tid % 32;
    const float scale = *a_scale * *b_scale;
    int it = 0;
    for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
      int pm, pn;
      ws_tile_coords(t, tiles_m, tiles_n, pm, pn);
      // Two slices in flight: both are issued into their own partial buffers, then wait_group 1 retires the first
      // (its 64 FADDs into acc and its slot release overlap the second slice on the tensor cores) and wait_group 0
      // the second. ptxas serialises every wgmma when a partial is read after a wait_group 1 whose group was issued
      // in an earlier loop iteration, so both partials are retired in the iteration that issued them.
      // acc + 2 partials = 192 of the consumers' 232 registers.
      float acc[64], pa[64], pb[64];
#pragma unroll
      for (int i = 0; i < 64; ++i) acc[i] = 0.f;
      auto issue = [&](float (&part)[64]) {  // slice `it` into part; returns its ring slot
        const int s = it % STAGES;
        sm90::mbar_wait(&full[s], (it / STAGES) & 1);
        const unsigned char* a = ring + s * STAGE_BYTES + c * 64 * 128;  // +64 rows x 128 B
        const unsigned char* b = ring + s * STAGE_BYTES + A_BYTES;
        fence_operands(part);  // its FADDs of the previous slice stay before these wgmmas
        sm90::wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BK / 32; ++kk) {  // k32 step: +32 B along both operands' 128-B swizzled rows
          const uint64_t da = sm90::make_desc(a + kk * 32, 16, 1024);
          const uint64_t db = sm90::make_desc(b + kk * 32, 16, 1024);
          wgmma_m64n128k32_e4m3(part, da, db, kk != 0);
        }
        sm90::wgmma_commit();
        ++it;
        return s;
      };
      auto retire = [&](float (&part)[64], const int s) {  // after the wait that completed part's group
        fence_operands(part);  // read after the wait, never hoisted above it
#pragma unroll
        for (int i = 0; i < 64; ++i) acc[i] += part[i];
        if (lane == 0) mbar_arrive(&empty[s]);
      };
      int kt = 0;
      for (; kt + 2 <= KT; kt += 2) {
        const int s0 = issue(pa), s1 = issue(pb);
        wgmma_wait<1>();  // slice kt done, kt + 1 may still run
        retire(pa, s0);
        wgmma_wait<0>();
        retire(pb, s1);
      }
      if (kt < KT) {  // odd KT: the last slice alone
        const int s0 = issue(pa);
        wgmma_wait<0>();
        retire(pa, s0);
      }

      const int row0 = pm * BM + c * 64 + warp * 16 + lane / 4;
      const bool pair = (N % 2) == 0;  // then col even and col < N imply col + 1 < N, and the 4-byte store is aligned
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) {
        const int col = pn * BN + i * 8 + (lane % 4) * 2;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int row = row0 + e * 8;
          if (row >= M || col >= N) continue;
          __nv_bfloat16* p = C + (size_t)row * N + col;
          const float v0 = acc[i * 4 + 2 * e] * scale, v1 = acc[i * 4 + 2 * e + 1] * scale;
          if (pair) {
            *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(v0, v1);
          } else {
            p[0] = __float2bfloat16(v0);
            if (col + 1 < N) p[1] = __float2bfloat16(v1);
          }
        }
      }
    }
  }
#else
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------------- host side
static int encode_2d_bytes(CUtensorMap* map, CUtensorMapDataType dt, int elem_bytes, const void* base, uint64_t inner,
                           uint64_t outer, uint32_t box_inner, uint32_t box_outer) {
  cuuint64_t dims[2] = {inner, outer};
  cuuint64_t strides[1] = {inner * (uint64_t)elem_bytes};  // must be a multiple of 16 bytes
  cuuint32_t box[2] = {box_inner, box_outer};
  cuuint32_t estr[2] = {1, 1};
  EncodeTiledFn encode = encode_tiled_fn();
  if (encode == nullptr) return 999;
  return (int)encode(map, dt, 2, const_cast<void*>(base), dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
                     CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

static int num_sms() {
  int dev = 0, n = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return 132;
  return n;
}

template <typename T>
static int launch_v10(CUtensorMapDataType dt, const void* A, const void* B, void* C, int M, int N, int K,
                      cudaStream_t stream) {
  using namespace sm90ws::v10;
  CUtensorMap tmA, tmB;
  int r = encode_2d_bytes(&tmA, dt, 2, A, (uint64_t)K, (uint64_t)M, BK, BM);
  if (r) { fprintf(stderr, "cuTensorMapEncodeTiled(A) failed: %d\n", r); return 1000 + r; }
  r = encode_2d_bytes(&tmB, dt, 2, B, (uint64_t)N, (uint64_t)K, 64, BK);
  if (r) { fprintf(stderr, "cuTensorMapEncodeTiled(B) failed: %d\n", r); return 1000 + r; }
  CUDA_CHECK(cudaFuncSetAttribute(hgemm_v10_wgmma_ws<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_BYTES));
  const long tiles = (long)ceil_div(M, BM) * ceil_div(N, BN);
  const int grid = (int)(tiles < num_sms() ? tiles : num_sms());
  hgemm_v10_wgmma_ws<T><<<grid, sm90ws::THREADS, SMEM_BYTES, stream>>>(tmA, tmB, reinterpret_cast<T*>(C), M, N, K);
  CUDA_CHECK(cudaGetLastError());
  return 0;
}

// dtype: 0 = fp16, 1 = bf16. Requirements as v9 (K, N multiples of 8; 16-byte aligned A, B; 4-byte aligned C);
// additionally the tile count (M/128)·(N/256) must fit an int.
extern "C" int launch_hgemm_v10_wgmma_ws(int dtype, const void* A, const void* B, void* C, int M, int N, int K,
                                         void* stream) {
  if (M < 1 || N < 1 || K < 1 || K % 8 || N % 8) return -1;
  if ((reinterpret_cast<uintptr_t>(A) | reinterpret_cast<uintptr_t>(B)) & 15) return -1;
  if (reinterpret_cast<uintptr_t>(C) & 3) return -1;
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  if (dtype == 0) return launch_v10<__half>(CU_TENSOR_MAP_DATA_TYPE_FLOAT16, A, B, C, M, N, K, s);
  if (dtype == 1) return launch_v10<__nv_bfloat16>(CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, A, B, C, M, N, K, s);
  return -1;
}

// A [M, K] and Bt [N, K] fp8 e4m3, both K-contiguous; C [M, N] bf16; a_scale, b_scale: device float32 scalars.
// Requirements: K % 16 == 0 (TMA row strides of K bytes), 16-byte aligned A and Bt, 4-byte aligned C; M, N free.
extern "C" int launch_qgemm_v11_fp8_wgmma_ws(const void* A, const void* Bt, void* C, const void* a_scale,
                                             const void* b_scale, int M, int N, int K, void* stream) {
  using namespace sm90ws::v11;
  if (M < 1 || N < 1 || K < 1 || K % 16) return -1;
  if ((reinterpret_cast<uintptr_t>(A) | reinterpret_cast<uintptr_t>(Bt)) & 15) return -1;
  if ((reinterpret_cast<uintptr_t>(C) & 3) || a_scale == nullptr || b_scale == nullptr) return -1;
  CUtensorMap tmA, tmB;
  int r = encode_2d_bytes(&tmA, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, A, (uint64_t)K, (uint64_t)M, BK, BM);
  if (r) { fprintf(stderr, "cuTensorMapEncodeTiled(A) failed: %d\n", r); return 1000 + r; }
  r = encode_2d_bytes(&tmB, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, Bt, (uint64_t)K, (uint64_t)N, BK, BN);
  if (r) { fprintf(stderr, "cuTensorMapEncodeTiled(Bt) failed: %d\n", r); return 1000 + r; }
  CUDA_CHECK(cudaFuncSetAttribute(qgemm_v11_fp8_wgmma_ws, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_BYTES));
  const long tiles = (long)ceil_div(M, BM) * ceil_div(N, BN);
  const int grid = (int)(tiles < num_sms() ? tiles : num_sms());
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  qgemm_v11_fp8_wgmma_ws<<<grid, sm90ws::THREADS, SMEM_BYTES, s>>>(
      tmA, tmB, reinterpret_cast<__nv_bfloat16*>(C), reinterpret_cast<const float*>(a_scale),
      reinterpret_cast<const float*>(b_scale), M, N, K);
  CUDA_CHECK(cudaGetLastError());
  return 0;
}

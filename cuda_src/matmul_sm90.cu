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
#include <cuda.h>  // CUtensorMap and its enums (types only: the encoder is fetched at run time, below)

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

// ---- mbarrier
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, int phase) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(smem_u32(bar)),
      "r"(phase)
      : "memory");
}

// ---- TMA: a 2-D box of the tensor map, completion counted on `bar` in bytes
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n" ::
          "r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1)
      : "memory");
}

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

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }

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
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
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
// cuTensorMapEncodeTiled is a driver-API function; fetching it through the runtime (cudaGetDriverEntryPoint*) keeps
// this library free of a link-time dependency on libcuda.so (absent on machines without a driver).
typedef CUresult (*EncodeTiledFn)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                  const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                  CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
static EncodeTiledFn encode_tiled_fn() {
  static EncodeTiledFn fn = nullptr;
  if (fn == nullptr) {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q;
#if CUDART_VERSION >= 12050
    cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q);
#else
    cudaError_t e = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &p, cudaEnableDefault, &q);
#endif
    if (e == cudaSuccess && q == cudaDriverEntryPointSuccess) fn = reinterpret_cast<EncodeTiledFn>(p);
  }
  return fn;
}

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

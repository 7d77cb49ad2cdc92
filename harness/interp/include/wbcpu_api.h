// wbcpu_api.h — the CUDA runtime API on host memory (cuda_runtime_api.h). Device memory is host memory: cudaMalloc
// returns a poisoned (0xFF) heap block that memcheck knows by name ("cudaMalloc#3"), copies are memcpy, launches run
// to completion before returning (every stream is the default stream), events time nothing.
#pragma once

enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchTimeout = 702,
  cudaErrorAssert = 710,
  cudaErrorIllegalInstruction = 715,
  cudaErrorMisalignedAddress = 716,
  cudaErrorLaunchFailure = 719,
  cudaErrorNotSupported = 801,
  cudaErrorUnknown = 999,
};
typedef enum cudaError cudaError_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
  cudaFuncAttributeClusterDimMustBeSet = 10,
  cudaFuncAttributeRequiredClusterWidth = 11,
  cudaFuncAttributeNonPortableClusterSizeAllowed = 16,
};
enum cudaFuncCache { cudaFuncCachePreferNone = 0, cudaFuncCachePreferShared = 1, cudaFuncCachePreferL1 = 2 };
enum cudaSharedMemConfig { cudaSharedMemBankSizeDefault = 0 };
enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrClockRate = 13,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
  cudaDevAttrL2CacheSize = 38,
  cudaDevAttrMaxThreadsPerMultiProcessor = 39,
  cudaDevAttrMaxRegistersPerBlock = 12,
};
enum cudaDriverEntryPointQueryResult {
  cudaDriverEntryPointSuccess = 0,
  cudaDriverEntryPointSymbolNotFound = 1,
  cudaDriverEntryPointVersionNotSufficent = 2
};
enum { cudaEnableDefault = 0, cudaEnableLegacyStream = 1, cudaEnablePerThreadDefaultStream = 2 };
#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01
#define cudaEventDefault 0x00
#define cudaEventDisableTiming 0x02
#define cudaHostAllocDefault 0x00
#define cudaStreamLegacy ((cudaStream_t)0x1)
#define cudaStreamPerThread ((cudaStream_t)0x2)

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem, sharedMemPerBlock;
  int regsPerBlock, warpSize;
  size_t memPitch;
  int maxThreadsPerBlock, maxThreadsDim[3], maxGridSize[3], clockRate;
  size_t totalConstMem;
  int major, minor;
  size_t textureAlignment, texturePitchAlignment;
  int deviceOverlap, multiProcessorCount, kernelExecTimeoutEnabled, integrated, canMapHostMemory, computeMode;
  int concurrentKernels, ECCEnabled, pciBusID, pciDeviceID, pciDomainID, tccDriver, asyncEngineCount;
  int unifiedAddressing, memoryClockRate, memoryBusWidth, l2CacheSize, persistingL2CacheMaxSize;
  int maxThreadsPerMultiProcessor, streamPrioritiesSupported, globalL1CacheSupported, localL1CacheSupported;
  size_t sharedMemPerMultiprocessor;
  int regsPerMultiprocessor, managedMemory, isMultiGpuBoard, multiGpuBoardGroupID;
  size_t sharedMemPerBlockOptin;
  int maxBlocksPerMultiProcessor, reservedSharedMemPerBlock;
};
struct cudaFuncAttributes {
  size_t sharedSizeBytes, constSizeBytes, localSizeBytes;
  int maxThreadsPerBlock, numRegs, ptxVersion, binaryVersion, cacheModeCA, maxDynamicSharedSizeBytes;
  int preferredShmemCarveout;
};

// ---- implemented in the runtime (wbcpu_rt.cpp)
WB_HIDDEN cudaError_t cudaMalloc(void** p, size_t n);
WB_HIDDEN cudaError_t cudaMallocManaged(void** p, size_t n, unsigned flags = 1);
WB_HIDDEN cudaError_t cudaMallocHost(void** p, size_t n);
WB_HIDDEN cudaError_t cudaHostAlloc(void** p, size_t n, unsigned flags);
WB_HIDDEN cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t s);
WB_HIDDEN cudaError_t cudaFree(void* p);
WB_HIDDEN cudaError_t cudaFreeHost(void* p);
WB_HIDDEN cudaError_t cudaFreeAsync(void* p, cudaStream_t s);
WB_HIDDEN cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind k);
WB_HIDDEN cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind k, cudaStream_t st = 0);
WB_HIDDEN cudaError_t cudaMemcpy2D(void* d, size_t dp, const void* s, size_t sp, size_t w, size_t h, cudaMemcpyKind k);
WB_HIDDEN cudaError_t cudaMemset(void* d, int v, size_t n);
WB_HIDDEN cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t st = 0);
WB_HIDDEN cudaError_t cudaDeviceSynchronize();
WB_HIDDEN cudaError_t cudaDeviceReset();
WB_HIDDEN cudaError_t cudaThreadSynchronize();
WB_HIDDEN cudaError_t cudaGetLastError();
WB_HIDDEN cudaError_t cudaPeekAtLastError();
WB_HIDDEN const char* cudaGetErrorString(cudaError_t e);
WB_HIDDEN const char* cudaGetErrorName(cudaError_t e);
WB_HIDDEN cudaError_t cudaGetDevice(int* d);
WB_HIDDEN cudaError_t cudaSetDevice(int d);
WB_HIDDEN cudaError_t cudaGetDeviceCount(int* n);
WB_HIDDEN cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d);
WB_HIDDEN cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d);
WB_HIDDEN cudaError_t cudaDeviceSetCacheConfig(cudaFuncCache c);
WB_HIDDEN cudaError_t cudaStreamCreate(cudaStream_t* s);
WB_HIDDEN cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned f);
WB_HIDDEN cudaError_t cudaStreamCreateWithPriority(cudaStream_t* s, unsigned f, int prio);
WB_HIDDEN cudaError_t cudaStreamDestroy(cudaStream_t s);
WB_HIDDEN cudaError_t cudaStreamSynchronize(cudaStream_t s);
WB_HIDDEN cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned f = 0);
WB_HIDDEN cudaError_t cudaEventCreate(cudaEvent_t* e);
WB_HIDDEN cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned f);
WB_HIDDEN cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
WB_HIDDEN cudaError_t cudaEventSynchronize(cudaEvent_t e);
WB_HIDDEN cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b);
WB_HIDDEN cudaError_t cudaEventDestroy(cudaEvent_t e);
WB_HIDDEN cudaError_t cudaEventQuery(cudaEvent_t e);
WB_HIDDEN cudaError_t cudaGetDriverEntryPoint(const char* sym, void** fn, unsigned long long flags,
                                              cudaDriverEntryPointQueryResult* q = nullptr);
WB_HIDDEN cudaError_t cudaGetDriverEntryPointByVersion(const char* sym, void** fn, unsigned version,
                                                       unsigned long long flags,
                                                       cudaDriverEntryPointQueryResult* q = nullptr);
WB_HIDDEN cudaError_t cudaRuntimeGetVersion(int* v);
WB_HIDDEN cudaError_t cudaDriverGetVersion(int* v);
WB_HIDDEN cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b);
namespace wb {
WB_HIDDEN cudaError_t func_set_attribute(const void* f, int attr, int value);
WB_HIDDEN int launch_args(const void* f, dim3 g, dim3 b, void** args, size_t smem, cudaStream_t st);
// dry mode (wbi_set_dry): launches are logged, not run; a call whose answer is not the target GPU's (an occupancy
// query, a read of device memory no kernel wrote) is noted here with the number of launches logged before it
WB_HIDDEN void dry_note(const char* what);
}  // namespace wb

// the typed overloads cuda_runtime.h has (cudaMalloc(&float_ptr, n) without a cast)
template <class T> inline cudaError_t cudaMalloc(T** p, size_t n) { return cudaMalloc((void**)p, n); }
template <class T> inline cudaError_t cudaMallocManaged(T** p, size_t n, unsigned f = 1) {
  return cudaMallocManaged((void**)p, n, f);
}
template <class T> inline cudaError_t cudaMallocHost(T** p, size_t n) { return cudaMallocHost((void**)p, n); }
template <class T> inline cudaError_t cudaHostAlloc(T** p, size_t n, unsigned f) {
  return cudaHostAlloc((void**)p, n, f);
}
template <class T> inline cudaError_t cudaMallocAsync(T** p, size_t n, cudaStream_t s) {
  return cudaMallocAsync((void**)p, n, s);
}

template <class T> inline cudaError_t cudaFuncSetAttribute(T* f, cudaFuncAttribute a, int v) {
  return ::wb::func_set_attribute(reinterpret_cast<const void*>(f), (int)a, v);
}
template <class T> inline cudaError_t cudaFuncSetCacheConfig(T*, cudaFuncCache) { return cudaSuccess; }
template <class T> inline cudaError_t cudaFuncSetSharedMemConfig(T*, cudaSharedMemConfig) { return cudaSuccess; }
template <class T> inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, T*) {
  ::wb::dry_note("cudaFuncGetAttributes, which the CPU interpreter does not model (no register count)");
  memset(a, 0, sizeof *a);
  a->maxThreadsPerBlock = 1024;
  a->maxDynamicSharedSizeBytes = 48 * 1024;
  return cudaSuccess;
}
template <class T>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, T*, int block, size_t smem) {
  ::wb::dry_note("cudaOccupancyMaxActiveBlocksPerMultiprocessor, which the CPU interpreter does not model "
                 "(no register count)");
  *n = block > 0 ? (int)(2048 / block) : 0;  // thread-count bound only: no register or shared-memory model here
  if (smem > 0 && *n > (int)((228 * 1024) / smem)) *n = (int)((228 * 1024) / smem);
  return cudaSuccess;
}
// Occupancy-based block size: thread-count bound only (no register or shared-memory-per-kernel model), so a dry run
// reports a geometry chosen by it as not known.
template <class T>
inline cudaError_t cudaOccupancyMaxPotentialBlockSize(int* grid, int* block, T*, size_t smem = 0, int limit = 0) {
  ::wb::dry_note("cudaOccupancyMaxPotentialBlockSize, which the CPU interpreter does not model (no register count)");
  *block = limit > 0 && limit < 1024 ? limit : 1024;
  *grid = 132 * (2048 / *block);
  (void)smem;
  return cudaSuccess;
}
template <class T> inline cudaError_t cudaMemcpyToSymbol(const T& sym, const void* src, size_t n, size_t off = 0,
                                                         cudaMemcpyKind k = cudaMemcpyHostToDevice) {
  if (off + n > sizeof(T)) return cudaErrorInvalidValue;
  memcpy(reinterpret_cast<char*>(const_cast<T*>(&sym)) + off, src, n);
  (void)k;
  return cudaSuccess;
}
template <class T> inline cudaError_t cudaMemcpyFromSymbol(void* dst, const T& sym, size_t n, size_t off = 0,
                                                           cudaMemcpyKind k = cudaMemcpyDeviceToHost) {
  ::wb::dry_note("device memory read back by cudaMemcpyFromSymbol");
  if (off + n > sizeof(T)) return cudaErrorInvalidValue;
  memcpy(dst, reinterpret_cast<const char*>(&sym) + off, n);
  (void)k;
  return cudaSuccess;
}
template <class T> inline cudaError_t cudaGetSymbolAddress(void** p, const T& sym) {
  *p = const_cast<T*>(&sym);
  return cudaSuccess;
}
// cudaLaunchKernel with a typed kernel pointer unpacks args[] by the kernel's parameter types; a void* kernel cannot
// be interpreted (its parameter types are unknown here).
template <class... P>
inline cudaError_t cudaLaunchKernel(void (*f)(P...), dim3 g, dim3 b, void** args, size_t smem = 0,
                                    cudaStream_t st = 0) {
  return (cudaError_t)::wb::kl_args(f, g, b, args, smem, st, std::index_sequence_for<P...>{});
}
inline cudaError_t cudaLaunchKernel(const void* f, dim3 g, dim3 b, void** args, size_t smem = 0,
                                    cudaStream_t st = 0) {
  return (cudaError_t)::wb::launch_args(f, g, b, args, smem, st);
}

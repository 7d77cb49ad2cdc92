// cublas_v2.h in interpret mode: enough of cuBLAS for a course file that includes it (cuda_error.cuh does) and a
// driver that compares with cublasSgemm: handles, status codes and a plain CPU SGEMM (column-major, as cuBLAS).
#pragma once
#include "wbcpu.h"

typedef struct cublasContext* cublasHandle_t;
typedef enum {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_ALLOC_FAILED = 3,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_ARCH_MISMATCH = 8,
  CUBLAS_STATUS_MAPPING_ERROR = 11,
  CUBLAS_STATUS_EXECUTION_FAILED = 13,
  CUBLAS_STATUS_INTERNAL_ERROR = 14,
  CUBLAS_STATUS_NOT_SUPPORTED = 15
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;
typedef enum {
  CUBLAS_DEFAULT_MATH = 0,
  CUBLAS_TENSOR_OP_MATH = 1,
  CUBLAS_PEDANTIC_MATH = 2,
  CUBLAS_TF32_TENSOR_OP_MATH = 3
} cublasMath_t;
WB_HIDDEN cublasStatus_t cublasCreate(cublasHandle_t* h);
WB_HIDDEN cublasStatus_t cublasDestroy(cublasHandle_t h);
WB_HIDDEN cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
WB_HIDDEN cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m);
WB_HIDDEN const char* cublasGetStatusString(cublasStatus_t s);
WB_HIDDEN const char* cublasGetStatusName(cublasStatus_t s);
WB_HIDDEN cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                     const float* alpha, const float* A, int lda, const float* B, int ldb,
                                     const float* beta, float* C, int ldc);
#define cublasCreate_v2 cublasCreate
#define cublasDestroy_v2 cublasDestroy
#define cublasSgemm_v2 cublasSgemm

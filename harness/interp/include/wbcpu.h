// wbcpu.h — CUDA C++ on the CPU: the one header every shadowing header (cuda_runtime.h, cuda_fp16.h, ...) includes.
//
// The workbench's interpret mode (harness/interp) compiles a .cu file as host C++ with g++. This header supplies what
// nvcc would: the execution-space keywords (as no-ops), the built-in variables (threadIdx... are globals the runtime
// sets whenever it switches to another CUDA thread), vector and 16-bit float types, the math, warp, atomic and
// synchronisation intrinsics, and the runtime API on host memory. The runtime (runtime/wbcpu_rt.cpp) runs each CUDA
// thread as a fiber; synchronisation intrinsics are where fibers switch.
//
// What the user's code is compiled with (harness/interp/build.py): -fsanitize=kernel-address, so every load and store
// calls __asan_{load,store}N_noabort (memcheck, racecheck on shared memory), and -fsanitize=alignment, so every
// dereference of a misaligned pointer calls __ubsan_handle_type_mismatch_v1 with the static type (a float4 at an
// address that is not a multiple of 16). The runtime is compiled without them.
//
// Extension points for PTX instructions (issue 28) are declared in namespace wb below: generic warp / warpgroup
// rendezvous with a callback, blocking predicate waits, asynchronous shared-memory copies with shadow accounting,
// and checked accessors for memory the runtime touches on a thread's behalf. See harness/interp/README.md.
#pragma once
#ifndef WB_INTERPRET
#define WB_INTERPRET 1
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <tuple>
#include <type_traits>
#include <utility>

// ------------------------------------------------------------------------------------------------ what nvcc defines
// __CUDA_ARCH__ is set so device-only code paths compile; sm_90 with its feature macro so Hopper paths are taken and
// end "not interpreted" at their first PTX instruction instead of silently running an #else branch.
#define __CUDACC__ 1
#define __CUDA_ARCH__ 900
#define __CUDA_ARCH_FEAT_SM90_ALL 1
#define __CUDACC_VER_MAJOR__ 12
#define __CUDACC_VER_MINOR__ 8
#define __CUDACC_VER_BUILD__ 0
#ifndef CUDART_VERSION
#define CUDART_VERSION 12080
#endif
#ifndef CUDA_VERSION
#define CUDA_VERSION 12080
#endif

// Execution spaces and attributes. __shared__ is deliberately not a macro: the source rewriter turns each __shared__
// declaration into a slot of the block's shared window (and `extern __shared__ T x[]` into the dynamic area);
// __noinline__ is rewritten too, because libstdc++ spells GCC's own attribute __attribute__((__noinline__)).
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __maxnreg__(...)
#define __cluster_dims__(...)
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))
#define __builtin_align__(n) __attribute__((aligned(n)))
#define __device_builtin__
#define __cudart_builtin__
#define CUDART_CB

#define WB_HIDDEN __attribute__((visibility("hidden")))
#define WB_LOC ::wb::Loc{__FILE__, __LINE__}

#include "wbcpu_vec.h"

// The rewriter's targets in the user's code: a device assert ends the launch; exit()/abort() in host code throw (to the
// library's caller) instead of ending the process.
extern "C" {
[[noreturn]] WB_HIDDEN void wb_assert_fail(const char* expr, const char* file, unsigned line, const char* func);
[[noreturn]] WB_HIDDEN void wb_exit(int code);
[[noreturn]] WB_HIDDEN void wb_abort();
}

// ------------------------------------------------------------------------------------------------ built-in variables
// Set by the runtime at every switch to another CUDA thread (plain globals: a constant-offset access to a global is
// not instrumented, so reading threadIdx.x costs a load and nothing else).
extern WB_HIDDEN uint3 threadIdx;
extern WB_HIDDEN uint3 blockIdx;
extern WB_HIDDEN dim3 blockDim;
extern WB_HIDDEN dim3 gridDim;
static constexpr int warpSize = 32;

typedef struct CUstream_st* cudaStream_t;
typedef struct CUevent_st* cudaEvent_t;

namespace wb {

struct Loc {
  const char* file;
  int line;
};

// ---- faults (end the launch; the message names kernel, block, thread and source line)
enum FaultKind { FAULT_NONE = 0, FAULT_MEMCHECK = 1, FAULT_RACECHECK = 2, FAULT_SYNCCHECK = 3, FAULT_TRAP = 4,
                 FAULT_ASSERT = 5, FAULT_NOT_INTERPRETED = 6, FAULT_LAUNCH = 7, FAULT_CRASH = 8 };
[[noreturn]] WB_HIDDEN void trap(Loc loc);
[[noreturn]] WB_HIDDEN void assert_fail(const char* expr, const char* file, unsigned line, const char* func);
[[noreturn]] WB_HIDDEN void not_interpreted(const char* instruction, Loc loc);
[[noreturn]] WB_HIDDEN void fault(int kind, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
WB_HIDDEN bool in_kernel();  // true inside a CUDA thread (a fiber), false in host code

// ---- block barrier (__syncthreads and friends): op 0 plain, 1 count, 2 and, 3 or
WB_HIDDEN int syncthreads(Loc loc, int op = 0, int pred = 0);

// ---- warp collectives
WB_HIDDEN void syncwarp(unsigned mask, Loc loc);
WB_HIDDEN unsigned long long shfl(int mode, unsigned mask, unsigned long long v, int arg, int width, Loc loc);
WB_HIDDEN unsigned vote(int mode, unsigned mask, int pred, Loc loc);  // 0 ballot, 1 any, 2 all
WB_HIDDEN unsigned activemask();
WB_HIDDEN unsigned match_any(unsigned mask, unsigned long long v, Loc loc);
WB_HIDDEN unsigned match_all(unsigned mask, unsigned long long v, int* pred, Loc loc);
WB_HIDDEN unsigned reduce(int op, unsigned mask, unsigned v, int is_signed, Loc loc);
WB_HIDDEN void nanosleep(unsigned ns);
WB_HIDDEN long long clock64();

// ---- extension points (issue 28: PTX instructions as C++ helpers with CPU semantics) ----------------------------
// A rendezvous of the lanes named in `mask` (bit i = lane i of the caller's group): every named lane calls with the
// same `kind` and its own input/output blobs; when the last one arrives, `fn` runs once with every lane's blobs
// (pointers into the lanes' own stacks, valid during fn) and each lane returns with its output filled. Groups: a warp
// (32 lanes: linear thread id / 32) or a warpgroup (128 lanes: 4 consecutive warps, linear thread id / 128).
// Counts as a warp synchronisation point for racecheck. Lanes that exited, or that never arrive, are synccheck errors.
struct Rendezvous {
  int lanes;                // 32 or 128
  unsigned long long mask[2];
  const void* in[128];      // in[i]: lane i's input (nullptr for lanes outside the mask)
  void* out[128];
  void* user;
};
typedef void (*RendezvousFn)(Rendezvous& r);
WB_HIDDEN void warp_rendezvous(unsigned mask, const char* kind, const void* in, void* out, RendezvousFn fn, void* user,
                               Loc loc);
WB_HIDDEN void warpgroup_rendezvous(const unsigned long long (&mask)[2], const char* kind, const void* in, void* out,
                                    RendezvousFn fn, void* user, Loc loc);
// Block the calling CUDA thread until pred(arg) is true, letting other threads run (an mbarrier try_wait loop). When
// no thread can run and no asynchronous copy is left to land, the launch ends with a synccheck deadlock naming `what`.
WB_HIDDEN void wait_until(bool (*pred)(void*), void* arg, const char* what, Loc loc);
// Asynchronous copy of `n` bytes into shared memory, `src_n` of them read from global `src` and the rest zero-filled
// (cp.async's src-size). The bytes land at a per-seed random scheduling point before the wait that retires them;
// until retired, any access to them (or a second copy onto them) is a racecheck error. Returns an id.
// on_done(user) runs when the bytes land (TMA: complete_tx on an mbarrier).
WB_HIDDEN unsigned long long async_copy(void* dst_shared, const void* src_global, size_t n, size_t src_n, Loc loc,
                                        void (*on_done)(void*) = nullptr, void* user = nullptr);
WB_HIDDEN void async_commit();             // close the calling thread's current group (cp.async.commit_group)
WB_HIDDEN void async_wait(int keep);       // land and retire all but the `keep` newest groups (cp.async.wait_group)
WB_HIDDEN void async_land(unsigned long long id);    // force one copy to land now (its bytes stay unretired)
WB_HIDDEN void async_retire(unsigned long long id);  // retire one landed copy: its bytes become a plain write
// Checked accesses for memory the runtime reads or writes on a thread's behalf (ldmatrix, TMA, wgmma operands):
// memcheck (global buffers, shared window) and racecheck (shared) exactly as an instrumented access at `loc`.
// kind: 0 load, 1 store, 2 atomic.
WB_HIDDEN void check_access(const void* p, size_t n, int kind, Loc loc);
WB_HIDDEN bool is_shared(const void* p);
WB_HIDDEN unsigned linear_tid();
WB_HIDDEN size_t dyn_smem_size();  // the running launch's dynamic shared bytes (PTX %dynamic_smem_size)
// async_copy and check_access with the source location taken from a return address instead (symbolised, with its
// inline chain, only if a report names it): a model called from a shared helper (common.cuh's cp_async_16) then
// names the kernel's line too ("common.cuh:95 via quant_gemm.cu:927").
WB_HIDDEN unsigned long long async_copy_at(void* dst_shared, const void* src_global, size_t n, size_t src_n,
                                           const void* pc);
WB_HIDDEN void check_access_at(const void* p, size_t n, int kind, const void* pc);

// ---- shared memory (the rewriter's targets)
WB_HIDDEN void* dyn_smem();  // the dynamic shared area (fixed address; the launch sets its size)
WB_HIDDEN size_t smem_slot(size_t size, size_t align, const char* name, const char* file, int line);
WB_HIDDEN char* smem_base();
template <class T, class Tag, size_t Align>
__attribute__((always_inline)) inline T& smem_var(const char* name, const char* file, int line) {
  static size_t off = smem_slot(sizeof(T), Align > alignof(T) ? Align : alignof(T), name, file, line);
  return *reinterpret_cast<T*>(smem_base() + off);
}

// ---- launches
typedef void (*Thunk)(void* ctx);
struct LaunchCfg {
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  long long max_dyn;  // opt-in dynamic shared limit set for this kernel; -1: what cudaFuncSetAttribute recorded
};
WB_HIDDEN int launch(const LaunchCfg& cfg, const void* kernel_fn, Thunk thunk, void* ctx, const void* params,
                     size_t params_size, const char* name);

// kernel<<<g, b, s, st>>>(args...) is rewritten to wb::kl(...): the arguments are evaluated once, here on the host,
// and every CUDA thread calls the kernel with copies of them (`call` is a generic lambda, so template arguments are
// still deduced from the arguments). The closure and the argument tuple live in one Pack, which memcheck accepts as
// "kernel parameters" for the launch.
template <class F, class Tuple> struct Pack {
  F f;
  Tuple t;
  static void run(void* c) {
    auto* p = static_cast<Pack*>(c);
    std::apply(p->f, p->t);
  }
};
template <class F, class... A>
inline void kl(const char* name, dim3 g, dim3 b, size_t smem, cudaStream_t st, F call, A&&... a) {
  using Tuple = std::tuple<std::decay_t<A>...>;
  Pack<F, Tuple> pack{call, Tuple(std::forward<A>(a)...)};
  LaunchCfg cfg{g, b, smem, st, -1};
  launch(cfg, nullptr, &Pack<F, Tuple>::run, &pack, &pack, sizeof(pack), name);
}

// Kernel mode (Python calls a kernel by name): the arguments arrive as bytes, checked against the parameter types.
template <class T> const char* type_name() {
  static char buf[160];
  const char* p = __PRETTY_FUNCTION__;
  const char* s = strstr(p, "T = ");
  if (!s) return "?";
  s += 4;
  size_t n = strcspn(s, ";]");
  if (n >= sizeof buf) n = sizeof buf - 1;
  memcpy(buf, s, n);
  buf[n] = 0;
  return buf;
}
WB_HIDDEN int launch_error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
template <class... P> struct KernelCall {
  void (*k)(P...);
  void operator()(std::decay_t<P>&... a) const { k(a...); }
};
template <class... P, size_t... I>
inline int launch_blob_impl(void (*k)(P...), const LaunchCfg& cfg, void* const* argv, const size_t* sizes,
                            const char* name, std::index_sequence<I...>) {
  const size_t want[] = {sizeof(std::decay_t<P>)..., 0};
  const char* names[] = {type_name<std::decay_t<P>>()..., nullptr};
  for (size_t i = 0; i < sizeof...(P); ++i)
    if (sizes[i] != want[i])
      return launch_error("%s: parameter %zu (%s) takes %zu bytes, got %zu%s", name, i, names[i], want[i], sizes[i],
                          want[i] == 8 && sizes[i] == 4 ? " (pass a 64-bit value: harness.cuda.i64() / f64())"
                          : want[i] == 4 && sizes[i] == 8 ? " (a Python int/float passes 4 bytes; this is 8)" : "");
  using Tuple = std::tuple<std::decay_t<P>...>;
  Pack<KernelCall<P...>, Tuple> pack{KernelCall<P...>{k}, Tuple()};
  (memcpy(static_cast<void*>(&std::get<I>(pack.t)), argv[I], sizeof(std::decay_t<P>)), ...);
  return launch(cfg, reinterpret_cast<const void*>(k), &Pack<KernelCall<P...>, Tuple>::run, &pack, &pack,
                sizeof(pack), name);
}
// cudaLaunchKernel(kernel, grid, block, args, smem, stream): args[i] points at parameter i
template <class... P, size_t... I>
inline int kl_args(void (*k)(P...), dim3 g, dim3 b, void** argv, size_t smem, cudaStream_t st,
                   std::index_sequence<I...>) {
  using Tuple = std::tuple<std::decay_t<P>...>;
  Pack<KernelCall<P...>, Tuple> pack{KernelCall<P...>{k}, Tuple(*static_cast<std::decay_t<P>*>(argv[I])...)};
  LaunchCfg cfg{g, b, smem, st, -1};
  return launch(cfg, reinterpret_cast<const void*>(k), &Pack<KernelCall<P...>, Tuple>::run, &pack, &pack,
                sizeof(pack), "cudaLaunchKernel");
}
template <class... P>
inline int launch_blob(void (*k)(P...), const LaunchCfg& cfg, void* const* argv, const size_t* sizes, int nargs,
                       const char* name) {
  if (nargs != (int)sizeof...(P))
    return launch_error("%s takes %zu parameters, got %d", name, sizeof...(P), nargs);
  return launch_blob_impl(k, cfg, argv, sizes, name, std::index_sequence_for<P...>{});
}

// ---- atomics (out of line: not instrumented, checked explicitly and exempt from racecheck)
#define WB_ATOMIC_DECL(T)                                                                               \
  WB_HIDDEN T atomic_rmw(int op, T* p, T v, const void* pc);                                            \
  WB_HIDDEN T atomic_cas(T* p, T cmp, T v, const void* pc);
WB_ATOMIC_DECL(int)
WB_ATOMIC_DECL(unsigned)
WB_ATOMIC_DECL(unsigned long long)
WB_ATOMIC_DECL(long long)
WB_ATOMIC_DECL(float)
WB_ATOMIC_DECL(double)
WB_ATOMIC_DECL(unsigned short)
#undef WB_ATOMIC_DECL
enum { AOP_ADD, AOP_SUB, AOP_EXCH, AOP_MIN, AOP_MAX, AOP_AND, AOP_OR, AOP_XOR, AOP_INC, AOP_DEC };

}  // namespace wb

#include "wbcpu_ptx90.h"  // Hopper PTX models (entry points; needs wb::Loc)
#include "wbcpu_half.h"
#include "wbcpu_math.h"
#include "wbcpu_intrinsics.h"
#include "wbcpu_api.h"
#include "wbcpu_ptx80.h"

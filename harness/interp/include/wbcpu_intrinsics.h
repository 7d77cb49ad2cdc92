// wbcpu_intrinsics.h — synchronisation, warp, atomic and memory intrinsics. The synchronising ones are macros so that
// the runtime knows the source line of every barrier and collective (synccheck messages and barrier matching).
#pragma once

// ---- block barrier
#define __syncthreads() ::wb::syncthreads(WB_LOC)
#define __syncthreads_count(p) ::wb::syncthreads(WB_LOC, 1, (p) ? 1 : 0)
#define __syncthreads_and(p) ::wb::syncthreads(WB_LOC, 2, (p) ? 1 : 0)
#define __syncthreads_or(p) ::wb::syncthreads(WB_LOC, 3, (p) ? 1 : 0)
// Memory is coherent on one CPU thread: the fences order nothing further; they stay compiler barriers.
inline void __threadfence() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

// ---- warp collectives (lane = linear thread id % 32; a collective waits for every lane its mask names)
#define __syncwarp(...) ::wb::syncwarp_(WB_LOC __VA_OPT__(, ) __VA_ARGS__)
#define __shfl_sync(...) ::wb::shfl_t(0, WB_LOC, __VA_ARGS__)
#define __shfl_up_sync(...) ::wb::shfl_t(1, WB_LOC, __VA_ARGS__)
#define __shfl_down_sync(...) ::wb::shfl_t(2, WB_LOC, __VA_ARGS__)
#define __shfl_xor_sync(...) ::wb::shfl_t(3, WB_LOC, __VA_ARGS__)
#define __ballot_sync(m, p) ::wb::vote(0, (m), (p) ? 1 : 0, WB_LOC)
#define __any_sync(m, p) (::wb::vote(1, (m), (p) ? 1 : 0, WB_LOC) != 0)
#define __all_sync(m, p) (::wb::vote(2, (m), (p) ? 1 : 0, WB_LOC) != 0)
#define __match_any_sync(m, v) ::wb::match_any((m), ::wb::bits64(v), WB_LOC)
#define __match_all_sync(m, v, pred) ::wb::match_all((m), ::wb::bits64(v), (pred), WB_LOC)
#define __reduce_add_sync(m, v) ::wb::reduce_t(0, (m), (v), WB_LOC)
#define __reduce_min_sync(m, v) ::wb::reduce_t(1, (m), (v), WB_LOC)
#define __reduce_max_sync(m, v) ::wb::reduce_t(2, (m), (v), WB_LOC)
#define __reduce_and_sync(m, v) ::wb::reduce_t(3, (m), (v), WB_LOC)
#define __reduce_or_sync(m, v) ::wb::reduce_t(4, (m), (v), WB_LOC)
#define __reduce_xor_sync(m, v) ::wb::reduce_t(5, (m), (v), WB_LOC)
inline unsigned __activemask() { return ::wb::activemask(); }
inline unsigned __lanemask_lt() { return (1u << (::wb::linear_tid() & 31)) - 1u; }
inline unsigned __lanemask_le() { return (2u << (::wb::linear_tid() & 31)) - 1u; }
inline unsigned __lanemask_eq() { return 1u << (::wb::linear_tid() & 31); }
inline unsigned __lanemask_gt() { return ~__lanemask_le(); }
inline unsigned __lanemask_ge() { return ~__lanemask_lt(); }

namespace wb {
inline void syncwarp_(Loc loc, unsigned mask = 0xffffffffu) { syncwarp(mask, loc); }
template <class T> inline unsigned long long bits64(T v) {
  static_assert(sizeof(T) <= 8, "warp collectives move at most 8 bytes per lane");
  unsigned long long u = 0;
  memcpy(&u, &v, sizeof(T));
  return u;
}
template <class T> inline T shfl_t(int mode, Loc loc, unsigned mask, T v, int arg, int width = 32) {
  static_assert(sizeof(T) <= 8, "__shfl_*_sync moves at most 8 bytes per lane");
  const unsigned long long r = shfl(mode, mask, bits64(v), arg, width, loc);
  T out;
  memcpy(static_cast<void*>(&out), &r, sizeof(T));
  return out;
}
template <class T> inline T reduce_t(int op, unsigned mask, T v, Loc loc) {
  return (T)reduce(op, mask, (unsigned)v, std::is_signed<T>::value ? 1 : 0, loc);
}
}  // namespace wb

// ---- atomics: every CUDA overload forwards to wb::atomic_rmw / atomic_cas (checked, exempt from racecheck)
#define WB_RMW(NAME, OP, T) \
  __attribute__((noinline)) inline T NAME(T* p, T v) { return ::wb::atomic_rmw(OP, p, v, __builtin_return_address(0)); }
#define WB_RMW_ALL_SCOPES(NAME, OP, T) WB_RMW(NAME, OP, T) WB_RMW(NAME##_block, OP, T) WB_RMW(NAME##_system, OP, T)
WB_RMW_ALL_SCOPES(atomicAdd, ::wb::AOP_ADD, int)
WB_RMW_ALL_SCOPES(atomicAdd, ::wb::AOP_ADD, unsigned)
WB_RMW_ALL_SCOPES(atomicAdd, ::wb::AOP_ADD, unsigned long long)
WB_RMW_ALL_SCOPES(atomicAdd, ::wb::AOP_ADD, float)
WB_RMW_ALL_SCOPES(atomicAdd, ::wb::AOP_ADD, double)
WB_RMW_ALL_SCOPES(atomicSub, ::wb::AOP_SUB, int)
WB_RMW_ALL_SCOPES(atomicSub, ::wb::AOP_SUB, unsigned)
WB_RMW_ALL_SCOPES(atomicExch, ::wb::AOP_EXCH, int)
WB_RMW_ALL_SCOPES(atomicExch, ::wb::AOP_EXCH, unsigned)
WB_RMW_ALL_SCOPES(atomicExch, ::wb::AOP_EXCH, unsigned long long)
WB_RMW_ALL_SCOPES(atomicExch, ::wb::AOP_EXCH, float)
WB_RMW_ALL_SCOPES(atomicMin, ::wb::AOP_MIN, int)
WB_RMW_ALL_SCOPES(atomicMin, ::wb::AOP_MIN, unsigned)
WB_RMW_ALL_SCOPES(atomicMin, ::wb::AOP_MIN, unsigned long long)
WB_RMW_ALL_SCOPES(atomicMin, ::wb::AOP_MIN, long long)
WB_RMW_ALL_SCOPES(atomicMax, ::wb::AOP_MAX, int)
WB_RMW_ALL_SCOPES(atomicMax, ::wb::AOP_MAX, unsigned)
WB_RMW_ALL_SCOPES(atomicMax, ::wb::AOP_MAX, unsigned long long)
WB_RMW_ALL_SCOPES(atomicMax, ::wb::AOP_MAX, long long)
WB_RMW_ALL_SCOPES(atomicAnd, ::wb::AOP_AND, int)
WB_RMW_ALL_SCOPES(atomicAnd, ::wb::AOP_AND, unsigned)
WB_RMW_ALL_SCOPES(atomicAnd, ::wb::AOP_AND, unsigned long long)
WB_RMW_ALL_SCOPES(atomicOr, ::wb::AOP_OR, int)
WB_RMW_ALL_SCOPES(atomicOr, ::wb::AOP_OR, unsigned)
WB_RMW_ALL_SCOPES(atomicOr, ::wb::AOP_OR, unsigned long long)
WB_RMW_ALL_SCOPES(atomicXor, ::wb::AOP_XOR, int)
WB_RMW_ALL_SCOPES(atomicXor, ::wb::AOP_XOR, unsigned)
WB_RMW_ALL_SCOPES(atomicXor, ::wb::AOP_XOR, unsigned long long)
WB_RMW_ALL_SCOPES(atomicInc, ::wb::AOP_INC, unsigned)
WB_RMW_ALL_SCOPES(atomicDec, ::wb::AOP_DEC, unsigned)
#undef WB_RMW_ALL_SCOPES
#undef WB_RMW
#define WB_CAS(NAME, T)                                                       \
  __attribute__((noinline)) inline T NAME(T* p, T cmp, T v) {                 \
    return ::wb::atomic_cas(p, cmp, v, __builtin_return_address(0));          \
  }
WB_CAS(atomicCAS, int)
WB_CAS(atomicCAS, unsigned)
WB_CAS(atomicCAS, unsigned long long)
WB_CAS(atomicCAS, unsigned short)
WB_CAS(atomicCAS_block, int)
WB_CAS(atomicCAS_block, unsigned)
WB_CAS(atomicCAS_block, unsigned long long)
#undef WB_CAS
// 16-bit float atomics: a CAS loop on the containing aligned word, as CUDA's own fallbacks do
__attribute__((noinline)) inline __half2 atomicAdd(__half2* p, __half2 v) {
  unsigned* w = reinterpret_cast<unsigned*>(p);
  unsigned old = ::wb::atomic_rmw(::wb::AOP_ADD, w, 0u, __builtin_return_address(0)), assumed;
  do {
    assumed = old;
    __half2 cur;
    memcpy(&cur, &assumed, 4);
    const __half2 nv = __hadd2(cur, v);
    unsigned nb;
    memcpy(&nb, &nv, 4);
    old = ::wb::atomic_cas(w, assumed, nb, __builtin_return_address(0));
  } while (old != assumed);
  __half2 r;
  memcpy(&r, &old, 4);
  return r;
}
__attribute__((noinline)) inline __nv_bfloat162 atomicAdd(__nv_bfloat162* p, __nv_bfloat162 v) {
  unsigned* w = reinterpret_cast<unsigned*>(p);
  unsigned old = ::wb::atomic_rmw(::wb::AOP_ADD, w, 0u, __builtin_return_address(0)), assumed;
  do {
    assumed = old;
    __nv_bfloat162 cur;
    memcpy(&cur, &assumed, 4);
    const __nv_bfloat162 nv = __hadd2(cur, v);
    unsigned nb;
    memcpy(&nb, &nv, 4);
    old = ::wb::atomic_cas(w, assumed, nb, __builtin_return_address(0));
  } while (old != assumed);
  __nv_bfloat162 r;
  memcpy(&r, &old, 4);
  return r;
}
__attribute__((noinline)) inline __half atomicAdd(__half* p, __half v) {
  unsigned short* w = reinterpret_cast<unsigned short*>(p);
  unsigned short old = ::wb::atomic_rmw(::wb::AOP_ADD, w, (unsigned short)0, __builtin_return_address(0)), assumed;
  do {
    assumed = old;
    const __half nv = __hadd(__ushort_as_half(assumed), v);
    old = ::wb::atomic_cas(w, assumed, nv.__x, __builtin_return_address(0));
  } while (old != assumed);
  return __ushort_as_half(old);
}
__attribute__((noinline)) inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) {
  unsigned short* w = reinterpret_cast<unsigned short*>(p);
  unsigned short old = ::wb::atomic_rmw(::wb::AOP_ADD, w, (unsigned short)0, __builtin_return_address(0)), assumed;
  do {
    assumed = old;
    const __nv_bfloat16 nv = __hadd(__ushort_as_bfloat16(assumed), v);
    old = ::wb::atomic_cas(w, assumed, nv.__x, __builtin_return_address(0));
  } while (old != assumed);
  return __ushort_as_bfloat16(old);
}

// ---- cache-hinted loads and stores: plain accesses (checked like any other)
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldca(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldlu(const T* p) { return *p; }
template <class T> inline T __ldcv(const T* p) { return *p; }
template <class T> inline void __stwb(T* p, T v) { *p = v; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stwt(T* p, T v) { *p = v; }
inline void __prefetch_global_l1(const void*) {}
inline void __prefetch_global_l2(const void*) {}

// ---- address spaces: a shared-window address maps to its offset in the window (what cvta.to.shared gives)
inline size_t __cvta_generic_to_shared(const void* p) {
  return (size_t)(reinterpret_cast<const char*>(p) - ::wb::smem_base());
}
inline void* __cvta_shared_to_generic(size_t a) { return ::wb::smem_base() + a; }
inline size_t __cvta_generic_to_global(const void* p) { return (size_t)p; }
inline void* __cvta_global_to_generic(size_t a) { return (void*)a; }
inline unsigned __isShared(const void* p) { return ::wb::is_shared(p) ? 1u : 0u; }
inline unsigned __isGlobal(const void* p) { return ::wb::is_shared(p) ? 0u : 1u; }

// ---- misc
#define __trap() ::wb::trap(WB_LOC)
#define __brkpt() ::wb::trap(WB_LOC)
inline long long clock64() { return ::wb::clock64(); }
inline long long __clock64() { return ::wb::clock64(); }
inline int __clock() { return (int)::wb::clock64(); }
inline unsigned long long __globaltimer() { return (unsigned long long)::wb::clock64() * 1000ull; }
inline void __nanosleep(unsigned ns) { ::wb::nanosleep(ns); }
inline unsigned __smid() { return 0; }
inline unsigned __nsmid() { return 1; }
inline unsigned __laneid() { return ::wb::linear_tid() & 31u; }
inline unsigned __warpid() { return ::wb::linear_tid() >> 5; }

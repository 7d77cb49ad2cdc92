// wbcpu_ptx80.h — the sm_80-era inline PTX of the repository's kernels, with semantics taken from the PTX ISA.
//
// How a kernel reaches these models: the source rewriter (harness/interp/rewrite.py) hands every asm statement to
// the handlers of harness/interp/ptx80.py, which parse the *instruction text the GPU build assembles* (opcode,
// qualifiers, operand order, immediates) and emit a call here with the operands as raw register bits. So the CPU
// runs the same asm string nvcc compiles: an operand bound to the wrong %N, a missing .trans or a wrong wait count is
// wrong on the CPU too. (The alternative, an `#ifdef WB_INTERPRET` twin of every helper, would check the twin.)
//
// What is modelled (each model is unit-tested against values worked out by hand from the ISA's tables in
// tests/test_ptx80.py, independent of any kernel):
//  * cp.async.{ca,cg}.shared.global [dst], [src], cp-size{, src-size | ignore-src}: a wb::async_copy (lands at a
//    per-seed random scheduling point before the wait that retires it; until then any access to the bytes, a
//    second copy onto them included, is a racecheck error); cp-size 4/8/16 (.cg: 16), both addresses aligned to it,
//    src-size <= cp-size, zero fill past src-size. commit_group / wait_group N / wait_all are wb::async_commit /
//    async_wait (per thread; an empty group is trivially complete; wait_all = commit + wait_group 0).
//  * ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16: lane 8j + r addresses row r of matrix j (16 bytes,
//    16-byte aligned, shared memory); lane l receives in register j the elements (l/4, 2(l%4)) and (l/4, 2(l%4)+1)
//    of matrix j, or with .trans (2(l%4), l/4) and (2(l%4)+1, l/4). Each addressing lane's row is checked as a read
//    by that lane when it arrives; the rows are read when the whole warp has arrived. Each 8-row phase is also
//    counted for shared-memory bank conflicts (8 rows of 16 bytes are conflict-free iff they fall in 8 distinct
//    16-byte bank groups): wbp80_stats().
//  * mma.sync.aligned.m16n8k{4,8,16,32}.row.col for f16 / bf16 (k8, k16), tf32 (k4, k8), s8 / u8 (k16, k32), with
//    f32 / f16 / s32 accumulators: the fragment layouts of the ISA's "Matrix Fragments for mma.m16n8kK" tables.
//    Rounding model: every product is exact (an 11-bit x 11-bit or 8-bit x 8-bit significand product fits fp32's 24
//    bits), accumulated in fp32 with round-to-nearest, C first, then k = 0, 1, ..., K-1. The hardware sums several
//    products at once with its own alignment and truncation, so its last bits can differ; both are within fp32
//    summation error, far below a 16-bit output's rounding. tf32 operands: the low 13 bits of each register are
//    dropped (kernels round with cvt.rna.tf32.f32 / __float_to_tf32 first, as the ISA's tf32 format expects). f16
//    accumulators: the fp32 sum rounded once to f16. Integers: exact int32 arithmetic, wrapping (or clamped with
//    .satfinite).
//  * lop3.b32 (truth table: F(0xF0, 0xCC, 0xAA) = immLut), prmt.b32 (generic with sign replication, and the
//    f4e/b4e/rc8/ecl/ecr/rc16 modes), shfl.sync.{up,down,bfly,idx}.b32 with its c operand (clamp, segment mask) and
//    predicate output, ex2.approx{.ftz}.f32, special registers (%laneid, %warpid, %dynamic_smem_size, ...);
//    ld/st/atom/red are emitted by the handlers as instrumented C++ accesses (memcheck, racecheck, alignment).
#pragma once

namespace wb_ptx {
using ::wb::Loc;

// ------------------------------------------------------------------------------------------------ register plumbing
// Operands travel as the bits of their asm register class ("r" 32, "l" 64, "h" 16, "f" / "d" the float's bits).
template <class T> inline uint64_t bits_of(const T& v) {
  if constexpr (std::is_pointer<T>::value) {
    return (uint64_t)(uintptr_t)v;
  } else if constexpr (std::is_integral<T>::value || std::is_enum<T>::value) {
    if constexpr (std::is_signed<T>::value) return (uint64_t)(int64_t)v;
    else return (uint64_t)v;
  } else {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "an asm operand is at most 8 bytes");
    uint64_t u = 0;
    memcpy(&u, &v, sizeof(T));
    return u;
  }
}
inline uint32_t r32(uint64_t v) { return (uint32_t)v; }
template <class T> inline void set_bits(T& dst, uint64_t v) {
  if constexpr (std::is_integral<T>::value) {
    dst = (T)v;
  } else if constexpr (std::is_pointer<T>::value) {
    dst = (T)(uintptr_t)v;
  } else {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "an asm operand is at most 8 bytes");
    memcpy(static_cast<void*>(&dst), &v, sizeof(T));
  }
}
// a value operand in its own C++ type ("f" float, "d" double): the model works on bits
inline uint64_t fbits(float f) { return ::wb::f2u(f); }
inline uint64_t fbits(double d) { uint64_t u; memcpy(&u, &d, 8); return u; }

// ------------------------------------------------------------------------------------------------ addresses
// A .shared operand is an offset in the block's shared window (what cvta.to.shared / __cvta_generic_to_shared gives,
// 32 bits); a generic or .global operand is the pointer itself.
inline char* shared_addr(uint64_t a) { return ::wb::smem_base() + (uint32_t)a; }
inline char* generic_addr(uint64_t a) { return reinterpret_cast<char*>((uintptr_t)a); }

// ------------------------------------------------------------------------------------------------ statistics
// [0] ldmatrix 8-row phases, [1] phases with a bank conflict. Per library; Python reads deltas (wbp80_stats).
inline unsigned long long g_stats[4];
extern "C" __attribute__((used, visibility("default"))) inline void wbp80_stats(unsigned long long* out) {
  for (int i = 0; i < 4; ++i) out[i] = g_stats[i];
}

// ------------------------------------------------------------------------------------------------ cp.async
// src_size < 0: the form without src-size / ignore-src (all cp-size bytes are read).
// cg: the .cg form (L2 only), which the ISA allows with cp-size 16 only. (The ignore-src predicate form needs a
// multi-instruction asm block; the handler leaves it "not interpreted".)
// noinline: the return address is the asm's place in the kernel, with its inline chain (a racecheck report names
// "common.cuh:95 via quant_gemm.cu:927", not only the helper's line).
__attribute__((noinline)) inline void cp_async(const char* op, char* dst, const char* src, int cp_size,
                                               long long src_size, bool cg, Loc loc) {
  if (cp_size != 4 && cp_size != 8 && cp_size != 16)
    ::wb::fault(::wb::FAULT_TRAP, "%s at %s:%d: cp-size %d is not 4, 8 or 16", op, loc.file, loc.line, cp_size);
  if (cg && cp_size != 16)
    ::wb::fault(::wb::FAULT_TRAP, "%s at %s:%d: cp.async.cg copies 16 bytes, not %d", op, loc.file, loc.line, cp_size);
  if (!::wb::is_shared(dst))
    ::wb::fault(::wb::FAULT_MEMCHECK, "%s at %s:%d: destination %p is not shared memory", op, loc.file, loc.line,
                (void*)dst);
  if (((uintptr_t)(dst - ::wb::smem_base())) % cp_size)
    ::wb::fault(::wb::FAULT_MEMCHECK, "%s at %s:%d: misaligned destination (shared offset %% %d = %d)", op,
                loc.file, loc.line, cp_size, (int)((uintptr_t)(dst - ::wb::smem_base()) % cp_size));
  if (src_size > cp_size)
    ::wb::fault(::wb::FAULT_TRAP, "%s at %s:%d: src-size %lld exceeds cp-size %d (undefined in the PTX ISA)", op,
                loc.file, loc.line, src_size, cp_size);
  const size_t n_src = src_size < 0 ? (size_t)cp_size : (size_t)src_size;
  if (n_src && ((uintptr_t)src % cp_size))
    ::wb::fault(::wb::FAULT_MEMCHECK, "%s at %s:%d: misaligned source %p (address %% %d = %d)", op, loc.file,
                loc.line, (const void*)src, cp_size, (int)((uintptr_t)src % cp_size));
  if (n_src && ::wb::is_shared(src))
    ::wb::fault(::wb::FAULT_MEMCHECK, "%s at %s:%d: source %p is shared memory, not global", op, loc.file, loc.line,
                (const void*)src);
  ::wb::async_copy_at(dst, src, (size_t)cp_size, n_src, __builtin_return_address(0));
}
inline void cp_async_commit() { ::wb::async_commit(); }
inline void cp_async_wait(long long n) { ::wb::async_wait((int)n); }
inline void cp_async_wait_all() {
  ::wb::async_commit();
  ::wb::async_wait(0);
}

// ------------------------------------------------------------------------------------------------ ldmatrix
template <int NUM, bool TRANS> struct Ldm {
  static const char* name() {
    static char buf[48];
    if (!buf[0]) snprintf(buf, sizeof buf, "ldmatrix.m8n8.x%d%s.b16", NUM, TRANS ? ".trans" : "");
    return buf;
  }
  static void fn(::wb::Rendezvous& r) {
    const char* row[32];
    for (int l = 0; l < 8 * NUM; ++l) row[l] = *static_cast<const char* const*>(r.in[l]);
    for (int j = 0; j < NUM; ++j) {  // bank groups of one 8-row phase
      unsigned seen = 0;
      for (int i = 0; i < 8; ++i) seen |= 1u << ((((uintptr_t)(row[8 * j + i] - ::wb::smem_base())) >> 4) & 7u);
      ++g_stats[0];
      if (__builtin_popcount(seen) != 8) ++g_stats[1];
    }
    for (int l = 0; l < 32; ++l) {
      uint32_t* out = static_cast<uint32_t*>(r.out[l]);
      for (int j = 0; j < NUM; ++j) {
        uint16_t e[2];
        for (int i = 0; i < 2; ++i) {
          const int rr = TRANS ? 2 * (l % 4) + i : l / 4, cc = TRANS ? l / 4 : 2 * (l % 4) + i;
          memcpy(&e[i], row[8 * j + rr] + 2 * cc, 2);
        }
        out[j] = (uint32_t)e[0] | ((uint32_t)e[1] << 16);
      }
    }
  }
};
template <int NUM, bool TRANS> __attribute__((noinline)) void ldmatrix(uint32_t (&out)[NUM], const char* p, Loc loc) {
  const unsigned lane = ::wb::linear_tid() & 31u;
  if (lane < 8u * NUM) {  // lanes 8 NUM.. supply no address (sm_80+: ignored)
    if (!::wb::is_shared(p))
      ::wb::fault(::wb::FAULT_MEMCHECK, "%s at %s:%d: lane %u's row address %p is not shared memory",
                  Ldm<NUM, TRANS>::name(), loc.file, loc.line, lane, (const void*)p);
    if ((uintptr_t)(p - ::wb::smem_base()) % 16)
      ::wb::fault(::wb::FAULT_MEMCHECK, "%s at %s:%d: lane %u's row address is not 16-byte aligned (shared offset "
                  "%% 16 = %d)", Ldm<NUM, TRANS>::name(), loc.file, loc.line, lane,
                  (int)((uintptr_t)(p - ::wb::smem_base()) % 16));
    ::wb::check_access_at(p, 16, 0, __builtin_return_address(0));  // this lane's row: bounds, racecheck as a read
  }
  ::wb::warp_rendezvous(0xffffffffu, Ldm<NUM, TRANS>::name(), &p, out, &Ldm<NUM, TRANS>::fn, nullptr, loc);
}

// ------------------------------------------------------------------------------------------------ mma.sync
enum Ty { F16, BF16, TF32, F32, S8, U8, S32 };
constexpr int ty_bits(Ty t) { return t == F16 || t == BF16 ? 16 : t == S8 || t == U8 ? 8 : 32; }

// (row, col) of element i (low to high across the fragment's registers) held by `lane`: the ISA's tables.
// A is M x K, B is K x N (row = k, col = n), C / D are M x N; g = %laneid >> 2, t = %laneid % 4.
template <int K, Ty T> inline void a_pos(int lane, int i, int& r, int& c) {
  const int g = lane >> 2, t = lane & 3;
  if constexpr (T == F16 || T == BF16) {
    if constexpr (K == 16) { r = g + 8 * ((i >> 1) & 1); c = 2 * t + (i & 1) + 8 * (i >> 2); }
    else { static_assert(K == 8, "f16/bf16 mma: k8 or k16"); r = g + 8 * (i >> 1); c = 2 * t + (i & 1); }
  } else if constexpr (T == TF32) {
    if constexpr (K == 8) { r = g + 8 * (i & 1); c = t + 4 * (i >> 1); }
    else { static_assert(K == 4, "tf32 mma: k4 or k8"); r = g + 8 * i; c = t; }
  } else {
    if constexpr (K == 32) { r = g + 8 * ((i >> 2) & 1); c = 4 * t + (i & 3) + 16 * (i >> 3); }
    else { static_assert(K == 16, "s8/u8 mma: k16 or k32"); r = g + 8 * (i >> 2); c = 4 * t + (i & 3); }
  }
}
template <int K, Ty T> inline void b_pos(int lane, int i, int& r, int& c) {
  const int g = lane >> 2, t = lane & 3;
  c = g;
  if constexpr (T == F16 || T == BF16) {
    if constexpr (K == 16) r = 2 * t + (i & 1) + 8 * (i >> 1);
    else r = 2 * t + i;
  } else if constexpr (T == TF32) {
    if constexpr (K == 8) r = t + 4 * i;
    else r = t;
  } else {
    if constexpr (K == 32) r = 4 * t + (i & 3) + 16 * (i >> 2);
    else r = 4 * t + i;
  }
}
inline void c_pos(int lane, int i, int& r, int& c) {
  r = (lane >> 2) + 8 * (i >> 1);
  c = 2 * (lane & 3) + (i & 1);
}
// element i of a fragment whose registers hold T values (low half / byte first)
template <Ty T> inline double elem(const uint32_t* regs, int i) {
  if constexpr (T == F16) return ::wb::h2f((uint16_t)(regs[i >> 1] >> (16 * (i & 1))));
  else if constexpr (T == BF16) return ::wb::bf2f((uint16_t)(regs[i >> 1] >> (16 * (i & 1))));
  else if constexpr (T == TF32) return ::wb::u2f(regs[i] & 0xffffe000u);
  else if constexpr (T == F32) return ::wb::u2f(regs[i]);
  else if constexpr (T == S8) return (int8_t)(regs[i >> 2] >> (8 * (i & 3)));
  else if constexpr (T == U8) return (uint8_t)(regs[i >> 2] >> (8 * (i & 3)));
  else return (int32_t)regs[i];
}

constexpr int MMA_MAX_REGS = 4;
struct MmaIn {
  uint32_t a[MMA_MAX_REGS], b[MMA_MAX_REGS], c[MMA_MAX_REGS];
};
template <int M, int N, int K, Ty AT, Ty BT, Ty CT, Ty DT, bool SATF> struct Mma {
  static_assert(M == 16 && N == 8, "mma.sync: m16n8 shapes");
  static constexpr int A_REGS = M * K / 32 * ty_bits(AT) / 32, B_REGS = K * N / 32 * ty_bits(BT) / 32;
  static constexpr int C_REGS = M * N / 32 * ty_bits(CT) / 32, D_REGS = M * N / 32 * ty_bits(DT) / 32;
  static_assert(A_REGS <= MMA_MAX_REGS && B_REGS <= MMA_MAX_REGS && C_REGS <= MMA_MAX_REGS, "fragment size");
  static const char* name() {
    static const char* tn[] = {"f16", "bf16", "tf32", "f32", "s8", "u8", "s32"};
    static char buf[64];
    if (!buf[0]) snprintf(buf, sizeof buf, "mma.sync.m%dn%dk%d.%s.%s.%s.%s", M, N, K, tn[DT], tn[AT], tn[BT], tn[CT]);
    return buf;
  }
  static void fn(::wb::Rendezvous& r) {
    double A[M][K], B[K][N], C[M][N];
    for (int l = 0; l < 32; ++l) {
      const MmaIn& in = *static_cast<const MmaIn*>(r.in[l]);
      int rr, cc;
      for (int i = 0; i < M * K / 32; ++i) a_pos<K, AT>(l, i, rr, cc), A[rr][cc] = elem<AT>(in.a, i);
      for (int i = 0; i < K * N / 32; ++i) b_pos<K, BT>(l, i, rr, cc), B[rr][cc] = elem<BT>(in.b, i);
      for (int i = 0; i < M * N / 32; ++i) {
        c_pos(l, i, rr, cc);
        C[rr][cc] = CT == F16 ? elem<F16>(in.c, i) : CT == S32 ? elem<S32>(in.c, i) : elem<F32>(in.c, i);
      }
    }
    uint32_t D[M][N];
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        if constexpr (DT == S32) {
          int64_t acc = (int64_t)C[m][n];
          uint32_t wrap = (uint32_t)(int32_t)C[m][n];
          for (int k = 0; k < K; ++k) {
            const int64_t p = (int64_t)A[m][k] * (int64_t)B[k][n];
            acc += p;
            wrap += (uint32_t)p;
          }
          if (SATF) acc = acc > INT32_MAX ? INT32_MAX : acc < INT32_MIN ? INT32_MIN : acc;
          D[m][n] = SATF ? (uint32_t)(int32_t)acc : wrap;
        } else {
          float acc = (float)C[m][n];
          for (int k = 0; k < K; ++k) {
            const float p = (float)(A[m][k] * B[k][n]);  // exact: the operands' significands fit
            acc = acc + p;
          }
          D[m][n] = DT == F16 ? (uint32_t)::wb::f2h_rn(acc) : ::wb::f2u(acc);
        }
      }
    for (int l = 0; l < 32; ++l) {
      uint32_t* out = static_cast<uint32_t*>(r.out[l]);
      for (int j = 0; j < D_REGS; ++j) out[j] = 0;
      for (int i = 0; i < M * N / 32; ++i) {
        int rr, cc;
        c_pos(l, i, rr, cc);
        if (DT == F16) out[i >> 1] |= (D[rr][cc] & 0xffffu) << (16 * (i & 1));
        else out[i] = D[rr][cc];
      }
    }
  }
  __attribute__((noinline)) static void run(uint32_t* d, const uint32_t* a, const uint32_t* b, const uint32_t* c,
                                            Loc loc) {
    MmaIn in{};
    for (int i = 0; i < A_REGS; ++i) in.a[i] = a[i];
    for (int i = 0; i < B_REGS; ++i) in.b[i] = b[i];
    for (int i = 0; i < C_REGS; ++i) in.c[i] = c[i];
    uint32_t out[MMA_MAX_REGS];
    ::wb::warp_rendezvous(0xffffffffu, name(), &in, out, &fn, nullptr, loc);
    for (int i = 0; i < D_REGS; ++i) d[i] = out[i];
  }
};

// ------------------------------------------------------------------------------------------------ logic and bytes
inline uint32_t lop3(uint32_t a, uint32_t b, uint32_t c, uint32_t lut) {
  uint32_t d = 0;  // bit i of d = bit (a_i << 2 | b_i << 1 | c_i) of the table (ta = 0xF0, tb = 0xCC, tc = 0xAA)
  for (int k = 0; k < 8; ++k)
    if ((lut >> k) & 1u) d |= ((k & 4) ? a : ~a) & ((k & 2) ? b : ~b) & ((k & 1) ? c : ~c);
  return d;
}
// mode: 0 generic, 1 f4e, 2 b4e, 3 rc8, 4 ecl, 5 ecr, 6 rc16
inline uint32_t prmt(uint32_t a, uint32_t b, uint32_t c, int mode) {
  const uint64_t src = ((uint64_t)b << 32) | a;
  static const uint8_t table[6][4][4] = {  // [mode - 1][c & 3][result byte]: source byte index
      {{0, 1, 2, 3}, {1, 2, 3, 4}, {2, 3, 4, 5}, {3, 4, 5, 6}},  // f4e: forward 4 extract
      {{0, 7, 6, 5}, {1, 0, 7, 6}, {2, 1, 0, 7}, {3, 2, 1, 0}},  // b4e: backward 4 extract
      {{0, 0, 0, 0}, {1, 1, 1, 1}, {2, 2, 2, 2}, {3, 3, 3, 3}},  // rc8: replicate byte
      {{0, 1, 2, 3}, {1, 1, 2, 3}, {2, 2, 2, 3}, {3, 3, 3, 3}},  // ecl: edge clamp left
      {{0, 0, 0, 0}, {0, 1, 1, 1}, {0, 1, 2, 2}, {0, 1, 2, 3}},  // ecr: edge clamp right
      {{0, 1, 0, 1}, {2, 3, 2, 3}, {0, 1, 0, 1}, {2, 3, 2, 3}}}; // rc16: replicate half
  uint32_t d = 0;
  for (int i = 0; i < 4; ++i) {
    uint32_t byte;
    if (mode == 0) {
      const uint32_t sel = (c >> (4 * i)) & 0xfu;
      byte = (uint32_t)(src >> (8 * (sel & 7u))) & 0xffu;
      if (sel & 8u) byte = (byte & 0x80u) ? 0xffu : 0u;  // msb: replicate the byte's sign
    } else {
      byte = (uint32_t)(src >> (8 * table[mode - 1][c & 3u][i])) & 0xffu;
    }
    d |= byte << (8 * i);
  }
  return d;
}

// ------------------------------------------------------------------------------------------------ shfl.sync
struct ShflIn {
  uint32_t a, b, c;
};
struct ShflOut {
  uint32_t d, p;
};
template <int MODE> struct Shfl {  // 0 up, 1 down, 2 bfly, 3 idx
  static const char* name() {
    static const char* n[] = {"shfl.sync.up.b32", "shfl.sync.down.b32", "shfl.sync.bfly.b32", "shfl.sync.idx.b32"};
    return n[MODE];
  }
  static void fn(::wb::Rendezvous& r) {
    for (int lane = 0; lane < 32; ++lane) {
      if (!((r.mask[0] >> lane) & 1u)) continue;
      const ShflIn& me = *static_cast<const ShflIn*>(r.in[lane]);
      const int b = (int)(me.b & 31u), cval = (int)(me.c & 31u), segmask = (int)((me.c >> 8) & 31u);
      const int max_lane = (lane & segmask) | (cval & ~segmask), min_lane = lane & segmask;
      int j;
      bool p;
      switch (MODE) {
        case 0: j = lane - b; p = j >= max_lane; break;
        case 1: j = lane + b; p = j <= max_lane; break;
        case 2: j = lane ^ b; p = j <= max_lane; break;
        default: j = min_lane | (b & ~segmask); p = j <= max_lane; break;
      }
      if (!p) j = lane;
      ShflOut& o = *static_cast<ShflOut*>(r.out[lane]);
      // a source lane outside membermask: undefined on the GPU, poisoned here
      o.d = ((r.mask[0] >> j) & 1u) ? static_cast<const ShflIn*>(r.in[j])->a : 0xffffffffu;
      o.p = p;
    }
  }
};
template <int MODE> inline uint32_t shfl(uint32_t a, uint32_t b, uint32_t c, uint32_t membermask, uint32_t* pred,
                                         Loc loc) {
  ShflIn in{a, b, c};
  ShflOut out{0, 0};
  ::wb::warp_rendezvous(membermask, Shfl<MODE>::name(), &in, &out, &Shfl<MODE>::fn, nullptr, loc);
  if (pred) *pred = out.p;
  return out.d;
}

// ------------------------------------------------------------------------------------------------ arithmetic
// ex2.approx.f32: 2^x to within the ISA's bound (here exp2f: correctly rounded or 1 ulp); .ftz flushes a subnormal
// input to zero (2^0 = 1) and a subnormal result to +0.
inline float ex2_approx(float x, bool ftz) {
  if (ftz && std::fpclassify(x) == FP_SUBNORMAL) x = std::copysign(0.f, x);
  float y = exp2f(x);
  if (ftz && std::fpclassify(y) == FP_SUBNORMAL) y = 0.f;
  return y;
}

// ------------------------------------------------------------------------------------------------ atomics
// atom/red through the runtime's checked atomics (exempt from racecheck); noinline so that the return address names
// the asm statement's line.
template <class T> __attribute__((noinline)) T atom(int op, T* p, T v) {
  return ::wb::atomic_rmw(op, p, v, __builtin_return_address(0));
}
template <class T> __attribute__((noinline)) T atom_cas(T* p, T cmp, T v) {
  return ::wb::atomic_cas(p, cmp, v, __builtin_return_address(0));
}

// ------------------------------------------------------------------------------------------------ special registers
inline uint32_t laneid() { return ::wb::linear_tid() & 31u; }
inline uint32_t warpid() { return ::wb::linear_tid() >> 5; }
inline uint32_t dynamic_smem_size() { return (uint32_t)::wb::dyn_smem_size(); }
}  // namespace wb_ptx

namespace wb_ptx {
// ld / st vectors: one access of the whole vector (memcheck over all its bytes, alignment of the vector's size)
template <class T, int N> struct alignas(sizeof(T) * N) Vec {
  T x[N];
};
template <class F> inline F as_float(uint64_t b) {
  F f;
  memcpy(&f, &b, sizeof(F));
  return f;
}
}  // namespace wb_ptx

// mma.h in interpret mode: nvcuda::wmma on the CPU (issue 28).
//
// CUDA leaves the mapping of a WMMA fragment's elements to the lanes of the warp unspecified ("may change in future
// architectures"); a correct kernel only fills a fragment, loads, multiplies and stores it (or applies the same
// operation to every element). This model picks one mapping and uses it consistently in load, mma and store: the
// layouts of mma.sync (wbcpu_ptx80.h's tables), a 16x16 tile being two m16n8 halves side by side:
//   m16n16k16 (f16, bf16): matrix_a = the m16n8k16 A fragment (8 elements), matrix_b = the k16n8 B fragments of
//   columns 0-7 (elements 0-3) and 8-15 (4-7), accumulator = the m16n8 C fragments of columns 0-7 (0-3) and 8-15
//   (4-7); m16n16k8 (tf32): the m16n8k8 tf32 A (4), B (2 + 2) and the same accumulator.
// The product is wbcpu_ptx80.h's mma model (exact products, fp32 accumulation in k order; tf32 operands lose their
// low 13 bits, as for mma.sync: the CUDA guide has kernels convert with __float_to_tf32 first). A kernel that reads
// fragment elements by position would see this mapping, not necessarily the GPU's: none of the repository's does.
//
// load_matrix_sync / store_matrix_sync / mma_sync are warp-synchronous (.sync.aligned): every lane of the warp must
// call them with the same pointer, stride and layout (a synccheck error otherwise); each lane then reads or writes
// its own elements through instrumented accesses (memcheck, racecheck as that lane).
#pragma once
#include "wbcpu.h"

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};
struct b1 {};
struct s4 {};
struct u4 {};
}  // namespace precision
namespace experimental { namespace precision { struct b1 {}; struct s4 {}; struct u4 {}; } }
template <class T> struct storage { typedef T type; };
template <> struct storage<precision::tf32> { typedef float type; };
template <class Use, int M, int N, int K> struct frag_elems { static constexpr int value = M * N / 32; };
template <int M, int N, int K> struct frag_elems<matrix_a, M, N, K> { static constexpr int value = M * K / 32; };
template <int M, int N, int K> struct frag_elems<matrix_b, M, N, K> { static constexpr int value = K * N / 32; };
template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  typedef typename storage<T>::type element_type;
  static constexpr int num_elements = frag_elems<Use, M, N, K>::value;
  element_type x[num_elements];
};
template <class Use, int M, int N, int K, class T, class L, class V>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v) {
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = (typename fragment<Use, M, N, K, T, L>::element_type)v;
}
inline float __float_to_tf32(float f) {  // cvt.rna.tf32.f32: round to nearest, ties away, to 10 mantissa bits
  uint32_t u = wb::f2u(f);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  return wb::u2f(u);
}

namespace detail {
// the mma.sync operand type of an element type
template <class T> struct ty;
template <> struct ty<__half> { static constexpr ::wb_ptx::Ty v = ::wb_ptx::F16; };
template <> struct ty<__nv_bfloat16> { static constexpr ::wb_ptx::Ty v = ::wb_ptx::BF16; };
template <> struct ty<precision::tf32> { static constexpr ::wb_ptx::Ty v = ::wb_ptx::TF32; };
template <class T> constexpr bool supported_ab() {
  return std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value ||
         std::is_same<T, precision::tf32>::value;
}
// (row, col) in the fragment's own matrix (A: M x K, B: K x N, C: M x N) of element i held by `lane`
template <class Use, int M, int N, int K, class T> inline void pos(int lane, int i, int& r, int& c) {
  static_assert(M == 16 && N == 16 && (K == 16 || K == 8), "WMMA shapes modelled: m16n16k16, m16n16k8 (tf32)");
  if constexpr (std::is_same<Use, matrix_a>::value) {
    ::wb_ptx::a_pos<K, ty<T>::v>(lane, i, r, c);
  } else if constexpr (std::is_same<Use, matrix_b>::value) {
    constexpr int HALF = K * 8 / 32;  // elements of one n8 half
    ::wb_ptx::b_pos<K, ty<T>::v>(lane, i % HALF, r, c);
    c += 8 * (i / HALF);
  } else {
    ::wb_ptx::c_pos(lane, i % 4, r, c);
    c += 8 * (i / 4);
  }
}
// where element i of `lane`'s fragment sits in memory with leading dimension ldm, row- or column-major
template <class Use, int M, int N, int K, class T> inline size_t elem_off(int lane, int i, unsigned ldm, bool col) {
  int r, c;
  pos<Use, M, N, K, T>(lane, i, r, c);
  return col ? (size_t)c * ldm + r : (size_t)r * ldm + c;
}
template <class E> inline double to_d(const E& e) {
  if constexpr (std::is_same<E, __half>::value) return (double)__half2float(e);
  else if constexpr (std::is_same<E, __nv_bfloat16>::value) return (double)__bfloat162float(e);
  else return (double)e;
}
struct Sig {
  const void* p;
  unsigned ldm;
  int layout;
};
inline void same_sig(::wb::Rendezvous& r) {
  const Sig& s0 = *static_cast<const Sig*>(r.in[0]);
  for (int l = 1; l < 32; ++l) {
    const Sig& s = *static_cast<const Sig*>(r.in[l]);
    if (s.p != s0.p || s.ldm != s0.ldm || s.layout != s0.layout)
      ::wb::fault(::wb::FAULT_SYNCCHECK, "wmma: lane %d passes (%p, ldm %u, layout %d) but lane 0 (%p, ldm %u, layout "
                  "%d): load/store_matrix_sync take one matrix for the whole warp", l, s.p, s.ldm, s.layout, s0.p,
                  s0.ldm, s0.layout);
  }
}
inline void sync_sig(const char* what, const void* p, unsigned ldm, int layout, ::wb::Loc loc) {
  Sig s{p, ldm, layout};
  ::wb::warp_rendezvous(0xffffffffu, what, &s, nullptr, same_sig, nullptr, loc);
}
template <class L> constexpr int layout_code() { return std::is_same<L, col_major>::value ? 1 : 0; }
}  // namespace detail

// A / B: the layout is the fragment's; element (r, c) of the matrix is p[r * ldm + c] (row_major) or p[c * ldm + r]
template <class Use, int M, int N, int K, class T, class L, class P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const P* p, unsigned ldm,
                             const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  static_assert(!std::is_same<Use, accumulator>::value, "an accumulator load takes a layout_t");
  static_assert(detail::supported_ab<T>(), "WMMA operand types modelled: __half, __nv_bfloat16, precision::tf32");
  detail::sync_sig("wmma.load", p, ldm, detail::layout_code<L>(), ::wb::Loc{file, line});
  const int lane = (int)(::wb::linear_tid() & 31u);
  for (int i = 0; i < f.num_elements; ++i)
    f.x[i] = p[detail::elem_off<Use, M, N, K, T>(lane, i, ldm, detail::layout_code<L>() == 1)];
}
template <int M, int N, int K, class T, class P>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T, void>& f, const P* p, unsigned ldm, layout_t l,
                             const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  detail::sync_sig("wmma.load", p, ldm, (int)l, ::wb::Loc{file, line});
  const int lane = (int)(::wb::linear_tid() & 31u);
  for (int i = 0; i < f.num_elements; ++i)
    f.x[i] = p[detail::elem_off<accumulator, M, N, K, T>(lane, i, ldm, l == mem_col_major)];
}
template <int M, int N, int K, class T, class P>
inline void store_matrix_sync(P* p, const fragment<accumulator, M, N, K, T, void>& f, unsigned ldm, layout_t l,
                              const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  detail::sync_sig("wmma.store", p, ldm, (int)l, ::wb::Loc{file, line});
  const int lane = (int)(::wb::linear_tid() & 31u);
  for (int i = 0; i < f.num_elements; ++i)
    p[detail::elem_off<accumulator, M, N, K, T>(lane, i, ldm, l == mem_col_major)] = (P)f.x[i];
}

namespace detail {
template <int M, int N, int K, class AT, class BT, class LA, class LB, class CT> struct MmaIn {
  fragment<matrix_a, M, N, K, AT, LA> a;
  fragment<matrix_b, M, N, K, BT, LB> b;
  fragment<accumulator, M, N, K, CT, void> c;
};
template <int M, int N, int K, class AT, class BT, class LA, class LB, class CT, class DT> struct Mma {
  typedef MmaIn<M, N, K, AT, BT, LA, LB, CT> In;
  typedef fragment<accumulator, M, N, K, DT, void> Out;
  static void fn(::wb::Rendezvous& r) {
    double A[M][K], B[K][N], C[M][N];
    for (int l = 0; l < 32; ++l) {
      const In& in = *static_cast<const In*>(r.in[l]);
      int rr, cc;
      for (int i = 0; i < in.a.num_elements; ++i) {
        pos<matrix_a, M, N, K, AT>(l, i, rr, cc);
        A[rr][cc] = std::is_same<AT, precision::tf32>::value ? (double)::wb::u2f(::wb::f2u((float)to_d(in.a.x[i])) &
                                                                                 0xffffe000u)
                                                            : to_d(in.a.x[i]);
      }
      for (int i = 0; i < in.b.num_elements; ++i) {
        pos<matrix_b, M, N, K, BT>(l, i, rr, cc);
        B[rr][cc] = std::is_same<BT, precision::tf32>::value ? (double)::wb::u2f(::wb::f2u((float)to_d(in.b.x[i])) &
                                                                                 0xffffe000u)
                                                            : to_d(in.b.x[i]);
      }
      for (int i = 0; i < in.c.num_elements; ++i) pos<accumulator, M, N, K, CT>(l, i, rr, cc), C[rr][cc] = to_d(in.c.x[i]);
    }
    float D[M][N];
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        float acc = (float)C[m][n];
        for (int k = 0; k < K; ++k) {
          const float p = (float)(A[m][k] * B[k][n]);  // exact: 11-bit x 11-bit significands
          acc = acc + p;
        }
        D[m][n] = acc;
      }
    for (int l = 0; l < 32; ++l) {
      Out& o = *static_cast<Out*>(r.out[l]);
      for (int i = 0; i < o.num_elements; ++i) {
        int rr, cc;
        pos<accumulator, M, N, K, DT>(l, i, rr, cc);
        o.x[i] = (typename Out::element_type)D[rr][cc];
      }
    }
  }
};
}  // namespace detail

template <int M, int N, int K, class AT, class BT, class LA, class LB, class CT, class DT>
inline void mma_sync(fragment<accumulator, M, N, K, DT, void>& d, const fragment<matrix_a, M, N, K, AT, LA>& a,
                     const fragment<matrix_b, M, N, K, BT, LB>& b, const fragment<accumulator, M, N, K, CT, void>& c,
                     bool satf = false, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  static_assert(std::is_same<AT, BT>::value && detail::supported_ab<AT>(), "WMMA: A and B of one modelled type");
  static_assert(std::is_same<CT, float>::value && std::is_same<DT, float>::value, "WMMA: fp32 accumulators");
  if (satf) ::wb::not_interpreted("wmma.mma.satfinite", ::wb::Loc{file, line});
  typedef detail::Mma<M, N, K, AT, BT, LA, LB, CT, DT> Op;
  static char name[64];
  if (!name[0]) snprintf(name, sizeof name, "wmma.mma.m%dn%dk%d", M, N, K);
  typename Op::In in{a, b, c};
  typename Op::Out out;
  ::wb::warp_rendezvous(0xffffffffu, name, &in, &out, &Op::fn, nullptr, ::wb::Loc{file, line});
  d = out;
}
}  // namespace wmma
}  // namespace nvcuda

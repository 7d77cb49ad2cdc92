// mma.h in interpret mode: nvcuda::wmma's types, so that files using WMMA compile. Filling a fragment works; loading,
// multiplying and storing end the launch "not interpreted" (the fragment layouts are tensor-core instructions: issue 28
// models them, from the PTX ISA, on top of wb::warp_rendezvous).
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
template <class Use, int M, int N, int K, class T, class L, class P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>&, const P*, unsigned) {
  ::wb::not_interpreted("wmma.load", ::wb::Loc{"mma.h", 0});
}
template <class Use, int M, int N, int K, class T, class L, class P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>&, const P*, unsigned, layout_t) {
  ::wb::not_interpreted("wmma.load", ::wb::Loc{"mma.h", 0});
}
template <int M, int N, int K, class T, class P>
inline void store_matrix_sync(P*, const fragment<accumulator, M, N, K, T, void>&, unsigned, layout_t) {
  ::wb::not_interpreted("wmma.store", ::wb::Loc{"mma.h", 0});
}
template <class... A> inline void mma_sync(A&&...) { ::wb::not_interpreted("wmma.mma", ::wb::Loc{"mma.h", 0}); }
inline float __float_to_tf32(float f) {  // cvt.rna.tf32.f32: round to nearest, ties away, to 10 mantissa bits
  uint32_t u = wb::f2u(f);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  return wb::u2f(u);
}
}  // namespace wmma
}  // namespace nvcuda

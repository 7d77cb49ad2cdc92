// cuda_fp8.h in interpret mode: e4m3 (fn: no infinities, NaN = 0x7f/0xff, max 448) and e5m2 with round-to-nearest-even
// conversions (saturating to the largest finite value under __NV_SATFINITE, as the CUDA types' constructors do).
#pragma once
#include "wbcpu.h"

typedef unsigned char __nv_fp8_storage_t;
typedef unsigned short __nv_fp8x2_storage_t;
typedef unsigned int __nv_fp8x4_storage_t;
typedef enum __nv_saturation_t { __NV_NOSAT, __NV_SATFINITE } __nv_saturation_t;
typedef enum __nv_fp8_interpretation_t { __NV_E4M3, __NV_E5M2 } __nv_fp8_interpretation_t;

namespace wb {
inline __nv_fp8_storage_t f2fp8(double x, bool sat, bool e4m3) {
  const int M = e4m3 ? 3 : 2, bias = e4m3 ? 7 : 15, emin = 1 - bias;
  const double maxv = e4m3 ? 448.0 : 57344.0;
  const unsigned char sign = std::signbit(x) ? 0x80 : 0;
  const unsigned char nan = e4m3 ? 0x7f : 0x7f, inf = e4m3 ? 0x7f : 0x7c, maxe = e4m3 ? 0x7e : 0x7b;
  if (std::isnan(x)) return nan | sign;
  double a = std::fabs(x);
  if (std::isinf(a)) return (sat ? maxe : inf) | sign;
  if (a == 0) return sign;
  int e;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1): leading bit 2^(e-1)
  const int ex = (e - 1 < emin) ? emin : e - 1;
  const double q = std::nearbyint(std::ldexp(a, M - ex));  // round to nearest even at this exponent's ulp
  const double v = std::ldexp(q, ex - M);
  if (v > maxv) return (sat ? maxe : inf) | sign;
  if (v == 0) return sign;
  std::frexp(v, &e);
  if (e - 1 < emin) return (unsigned char)(sign | (unsigned char)std::ldexp(v, M - emin));  // subnormal
  const unsigned char m = (unsigned char)(std::ldexp(v, M - (e - 1)) - (1 << M));
  return (unsigned char)(sign | ((e - 1 + bias) << M) | m);
}
inline float fp82f(__nv_fp8_storage_t b, bool e4m3) {
  const int M = e4m3 ? 3 : 2, E = e4m3 ? 4 : 5, bias = e4m3 ? 7 : 15;
  const bool neg = b & 0x80;
  const int e = (b >> M) & ((1 << E) - 1), m = b & ((1 << M) - 1);
  float v;
  if (e4m3 && e == 15 && m == 7) v = NAN;
  else if (!e4m3 && e == 31) v = m ? NAN : INFINITY;
  else if (e == 0) v = std::ldexp((float)m, 1 - bias - M);
  else v = std::ldexp((float)(m + (1 << M)), e - bias - M);
  return neg ? -v : v;
}
}  // namespace wb

inline __nv_fp8_storage_t __nv_cvt_float_to_fp8(float x, __nv_saturation_t s, __nv_fp8_interpretation_t t) {
  return wb::f2fp8(x, s == __NV_SATFINITE, t == __NV_E4M3);
}
inline __nv_fp8_storage_t __nv_cvt_double_to_fp8(double x, __nv_saturation_t s, __nv_fp8_interpretation_t t) {
  return wb::f2fp8(x, s == __NV_SATFINITE, t == __NV_E4M3);
}
inline __nv_fp8x2_storage_t __nv_cvt_float2_to_fp8x2(float2 x, __nv_saturation_t s, __nv_fp8_interpretation_t t) {
  return (__nv_fp8x2_storage_t)(__nv_cvt_float_to_fp8(x.x, s, t) | (__nv_cvt_float_to_fp8(x.y, s, t) << 8));
}
inline __half_raw __nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t x, __nv_fp8_interpretation_t t) {
  return __half_raw{wb::f2h_rn(wb::fp82f(x, t == __NV_E4M3))};
}
inline __half2_raw __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t x, __nv_fp8_interpretation_t t) {
  return __half2_raw{wb::f2h_rn(wb::fp82f(x & 0xff, t == __NV_E4M3)),
                     wb::f2h_rn(wb::fp82f(x >> 8, t == __NV_E4M3))};
}

#define WB_FP8_TYPE(NAME, E4M3)                                                                       \
  struct __attribute__((aligned(1))) NAME {                                                           \
    __nv_fp8_storage_t __x;                                                                           \
    NAME() = default;                                                                                 \
    explicit NAME(float f) : __x(wb::f2fp8(f, true, E4M3)) {}                                         \
    explicit NAME(double f) : __x(wb::f2fp8(f, true, E4M3)) {}                                        \
    explicit NAME(__half h) : __x(wb::f2fp8(__half2float(h), true, E4M3)) {}                          \
    explicit NAME(__nv_bfloat16 h) : __x(wb::f2fp8(__bfloat162float(h), true, E4M3)) {}               \
    explicit operator float() const { return wb::fp82f(__x, E4M3); }                                  \
    explicit operator __half() const { return __float2half_rn(wb::fp82f(__x, E4M3)); }                \
  };
WB_FP8_TYPE(__nv_fp8_e4m3, true)
WB_FP8_TYPE(__nv_fp8_e5m2, false)
#undef WB_FP8_TYPE
struct __attribute__((aligned(2))) __nv_fp8x2_e4m3 {
  __nv_fp8x2_storage_t __x;
  __nv_fp8x2_e4m3() = default;
  explicit __nv_fp8x2_e4m3(float2 f) : __x(__nv_cvt_float2_to_fp8x2(f, __NV_SATFINITE, __NV_E4M3)) {}
  explicit operator float2() const {
    return make_float2(wb::fp82f(__x & 0xff, true), wb::fp82f(__x >> 8, true));
  }
};
struct __attribute__((aligned(4))) __nv_fp8x4_e4m3 {
  __nv_fp8x4_storage_t __x;
  __nv_fp8x4_e4m3() = default;
  explicit __nv_fp8x4_e4m3(float4 f)
      : __x(__nv_cvt_float2_to_fp8x2(make_float2(f.x, f.y), __NV_SATFINITE, __NV_E4M3) |
            ((unsigned)__nv_cvt_float2_to_fp8x2(make_float2(f.z, f.w), __NV_SATFINITE, __NV_E4M3) << 16)) {}
  explicit operator float4() const {
    return make_float4(wb::fp82f(__x & 0xff, true), wb::fp82f((__x >> 8) & 0xff, true),
                       wb::fp82f((__x >> 16) & 0xff, true), wb::fp82f(__x >> 24, true));
  }
};
typedef __nv_fp8_e4m3 __nv_fp8_e4m3_t;

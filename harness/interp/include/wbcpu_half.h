// wbcpu_half.h — __half, __half2, __nv_bfloat16, __nv_bfloat162 on the CPU (cuda_fp16.h / cuda_bf16.h).
//
// Storage is the IEEE bit pattern. Conversions from float round to nearest even (NaN -> the canonical 0x7fff as CUDA
// returns); arithmetic computes in float and rounds once, which is exact-then-rounded for + - * / because float has
// more than 2p+2 bits for both formats (p = 11 and 8); fma goes through double. The types are trivially copyable and
// trivially default-constructible (shared-memory arrays of them must be), 2-byte aligned, and the pairs 4-byte
// aligned, as in CUDA.
#pragma once

namespace wb {
inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

inline unsigned short f2h_rn(float f) {
  uint32_t x = f2u(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return 0x7fffu;              // NaN
  if (x >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // >= 65520 rounds to inf (and inf)
  if (x >= 0x38800000u) {                           // normal half: |f| >= 2^-14
    const uint32_t mant = x & 0x7fffffu;
    uint32_t h = (((x >> 23) - 112u) << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is the right result
    return (unsigned short)(sign | h);
  }
  if (x < 0x33000000u) return (unsigned short)sign;  // below 2^-25 (2^-25 itself ties to even: 0)
  const uint32_t e = x >> 23, mant = (x & 0x7fffffu) | 0x800000u, shift = 126u - e;  // units of 2^-24
  uint32_t h = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (h & 1u))) ++h;
  return (unsigned short)(sign | h);
}
inline unsigned short f2h_rz(float f) {  // round toward zero
  uint32_t x = f2u(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return 0x7fffu;
  if (x == 0x7f800000u) return (unsigned short)(sign | 0x7c00u);
  if (x >= 0x47800000u) return (unsigned short)(sign | 0x7bffu);
  if (x >= 0x38800000u) return (unsigned short)(sign | ((((x >> 23) - 112u) << 10) | ((x & 0x7fffffu) >> 13)));
  if (x < 0x33800000u) return (unsigned short)sign;
  const uint32_t e = x >> 23, mant = (x & 0x7fffffu) | 0x800000u;
  return (unsigned short)(sign | (mant >> (126u - e)));
}
inline float h2f(unsigned short h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1fu) return u2f(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    const float v = (float)m * 5.9604644775390625e-08f;  // m * 2^-24, exact
    return sign ? -v : v;
  }
  return u2f(sign | ((e + 112u) << 23) | (m << 13));
}
inline unsigned short f2bf_rn(float f) {
  uint32_t x = f2u(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
  x += 0x7fffu + ((x >> 16) & 1u);
  return (unsigned short)(x >> 16);
}
inline unsigned short f2bf_rz(float f) {
  uint32_t x = f2u(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
  return (unsigned short)(x >> 16);
}
inline float bf2f(unsigned short b) { return u2f((uint32_t)b << 16); }
inline unsigned short d2h_rn(double d) {  // one rounding from double: round to odd into float (24 >= 11 + 2 bits)
  const float f = (float)d;
  if (std::isnan(d) || std::isinf(f) || (double)f == d) return f2h_rn(f);
  uint32_t u = f2u(f);
  if (std::fabs((double)f) > std::fabs(d)) u -= 1u;  // truncate toward zero
  return f2h_rn(u2f(u | 1u));                        // inexact: set the sticky bit
}
}  // namespace wb

struct __half_raw { unsigned short x; };
struct __half2_raw { unsigned short x, y; };

struct __attribute__((aligned(2))) __half {
  unsigned short __x;
  __half() = default;
  constexpr __half(const __half_raw& r) : __x(r.x) {}
  __half(float f) : __x(wb::f2h_rn(f)) {}
  __half(double d) : __x(wb::d2h_rn(d)) {}
  __half(int i) : __x(wb::f2h_rn((float)i)) {}
  __half(unsigned int i) : __x(wb::f2h_rn((float)i)) {}
  __half(long long i) : __x(wb::f2h_rn((float)i)) {}
  __half(unsigned long long i) : __x(wb::f2h_rn((float)i)) {}
  __half(short i) : __x(wb::f2h_rn((float)i)) {}
  __half(unsigned short i) : __x(wb::f2h_rn((float)i)) {}
  operator float() const { return wb::h2f(__x); }
  operator __half_raw() const { return __half_raw{__x}; }
  __half& operator=(float f) { __x = wb::f2h_rn(f); return *this; }
  __half& operator=(const __half_raw& r) { __x = r.x; return *this; }
};
struct __attribute__((aligned(4))) __half2 {
  __half x, y;
  __half2() = default;
  constexpr __half2(const __half& a, const __half& b) : x(a), y(b) {}
  __half2(const __half2_raw& r) : x(__half_raw{r.x}), y(__half_raw{r.y}) {}
  operator __half2_raw() const { return __half2_raw{x.__x, y.__x}; }
};
typedef __half half;
typedef __half2 half2;

struct __nv_bfloat16_raw { unsigned short x; };
struct __nv_bfloat162_raw { unsigned short x, y; };
struct __attribute__((aligned(2))) __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  constexpr __nv_bfloat16(const __nv_bfloat16_raw& r) : __x(r.x) {}
  __nv_bfloat16(float f) : __x(wb::f2bf_rn(f)) {}
  __nv_bfloat16(double d) : __x(wb::f2bf_rn((float)d)) {}
  __nv_bfloat16(int i) : __x(wb::f2bf_rn((float)i)) {}
  __nv_bfloat16(unsigned int i) : __x(wb::f2bf_rn((float)i)) {}
  __nv_bfloat16(long long i) : __x(wb::f2bf_rn((float)i)) {}
  __nv_bfloat16(short i) : __x(wb::f2bf_rn((float)i)) {}
  __nv_bfloat16(unsigned short i) : __x(wb::f2bf_rn((float)i)) {}
  operator float() const { return wb::bf2f(__x); }
  operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
  __nv_bfloat16& operator=(float f) { __x = wb::f2bf_rn(f); return *this; }
};
struct __attribute__((aligned(4))) __nv_bfloat162 {
  __nv_bfloat16 x, y;
  __nv_bfloat162() = default;
  constexpr __nv_bfloat162(const __nv_bfloat16& a, const __nv_bfloat16& b) : x(a), y(b) {}
  __nv_bfloat162(const __nv_bfloat162_raw& r) : x(__nv_bfloat16_raw{r.x}), y(__nv_bfloat16_raw{r.y}) {}
};
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;

// ---- conversions
inline __half __float2half(float f) { return __half_raw{wb::f2h_rn(f)}; }
inline __half __float2half_rn(float f) { return __half_raw{wb::f2h_rn(f)}; }
inline __half __float2half_rz(float f) { return __half_raw{wb::f2h_rz(f)}; }
inline __half __double2half(double d) { return __half_raw{wb::d2h_rn(d)}; }
inline float __half2float(__half h) { return wb::h2f(h.__x); }
inline __half2 __floats2half2_rn(float a, float b) { return __half2(__float2half_rn(a), __float2half_rn(b)); }
inline __half2 __float2half2_rn(float a) { return __half2(__float2half_rn(a), __float2half_rn(a)); }
inline __half2 __float22half2_rn(float2 v) { return __floats2half2_rn(v.x, v.y); }
inline float2 __half22float2(__half2 h) { return make_float2(__half2float(h.x), __half2float(h.y)); }
inline float __low2float(__half2 h) { return __half2float(h.x); }
inline float __high2float(__half2 h) { return __half2float(h.y); }
inline __half2 __halves2half2(__half a, __half b) { return __half2(a, b); }
inline __half2 __half2half2(__half a) { return __half2(a, a); }
inline __half __low2half(__half2 h) { return h.x; }
inline __half __high2half(__half2 h) { return h.y; }
inline __half2 __low2half2(__half2 h) { return __half2(h.x, h.x); }
inline __half2 __high2half2(__half2 h) { return __half2(h.y, h.y); }
inline __half2 __lows2half2(__half2 a, __half2 b) { return __half2(a.x, b.x); }
inline __half2 __highs2half2(__half2 a, __half2 b) { return __half2(a.y, b.y); }
inline __half2 __lowhigh2highlow(__half2 h) { return __half2(h.y, h.x); }
inline short __half_as_short(__half h) { return (short)h.__x; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __short_as_half(short s) { return __half_raw{(unsigned short)s}; }
inline __half __ushort_as_half(unsigned short s) { return __half_raw{s}; }
inline __half __int2half_rn(int i) { return __float2half_rn((float)i); }
inline __half __uint2half_rn(unsigned i) { return __float2half_rn((float)i); }
inline int __half2int_rn(__half h) { return (int)nearbyintf(__half2float(h)); }
inline int __half2int_rz(__half h) { return (int)truncf(__half2float(h)); }

inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16_raw{wb::f2bf_rn(f)}; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16_raw{wb::f2bf_rn(f)}; }
inline __nv_bfloat16 __float2bfloat16_rz(float f) { return __nv_bfloat16_raw{wb::f2bf_rz(f)}; }
inline __nv_bfloat16 __double2bfloat16(double d) { return __float2bfloat16_rn((float)d); }
inline float __bfloat162float(__nv_bfloat16 b) { return wb::bf2f(b.__x); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return __nv_bfloat162(__float2bfloat16_rn(a), __float2bfloat16_rn(b));
}
inline __nv_bfloat162 __float2bfloat162_rn(float a) { return __floats2bfloat162_rn(a, a); }
inline __nv_bfloat162 __float22bfloat162_rn(float2 v) { return __floats2bfloat162_rn(v.x, v.y); }
inline float2 __bfloat1622float2(__nv_bfloat162 h) {
  return make_float2(__bfloat162float(h.x), __bfloat162float(h.y));
}
inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat162(a, b); }
inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 a) { return __nv_bfloat162(a, a); }
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 h) { return h.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 h) { return h.y; }
inline __nv_bfloat162 __low2bfloat162(__nv_bfloat162 h) { return __nv_bfloat162(h.x, h.x); }
inline __nv_bfloat162 __high2bfloat162(__nv_bfloat162 h) { return __nv_bfloat162(h.y, h.y); }
inline __nv_bfloat162 __lows2bfloat162(__nv_bfloat162 a, __nv_bfloat162 b) { return __nv_bfloat162(a.x, b.x); }
inline __nv_bfloat162 __highs2bfloat162(__nv_bfloat162 a, __nv_bfloat162 b) { return __nv_bfloat162(a.y, b.y); }
inline short __bfloat16_as_short(__nv_bfloat16 h) { return (short)h.__x; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __short_as_bfloat16(short s) { return __nv_bfloat16_raw{(unsigned short)s}; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short s) { return __nv_bfloat16_raw{s}; }
inline __nv_bfloat16 __int2bfloat16_rn(int i) { return __float2bfloat16_rn((float)i); }
inline __half __bfloat162half(__nv_bfloat16 b) { return __float2half_rn(__bfloat162float(b)); }

// ---- arithmetic: compute in float (double for fma), round once to the storage format
#define WB_H16_OPS(T, T2, TOF, FROMF)                                                                          \
  inline T __hadd(T a, T b) { return FROMF(TOF(a) + TOF(b)); }                                                  \
  inline T __hsub(T a, T b) { return FROMF(TOF(a) - TOF(b)); }                                                  \
  inline T __hmul(T a, T b) { return FROMF(TOF(a) * TOF(b)); }                                                  \
  inline T __hdiv(T a, T b) { return FROMF(TOF(a) / TOF(b)); }                                                  \
  inline T __hfma(T a, T b, T c) { return FROMF((float)std::fma((double)TOF(a), (double)TOF(b), (double)TOF(c))); } \
  inline T __hneg(T a) { T r = a; r.__x ^= 0x8000u; return r; }                                                 \
  inline T __habs(T a) { T r = a; r.__x &= 0x7fffu; return r; }                                                 \
  inline T __hmax(T a, T b) { return FROMF(fmaxf(TOF(a), TOF(b))); }                                            \
  inline T __hmin(T a, T b) { return FROMF(fminf(TOF(a), TOF(b))); }                                            \
  inline bool __heq(T a, T b) { return TOF(a) == TOF(b); }                                                      \
  inline bool __hne(T a, T b) { return TOF(a) != TOF(b); }                                                      \
  inline bool __hlt(T a, T b) { return TOF(a) < TOF(b); }                                                       \
  inline bool __hle(T a, T b) { return TOF(a) <= TOF(b); }                                                      \
  inline bool __hgt(T a, T b) { return TOF(a) > TOF(b); }                                                       \
  inline bool __hge(T a, T b) { return TOF(a) >= TOF(b); }                                                      \
  inline bool __hisnan(T a) { return std::isnan(TOF(a)); }                                                      \
  inline int __hisinf(T a) { float f = TOF(a); return std::isinf(f) ? (f > 0 ? 1 : -1) : 0; }                 \
  inline T2 __hadd2(T2 a, T2 b) { return T2(__hadd(a.x, b.x), __hadd(a.y, b.y)); }                             \
  inline T2 __hsub2(T2 a, T2 b) { return T2(__hsub(a.x, b.x), __hsub(a.y, b.y)); }                             \
  inline T2 __hmul2(T2 a, T2 b) { return T2(__hmul(a.x, b.x), __hmul(a.y, b.y)); }                             \
  inline T2 __h2div(T2 a, T2 b) { return T2(__hdiv(a.x, b.x), __hdiv(a.y, b.y)); }                             \
  inline T2 __hfma2(T2 a, T2 b, T2 c) { return T2(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)); }            \
  inline T2 __hneg2(T2 a) { return T2(__hneg(a.x), __hneg(a.y)); }                                              \
  inline T2 __habs2(T2 a) { return T2(__habs(a.x), __habs(a.y)); }                                              \
  inline T2 __hmax2(T2 a, T2 b) { return T2(__hmax(a.x, b.x), __hmax(a.y, b.y)); }                             \
  inline T2 __hmin2(T2 a, T2 b) { return T2(__hmin(a.x, b.x), __hmin(a.y, b.y)); }                             \
  inline T operator+(const T& a, const T& b) { return __hadd(a, b); }                                           \
  inline T operator-(const T& a, const T& b) { return __hsub(a, b); }                                           \
  inline T operator*(const T& a, const T& b) { return __hmul(a, b); }                                           \
  inline T operator/(const T& a, const T& b) { return __hdiv(a, b); }                                           \
  inline T operator-(const T& a) { return __hneg(a); }                                                          \
  inline T operator+(const T& a) { return a; }                                                                  \
  inline T& operator+=(T& a, const T& b) { a = __hadd(a, b); return a; }                                        \
  inline T& operator-=(T& a, const T& b) { a = __hsub(a, b); return a; }                                        \
  inline T& operator*=(T& a, const T& b) { a = __hmul(a, b); return a; }                                        \
  inline T& operator/=(T& a, const T& b) { a = __hdiv(a, b); return a; }                                        \
  inline bool operator==(const T& a, const T& b) { return __heq(a, b); }                                        \
  inline bool operator!=(const T& a, const T& b) { return __hne(a, b); }                                        \
  inline bool operator<(const T& a, const T& b) { return __hlt(a, b); }                                         \
  inline bool operator<=(const T& a, const T& b) { return __hle(a, b); }                                        \
  inline bool operator>(const T& a, const T& b) { return __hgt(a, b); }                                         \
  inline bool operator>=(const T& a, const T& b) { return __hge(a, b); }                                        \
  inline T2 operator+(const T2& a, const T2& b) { return __hadd2(a, b); }                                       \
  inline T2 operator-(const T2& a, const T2& b) { return __hsub2(a, b); }                                       \
  inline T2 operator*(const T2& a, const T2& b) { return __hmul2(a, b); }                                       \
  inline T2& operator+=(T2& a, const T2& b) { a = __hadd2(a, b); return a; }                                    \
  inline T2& operator*=(T2& a, const T2& b) { a = __hmul2(a, b); return a; }                                    \
  inline T hexp(T a) { return FROMF(expf(TOF(a))); }                                                            \
  inline T hexp2(T a) { return FROMF(exp2f(TOF(a))); }                                                          \
  inline T hlog(T a) { return FROMF(logf(TOF(a))); }                                                            \
  inline T hlog2(T a) { return FROMF(log2f(TOF(a))); }                                                          \
  inline T hsqrt(T a) { return FROMF(sqrtf(TOF(a))); }                                                          \
  inline T hrsqrt(T a) { return FROMF(1.f / sqrtf(TOF(a))); }                                                   \
  inline T hrcp(T a) { return FROMF(1.f / TOF(a)); }                                                            \
  inline T htanh(T a) { return FROMF(tanhf(TOF(a))); }                                                          \
  inline T2 h2exp(T2 a) { return T2(hexp(a.x), hexp(a.y)); }                                                    \
  inline T2 h2exp2(T2 a) { return T2(hexp2(a.x), hexp2(a.y)); }                                                 \
  inline T2 h2sqrt(T2 a) { return T2(hsqrt(a.x), hsqrt(a.y)); }

WB_H16_OPS(__half, __half2, __half2float, __float2half_rn)
WB_H16_OPS(__nv_bfloat16, __nv_bfloat162, __bfloat162float, __float2bfloat16_rn)
#undef WB_H16_OPS

// Helper of tests/test_attention_cuda.py (built with g++ there; the kernel sections are cut out of cuda_src/attention.cu).
// CPU emulation of attn_v3_wgmma: one std::thread per CUDA thread (384 per CTA, CTAs one after another); mbarriers
// (arrival count + transaction bytes + phase parity; a 5 s wait = deadlock), TMA 3-D boxes (OOB zero fill, 128-B
// swizzle on the shared address), wgmma read through its descriptors (K-major A/B, N-major B; A from registers
// gathered from the warp's fragments) executed deferred at wgmma.wait_group; quad shuffles through a per-warp buffer.
#include <atomic>
#include <algorithm>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>
using std::min;
using std::max;
struct dim3_ { unsigned x = 0, y = 0, z = 0; };
thread_local dim3_ threadIdx;
dim3_ blockIdx, gridDim;
static std::barrier<>* g_bar;
static std::vector<std::unique_ptr<std::barrier<>>> g_wbar;
static void warp_sync() { g_wbar[threadIdx.x / 32]->arrive_and_wait(); }
alignas(1024) static unsigned char g_dyn_smem[232 * 1024];
#define __syncthreads() g_bar->arrive_and_wait()
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
#define __grid_constant__
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __CUDA_ARCH__ 900
#define __CUDA_ARCH_FEAT_SM90_ALL 1
#define ATTN_LN2 0.6931471805599453f
static void __trap() { abort(); }
using __half = _Float16;
struct __half2 { __half x, y; };
struct __nv_bfloat16 { uint16_t b; };
struct __nv_bfloat162 { __nv_bfloat16 x, y; };
static __nv_bfloat16 f2bf(float f) { uint32_t u; memcpy(&u, &f, 4); u += 0x7FFF + ((u >> 16) & 1); return {(uint16_t)(u >> 16)}; }
static float bf2f(__nv_bfloat16 h) { uint32_t u = (uint32_t)h.b << 16; float f; memcpy(&f, &u, 4); return f; }
static float tof(__half h) { return (float)h; }
static float tof(__nv_bfloat16 h) { return bf2f(h); }
template <typename T> T from_float(float v);
template <> __half from_float<__half>(float v) { return (__half)v; }
template <> __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return f2bf(v); }
// ex2.approx.ftz.f32 per the PTX ISA: 2^x (approximate: a few ulp, here exact to float), subnormal inputs and results
// flushed to sign-preserving zero
static float ex2_approx_ftz(float x) {
  if (std::fpclassify(x) == FP_SUBNORMAL) x = std::copysign(0.f, x);
  const float r = std::exp2(x);
  return std::fpclassify(r) == FP_SUBNORMAL ? std::copysign(0.f, r) : r;
}
template <typename T> uint32_t pack2(float lo, float hi) {
  T a = from_float<T>(lo), b = from_float<T>(hi); uint16_t x, y; memcpy(&x, &a, 2); memcpy(&y, &b, 2);
  return (uint32_t)x | ((uint32_t)y << 16);
}
static double elem16(uint16_t bits, int kind) {
  if (kind == 0) { __half h; memcpy(&h, &bits, 2); return (double)h; }
  __nv_bfloat16 b{bits}; return bf2f(b);
}
static double elem(const unsigned char* p, int kind) { uint16_t u; memcpy(&u, p, 2); return elem16(u, kind); }
static float g_shfl[16][32];
static float __shfl_xor_sync(unsigned, float v, int m) {
  const int w = threadIdx.x / 32, l = threadIdx.x % 32;
  g_shfl[w][l] = v; warp_sync(); float r = g_shfl[w][l ^ m]; warp_sync(); return r;
}

struct CUtensorMap { const unsigned char* base; int esize; long d0, d1, d2; int box0, box1; };
static uint32_t swz128(uint32_t off) { return off ^ (((off >> 7) & 7) << 4); }
static uint32_t soff(const void* p) { return (uint32_t)((const unsigned char*)p - g_dyn_smem); }
static uint32_t smem_u32(const void* p) { return soff(p); }

struct Bar { std::mutex mu; int count = 0, pending = 0; long tx = 0; unsigned phase = 0; };
static std::mutex g_bars_mu;
static std::unordered_map<const void*, std::unique_ptr<Bar>> g_bars;
static Bar& bar_of(const void* p) {
  std::lock_guard<std::mutex> l(g_bars_mu); auto& b = g_bars[p]; if (!b) b.reset(new Bar); return *b;
}
static void bar_check(Bar& b) {
  if (b.pending == 0 && b.tx == 0) { b.phase++; b.pending = b.count; }
  if (b.pending < 0 || b.tx < 0) { printf("mbarrier over-arrived\n"); exit(5); }
}
static std::atomic<int> g_pending_reads[232 * 8];

#include "consts.inc"
namespace attn90 {
#include "desc.inc"
static uint64_t make_desc(const void* p, uint32_t lbo, uint32_t sbo) { return make_desc_u32(soff(p), lbo, sbo); }
static void mbar_init(uint64_t* bar, int count) {
  Bar& b = bar_of(bar); std::lock_guard<std::mutex> l(b.mu); b.count = b.pending = count; b.tx = 0; b.phase = 0;
}
static void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  Bar& b = bar_of(bar); std::lock_guard<std::mutex> l(b.mu); b.tx += bytes; b.pending--; bar_check(b);
}
static void mbar_arrive(uint64_t* bar) { Bar& b = bar_of(bar); std::lock_guard<std::mutex> l(b.mu); b.pending--; bar_check(b); }
static void mbar_wait(uint64_t* bar, int parity) {
  Bar& b = bar_of(bar);
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    { std::lock_guard<std::mutex> l(b.mu); if ((b.phase & 1) != (unsigned)parity) return; }
    if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(5)) { printf("mbarrier wait deadlock\n"); exit(3); }
    std::this_thread::yield();
  }
}
static void tma_load_3d(void* dst, const CUtensorMap* m, uint64_t* bar, int c0, int c1, int c2) {
  uint32_t d = soff(dst);
  if (d % 1024) { printf("TMA destination not 1024-B aligned\n"); exit(6); }
  if (m->box0 * m->esize != 128) { printf("128-B swizzle needs 128-B box rows\n"); exit(6); }
  for (int r = 0; r < m->box1; ++r)
    for (int i = 0; i < m->box0; ++i) {
      long x = (long)c0 + i, y = (long)c1 + r, z = c2;
      unsigned char* q = g_dyn_smem + swz128(d + (uint32_t)((r * m->box0 + i) * m->esize));
      if (g_pending_reads[(q - g_dyn_smem) / 128] > 0) { printf("TMA overwrote a slot with a pending wgmma read\n"); exit(4); }
      if (x >= 0 && y >= 0 && z >= 0 && x < m->d0 && y < m->d1 && z < m->d2)
        memcpy(q, m->base + ((z * m->d1 + y) * m->d0 + x) * m->esize, m->esize);
      else memset(q, 0, m->esize);
    }
  Bar& b = bar_of(bar); std::lock_guard<std::mutex> l(b.mu); b.tx -= (long)m->box0 * m->box1 * m->esize; bar_check(b);
}
struct Mma { float* d; int n, kind; bool areg; uint64_t da, db; int scale_d; double a[16][16]; };
thread_local std::vector<Mma> cur_mma;
thread_local std::deque<std::vector<Mma>> mma_groups;
static const unsigned char* operand(uint64_t desc, int mn, int k, bool kmajor) {
  const uint32_t start = (uint32_t)(desc & 0x3FFF) << 4;
  const uint32_t lbo = (uint32_t)((desc >> 16) & 0x3FFF) << 4, sbo = (uint32_t)((desc >> 32) & 0x3FFF) << 4;
  if ((desc >> 62) != 1) { printf("descriptor is not 128-B swizzled\n"); exit(6); }
  uint32_t off;
  if (kmajor) off = start + (mn / 8) * sbo + (mn % 8) * 128 + k * 2;
  else off = start + (mn / 64) * lbo + (k / 8) * sbo + (k % 8) * 128 + (mn % 64) * 2;
  return g_dyn_smem + swz128(off);
}
static void lines(const Mma& m, int delta) {  // B is K-major for the SS (Q K^T) form, N-major for RS (P V)
  std::vector<char> seen(232 * 8, 0);
  if (!m.areg) for (int r = 0; r < 64; ++r) for (int k = 0; k < 16; ++k) seen[(operand(m.da, r, k, true) - g_dyn_smem) / 128] = 1;
  for (int c = 0; c < m.n; ++c) for (int k = 0; k < 16; ++k) seen[(operand(m.db, c, k, !m.areg) - g_dyn_smem) / 128] = 1;
  for (int i = 0; i < 232 * 8; ++i) if (seen[i]) g_pending_reads[i] += delta;
}
static void run_mma(const Mma& m) {
  lines(m, -1);
  const int t = threadIdx.x % 128, w = t / 32, lane = t % 32;
  for (int i = 0; i < m.n / 8; ++i)
    for (int e = 0; e < 4; ++e) {
      const int rl = lane / 4 + 8 * (e / 2), row = 16 * w + rl, col = 8 * i + 2 * (lane % 4) + (e % 2);
      double s = 0;
      for (int k = 0; k < 16; ++k) {
        const double a = m.areg ? m.a[rl][k] : elem(operand(m.da, row, k, true), m.kind);
        s += a * elem(operand(m.db, col, k, !m.areg), m.kind);
      }
      float& d = m.d[i * 4 + e];
      d = (float)((m.scale_d ? d : 0.f) + s);
    }
}
static void wgmma_fence() { warp_sync(); }
static void wgmma_commit() { for (auto& m : cur_mma) lines(m, +1); mma_groups.push_back(cur_mma); cur_mma.clear(); warp_sync(); }
static void wgmma_wait0() {
  while (!mma_groups.empty()) { for (auto& m : mma_groups.front()) run_mma(m); mma_groups.pop_front(); }
  warp_sync();
}
template <int R> void setmaxnreg_inc() {}
template <int R> void setmaxnreg_dec() {}
template <typename T> constexpr int kind_of() { return std::is_same<T, __half>::value ? 0 : 1; }
template <typename T, int N> void wgmma_ss(float (&d)[N / 2], uint64_t da, uint64_t db, int scale_d) {
  Mma m{d, N, kind_of<T>(), false, da, db, scale_d, {}}; cur_mma.push_back(m);
}
static uint32_t g_afrag[16][32][4];
template <typename T, int N> void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t db, int scale_d) {
  const int w = threadIdx.x / 32, l = threadIdx.x % 32;
  for (int j = 0; j < 4; ++j) g_afrag[w][l][j] = a[j];
  warp_sync();
  Mma m{d, N, kind_of<T>(), true, 0, db, scale_d, {}};
  for (int ln = 0; ln < 32; ++ln)  // m16n8k16 A fragment: a0 (g, 2t..) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..)
    for (int j = 0; j < 4; ++j)
      for (int hi = 0; hi < 2; ++hi) {
        const int r = ln / 4 + 8 * (j & 1), c = 2 * (ln % 4) + 8 * (j >> 1) + hi;
        m.a[r][c] = elem16((uint16_t)(g_afrag[w][ln][j] >> (16 * hi)), m.kind);
      }
  warp_sync();
  cur_mma.push_back(m);
}
template <typename T> struct Pair16;
template <> struct Pair16<__half> { using type = __half2; };
template <> struct Pair16<__nv_bfloat16> { using type = __nv_bfloat162; };
}  // namespace attn90
#include "kernel.inc"

template <typename T> double kind_of_tol() { return std::is_same<T, __half>::value ? 5e-3 : 3e-2; }

template <typename T, int D>
static int run_case(int B, int H, int Hkv, int Nq, int Nkv, int causal, std::mt19937& rng, const char* tag) {
  std::normal_distribution<float> nd;
  std::vector<T> q((size_t)B * H * Nq * D), k((size_t)B * Hkv * Nkv * D), v(k.size());
  for (auto& x : q) x = from_float<T>(nd(rng));
  for (auto& x : k) x = from_float<T>(nd(rng));
  for (auto& x : v) x = from_float<T>(nd(rng));
  std::vector<T> o(q.size() + 1, from_float<T>(NAN));
  std::vector<float> lse((size_t)B * H * Nq + 1, NAN);
  const float scale_log2 = 1.4426950408889634f / std::sqrt((float)D);
  CUtensorMap tq{(const unsigned char*)q.data(), 2, D, Nq, (long)B * H, 64, attn90::BM};
  CUtensorMap tk{(const unsigned char*)k.data(), 2, D, Nkv, (long)B * Hkv, 64, attn90::BN};
  CUtensorMap tv{(const unsigned char*)v.data(), 2, D, Nkv, (long)B * Hkv, 64, attn90::BN};
  gridDim = {(unsigned)((Nq + attn90::ROWS - 1) / attn90::ROWS), (unsigned)H, (unsigned)B};
  for (unsigned z = 0; z < gridDim.z; ++z)
    for (unsigned y = 0; y < gridDim.y; ++y)
      for (unsigned x = 0; x < gridDim.x; ++x) {
        blockIdx = {x, y, z};
        const int nt = attn90::THREADS;
        std::barrier<> bar(nt); g_bar = &bar;
        g_wbar.clear(); for (int w = 0; w < nt / 32; ++w) g_wbar.emplace_back(new std::barrier<>(32));
        memset(g_dyn_smem, 0xff, sizeof(g_dyn_smem));  // NaN garbage
        std::vector<std::thread> th;
        for (int t = 0; t < nt; ++t) th.emplace_back([&, t] {
          threadIdx = {(unsigned)t, 0, 0}; attn90::cur_mma.clear(); attn90::mma_groups.clear();
          attn_v3_wgmma<T, D>(tq, tk, tv, o.data(), lse.data(), H, Hkv, Nq, Nkv, causal, scale_log2);
          if (!attn90::cur_mma.empty() || !attn90::mma_groups.empty()) { printf("wgmma pending at exit\n"); exit(7); }
        });
        for (auto& x : th) x.join();
      }
  // float64 reference: bottom-right causal, GQA; a row that sees no key: O = 0, LSE = -inf
  double num = 0, den = 0, lse_err = 0; int bad_masked = 0, unwritten = 0;
  std::vector<double> s(Nkv), acc(D);
  for (int b = 0; b < B; ++b) for (int h = 0; h < H; ++h) for (int i = 0; i < Nq; ++i) {
    const size_t row = ((size_t)b * H + h) * Nq + i, kv = ((size_t)b * Hkv + h / (H / Hkv)) * Nkv;
    double mx = -INFINITY;
    for (int j = 0; j < Nkv; ++j) {
      double d = 0;
      for (int c = 0; c < D; ++c) d += (double)tof(q[row * D + c]) * (double)tof(k[(kv + j) * D + c]);
      s[j] = (causal && j > i + Nkv - Nq) ? -INFINITY : d / std::sqrt((double)D);
      mx = max(mx, s[j]);
    }
    for (int c = 0; c < D; ++c) if (!std::isfinite((double)tof(o[row * D + c]))) ++unwritten;
    if (!std::isfinite((double)lse[row]) && !(std::isinf(lse[row]) && lse[row] < 0)) ++unwritten;
    if (mx == -INFINITY) {
      for (int c = 0; c < D; ++c) bad_masked += tof(o[row * D + c]) != 0.f;
      bad_masked += !(std::isinf(lse[row]) && lse[row] < 0);
      continue;
    }
    double l = 0; std::fill(acc.begin(), acc.end(), 0.0);
    for (int j = 0; j < Nkv; ++j) { const double p = std::exp(s[j] - mx); l += p; for (int c = 0; c < D; ++c) acc[c] += p * (double)tof(v[(kv + j) * D + c]); }
    for (int c = 0; c < D; ++c) { const double r = acc[c] / l, e = (double)tof(o[row * D + c]) - r; num += e * e; den += r * r; }
    lse_err = max(lse_err, std::fabs((double)lse[row] - (mx + std::log(l))));
  }
  const double rel = den > 0 ? std::sqrt(num / den) : 0;
  const bool guard = std::isnan(tof(o[q.size()])) && std::isnan(lse[lse.size() - 1]);
  const double tol = kind_of_tol<T>();
  const bool ok = unwritten == 0 && bad_masked == 0 && guard && rel < tol && lse_err < 1e-3;
  printf("%s rel=%.3g lse_err=%.3g unwritten=%d bad_masked=%d guard=%d %s\n", tag, rel, lse_err, unwritten, bad_masked,
         guard, ok ? "ok" : "FAIL");
  return ok ? 0 : 1;
}

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IONBF, 0);
  std::mt19937 rng(7);
  int fails = 0;
  for (int ai = 1; ai < argc; ++ai) {  // dtype(h|b),D,B,H,Hkv,Nq,Nkv,causal
    char dt; int D, B, H, Hkv, Nq, Nkv, causal;
    if (sscanf(argv[ai], "%c,%d,%d,%d,%d,%d,%d,%d", &dt, &D, &B, &H, &Hkv, &Nq, &Nkv, &causal) != 8) return 2;
    if (dt == 'h' && D == 64) fails += run_case<__half, 64>(B, H, Hkv, Nq, Nkv, causal, rng, argv[ai]);
    else if (dt == 'h' && D == 128) fails += run_case<__half, 128>(B, H, Hkv, Nq, Nkv, causal, rng, argv[ai]);
    else if (dt == 'b' && D == 64) fails += run_case<__nv_bfloat16, 64>(B, H, Hkv, Nq, Nkv, causal, rng, argv[ai]);
    else if (dt == 'b' && D == 128) fails += run_case<__nv_bfloat16, 128>(B, H, Hkv, Nq, Nkv, causal, rng, argv[ai]);
    else return 2;
  }
  return fails != 0;
}

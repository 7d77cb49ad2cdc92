# ruff: noqa: E501  (the CPU emulators below are C++ sources embedded as strings)
"""Raw-CUDA matmul variants (harness/families/_matmul_cuda.py, cuda_src/matmul.cu, cuda_src/matmul_sm90.cu).

CPU: every kernel compiles for sm_80 and sm_90 (v9-v11: sm_90a, kernel and host-mode library) with zero spills; the
SIMT ladder (v1-v7), v8 and v8b run on a CPU emulator (g++, one thread per CUDA thread) at irregular shapes (v9-v11
run on the CUDA interpreter's models of mbarrier/TMA/wgmma: tests/test_ptx90.py); SASS and X-ray facts of the new rungs
(HGMMA.64x256 / QGMMA + UTMALDG + setmaxnreg; LDGSTS + HMMA), the grouped tile order (g++ on the kernel's own function
vs brute force) and the epilogue's exactly-once coverage at tails.
GPU (marked ``gpu``): every variant matches a float64 matmul at irregular shapes. The GPU check does not go through
the Problem: it collects the variants with a stub, so it tests exactly this module's launch geometry and kernels.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from harness.cuda import CompileError, nvcc_path
from harness.families import _matmul_cuda as mc
from harness.registry import Shape
from tests.gxx import build_and_run
from tests.gxx import section as _section

needs_nvcc = pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
# the lead's conftest skips `gpu` tests without CUDA; the skipif keeps this file safe on its own too
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

LADDER = [kname for _, _, kname, _, _, _ in mc.SGEMM] + [
    mc.V8.replace("{T}", "__half"),
    mc.V8.replace("{T}", "__nv_bfloat16"),
]


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_ladder_compiles_without_spills(arch):
    for kname in LADDER:
        r = mc.SRC.resources(kname, arch)
        assert r["arch"] == arch
        assert r["registers"] > 0, (kname, r)
        assert r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0, (kname, arch, r)
        assert r["stack_bytes"] == 0, (kname, arch, r)
        assert r["registers"] <= 255


@needs_nvcc
def test_launch_bounds_fit_registers():
    # threads x registers must fit the 64K-register file for at least one block per SM
    threads = {kname: t for _, _, kname, _, t, _ in mc.SGEMM}
    threads[LADDER[-1]] = threads[LADDER[-2]] = mc.V8_THREADS
    for kname in LADDER:
        r = mc.SRC.resources(kname, "sm_90")
        assert threads[kname] * r["registers"] <= 65536, (kname, r)
    # v8's dynamic shared memory fits an sm_80 / sm_90 block (163 KB / 227 KB opt-in)
    assert mc.V8_SMEM == 56832 and mc.V8_SMEM <= 163 * 1024


@needs_nvcc
def test_sm90_wgmma_compiles():
    if not mc.SRC_SM90.path.exists():
        pytest.skip("matmul_sm90.cu not written")
    for ct in ("__half", "__nv_bfloat16"):
        r = mc.SRC_SM90.resources(mc.V9_KERNEL.replace("{T}", ct), "sm_90a")
        assert r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0, r



@needs_nvcc
def test_sm90_host_library_links(tmp_path):
    """The host-mode build (kernel + TMA launcher) links into a shared library exporting the launcher.

    The harness links host-mode libraries with -lcuda; a machine without a driver has no libcuda.so, and this file
    does not need it (it fetches cuTensorMapEncodeTiled through the runtime), so the check builds the library the
    same way minus -lcuda when the harness' build cannot link here."""
    if not mc.SRC_SM90.path.exists():
        pytest.skip("matmul_sm90.cu not written")
    try:
        libres = mc.SRC_SM90.library_resources("sm_90a")
        assert any("hgemm_v9_wgmma" in k for k in libres), sorted(libres)
        return
    except CompileError as e:
        if "lcuda" not in str(e):
            raise
    src = mc.SRC_SM90
    unit = tmp_path / "u.cu"
    unit.write_text(f'#include "{src.path}"\n')
    so = tmp_path / "lib.so"
    cmd = [*src._cmd("sm_90a"), "-shared", "-Xcompiler", "-fPIC", "-o", str(so), str(unit)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    nm = shutil.which("nm")
    if nm:
        syms = subprocess.run([nm, "-D", "--defined-only", str(so)], capture_output=True, text=True).stdout
        assert "launch_hgemm_v9_wgmma" in syms


# ------------------------------------------------------------------------------------------------ CPU emulation
# No GPU here, so the kernels' index math is checked by *running the kernel source on the CPU*: the SIMT ladder
# (v1-v7) and v8 are compiled with g++ against small shims — one std::thread per CUDA thread, std::barrier for
# __syncthreads, `__shared__` as function statics — and v8's cp.async / ldmatrix / mma.sync are emulated from the
# PTX ISA fragment layouts (cp.async groups are deferred until the matching wait_group, so a wrong wait count reads
# garbage; shared memory starts as NaN). Shapes cover edge tiles, K not a multiple of the tile, the vector paths and
# pointers misaligned by one element. What this cannot see: bank conflicts, real async hazards, wgmma/TMA (v9).
LADDER_BEGIN, LADDER_END = "// v1 — naive", "// Tensor-core building blocks"
V8_BEGIN = "// v8 — tensor cores"
V8B_BEGIN = "// v8b — the portable"
V8_SMEM_DECL = "extern __shared__ __align__(16) unsigned char smem_raw[];"

EMU_LADDER = r"""// CPU emulation of the SIMT SGEMM ladder: one std::thread per CUDA thread, std::barrier for __syncthreads.
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <thread>
#include <vector>
struct dim3_ { unsigned x = 0, y = 0, z = 0; };
thread_local dim3_ threadIdx;
dim3_ blockIdx;
static std::barrier<>* g_bar;
#define __syncthreads() g_bar->arrive_and_wait()
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __restrict__
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
struct alignas(16) float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
#include "ladder.inc"

using KFn = std::function<void(const float*, const float*, float*, int, int, int)>;
static void launch(KFn k, unsigned gx, unsigned gy, unsigned bx, unsigned by, const float* A, const float* B, float* C,
                   int M, int N, int K) {
  for (unsigned y = 0; y < gy; ++y)
    for (unsigned x = 0; x < gx; ++x) {
      blockIdx = {x, y, 0};
      std::barrier<> bar(bx * by);
      g_bar = &bar;
      std::vector<std::thread> th;
      for (unsigned ty = 0; ty < by; ++ty)
        for (unsigned tx = 0; tx < bx; ++tx)
          th.emplace_back([&, tx, ty] { threadIdx = {tx, ty, 0}; k(A, B, C, M, N, K); });
      for (auto& t : th) t.join();
    }
}
static int cdiv(int a, int b) { return (a + b - 1) / b; }

int main(int argc, char** argv) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  int fails = 0;
  for (int ai = 1; ai < argc; ++ai) {
    int M, N, K, off;
    if (sscanf(argv[ai], "%d,%d,%d,%d", &M, &N, &K, &off) != 4) return 2;
    {
      std::vector<float> Ab(M * K + 4), Bb(K * N + 4), Cb(M * N + 4);
      for (auto& v : Ab) v = nd(rng);
      for (auto& v : Bb) v = nd(rng);
      const float* A = Ab.data() + off; const float* B = Bb.data() + off; float* C = Cb.data() + off;
      std::vector<double> ref(M * N);
      for (int i = 0; i < M; ++i) for (int j = 0; j < N; ++j) { double a = 0; for (int k = 0; k < K; ++k) a += (double)A[i*K+k]*B[k*N+j]; ref[i*N+j] = a; }
      struct V { const char* name; KFn k; unsigned gx, gy, bx, by; };
      std::vector<V> vs = {
        {"v1", sgemm_v1_naive, (unsigned)cdiv(M, 32), (unsigned)cdiv(N, 32), 32, 32},
        {"v2", sgemm_v2_coalesced<32>, (unsigned)cdiv(N, 32), (unsigned)cdiv(M, 32), 1024, 1},
        {"v3", sgemm_v3_smem<32>, (unsigned)cdiv(N, 32), (unsigned)cdiv(M, 32), 1024, 1},
        {"v4", sgemm_v4_blocktile1d<64, 64, 8, 8>, (unsigned)cdiv(N, 64), (unsigned)cdiv(M, 64), 512, 1},
        {"v5", sgemm_v5_blocktile2d<128, 128, 8, 8, 8>, (unsigned)cdiv(N, 128), (unsigned)cdiv(M, 128), 256, 1},
        {"v6", sgemm_v6_vectorized<128, 128, 8, 8, 8>, (unsigned)cdiv(N, 128), (unsigned)cdiv(M, 128), 256, 1},
        {"v7", sgemm_v7_warptile<128, 128, 16, 64, 64, 4, 8, 4, 128>, (unsigned)cdiv(N, 128), (unsigned)cdiv(M, 128), 128, 1},
      };
      for (auto& v : vs) {
        for (auto& c : Cb) c = NAN;
        launch(v.k, v.gx, v.gy, v.bx, v.by, A, B, C, M, N, K);
        double num = 0, den = 0; int nan = 0;
        for (int i = 0; i < M * N; ++i) { if (!std::isfinite(C[i])) ++nan; double d = C[i] - ref[i]; num += d*d; den += ref[i]*ref[i]; }
        bool guard = std::isnan(Cb[off ? 0 : M * N]);  // the element just outside C stays untouched
        double rel = std::sqrt(num / den);
        bool ok = nan == 0 && rel < 2e-5 && guard;
        fails += !ok;
        printf("%s %dx%dx%d off=%d rel=%.3g unwritten=%d guard=%d %s\n", v.name, M, N, K, off, rel, nan, guard, ok ? "ok" : "FAIL");
      }
    }
  }
  return fails != 0;
}
"""

EMU_V8 = r"""// CPU emulation of hgemm_v8_mma<__half,...>: one std::thread per CUDA thread; cp.async groups are deferred until
// the matching wait_group; ldmatrix and mma.sync are warp collectives emulated from the PTX ISA fragment layouts.
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <thread>
#include <vector>
struct dim3_ { unsigned x = 0, y = 0, z = 0; };
thread_local dim3_ threadIdx;
dim3_ blockIdx;
static std::barrier<>* g_bar;
static std::vector<std::unique_ptr<std::barrier<>>> g_wbar;
alignas(1024) static unsigned char g_dyn_smem[200 * 1024];
#define __syncthreads() g_bar->arrive_and_wait()
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __restrict__
using __half = _Float16;
struct __half2 { __half x, y; };
template <typename T> struct Pair;
template <> struct Pair<__half> { using type = __half2; };
template <typename T> T from_float(float v);
template <> __half from_float<__half>(float v) { return (__half)v; }
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// ---- cp.async: per-thread pending copies, grouped by commit
struct Copy { void* dst; const void* src; bool pred; };
thread_local std::vector<Copy> cur;
thread_local std::deque<std::vector<Copy>> groups;
static void do_copy(const Copy& c) { if (c.pred) memcpy(c.dst, c.src, 16); else memset(c.dst, 0, 16); }
inline void cp_async_16(void* dst, const void* src, bool pred) {
  if (((uintptr_t)dst & 15) || (pred && ((uintptr_t)src & 15))) { printf("misaligned cp.async\n"); abort(); }
  cur.push_back({dst, src, pred});
}
inline void cp_async_commit() { groups.push_back(cur); cur.clear(); }
template <int N> inline void cp_async_wait() {
  while ((int)groups.size() > N) { for (auto& c : groups.front()) do_copy(c); groups.pop_front(); }
}

// ---- warp collectives
struct WarpX { const void* addr[32]; uint32_t a[32][4], b[32][2]; float c[32][4]; };
static WarpX g_wx[32];
static int lane_() { return threadIdx.x % 32; }
static int warp_() { return threadIdx.x / 32; }
static void wsync() { g_wbar[warp_()]->arrive_and_wait(); }
static uint16_t ld16(const void* p, int i) { uint16_t v; memcpy(&v, (const char*)p + 2 * i, 2); return v; }

inline void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  WarpX& w = g_wx[warp_()]; int t = lane_();
  if ((uintptr_t)p & 15) { printf("misaligned ldmatrix\n"); abort(); }
  w.addr[t] = p; wsync();
  for (int j = 0; j < 4; ++j) {  // matrix j: rows from lanes 8j..8j+7; thread t gets row t/4, cols 2(t%4), +1
    const void* row = w.addr[8 * j + t / 4];
    r[j] = ld16(row, 2 * (t % 4)) | ((uint32_t)ld16(row, 2 * (t % 4) + 1) << 16);
  }
  wsync();
}
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  WarpX& w = g_wx[warp_()]; int t = lane_();
  w.addr[t] = p; wsync();
  for (int j = 0; j < 4; ++j) {  // transposed: thread t gets (row 2(t%4), col t/4) and (row 2(t%4)+1, col t/4)
    const void* r0 = w.addr[8 * j + 2 * (t % 4)];
    const void* r1 = w.addr[8 * j + 2 * (t % 4) + 1];
    r[j] = ld16(r0, t / 4) | ((uint32_t)ld16(r1, t / 4) << 16);
  }
  wsync();
}
static float h2f(uint32_t reg, int hi) { uint16_t b = hi ? reg >> 16 : reg & 0xffff; __half h; memcpy(&h, &b, 2); return (float)h; }
// PTX m16n8k16 .f16 layouts: g = lane/4, q = lane%4.
// A: reg0 (g, 2q..), reg1 (g+8, 2q..), reg2 (g, 2q+8..), reg3 (g+8, 2q+8..)
// B: reg0 (k = 2q.., n = g), reg1 (k = 2q+8.., n = g).  C: c0,c1 (g, 2q..), c2,c3 (g+8, 2q..)
static float A_el(const WarpX& w, int row, int k) {
  int lane = (row % 8) * 4 + (k % 8) / 2, reg = (row / 8) + 2 * (k / 8);
  return h2f(w.a[lane][reg], k % 2);
}
static float B_el(const WarpX& w, int k, int n) {
  int lane = n * 4 + (k % 8) / 2, reg = k / 8;
  return h2f(w.b[lane][reg], k % 2);
}
template <typename T> inline void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  WarpX& w = g_wx[warp_()]; int t = lane_();
  for (int i = 0; i < 4; ++i) w.a[t][i] = a[i];
  for (int i = 0; i < 2; ++i) w.b[t][i] = b[i];
  wsync();
  int g = t / 4, q = t % 4;
  for (int e = 0; e < 4; ++e) {
    int row = g + (e >= 2 ? 8 : 0), col = 2 * q + (e % 2);
    float s = d[e];
    for (int k = 0; k < 16; ++k) s += A_el(w, row, k) * B_el(w, k, col);
    d[e] = s;
  }
  wsync();
}
#include "v8.inc"

int main(int argc, char** argv) {
  std::mt19937 rng(2);
  std::normal_distribution<float> nd;
  int fails = 0;
  for (int ai = 1; ai < argc; ++ai) {
    int M, N, K, off;
    if (sscanf(argv[ai], "%d,%d,%d,%d", &M, &N, &K, &off) != 4) return 2;
    std::vector<__half> Ab(M * K + 8), Bb(K * N + 8), Cb(M * N + 8);
    for (auto& v : Ab) v = (__half)nd(rng);
    for (auto& v : Bb) v = (__half)nd(rng);
    {
      const __half* A = Ab.data() + off; const __half* B = Bb.data() + off; __half* C = Cb.data() + off;
      std::vector<double> ref(M * N);
      for (int i = 0; i < M; ++i) for (int j = 0; j < N; ++j) { double a = 0; for (int k = 0; k < K; ++k) a += (double)A[i*K+k]*(double)B[k*N+j]; ref[i*N+j] = a; }
      for (auto& c : Cb) c = (__half)NAN;
      const int NT = 256;
      for (unsigned by = 0; by < (unsigned)((M + 127) / 128); ++by)
        for (unsigned bx = 0; bx < (unsigned)((N + 127) / 128); ++bx) {
          blockIdx = {bx, by, 0};
          std::barrier<> bar(NT); g_bar = &bar;
          g_wbar.clear(); for (int w = 0; w < NT / 32; ++w) g_wbar.emplace_back(new std::barrier<>(32));
          memset(g_dyn_smem, 0xff, sizeof(g_dyn_smem));  // NaN garbage in shared memory
          std::vector<std::thread> th;
          for (int t = 0; t < NT; ++t) th.emplace_back([&, t] {
            threadIdx = {(unsigned)t, 0, 0}; cur.clear(); groups.clear();
            hgemm_v8_mma<__half, 128, 128, 32, 2, 4, 3>(A, B, C, M, N, K);
            if (!groups.empty() || !cur.empty()) { printf("pending cp.async at exit\n"); abort(); }
          });
          for (auto& x : th) x.join();
        }
      double num = 0, den = 0; int nan = 0;
      for (int i = 0; i < M * N; ++i) { double o = (double)C[i]; if (!std::isfinite(o)) ++nan; double d = o - ref[i]; num += d*d; den += ref[i]*ref[i]; }
      bool guard = std::isnan((float)Cb[off ? 0 : M * N]);
      double rel = std::sqrt(num / den);
      bool ok = nan == 0 && rel < 2e-3 && guard;
      fails += !ok;
      printf("v8 %dx%dx%d off=%d cp.async=%d rel=%.3g unwritten=%d guard=%d %s\n", M, N, K, off,
             (K % 8 == 0 && N % 8 == 0 && off == 0), rel, nan, guard, ok ? "ok" : "FAIL");
    }
  }
  return fails != 0;
}
"""


def _build_and_run(tmp_path, name: str, main_src: str, inc_name: str, inc: str, args: list[str]) -> str:
    run = build_and_run(tmp_path, name, {inc_name: inc, f"{name}.cpp": main_src}, args)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return run.stdout


def test_ladder_kernels_on_cpu_emulator(tmp_path):
    src = mc.SRC.path.read_text()
    inc = _section(src, LADDER_BEGIN, LADDER_END)
    # M,N,K,offset: scalar edges; the float4 paths (K, N multiples of 4); the same with misaligned pointers
    out = _build_and_run(tmp_path, "emu_ladder", EMU_LADDER, "ladder.inc", inc,
                         ["7,37,19,0", "33,132,68,0", "33,132,68,1"])
    assert out.count(" ok") == 21, out


def test_v8_mma_on_cpu_emulator(tmp_path):
    src = mc.SRC.path.read_text()
    inc = _section(src, V8_BEGIN, V8B_BEGIN)
    assert V8_SMEM_DECL in inc
    inc = inc.replace(V8_SMEM_DECL, "unsigned char* smem_raw = g_dyn_smem;")
    # 1x33x17: element-wise loads; 65x72x200: cp.async ring with 7 k-slices > 3 stages; the same misaligned
    # (fallback path); 130x136x72: several blocks, edge tiles in M and N
    out = _build_and_run(tmp_path, "emu_v8", EMU_V8, "v8.inc", inc,
                         ["1,33,17,0", "65,72,200,0", "65,72,200,1", "130,136,72,0"])
    assert out.count(" ok") == 4, out


class _Collect:
    """Stands in for the Problem: records add_variant calls."""

    def __init__(self):
        self.variants = {}

    def add_variant(self, name, backend, fn, dtypes=None, **kw):
        assert name not in self.variants
        self.variants[name] = dict(backend=backend, fn=fn, dtypes=dtypes, **kw)


def test_register_names_and_metadata():
    p = _Collect()
    mc.register_cuda_variants(p)
    names = list(p.variants)
    expect = ["cuda_v1_naive", "cuda_v2_coalesced", "cuda_v3_smem", "cuda_v4_blocktile1d", "cuda_v5_blocktile2d",
              "cuda_v6_vectorized", "cuda_v7_warptile", "cuda_v8_mma"]
    assert names[: len(expect)] == expect
    for i, n in enumerate(expect, 1):
        assert p.variants[n]["ladder"] == i and p.variants[n]["backend"] == "cuda"
    assert p.variants["cuda_v8_mma"]["dtypes"] == ("fp16", "bf16")
    if "cuda_v9_wgmma" in p.variants:
        assert p.variants["cuda_v9_wgmma"]["ladder"] == 9
    big, small = Shape(M=8192, N=8192, K=8192), Shape(M=4096, N=4096, K=4096)
    assert p.variants["cuda_v1_naive"]["supports"](big, "fp32") is not None
    assert p.variants["cuda_v1_naive"]["supports"](small, "fp32") is None
    assert p.variants["cuda_v7_warptile"]["supports"](big, "fp32") is None
    assert p.variants["cuda_v8_mma"]["supports"](big, "bf16") is None


SHAPES = [(1, 33, 17), (1, 8, 8), (7, 5, 3), (127, 129, 65), (128, 128, 32), (64, 136, 40), (257, 64, 96),
          (1000, 2025, 4071), (512, 1024, 768)]
TOL = {"fp32": 2e-5, "fp16": 2e-3, "bf16": 1e-2}
DT = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("M,N,K", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_variants_match_float64(M, N, K):
    torch.backends.cuda.matmul.allow_tf32 = False
    p = _Collect()
    mc.register_cuda_variants(p)
    shape = Shape(M=M, N=N, K=K)
    g = torch.Generator(device="cuda").manual_seed(M * 1000003 + N * 1009 + K)
    failures = []
    for dname in ("fp32", "fp16", "bf16"):
        a = torch.randn(M, K, device="cuda", generator=g).to(DT[dname])
        b = torch.randn(K, N, device="cuda", generator=g).to(DT[dname])
        ref = (a.double() @ b.double()).cpu()
        for name, v in p.variants.items():
            if dname not in v["dtypes"]:
                continue
            sup = v.get("supports")
            if sup is not None and sup(shape, dname) is not None:
                continue
            c = torch.full((M, N), float("nan"), device="cuda", dtype=DT[dname])
            v["fn"]({"a": a, "b": b}, {"c": c}, shape)
            torch.cuda.synchronize()
            out = c.double().cpu()
            if not torch.isfinite(out).all():
                bad = (~torch.isfinite(out)).nonzero()[:3].tolist()
                failures.append(f"{name} {dname} {M}x{N}x{K}: non-finite (unwritten?) at {bad}")
                continue
            rel = ((out - ref).norm() / ref.norm()).item()
            if rel > TOL[dname]:
                failures.append(f"{name} {dname} {M}x{N}x{K}: rel err {rel:.3g} > {TOL[dname]}")
    assert not failures, "\n".join(failures)


@pytest.mark.gpu
@needs_gpu
def test_v6_v7_v8_misaligned_views():
    """Pointers offset by one element: the 16-byte paths must fall back, not fault or read wrong data."""
    p = _Collect()
    mc.register_cuda_variants(p)
    M, N, K = 65, 72, 48
    shape = Shape(M=M, N=N, K=K)
    for dname, names in (("fp32", ["cuda_v6_vectorized", "cuda_v7_warptile"]), ("fp16", ["cuda_v8_mma"])):
        abuf = torch.randn(M * K + 1, device="cuda").to(DT[dname])
        bbuf = torch.randn(K * N + 1, device="cuda").to(DT[dname])
        a, b = abuf[1:].view(M, K), bbuf[1:].view(K, N)
        ref = (a.double() @ b.double()).cpu()
        for name in names:
            c = torch.full((M, N), float("nan"), device="cuda", dtype=DT[dname])
            p.variants[name]["fn"]({"a": a, "b": b}, {"c": c}, shape)
            torch.cuda.synchronize()
            rel = ((c.double().cpu() - ref).norm() / ref.norm()).item()
            assert rel <= TOL[dname], (name, rel)


# ================================================================================================ new rungs (issue 21)
# v8b (portable, swizzled), v10 (warp-specialised wgmma), v11 (fp8 QGMMA): none has run on a GPU yet (v10 and v11 run
# on the CUDA interpreter: tests/test_ptx90.py). What the CPU establishes here: they compile for their archs without spills inside their register budgets, their SASS holds the
# instructions each is built around, the tile order is a bijection, the epilogue covers every C element once at
# irregular shapes, and v8b (plain CUDA apart from cp.async/ldmatrix/mma) computes the right product on the emulator
# with conflict-free ldmatrix phases.
V8B_SMEM_DECL = "extern __shared__ __align__(128) unsigned char smem_raw[];"
V8B_NAMES = [mc.V8B.replace("{T}", ct) for ct in ("__half", "__nv_bfloat16")]
V10_NAMES = [mc.V10_KERNEL.replace("{T}", ct) for ct in ("__half", "__nv_bfloat16")]


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_v8b_compiles_without_spills_two_ctas_per_sm(arch):
    for kname in V8B_NAMES:
        r = mc.SRC.resources(kname, arch)
        assert r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0 and r["stack_bytes"] == 0, (kname, r)
        # __launch_bounds__(256, 2): two CTAs of 256 threads share the 64K registers
        assert 0 < r["registers"] <= 128, (kname, r)
    assert mc.V8B_SMEM == 65536 and 2 * mc.V8B_SMEM <= 163 * 1024  # two CTAs' rings fit even an A100 SM


@needs_nvcc
def test_sm90_ws_kernels_compile_without_spills():
    for kname in [*V10_NAMES, mc.V11_KERNEL]:
        r = mc.SRC_SM90.resources(kname, "sm_90a")
        assert r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0 and r["stack_bytes"] == 0, (kname, r)
        # 384 threads x the compile-time register count must fit the register file (setmaxnreg then moves them)
        assert 0 < r["registers"] and 384 * r["registers"] <= 65536, (kname, r)
    assert mc.V10_SMEM == mc.V11_SMEM == 197632 and mc.V10_SMEM <= 227 * 1024
    libres = None
    try:
        libres = mc.SRC_SM90.library_resources("sm_90a")
    except CompileError as e:  # no libcuda.so to link against here: the kernel build above is the check
        if "lcuda" not in str(e):
            raise
    if libres is not None:  # the host-mode build instantiates what the launchers launch
        for kname in ("hgemm_v10_wgmma_ws", "qgemm_v11_fp8_wgmma_ws"):
            assert any(kname in k for k in libres), sorted(libres)


def _sass_ops(src, kname: str, arch: str) -> list[str]:
    from harness import xray
    from harness.cuda import normalize_kernel_name

    if xray.tool("cuobjdump") is None:
        pytest.skip("cuobjdump not found")
    b = src.build_for(kname, arch)
    return xray.sass_opcodes(b.cubin)[b.mangled[normalize_kernel_name(kname)]]


@needs_nvcc
def test_sm90_ws_sass_has_wgmma_tma_and_setmaxnreg():
    def facts(ops):
        return {"hgmma256": any(o.startswith("HGMMA.64x256x16.F32") for o in ops),
                "qgmma": any(o.startswith("QGMMA.64x128x32.F32.E4M3.E4M3") for o in ops),
                "tma": any(o.startswith("UTMALDG") for o in ops),
                "setmaxnreg": {o.split(".")[1] for o in ops if o.startswith("USETMAXREG")},
                "hmma": any(o.startswith("HMMA") for o in ops)}

    for kname in V10_NAMES:
        f = facts(_sass_ops(mc.SRC_SM90, kname, "sm_90a"))
        assert f["hgmma256"] and f["tma"] and not f["hmma"], (kname, f)
        assert f["setmaxnreg"] == {"DEALLOC", "TRY_ALLOC"}, (kname, f)  # producer gives, consumers take
    f = facts(_sass_ops(mc.SRC_SM90, mc.V11_KERNEL, "sm_90a"))
    assert f["qgmma"] and f["tma"] and f["setmaxnreg"] == {"DEALLOC", "TRY_ALLOC"} and not f["hgmma256"], f
    # known-wrong: v9 (one warpgroup, m64n128) must fail the same facts
    f = facts(_sass_ops(mc.SRC_SM90, mc.V9_KERNEL.replace("{T}", "__nv_bfloat16"), "sm_90a"))
    assert not f["hgmma256"] and not f["setmaxnreg"] and f["tma"], f


@needs_nvcc
def test_new_rungs_xray():
    """`python -m harness inspect` sees HGMMA/QGMMA + TMA for v10/v11 on sm_90a, LDGSTS + HMMA (no wgmma) for v8b on
    sm_80, and no lint on any of them; v8 (padded, unchanged) is X-rayed alongside as the reference rung."""
    from harness import xray

    if xray.tool("cuobjdump") is None:
        pytest.skip("cuobjdump not found")
    big = "M=4096,N=4096,K=4096"
    jobs = [dict(family="matmul", variant="cuda_v10_wgmma_ws", dtype="bf16", shape=big, arch="sm_90a"),
            dict(family="matmul", variant="cuda_v11_fp8_wgmma", dtype="fp8", shape=big, arch="sm_90a"),
            dict(family="matmul", variant="cuda_v8b_mma_swizzle", dtype="bf16", shape=big, arch="sm_80"),
            dict(family="matmul", variant="cuda_v8_mma", dtype="bf16", shape=big, arch="sm_80")]
    prof = xray.load_profile("h100")
    try:
        v10, v11, v8b, v8 = (xray.finish(r, prof) for r in xray.raw_xrays(jobs))
    finally:
        xray._close_workers()
    for r in (v10, v11, v8b, v8):
        assert r["status"] == "ok", r.get("reason")
        assert all(k["spill_bytes"] == 0 for k in r["kernels"]), r["kernels"]

    def tensor(r):
        return {op.split(".")[0] for k in r["kernels"] for op in k["mix"]["tensor"]}

    def total(r, key):
        return sum(k["mix"][key] for k in r["kernels"])

    assert tensor(v10) == {"HGMMA"} and total(v10, "utmaldg") > 0 and not v10["lints"], v10["lints"]
    assert tensor(v11) == {"QGMMA"} and total(v11, "utmaldg") > 0 and not v11["lints"], v11["lints"]
    assert tensor(v8b) == {"HMMA"} and total(v8b, "utmaldg") == 0
    assert sum(sum(k["mix"]["ldgsts"].values()) for k in v8b["kernels"]) > 0
    assert v8b["kernels"][0]["dynamic_smem"] == mc.V8B_SMEM and v8b["kernels"][0]["threads"] == 256
    # v8b's 64 KB ring + <= 128 registers keep two CTAs on an sm_80 SM; v8 (padded, 3 stages) is not less occupied
    assert v8b["kernels"][0]["occupancy"]["blocks_per_sm"] == 2
    assert v8b["kernels"][0]["occupancy"]["blocks_per_sm"] >= v8["kernels"][0]["occupancy"]["blocks_per_sm"]


# ------------------------------------------------------------------------------------------------ tile order
TILE_ORDER_MAIN = r"""#include <algorithm>
#include <cstdio>
using std::min;
#define __host__
#define __device__
#define __forceinline__ inline
namespace sm90ws {
#include "ws_order.inc"
}
#include "v8b_order.inc"
int main(int argc, char** argv) {
  for (int ai = 1; ai < argc; ++ai) {
    int tm, tn;
    if (sscanf(argv[ai], "%d,%d", &tm, &tn) != 2) return 2;
    for (int t = 0; t < tm * tn; ++t) {
      int a, b, c, d;
      sm90ws::ws_tile_coords(t, tm, tn, a, b);
      v8b_tile_coords(t, tm, tn, c, d);
      printf("%d %d %d %d %d %d %d\n", tm, tn, t, a, b, c, d);
    }
  }
  return 0;
}
"""
GRIDS = [(1, 1), (1, 7), (7, 1), (8, 8), (9, 5), (17, 3), (64, 32), (33, 65)]


def _check_order(order: list[tuple[int, int]], tm: int, tn: int, group_m: int = 8) -> None:
    """Brute force: a bijection onto the tm x tn tile grid; and locality: any w = min(32, 8*tn) consecutive tiles
    inside one full band of GROUP_M tile rows (CTAs in flight together) touch <= GROUP_M row panels of A and
    <= w/GROUP_M + 1 column panels of B (row-major order: 1-2 rows but w columns)."""
    assert len(order) == tm * tn
    assert sorted(order) == [(m, n) for m in range(tm) for n in range(tn)], "not a bijection"
    band, w = group_m * tn, min(32, group_m * tn)
    for s in range(0, (tm // group_m) * band - w + 1):
        if s // band != (s + w - 1) // band:
            continue
        rows = {m for m, _ in order[s:s + w]}
        cols = {n for _, n in order[s:s + w]}
        assert len(rows) <= group_m and len(cols) <= -(-w // group_m) + 1, ("locality", s, sorted(rows), sorted(cols))


def test_tile_order_is_a_grouped_bijection(tmp_path):
    sm90 = mc.SRC_SM90.path.read_text()
    mm = mc.SRC.path.read_text()
    out = build_and_run(tmp_path, "order", {"ws_order.inc": _section(sm90, "WS_TILE_ORDER_BEGIN", "WS_TILE_ORDER_END"),
                                            "v8b_order.inc": _section(mm, "V8B_TILE_ORDER_BEGIN", "V8B_TILE_ORDER_END"),
                                            "order.cpp": TILE_ORDER_MAIN},
                        [f"{m},{n}" for m, n in GRIDS], std="c++17")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows: dict[tuple[int, int], list[list[int]]] = {}
    for line in out.stdout.splitlines():
        tm, tn, t, a, b, c, d = map(int, line.split())
        rows.setdefault((tm, tn), []).append([t, a, b, c, d])
    assert sorted(rows) == sorted(GRIDS)
    for (tm, tn), lines in rows.items():
        ws = [(a, b) for _, a, b, _, _ in lines]
        v8b = [(c, d) for _, _, _, c, d in lines]
        _check_order(ws, tm, tn)
        _check_order(v8b, tm, tn)
        assert ws == mc.tile_order(tm, tn), (tm, tn)  # the Python model is the kernel's map


def test_tile_order_checker_rejects_wrong_orders():
    # a band that ignores the short last group revisits tiles; a row-major order breaks the grouping
    def short_band_ignored(tm, tn, g=8):
        return [(min((t // (g * tn)) * g + (t % (g * tn)) % g, tm - 1), (t % (g * tn)) // g % tn)
                for t in range(tm * tn)]

    with pytest.raises(AssertionError, match="bijection"):
        _check_order(short_band_ignored(9, 5), 9, 5)
    with pytest.raises(AssertionError, match="locality"):
        _check_order([(t // 40, t % 40) for t in range(16 * 40)], 16, 40)  # row-major: 32 tiles span 32 columns
    _check_order([(t // 3, t % 3) for t in range(40 * 3)], 40, 3)  # ...but with 3 columns row-major is grouped


# ------------------------------------------------------------------------------------------------ epilogue coverage
def _stored(M: int, N: int, bm: int, bn: int, order) -> torch.Tensor:
    """How often each C element is written by the v10/v11 epilogue (2 consumer warpgroups x 4 warps x 32 lanes;
    m64nNk16 accumulator layout: acc[4i + 2e + {0,1}] -> row 16w + lane/4 + 8e, col 8i + 2(lane%4) + {0,1};
    guard row < M && col < N), over every tile of the grouped order."""
    cnt = torch.zeros(M, N, dtype=torch.int32)
    lane = torch.arange(32)
    for pm, pn in order:
        for c in range(2):
            for w in range(4):
                for e in range(2):
                    rows = pm * bm + c * 64 + w * 16 + lane // 4 + 8 * e  # [32]
                    for i in range(bn // 8):
                        for j in range(2):
                            cols = pn * bn + 8 * i + 2 * (lane % 4) + j
                            ok = (rows < M) & (cols < N)
                            cnt.index_put_((rows[ok], cols[ok]), torch.ones(int(ok.sum()), dtype=torch.int32),
                                           accumulate=True)
    return cnt


@pytest.mark.parametrize("M,N,bm,bn", [(1, 8, 128, 256), (129, 264, 128, 256), (200, 136, 128, 128),
                                       (257, 1, 128, 128)])
def test_ws_epilogue_writes_every_element_once(M, N, bm, bn):
    order = mc.tile_order(-(-M // bm), -(-N // bn))
    assert torch.equal(_stored(M, N, bm, bn, order), torch.ones(M, N, dtype=torch.int32))
    # known-wrong: dropping the last tile leaves elements unwritten
    assert (_stored(M, N, bm, bn, order[:-1]) == 0).any()


# ------------------------------------------------------------------------------------------------ v8b on the emulator
EMU_V8B_MAIN = r"""
// ---- bank-conflict probe: each 8-lane phase of an ldmatrix must touch 8 distinct 16-byte bank groups
static std::atomic<long> g_conflicts{0};
static void probe(const WarpX& w) {
  for (int j = 0; j < 4; ++j) {
    unsigned seen = 0;
    for (int l = 0; l < 8; ++l) seen |= 1u << ((((uintptr_t)w.addr[8 * j + l] - (uintptr_t)g_dyn_smem) / 16) % 8);
    if (__builtin_popcount(seen) != 8) ++g_conflicts;
  }
}
inline void ldmatrix_x4_p(uint32_t (&r)[4], const void* p) {
  WarpX& w = g_wx[warp_()]; w.addr[lane_()] = p; wsync(); if (lane_() == 0) probe(w); wsync();
  ldmatrix_x4(r, p);
}
inline void ldmatrix_x4_trans_p(uint32_t (&r)[4], const void* p) {
  WarpX& w = g_wx[warp_()]; w.addr[lane_()] = p; wsync(); if (lane_() == 0) probe(w); wsync();
  ldmatrix_x4_trans(r, p);
}
#define __host__
using std::min;
#define ldmatrix_x4_trans ldmatrix_x4_trans_p
#define ldmatrix_x4(r, p) ldmatrix_x4_p(r, p)
#include "v8b.inc"
#undef ldmatrix_x4
#undef ldmatrix_x4_trans

int main(int argc, char** argv) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  int fails = 0;
  for (int ai = 1; ai < argc; ++ai) {
    int M, N, K, off;
    if (sscanf(argv[ai], "%d,%d,%d,%d", &M, &N, &K, &off) != 4) return 2;
    std::vector<__half> Ab(M * K + 8), Bb(K * N + 8), Cb(M * N + 8);
    for (auto& v : Ab) v = (__half)nd(rng);
    for (auto& v : Bb) v = (__half)nd(rng);
    const __half* A = Ab.data() + off; const __half* B = Bb.data() + off; __half* C = Cb.data() + off;
    std::vector<double> ref(M * N);
    for (int i = 0; i < M; ++i) for (int j = 0; j < N; ++j) { double a = 0; for (int k = 0; k < K; ++k) a += (double)A[i*K+k]*(double)B[k*N+j]; ref[i*N+j] = a; }
    for (auto& c : Cb) c = (__half)NAN;
    const int NT = 256, tiles = ((M + 127) / 128) * ((N + 127) / 128);
    g_conflicts = 0;
    for (int t = 0; t < tiles; ++t) {
      blockIdx = {(unsigned)t, 0, 0};
      std::barrier<> bar(NT); g_bar = &bar;
      g_wbar.clear(); for (int w = 0; w < NT / 32; ++w) g_wbar.emplace_back(new std::barrier<>(32));
      memset(g_dyn_smem, 0xff, sizeof(g_dyn_smem));
      std::vector<std::thread> th;
      for (int i = 0; i < NT; ++i) th.emplace_back([&, i] {
        threadIdx = {(unsigned)i, 0, 0}; cur.clear(); groups.clear();
        hgemm_v8b_mma_swizzle<__half, 128, 128, 32, 2, 4, 4>(A, B, C, M, N, K);
        if (!groups.empty() || !cur.empty()) { printf("pending cp.async at exit\n"); abort(); }
      });
      for (auto& x : th) x.join();
    }
    double num = 0, den = 0; int nan = 0;
    for (int i = 0; i < M * N; ++i) { double o = (double)C[i]; if (!std::isfinite(o)) ++nan; double d = o - ref[i]; num += d*d; den += ref[i]*ref[i]; }
    bool guard = std::isnan((float)Cb[off ? 0 : M * N]);
    double rel = std::sqrt(num / den);
    bool ok = nan == 0 && rel < 2e-3 && guard;
    fails += !ok;
    printf("v8b %dx%dx%d off=%d rel=%.3g unwritten=%d guard=%d conflicts=%ld %s\n", M, N, K, off, rel, nan, guard,
           (long)g_conflicts, ok ? "ok" : "FAIL");
  }
  return fails != 0;
}
"""


def _emu_v8b(tmp_path, src: str, args: list[str]) -> str:
    inc = _section(src, V8B_BEGIN, None)
    assert V8B_SMEM_DECL in inc
    inc = inc.replace(V8B_SMEM_DECL, "unsigned char* smem_raw = g_dyn_smem;")
    prefix = EMU_V8[: EMU_V8.index('#include "v8.inc"')].replace("#include <vector>", "#include <vector>\n#include <atomic>")
    prefix = prefix.replace("#define __launch_bounds__(x)", "#define __launch_bounds__(...)")
    return _build_and_run(tmp_path, "emu_v8b", prefix + EMU_V8B_MAIN, "v8b.inc", inc, args)


V8B_EMU_SHAPES = ["1,33,17,0", "65,72,200,0", "65,72,200,1", "130,136,72,0", "136,264,40,0"]


def test_v8b_on_cpu_emulator_correct_and_conflict_free(tmp_path):
    # element-wise (K odd), cp.async ring with 7 slices > 4 stages, misaligned fallback, edge tiles in M and N, and
    # 2x3 tiles (a 1-D grid in grouped order)
    out = _emu_v8b(tmp_path, mc.SRC.path.read_text(), V8B_EMU_SHAPES)
    assert out.count(" ok") == len(V8B_EMU_SHAPES), out
    assert out.count("conflicts=0 ") == len(V8B_EMU_SHAPES), out


def test_v8b_emulator_flags_unswizzled_b(tmp_path):
    """Known-wrong: without B's XOR the layout is still a valid (bijective) layout, so the product stays right, but
    every ldmatrix.trans phase reads 8 rows from one bank group: the probe must count conflicts."""
    src = mc.SRC.path.read_text()
    key = "return r * BN + (((n >> 3) ^ (r & 7)) << 3) + (n & 7);"
    assert key in src
    out = _emu_v8b(tmp_path, src.replace(key, "return r * BN + n;"), ["130,136,72,0"])
    assert " ok" in out and "conflicts=0 " not in out, out


def test_new_variants_registered_and_marked_unverified():
    p = _Collect()
    mc.register_cuda_variants(p)
    v = p.variants
    assert v["cuda_v8b_mma_swizzle"]["ladder"] == 8 and v["cuda_v8b_mma_swizzle"]["dtypes"] == ("fp16", "bf16")
    assert v["cuda_v10_wgmma_ws"]["ladder"] == 10 and v["cuda_v10_wgmma_ws"]["dtypes"] == ("fp16", "bf16")
    assert v["cuda_v11_fp8_wgmma"]["ladder"] == 11 and v["cuda_v11_fp8_wgmma"]["dtypes"] == ("fp8",)
    assert "(GPU-unverified)" in v["cuda_v8b_mma_swizzle"]["description"]
    for name in ("cuda_v10_wgmma_ws", "cuda_v11_fp8_wgmma", "cuda_v11_fp8_wgmma_relayout"):  # tests/test_ptx90.py
        assert v[name]["description"].startswith("(CPU-verified, GPU-pending)"), name
    # the relayout record is not a rung: the same kernel, its B made K-major inside the timed call
    assert v["cuda_v11_fp8_wgmma_relayout"].get("ladder") is None
    assert v["cuda_v11_fp8_wgmma_relayout"]["kernel"] == v["cuda_v11_fp8_wgmma"]["kernel"]
    assert v["cuda_v8b_mma_swizzle"]["supports"](Shape(M=8192, N=8192, K=8192), "bf16") is None


# Persistent-grid shapes: more tiles than SMs (each CTA runs several tiles, the ring phase carries over), M and N
# tails, K not a multiple of BK (64 for v10, 128 for v11), one-tile and one-row cases.
WS_SHAPES = [(1, 8, 8), (127, 264, 72), (1928, 4104, 200), (2048, 2048, 64), (300, 520, 1032)]
FP8_SHAPES = [(1, 16, 16), (31, 64, 96), (129, 200, 272), (1928, 2056, 400), (2048, 2048, 128)]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("M,N,K", WS_SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in WS_SHAPES])
def test_v10_persistent_matches_float64(M, N, K):
    p = _Collect()
    mc.register_cuda_variants(p)
    v = p.variants["cuda_v10_wgmma_ws"]
    shape = Shape(M=M, N=N, K=K)
    if v["supports"](shape, "bf16") is not None:
        pytest.skip(v["supports"](shape, "bf16"))
    g = torch.Generator(device="cuda").manual_seed(M + 7 * N + 13 * K)
    for dname in ("fp16", "bf16"):
        a = torch.randn(M, K, device="cuda", generator=g).to(DT[dname])
        b = (torch.randn(K, N, device="cuda", generator=g) / K**0.5).to(DT[dname])
        c = torch.full((M, N), float("nan"), device="cuda", dtype=DT[dname])
        v["fn"]({"a": a, "b": b}, {"c": c}, shape)
        torch.cuda.synchronize()
        ref = a.double() @ b.double()
        assert torch.isfinite(c).all(), (dname, (~torch.isfinite(c)).nonzero()[:3].tolist())
        rel = ((c.double() - ref).norm() / ref.norm()).item()
        assert rel <= TOL[dname], (dname, rel)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("M,N,K", FP8_SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in FP8_SHAPES])
def test_v11_fp8_matches_float64(M, N, K):
    from harness.families.matmul import make_inputs

    p = _Collect()
    mc.register_cuda_variants(p)
    v = p.variants["cuda_v11_fp8_wgmma"]
    shape = Shape(M=M, N=N, K=K)
    if v["supports"](shape, "fp8") is not None:
        pytest.skip(v["supports"](shape, "fp8"))
    ins = make_inputs(shape, "fp8", 0, torch.device("cuda"))
    c = torch.full((M, N), float("nan"), device="cuda", dtype=torch.bfloat16)
    v["fn"](ins, {"c": c}, shape)
    torch.cuda.synchronize()
    ref = (ins["a"].double() * ins["a_scale"].double()) @ (ins["b"].double() * ins["b_scale"].double())
    assert torch.isfinite(c).all(), (~torch.isfinite(c)).nonzero()[:3].tolist()
    rel = ((c.double() - ref).norm() / ref.norm()).item()
    assert rel <= 1e-2, rel  # bf16 output rounding (~3e-3) dominates once the slices are promoted to fp32

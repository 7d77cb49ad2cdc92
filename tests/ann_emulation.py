"""cuda_src/ann.cu run on the CPU: the file itself (with topk.cuh and common.cuh's warp reduction) compiled by g++
around shims of the CUDA primitives it uses, one std::thread per CUDA thread (tests/gxx.py's approach).

The shims follow the CUDA C++ Programming Guide, not the kernels: ``__syncthreads`` is a barrier of the block's 256
threads, ``__syncwarp`` one of the warp's 32; ``__shfl_xor_sync(mask, v, m)`` returns lane (lane ^ m)'s ``v`` and
``__ballot_sync(mask, p)`` sets bit i for every lane i whose p is non-zero (full masks only: all ann.cu uses), each
through a per-warp exchange slot between two warp barriers; ``__popc`` counts bits; ``__float_as_uint`` /
``__uint_as_float`` reinterpret bits; ``__shared__`` variables are one copy per kernel (blocks run one after
another), dynamic shared memory one buffer filled with 0xFF (NaN) before every block. Issue 27's interpret mode will
run the file through the harness itself; until then this is how its CUDA variant is seen to be right here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from harness.cuda import CUDA_SRC
from tests.gxx import build_and_run, section

SHIM = r"""
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>
struct dim3_ { unsigned x = 0, y = 0, z = 0; };
thread_local dim3_ threadIdx;
dim3_ blockIdx, blockDim;
static std::barrier<>* g_bar;
static std::vector<std::unique_ptr<std::barrier<>>> g_wbar;
alignas(64) static unsigned char g_dyn_smem[256 * 1024];
#define __global__
#define __device__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __restrict__
#define __shared__ static
#define __syncthreads() g_bar->arrive_and_wait()
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
static inline int lane_() { return threadIdx.x % 32; }
static inline std::barrier<>& wbar() { return *g_wbar[threadIdx.x / 32]; }
inline void __syncwarp(unsigned = 0xffffffffu) { wbar().arrive_and_wait(); }
static uint64_t g_slot[32][32];
template <typename T> inline T exchange(T v, int src) {
  uint64_t* slot = g_slot[threadIdx.x / 32];
  uint64_t b = 0; memcpy(&b, &v, sizeof(T)); slot[lane_()] = b;
  wbar().arrive_and_wait();
  uint64_t r = slot[src];
  wbar().arrive_and_wait();
  T out; memcpy(&out, &r, sizeof(T)); return out;
}
template <typename T> inline T __shfl_xor_sync(unsigned, T v, int m) { return exchange(v, lane_() ^ m); }
inline unsigned __ballot_sync(unsigned, int p) {
  uint64_t* slot = g_slot[threadIdx.x / 32];
  slot[lane_()] = p != 0;
  wbar().arrive_and_wait();
  unsigned m = 0;
  for (int i = 0; i < 32; ++i) m |= (unsigned)(slot[i] != 0) << i;
  wbar().arrive_and_wait();
  return m;
}
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
"""

MAIN = r"""
template <typename T> std::vector<T> load(const std::string& dir, const char* name, size_t n) {
  std::vector<T> v(n ? n : 1);
  if (!n) return v;
  FILE* f = fopen((dir + "/" + name).c_str(), "rb");
  if (!f || fread(v.data(), sizeof(T), n, f) != n) { fprintf(stderr, "cannot read %s\n", name); exit(2); }
  fclose(f);
  return v;
}
template <typename T> void save(const std::string& dir, const char* name, const std::vector<T>& v) {
  FILE* f = fopen((dir + "/" + name).c_str(), "wb");
  fwrite(v.data(), sizeof(T), v.size(), f);
  fclose(f);
}
template <class F> void run_grid(int blocks, F kernel) {
  const int NT = 256;
  blockDim = {(unsigned)NT, 1, 1};
  for (int b = 0; b < blocks; ++b) {
    blockIdx = {(unsigned)b, 0, 0};
    std::barrier<> bar(NT);
    g_bar = &bar;
    g_wbar.clear();
    for (int w = 0; w < NT / 32; ++w) g_wbar.emplace_back(new std::barrier<>(32));
    memset(g_dyn_smem, 0xff, sizeof(g_dyn_smem));
    std::vector<std::thread> th;
    for (int t = 0; t < NT; ++t) th.emplace_back([&, t] { threadIdx = {(unsigned)t, 0, 0}; kernel(); });
    for (auto& x : th) x.join();
  }
}
#define KB_DISPATCH(KBV, CALL) \
  if (KBV == 32) { constexpr int KB = 32; CALL; } else if (KBV == 128) { constexpr int KB = 128; CALL; } \
  else if (KBV == 256) { constexpr int KB = 256; CALL; } else { fprintf(stderr, "KB %d\n", KBV); return 2; }

int main(int argc, char** argv) {
  std::string mode = argv[1], dir = argv[2];
  if (mode == "none") return 0;  // the build's smoke run
  std::vector<long long> a;
  for (int i = 3; i < argc; ++i) a.push_back(atoll(argv[i]));
  if (mode == "select") {  // KB Q nlist nprobe
    int kb = a[0], Q = a[1], nlist = a[2], nprobe = a[3];
    auto cd = load<float>(dir, "cd.bin", (size_t)Q * nlist);
    std::vector<long long> probe((size_t)Q * nprobe, -7);
    KB_DISPATCH(kb, run_grid((Q + 7) / 8, [&] { ann_select<KB>(cd.data(), Q, nlist, nprobe, probe.data()); }));
    save(dir, "probe_out.bin", probe);
    return 0;
  }
  // flat: KB Q D N nlist nprobe k vec4 | pq: KB Q D N nlist nprobe k m kr rerank vec
  int kb = a[0], Q = a[1], D = a[2], N = a[3], nlist = a[4], nprobe = a[5], k = a[6];
  auto x = load<float>(dir, "x.bin", (size_t)Q * D);
  auto probe = load<long long>(dir, "probe.bin", (size_t)Q * nprobe);
  auto off = load<long long>(dir, "off.bin", nlist + 1);
  auto ids = load<long long>(dir, "ids.bin", N);
  std::vector<float> od((size_t)Q * k, NAN);
  std::vector<long long> oi((size_t)Q * k, -7);
  if (mode == "flat") {
    int vec4 = a[7];
    auto vecs = load<float>(dir, "vecs.bin", (size_t)N * D);
    KB_DISPATCH(kb, run_grid(Q, [&] { ann_flat_scan<KB>(x.data(), probe.data(), off.data(), vecs.data(), ids.data(),
                                                       D, nprobe, k, vec4, od.data(), oi.data()); }));
  } else {
    int m = a[7], kr = a[8], rerank = a[9];
    auto cent = load<float>(dir, "cent.bin", (size_t)nlist * D);
    auto codes = load<unsigned char>(dir, "codes.bin", (size_t)N * m);
    auto cb = load<float>(dir, "cb.bin", (size_t)m * 256 * (D / m));
    auto base = load<float>(dir, "base.bin", (size_t)N * D);
    int vec = a[10];
    KB_DISPATCH(kb, run_grid(Q, [&] { ann_pq_scan<KB>(x.data(), cent.data(), probe.data(), off.data(), codes.data(),
                                                     cb.data(), ids.data(), base.data(), D, m, nprobe, k, kr, rerank,
                                                     vec, od.data(), oi.data()); }));
  }
  save(dir, "dist_out.bin", od);
  save(dir, "idx_out.bin", oi);
  return 0;
}
"""


def source() -> str:
    """The emulator: shims, common.cuh's warp reduction, topk.cuh and ann.cu (their #include lines dropped; each
    ``extern __shared__ T name[];`` pointed at the shared dynamic buffer), then the driver."""
    common = section((CUDA_SRC / "common.cuh").read_text(), "// ---- warp-level reductions", "// Block-wide")
    body = "\n".join((CUDA_SRC / f).read_text() for f in ("topk.cuh", "ann.cu"))
    body = re.sub(r"^#include .*$|^#pragma once$", "", body, flags=re.M)
    body, n = re.subn(r"extern __shared__ (unsigned long long|float|unsigned char) (\w+)\[\];",
                      r"\1* \2 = reinterpret_cast<\1*>(g_dyn_smem);", body)
    assert n == 3, n  # ann_select, ann_flat_scan, ann_pq_scan
    return SHIM + common + body + MAIN


class Emulator:
    """Builds the emulator once into ``tmp`` and runs ann.cu's kernels on CPU tensors."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        res = build_and_run(tmp, "ann_emu", {"ann_emu.cpp": source()}, ["none", str(tmp)])
        assert res.returncode == 0, res.stderr[-2000:]
        self.exe = tmp / "ann_emu"

    def _run(self, args: list) -> None:
        import subprocess

        r = subprocess.run([str(self.exe), *map(str, args)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]

    def _put(self, name: str, t: torch.Tensor) -> None:
        t.detach().cpu().contiguous().numpy().tofile(self.tmp / name)

    def _get(self, name: str, dtype, shape) -> torch.Tensor:
        return torch.from_numpy(np.fromfile(self.tmp / name, dtype=dtype).reshape(shape))

    def select(self, x: torch.Tensor, cent: torch.Tensor, nprobe: int) -> torch.Tensor:
        """The launcher's coarse step: |c|² − 2x·c in fp32 (cuBLAS there, torch here), ann_select on the CPU."""
        from harness.families._ann_cuda import SELECT_KBS, _kb

        Q, nlist = x.shape[0], cent.shape[0]
        self._put("cd.bin", ((cent * cent).sum(1)[None, :] - 2.0 * (x @ cent.T)).float())
        self._run(["select", self.tmp, _kb(nprobe, SELECT_KBS), Q, nlist, nprobe])
        return self._get("probe_out.bin", np.int64, (Q, nprobe))

    def search(self, inputs: dict, shape, probe: torch.Tensor | None = None, **over) -> dict[str, torch.Tensor]:
        """ann.cu's whole search as the launcher runs it (``over`` replaces inputs: known-wrong variants)."""
        from harness.families._ann_cuda import KBS, _kb

        inp = {**inputs, **over}
        x = inp["x"]
        Q, D = x.shape
        k = min(shape.k, shape.N)
        if probe is None:
            probe = self.select(x, inp["centroids"], shape.nprobe) if shape.nprobe < shape.nlist else \
                torch.arange(shape.nlist).expand(Q, -1).contiguous()
        for name, key in (("x.bin", "x"), ("off.bin", "list_offsets"), ("ids.bin", "list_ids")):
            self._put(name, inp[key])
        self._put("probe.bin", probe)
        common = [_kb(k, KBS), Q, D, shape.N, shape.nlist, probe.shape[1], k]
        if shape.index == "flat":
            self._put("vecs.bin", inp["list_vecs"])
            self._run(["flat", self.tmp, *common, int(D % 4 == 0)])
        else:
            kr = min(shape.N, k * shape.rerank) if shape.rerank > 0 else k
            common[0] = _kb(kr, KBS)
            for name, key in (("cent.bin", "centroids"), ("codes.bin", "list_codes"), ("cb.bin", "codebooks"),
                              ("base.bin", "base")):
                self._put(name, inp[key])
            self._run(["pq", self.tmp, *common, shape.m, kr, int(shape.rerank > 0), 1])
        return {"dist": self._get("dist_out.bin", np.float32, (Q, k)),
                "idx": self._get("idx_out.bin", np.int64, (Q, k)), "probe": probe}

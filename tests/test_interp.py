"""The CUDA interpreter (harness/interp): real .cu kernels on the CPU with memcheck, racecheck and synccheck.

A known-wrong suite (tests/fixtures/interp/known_wrong.cu): every wrong kernel is caught by the right check with its
one-line message (kernel, block, thread, source line), and every correct twin passes over 10 seeds with the right
numbers. Then the extension points issue 28 builds on (extension.cu), the source rewriter, the 16-bit and fp8
conversions against torch's, and a student's five-kernel SGEMM file end to end through the runner and its judge.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest
import torch

from harness import interp
from harness.cuda import CudaSource, i64, ptr
from harness.interp import KernelFault, NotInterpreted
from harness.interp import rewrite as rw

FIX = Path(__file__).resolve().parent / "fixtures"
KNOWN = FIX / "interp" / "known_wrong.cu"
EXT = FIX / "interp" / "extension.cu"
SEEDS = range(10)


def line_of(path: Path, tag: str) -> int:
    for i, ln in enumerate(path.read_text().splitlines(), 1):
        if tag in ln:
            return i
    raise AssertionError(tag)


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("WB_CUDA_INTERPRET", "1")


KNOWN_KERNELS = ["oob_write", "in_bounds_write", "tiled_rowsum<false>", "tiled_rowsum<true>", "neighbour<false>",
                 "neighbour<true>", "warp_neighbour<false>", "warp_neighbour<true>", "branchy_barrier<true>",
                 "branchy_barrier<false>", "early_exit", "warp_sum<false>", "warp_sum<true>", "shuffle_after_exit",
                 "collective_vs_barrier", "vec_load", "dyn_smem", "fill", "traps", "histogram", "votes",
                 "last_block", "tickets", "asserts", "big_smem"]
EXT_KERNELS = ["rendezvous_swap", "warpgroup_sum", "wait_flag<true>", "wait_flag<false>", "async_copy_kernel<0>",
               "async_copy_kernel<1>", "async_copy_kernel<2>", "async_copy_kernel<3>", "async_copy_kernel<4>",
               "checked", "ptx_lane"]


@pytest.fixture(scope="module")
def known():
    src = CudaSource(KNOWN)
    return {n: src.kernel(n) for n in KNOWN_KERNELS}


@pytest.fixture(scope="module")
def ext():
    src = CudaSource(EXT)
    return {n: src.kernel(n) for n in EXT_KERNELS}


def fault_of(fn, *a, **kw) -> KernelFault:
    with pytest.raises(KernelFault) as e:
        fn(*a, **kw)
    return e.value


# ----------------------------------------------------------------------------------------------- memcheck
def test_out_of_bounds_write_names_buffer_offset_thread_and_line(known):
    out = torch.full((100,), float("nan"))
    interp.set_call(1, {"out": out})
    e = fault_of(known["oob_write"], 1, 128, out, 100)
    assert e.kind == "memcheck"
    assert str(e) == ("memcheck: out-of-bounds write of 4 bytes at out+400 (out is 400 bytes) in oob_write block "
                      f"(0,0,0) thread (100,0,0) at known_wrong.cu:{line_of(KNOWN, 'LINE_OOB')}")
    for seed in SEEDS:
        interp.set_call(seed, {"out": out})
        known["in_bounds_write"](1, 128, out, 100)
        assert torch.equal(out, 2 * torch.arange(100.0))


def test_misaligned_float4_load_and_the_aligned_one(known):
    x = torch.randn(4 * 32 + 4)
    out = torch.empty(32)
    interp.set_call(0, {"x": x, "out": out})
    e = fault_of(known["vec_load"], 1, 32, x, out, 1)
    assert e.kind == "memcheck" and re.match(r"memcheck: misaligned (load of|access to) float4 at x\+\d+ \(x is 528 "
                                             r"bytes\) \(address % 16 = 4\) in vec_load block \(0,0,0\) thread "
                                             rf"\(\d+,0,0\) at known_wrong.cu:{line_of(KNOWN, 'LINE_ALIGN')}$", str(e))
    known["vec_load"](1, 32, x, out, 0)
    assert torch.allclose(out, x[:128].view(32, 4).sum(1))


def test_dynamic_shared_memory_is_as_large_as_the_launch_says(known):
    x, out = torch.randn(64), torch.empty(64)
    interp.set_call(0, {"x": x, "out": out})
    e = fault_of(known["dyn_smem"], 1, 32, x, out, 64, shared=32 * 4)
    assert e.kind == "memcheck" and "out-of-bounds shared read of 4 bytes at dynamic shared memory+" in str(e)
    assert "(the launch gave 128 bytes)" in str(e)
    known["dyn_smem"](1, 32, x, out, 32, shared=32 * 4)
    assert torch.equal(out[:32], x[:32].flip(0))


def test_half_grid_leaves_the_poison_for_the_judge(known):
    out = torch.full((1000,), float("nan"))
    known["fill"](2, 256, out, 1000)  # 512 threads for 1000 elements: no check fires, half the output is never written
    assert torch.equal(out[:512], torch.arange(1.0, 513.0)) and torch.isnan(out[512:]).all()


# ----------------------------------------------------------------------------------------------- racecheck
def test_missing_second_barrier_is_a_write_after_read_race(known):
    x = torch.randn(4 * 3 * 64)
    out = torch.empty(4 * 64)
    interp.set_call(3, {"x": x, "out": out})
    e = fault_of(known["tiled_rowsum<false>"], 4, 64, x, out, 0, 3)
    # the next tile's write meets a read of the previous one: which side the schedule reaches first decides the name
    m = re.match(r"racecheck: shared-memory race \((write-after-read|read-after-write)\) on tile\+0x[0-9a-f]+ in "
                 r"tiled_rowsum<false> block \(\d,0,0\) between thread \(\d+,0,0\) at known_wrong.cu:(\d+) and "
                 r"thread \(\d+,0,0\) at known_wrong.cu:(\d+)$", str(e))
    assert m and {int(m.group(2)), int(m.group(3))} == {line_of(KNOWN, "LINE_TILE_W"), line_of(KNOWN, "LINE_TILE_R")}
    ref = x.view(4, 3, 64).sum(1).sum(1, keepdim=True).expand(4, 64)
    for seed in SEEDS:
        interp.set_call(seed, {"x": x, "out": out})
        known["tiled_rowsum<true>"](4, 64, x, out, 0, 3)
        assert torch.allclose(out.view(4, 64), ref, rtol=1e-5, atol=1e-4)


def test_read_before_the_barrier_is_a_read_after_write_race(known):
    x, out = torch.randn(256), torch.empty(256)
    interp.set_call(0, {"x": x, "out": out})
    e = fault_of(known["neighbour<false>"], 2, 128, x, out)
    line = line_of(KNOWN, "LINE_RACE")
    assert e.kind == "racecheck" and "(read-after-write) on s+0x" in str(e) and f"known_wrong.cu:{line}" in str(e)
    for seed in SEEDS:
        interp.set_call(seed, {"x": x, "out": out})
        known["neighbour<true>"](2, 128, x, out)
        assert torch.equal(out.view(2, 128), x.view(2, 128).roll(-1, 1) - x.view(2, 128))


def test_lanes_of_one_warp_need_a_syncwarp(known):
    x, out = torch.randn(32), torch.empty(32)
    e = fault_of(known["warp_neighbour<false>"], 1, 32, x, out)
    assert e.kind == "racecheck" and "read-after-write" in str(e)
    for seed in SEEDS:
        interp.set_call(seed, {"x": x, "out": out})
        known["warp_neighbour<true>"](1, 32, x, out)
        assert torch.equal(out, x.roll(-1))


def test_atomics_are_exempt_and_votes_count(known):
    x = torch.randint(0, 1000, (5000,), dtype=torch.int32)
    for seed in SEEDS:
        bins = torch.zeros(8, dtype=torch.int32)
        interp.set_call(seed, {"x": x, "bins": bins})
        known["histogram"](3, 128, x, bins, 5000)
        assert torch.equal(bins, torch.bincount(x & 7, minlength=8).int())
    p = (torch.arange(64) % 3 == 0).int()
    out = torch.zeros(4, dtype=torch.int32)
    known["votes"](1, 64, p, out)
    ballot = sum(1 << i for i in range(32) if p[i])
    assert out.tolist() == [ballot - (1 << 32 if ballot >= 1 << 31 else 0), 1, 0, int(p.sum())]


# ----------------------------------------------------------------------------------------------- synccheck
def test_barrier_inside_a_branch_is_divergence(known):
    x, out = torch.randn(64), torch.empty(64)
    e = fault_of(known["branchy_barrier<true>"], 1, 64, x, out)
    a, b = line_of(KNOWN, "LINE_BRANCH"), line_of(KNOWN, "LINE_SECOND")
    assert e.kind == "synccheck" and "barrier divergence in branchy_barrier<true> block (0,0,0)" in str(e)
    assert {f"known_wrong.cu:{a}", f"known_wrong.cu:{b}"} <= set(re.findall(r"known_wrong.cu:\d+", str(e)))
    for seed in SEEDS:
        interp.set_call(seed, {"x": x, "out": out})
        known["branchy_barrier<false>"](1, 64, x, out)
        assert torch.equal(out, x.flip(0))


def test_early_return_before_a_barrier_is_allowed(known):
    x, out = torch.randn(64), torch.full((64,), -1.0)
    for seed in SEEDS:
        interp.set_call(seed, {"x": x, "out": out})
        known["early_exit"](1, 64, x, out, 40)
        assert torch.equal(out[:40], x[:40].roll(-1)) and (out[40:] == -1).all()


def test_wrong_shuffle_mask_is_caught(known):
    x, out = torch.randn(32), torch.empty(1)
    e = fault_of(known["warp_sum<false>"], 1, 32, x, out)
    assert e.kind == "synccheck" and "__shfl_down_sync" in str(e)
    assert re.search(r"the mask 0x0000ffff does not name the calling lane (1[6-9]|2\d|3[01]) ", str(e))
    assert f"__shfl_down_sync at known_wrong.cu:{line_of(KNOWN, 'LINE_SHFL')}:" in str(e)
    e = fault_of(known["shuffle_after_exit"], 1, 32, x, torch.empty(32))
    assert e.kind == "synccheck" and re.match(
        r"synccheck: __shfl_xor_sync at known_wrong.cu:\d+: the mask 0xffffffff names lane (1[6-9]|2\d|3[01]) "
        r"\(thread \(\d+,0,0\)\), which has exited in shuffle_after_exit block \(0,0,0\) thread \(\d+,0,0\)$", str(e))
    for seed in SEEDS:
        interp.set_call(seed, {"x": x, "out": out})
        known["warp_sum<true>"](1, 32, x, out)
        assert torch.allclose(out, x.sum().view(1), rtol=1e-5, atol=1e-5)


def test_deadlock_names_who_waits_where(known):
    e = fault_of(known["collective_vs_barrier"], 1, 32, torch.empty(32))
    assert e.kind == "synccheck" and "deadlock in collective_vs_barrier block (0,0,0)" in str(e)
    assert "waits for lane 5 (thread (5,0,0)), which waits at __syncthreads" in str(e)


def test_trap_ends_the_launch(known):
    e = fault_of(known["traps"], 1, 32, torch.ones(1, dtype=torch.int32))
    assert e.kind == "trap" and "thread (3,0,0)" in str(e)
    known["traps"](1, 32, torch.zeros(1, dtype=torch.int32))


def test_host_mode_library_with_cudamalloc(known):
    """The file's own host code: cudaMalloc'd memory is device memory (named cudaMalloc#N in messages), copies are
    memcpy, and a fault inside a launch raises from the library call."""
    lib = CudaSource(KNOWN).library()
    f = lib.host_roundtrip
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    x, y = torch.randn(300), torch.empty(300)
    interp.set_call(0, {"x": x, "y": y})
    assert f(ptr(x), ptr(y), 300, 0) == 0 and torch.equal(y, x + 1)
    e = fault_of(f, ptr(x), ptr(y), 300, 1)
    assert re.fullmatch(r"memcheck: out-of-bounds read of 4 bytes at cudaMalloc#\d+\+1200 \(cudaMalloc#\d+ is 1200 "
                        rf"bytes\) in add_one block \(2,0,0\) thread \(44,0,0\) at known_wrong.cu:"
                        rf"{line_of(KNOWN, 'LINE_HOST')}", str(e)), str(e)


def test_device_assert_printf_and_the_shared_memory_opt_in(known, capfd):
    e = fault_of(known["asserts"], 1, 32, torch.tensor([0] * 5 + [-1] + [0] * 26, dtype=torch.int32))
    assert e.kind == "assert" and str(e).startswith("assert: assertion `x[threadIdx.x] >= 0' failed in asserts block")
    assert f"thread (5,0,0) at known_wrong.cu:{line_of(KNOWN, 'LINE_ASSERT')}" in str(e)
    known["asserts"](3, 32, torch.tensor([7] * 32, dtype=torch.int32))
    assert capfd.readouterr().out.count("hello from block") == 3
    out = torch.empty(64)
    k = known["big_smem"]
    k(1, 64, out, shared=64 * 1024)  # above 48 KB: the launcher opts in (cudaFuncSetAttribute), as on a GPU
    e = fault_of(k.src.interp_library().launch, "big_smem", (1, 1, 1), (64, 1, 1), 64 * 1024, (out,))  # no opt-in
    assert e.kind == "launch" and "needs cudaFuncSetAttribute" in str(e)


# ----------------------------------------------------------------------------------------------- scheduling
def test_block_and_thread_order_follow_the_seed(known):
    """Blocks start in a per-seed random order, and so do the threads of a block: the same seed repeats the
    schedule, other seeds change it (a kernel that depends on the order cannot pass by luck)."""
    def schedule(seed: int) -> tuple[list[int], list[int]]:
        counter = torch.zeros(2, dtype=torch.int32)
        blocks, threads = torch.empty(16, dtype=torch.int32), torch.empty(64, dtype=torch.int32)
        interp.set_call(seed, {})
        known["tickets"](16, 64, counter, blocks, threads)
        assert sorted(blocks.tolist()) == list(range(16)) and sorted(threads.tolist()) == list(range(64))
        return blocks.tolist(), threads.tolist()

    assert schedule(1) == schedule(1)
    runs = {str(schedule(s)) for s in range(4)}
    assert len(runs) == 4
    partial, ticket, out = torch.zeros(16), torch.zeros(1, dtype=torch.int32), torch.zeros(1)
    for seed in SEEDS:  # the last block to take a ticket publishes: right whichever block it is
        interp.set_call(seed, {})
        ticket.zero_()
        known["last_block"](16, 32, partial, ticket, out)
        assert out.item() == sum(range(1, 17))


def test_argument_types_and_launch_configuration_are_checked(known):
    out = torch.empty(10)
    e = fault_of(known["in_bounds_write"], 1, 32, out, i64(10))
    assert e.kind == "launch" and "parameter 1 (int) takes 4 bytes, got 8" in str(e)
    e = fault_of(known["in_bounds_write"], 1, 2048, out, 10)
    assert e.kind == "launch" and "invalid configuration" in str(e)


# ----------------------------------------------------------------------------------------------- extension points
def test_warp_and_warpgroup_rendezvous(ext):
    x, out = torch.randn(32), torch.empty(32)
    ext["rendezvous_swap"](1, 32, x, out)
    assert torch.equal(out, x.view(16, 2).flip(1).reshape(32))
    x, out = torch.randn(512), torch.empty(512)
    ext["warpgroup_sum"](2, 256, x, out)
    assert torch.allclose(out.view(4, 128), x.view(4, 128).double().sum(1, keepdim=True).float().expand(4, 128))


def test_wait_until_blocks_and_deadlocks(ext):
    x, out, box = torch.tensor([2.0]), torch.empty(32), torch.zeros(1)
    for seed in SEEDS:
        interp.set_call(seed, {})
        ext["wait_flag<true>"](1, 32, x, out, box)
        assert (out == 6.0).all()
    e = fault_of(ext["wait_flag<false>"], 1, 32, x, out, box)
    assert e.kind == "synccheck" and "waits for the ready flag" in str(e) and "extension.cu" in str(e)


def test_async_copies_land_late_and_are_shadowed(ext):
    x, out = torch.randn(64), torch.empty(64)
    for seed in SEEDS:
        interp.set_call(seed, {"x": x})
        ext["async_copy_kernel<0>"](1, 64, x, out)
        assert torch.equal(out, x.roll(-1))
    ext["async_copy_kernel<3>"](1, 64, x, out)
    assert (out == 0).all()
    e = fault_of(ext["async_copy_kernel<4>"], 1, 64, x, out)
    assert e.kind == "racecheck" and "read before the cp.async wait" in str(e)
    e = fault_of(ext["async_copy_kernel<1>"], 1, 64, x, out)
    assert e.kind == "racecheck" and "in-flight async copy" in str(e)
    e = fault_of(ext["async_copy_kernel<2>"], 1, 64, x, out)  # a neighbour's copy, read without a barrier
    assert e.kind == "racecheck" and re.search(r"\((read-after-write|write-after-read)\) on s\+", str(e))


def test_checked_access_and_inline_ptx(ext):
    x, out = torch.randn(8), torch.empty(32)
    interp.set_call(0, {"x": x})
    e = fault_of(ext["checked"], 1, 32, x, 8, out)
    assert str(e).startswith("memcheck: out-of-bounds read of 4 bytes at x+32 (x is 32 bytes)")
    assert str(e).endswith("thread (2,0,0) at model_of_ldmatrix:7")
    with pytest.raises(NotInterpreted) as ni:
        ext["ptx_lane"](1, 32, torch.empty(32, dtype=torch.int32))
    assert str(ni.value).startswith("needs pmevent (not interpreted) at extension.cu:")


# ----------------------------------------------------------------------------------------------- rewriter
def _rw(src: str) -> str:
    text = '# 1 "user.cu"\n' + src
    out = rw.rewrite(text, lambda path, flags: path == "user.cu")
    assert out.count("\n") == text.count("\n")  # line numbers survive
    return out


def test_rewriter_launches_shared_and_asm():
    out = _rw("template <int B> __global__ void k(float* x);\nvoid f(float* x, int n) {\n"
              "  k<std::max(1, 2)><<<dim3(n,\n 1), 64, 0, 0>>>(x + 1);\n  g<<<1, 2>>>();\n}\n")
    assert '::wb::kl("k<std::max(1, 2)>", dim3(dim3(n, 1)), dim3(64), (size_t)(0), (cudaStream_t)(0), [&](auto&&... ' \
           'wb_a) { k<std::max(1, 2)>(wb_a...); }, x + 1)' in out
    assert '::wb::kl("g", dim3(1), dim3(2), (size_t)(0), (cudaStream_t)(0), [&](auto&&... wb_a) { g(wb_a...); })' \
        in out
    out = _rw("__global__ void k() {\n  __shared__ __attribute__((aligned(16))) SimtSmem<D, R> sm;\n"
              "  extern __shared__ __attribute__((aligned(16))) unsigned char raw[];\n"
              "  __shared__ float a[4], b[8];\n}\n")
    assert "typedef SimtSmem<D, R> wb_st_1;" in out and "::wb::smem_var<wb_st_1, wb_tag_1, (16)>(\"sm\"" in out
    assert "unsigned char* const raw = reinterpret_cast<unsigned char*>(::wb::dyn_smem());" in out
    assert "typedef float wb_st_2[4];" in out and "typedef float wb_st_3[8];" in out
    out = _rw('void f() {\n  asm volatile("{\\n.reg .pred p;\\nWAIT_%=:\\n"\n'
              '               "mbarrier.inval.b64 [%0];\\n@!p bra WAIT_%=;\\n}" :: "r"(a), "r"(b)'
              ' : "memory");\n  std::exit(1);\n}\n')
    assert '::wb::not_interpreted("mbarrier.inval.b64", ::wb::Loc{"user.cu", 2})' in out
    assert "::wb_exit(1)" in out


def test_asm_parse_gives_handlers_the_operands():
    s = rw.parse_asm('"mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1}, {%2}, {%3}, {%0,%1};\\n"'
                     ' : "+f"(d[0]), "+f"(d[1]) : "r"(a[0]), "r"(b::c) : "memory"', "f.cu", 3)
    assert s.opcode == "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
    assert s.outputs == [("+f", "d[0]"), ("+f", "d[1]")] and s.inputs == [("r", "a[0]"), ("r", "b::c")]
    assert s.clobbers == ["memory"]


# ----------------------------------------------------------------------------------------------- conversions
CONV = r"""
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
__global__ void conv(const float* x, unsigned short* h, unsigned short* b, unsigned char* f8, float* back, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const __half hv = __float2half_rn(x[i]);
    const __nv_bfloat16 bv = __float2bfloat16_rn(x[i]);
    h[i] = __half_as_ushort(hv);
    b[i] = __bfloat16_as_ushort(bv);
    f8[i] = __nv_cvt_float_to_fp8(x[i], __NV_NOSAT, __NV_E4M3);
    back[i] = __half2float(hv) + __bfloat162float(bv);
  }
}
"""


def test_16_bit_and_fp8_conversions_round_like_torch(tmp_path):
    p = tmp_path / "conv.cu"
    p.write_text(CONV)
    k = CudaSource(p).kernel("conv")
    g = torch.Generator().manual_seed(0)
    special = torch.tensor([0.0, -0.0, 65504.0, 65519.9, 65520.0, 1e6, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 2.0**-14,
                            1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 447.0, 448.0, 460.0, 2.0**-9, 2.0**-10, 3.3e38,
                            float("inf"), float("-inf")])
    x = torch.cat([special, torch.randn(2000, generator=g) * torch.logspace(-9, 5, 2000)])
    n = x.numel()
    h, b = torch.empty(n, dtype=torch.int16), torch.empty(n, dtype=torch.int16)
    f8, back = torch.empty(n, dtype=torch.uint8), torch.empty(n)
    k(1, 128, x, h, b, f8, back, n)
    assert torch.equal(h, x.half().view(torch.int16)) and torch.equal(b, x.bfloat16().view(torch.int16))
    fin = x.abs() <= 448
    assert torch.equal(f8[fin], x[fin].to(torch.float8_e4m3fn).view(torch.uint8))
    assert torch.equal(back, x.half().float() + x.bfloat16().float())


# ----------------------------------------------------------------------------------------------- a student's file
STUDENT = FIX / "course" / "student_sgemm" / "kernels.cuh"


@pytest.fixture
def student_variants():
    from harness import byo, registry

    before = set(registry.get_problem("sgemm").variants)
    names = byo.register_all(byo.from_args("sgemm", [str(STUDENT)], None), export=False)
    yield names
    for v in set(registry.get_problem("sgemm").variants) - before:
        registry.get_problem("sgemm").variants.pop(v)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the runner runs these on it, not interpreted")
def test_student_sgemm_file_gets_a_verdict_per_kernel(student_variants):
    """The course layout, unmodified: kernels behind an inline launch_kernel, judged at a ragged shape over three
    seeds. The solutions pass; the stub, the kernel that ignores beta and the half grid are wrong; the row overrun is
    a memcheck error naming C, the offset and its line."""
    from harness.runner import RunOptions, Task, execute

    recs: list[dict] = []
    tasks = [Task("sgemm", n, "fp32", "M=33,N=20,K=17") for n in student_variants]
    execute(tasks, RunOptions(seeds=(11, 12, 13), isolate=False, timing=False), recs.append)
    got = {r["variant"]: r for r in recs}
    assert [got[f"kernels.cuh#{n}"]["status"] for n in range(1, 7)] == \
        ["ok", "ok", "incorrect", "incorrect", "runtime_error", "incorrect"], {k: r["message"] for k, r in got.items()}
    ok = got["kernels.cuh#1"]
    assert ok["interpreted"] and ok["timing"] == "none" and ok["median_ms"] is None and len(ok["seeds"]) == 3
    overrun = got["kernels.cuh#5"]["message"]
    line = line_of(STUDENT, "one row past C")
    assert re.fullmatch(rf"memcheck: out-of-bounds (read|write) of 4 bytes at C\+(26[4-9]\d|27[01]\d) \(C is 2640 "
                        rf"bytes\) in sgemm_row_overrun block \(\d,2,0\) thread \(\d+,\d+,0\) at kernels.cuh:{line}",
                        overrun), overrun


def test_interpreted_records_are_never_timed_points():
    """No speed-up, roofline point or figure point from an interpreted record; the table says cpu-int."""
    from harness import compare
    from harness.records import cells, table_legend
    from roofline.model import achieved_flops
    from roofline.plot import ladder_groups, ok_records

    rec = {"family": "sgemm", "variant": "kernels.cuh#1", "backend": "cuda", "dtype": "fp32", "shape": "M=8,N=8,K=8",
           "status": "ok", "interpreted": True, "timing": "none", "median_ms": None, "tflops": None, "flops": 1e6,
           "bytes": 1e4, "ladder": 1}
    assert ok_records([rec]) == [] and not compare._timed(rec) and achieved_flops(rec) is None
    assert not ladder_groups([rec])
    c = cells(rec)
    assert c["time"] == "cpu-int" and c["backend"] == "cuda-cpu" and c["vs_lib"] == "-"
    assert table_legend([rec], ["variant", "status", "time"])[0].startswith("cpu-int: checked by the CUDA interpreter")

"""Kernel X-ray (harness/xray.py) on the CPU: known facts about compiled kernels, and known-wrong cases for each lint.

One worker call X-rays every record used here (nvcc cubins come from the shared WB_CACHE, Triton compiles for the
target on the CPU); the disk cache makes re-runs cheap.
"""

from __future__ import annotations

import os

import pytest

from harness import xray
from harness.cuda import nvcc_path

pytestmark = pytest.mark.skipif(nvcc_path() is None or xray.tool("cuobjdump") is None,
                                reason="needs nvcc and cuobjdump (compile-only tools)")

FIXTURE = "tests.fixtures.xray_family"
BIG = "M=4096,N=4096,K=4096"
JOBS = {
    "v9": dict(family="matmul", variant="cuda_v9_wgmma", dtype="bf16", shape=BIG, arch="sm_90a"),
    "v8": dict(family="matmul", variant="cuda_v8_mma", dtype="bf16", shape=BIG, arch="sm_90"),
    "v1": dict(family="matmul", variant="cuda_v1_naive", dtype="fp32", shape=BIG, arch="sm_90"),
    "sm_v3": dict(family="softmax", variant="cuda_v3", dtype="bf16", shape="M=4096,N=1024", arch="sm_90"),
    "sm_v1": dict(family="softmax", variant="cuda_v1", dtype="bf16", shape="M=4096,N=1024", arch="sm_90"),
    "tr_bf16": dict(family="matmul", variant="triton_matmul", dtype="bf16", shape=BIG, arch="sm_90a"),
    "tr_tf32": dict(family="xray_fixture", variant="triton_dot_default", dtype="fp32", shape=None, arch="sm_90"),
    "tr_ieee": dict(family="xray_fixture", variant="triton_dot_ieee", dtype="fp32", shape=None, arch="sm_90"),
    "spill": dict(family="xray_fixture", variant="cuda_spill", dtype="fp32", shape=None, arch="sm_90"),
    "plain": dict(family="xray_fixture", variant="cuda_plain", dtype="fp32", shape=None, arch="sm_90"),
    "torch": dict(family="matmul", variant="torch_matmul", dtype="bf16", shape=BIG, arch="sm_90a"),
}


@pytest.fixture(scope="module")
def recs():
    old = os.environ.get("WB_FAMILIES")
    os.environ["WB_FAMILIES"] = ",".join(x for x in (old, FIXTURE) if x)
    xray._close_workers()  # a worker started without the fixture family would not know it
    try:
        keys = list(JOBS)
        raw = xray.raw_xrays([JOBS[k] for k in keys])
        prof = xray.load_profile("h100")
        yield {k: xray.finish(r, prof) for k, r in zip(keys, raw)}
    finally:
        xray._close_workers()
        if old is None:
            os.environ.pop("WB_FAMILIES", None)
        else:
            os.environ["WB_FAMILIES"] = old


def _ok(r):
    assert r["status"] == "ok", r.get("reason")
    return r


def _mix(r, key):
    return sum(k["mix"][key] for k in _ok(r)["kernels"])


def _tensor(r):
    return {op.split(".")[0] for k in _ok(r)["kernels"] for op in k["mix"]["tensor"]}


def test_wgmma_kernel_shows_hgmma_and_tma(recs):
    assert "HGMMA" in _tensor(recs["v9"])
    assert _mix(recs["v9"], "utmaldg") > 0
    assert not any("HGMMA" in line for line in recs["v9"]["lints"])


def test_mma_sync_kernel_shows_hmma_and_ldgsts_not_hgmma(recs):
    r = recs["v8"]
    assert _tensor(r) == {"HMMA"}
    assert sum(sum(k["mix"]["ldgsts"].values()) for k in r["kernels"]) > 0
    # dynamic shared memory comes from the recorded launch (56832 B): 3 stages of A and B tiles
    assert r["kernels"][0]["dynamic_smem"] == 56832


def test_naive_sgemm_is_ffma_only(recs):
    r = recs["v1"]
    assert _mix(r, "ffma") > 0
    assert _mix(r, "tensor_core_ops") == 0 and _mix(r, "hfma2") == 0


def test_softmax_v3_loads_128_bit_and_v1_is_flagged_narrow(recs):
    v3, v1 = _ok(recs["sm_v3"]), _ok(recs["sm_v1"])
    assert v3["kernels"][0]["mix"]["widest_load_bits"] == 128
    assert not any("widest global load" in line for line in v3["lints"])
    assert v1["kernels"][0]["mix"]["widest_load_bits"] < 128
    assert any("widest global load 2 B < 16 B" in line for line in v1["lints"]), v1["lints"]


def test_spilling_kernel_is_flagged_and_plain_one_is_not(recs):
    spill, plain = _ok(recs["spill"]), _ok(recs["plain"])
    k = spill["kernels"][0]
    assert k["spill_bytes"] > 0 and k["mix"]["stl"] > 0 and k["mix"]["ldl"] > 0
    assert any("local memory" in line for line in spill["lints"])
    assert plain["kernels"][0]["spill_bytes"] == 0
    assert not any("local memory" in line for line in plain["lints"])


def test_triton_bf16_matmul_for_sm90a_uses_hgmma(recs):
    r = _ok(recs["tr_bf16"])
    assert "HGMMA" in _tensor(r)
    k = r["kernels"][0]
    # the first tile of the bf16 list (WB_TUNE=0's pick): 128x256x64, 8 warps, 3 stages -> 144 KB of shared memory
    assert k["config"]["BLOCK_M"] == "128" and k["config"]["BLOCK_N"] == "256" and k["threads"] == 256
    assert k["dynamic_smem"] >= 3 * (128 + 256) * 64 * 2
    assert r["floor"]["bound"] == "compute" and r["floor"]["floor_ms"] > 0


def test_triton_fp32_dot_default_precision_is_flagged_tf32(recs):
    bad, good = _ok(recs["tr_tf32"]), _ok(recs["tr_ieee"])
    assert {d["precision"] for d in bad["kernels"][0]["dots"]} == {"tf32"}
    assert any("tf32" in line for line in bad["lints"]), bad["lints"]
    assert {d["precision"] for d in good["kernels"][0]["dots"]} == {"ieee"}
    assert not any("tf32" in line for line in good["lints"])


def test_library_baseline_is_unavailable_with_reason(recs):
    assert recs["torch"]["status"] == "unavailable" and "library" in recs["torch"]["reason"]
    assert xray.compact(recs["torch"]) is None


def test_compact_block(recs):
    b = xray.compact(recs["tr_bf16"])
    assert b["arch"] == "sm_90a" and b["wgmma_ops"] > 0 and b["tensor_core_ops"] >= b["wgmma_ops"]
    assert b["widest_load_bits"] == 128 and b["occupancy"] and b["floor_ms"] > 0
    s = xray.compact(recs["spill"])
    assert s["spill_bytes"] > 0 and s["lints"]


def test_xray_block_cached_and_none_for_baselines(recs):
    j = JOBS["sm_v3"]
    b = xray.xray_block(j["family"], j["variant"], j["dtype"], j["shape"], arch=j["arch"])
    assert b is not None and b["widest_load_bits"] == 128 and b["regs"] > 0
    assert xray.xray_block("matmul", "torch_matmul", "bf16", BIG, arch="sm_90a") is None


# ------------------------------------------------------------------------------------------------ no worker
def test_occupancy_rules():
    full = xray.occupancy("sm_90", 32, 256, 0)
    assert full["occupancy"] == 1.0
    reg = xray.occupancy("sm_90", 140, 256, 8192)  # 144 regs/thread x 256 = 36.9K of 64K: one block
    assert reg["blocks_per_sm"] == 1 and reg["limiter"] == "registers"
    smem = xray.occupancy("sm_90", 32, 128, 100 * 1024)  # 2 x (100 KB + 1 KB) fit in 228 KB, 3 do not
    assert smem["blocks_per_sm"] == 2 and "shared memory" in smem["limiter"]
    assert xray.occupancy("sm_80", 32, 128, 200 * 1024)["blocks_per_sm"] == 0  # over the 163 KB per-block limit
    assert xray.occupancy("sm_89", 32, 1024, 0)["occupancy"] == pytest.approx(32 / 48)  # 1536 threads/SM


def test_sass_parsing():
    lines = ["        /*0070*/                   LDG.E.128 R4, desc[UR4][R2.64] ;",
             "        /*0080*/              @!P0 LDG.E.U16 R8, desc[UR4][R2.64] ;",
             "        /*0090*/                   HGMMA.64x256x16.F32.BF16 R24, gdesc[UR8].tnspB, R24 ;",
             "        /*00a0*/               @P1 STL [R1], R3 ;",
             "        /*00b0*/                   FFMA R1, R2, R3, R4 ;"]
    from harness import hotloop

    ops = [i.op for i in hotloop.parse_sass("\t\tFunction : f\n" + "\n".join(lines))["f"]]  # what X-rays parse
    assert len(ops) == len(lines)
    assert ops[1] == "LDG.E.U16"
    mix = xray.instruction_mix(ops)
    assert mix["ldg"] == {128: 1, 16: 1} and mix["widest_load_bits"] == 128
    assert mix["wgmma_ops"] == 1 and mix["stl"] == 1 and mix["ffma"] == 1


def test_lints_reject_and_accept():
    def rec(**k):
        mix = xray.instruction_mix(k.pop("ops", ["LDG.E.128"]))
        kern = dict(name="k", registers=k.pop("regs", 32), threads=256, spill_bytes=0, stack_bytes=0, local_bytes=0,
                    mix=mix, occupancy=k.pop("occ", xray.occupancy("sm_90", 32, 256, 0)), dots=k.pop("dots", []))
        return {"arch": "sm_90a", "backend": "cuda", "compute_dtype": "bf16", "claims_fp32": False,
                "kernels": [kern], **k}

    mem, comp = {"bound": "memory"}, {"bound": "compute"}
    assert xray.lints(rec(), mem) == []
    assert any("16 B" in x for x in xray.lints(rec(ops=["LDG.E.64"]), mem))
    assert any("wgmma" in x for x in xray.lints(rec(ops=["HMMA.16816.F32.BF16"]), comp))
    assert xray.lints(rec(ops=["HGMMA.64x128x16.F32.BF16"]), comp) == []
    low_regs = xray.occupancy("sm_90", 255, 256, 0)
    assert any("occupancy" in x for x in xray.lints(rec(occ=low_regs), mem))
    low_smem = xray.occupancy("sm_90", 32, 256, 200 * 1024)
    assert not any("occupancy" in x for x in xray.lints(rec(occ=low_smem), mem))
    tf32 = [{"precision": "tf32", "a": "f32", "b": "f32"}]
    assert any("tf32" in x for x in xray.lints(rec(dots=tf32, claims_fp32=True), comp))
    assert not any("tf32" in x for x in xray.lints(rec(dots=tf32, claims_fp32=False), comp))


def test_predicted_floor_uses_the_profile():
    prof = xray.load_profile("h100")
    f = xray.predicted_floor(2 * 4096**3, 3 * 4096 * 4096 * 2, "bf16", prof)
    assert f["bound"] == "compute"
    assert f["floor_ms"] == pytest.approx(2 * 4096**3 / prof.compute_roof("bf16")[0] * 1e3, rel=1e-6)
    f = xray.predicted_floor(5 * 4096 * 1024, 2 * 4096 * 1024 * 2, "bf16", xray.load_profile("h200"))
    assert f["bound"] == "memory" and f["floor_ms"] == pytest.approx(2 * 4096 * 1024 * 2 / 4.8e12 * 1e3, rel=1e-3)


def test_cli_errors():
    from harness.__main__ import CliError, main

    with pytest.raises(CliError, match="arch"):
        main(["inspect", "--kernel", "softmax", "--arch", "sm_75"])
    with pytest.raises(CliError, match="profile"):
        main(["inspect", "--kernel", "softmax", "--profile", "nope"])

"""Roofline package and NVML device layer: formulas, model, figures, CLI (CPU); measurements (GPU-marked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from harness import device as dev_mod
from roofline import ceilings, model
from roofline.ceilings import Profile, known_profile, load_profile, nvml_peak_bandwidth, theoretical_peak

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "roofline_records.json"


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.fixture
def records() -> list[dict]:
    return json.loads(FIXTURE.read_text())


@pytest.fixture
def h100() -> Profile:
    """H100 SXM datasheet profile plus made-up 'measured' roofs (as a GPU run would add)."""
    p = known_profile("H100 SXM")
    p.mem["measured"] = 3.0e12
    p.compute["bf16"]["measured"] = 790e12
    p.compute["fp16"]["measured"] = 780e12
    return p


# ------------------------------------------------------------------------------------------------ ceilings
def test_nvml_bandwidth_formula():
    assert rel(nvml_peak_bandwidth(2619, 5120), 3.352e12) < 1e-3  # H100 SXM (anchors.md)
    assert rel(nvml_peak_bandwidth(1215, 5120), 1.555e12) < 1e-3  # A100 40GB (anchors.md)
    assert rel(nvml_peak_bandwidth(3125, 6144), 4.8e12) < 1e-6  # H200: clock derived from the 4.8 TB/s spec
    assert rel(nvml_peak_bandwidth(3201, 6144), 4.917e12) < 1e-3  # if a board reports 3201 MHz
    assert nvml_peak_bandwidth(2619, 5120) < 4e12  # the x2 applied once, not twice (6.7 TB/s)


@pytest.mark.parametrize(
    "gpu,dtype,tflops,tol",
    [
        ("H100 SXM", "bf16", 989.4, 0.002),  # tensor datasheet clock 1830 MHz = 1980 x 1830/1980
        ("H100 SXM", "fp16", 989.4, 0.002),
        ("H100 SXM", "fp8", 1978.9, 0.002),
        ("H100 SXM", "int8", 1978.9, 0.002),
        ("H100 SXM", "tf32", 494.7, 0.002),
        ("H100 SXM", "fp32", 66.9, 0.002),  # SIMT at the 1980 MHz max boost
        ("H100 PCIe", "bf16", 756.0, 0.005),
        ("H200", "bf16", 989.4, 0.002),
        ("H200", "fp8", 1978.9, 0.002),
        ("A100 SXM 80GB", "bf16", 312.0, 0.002),
        ("A100 SXM 80GB", "tf32", 156.0, 0.002),
        ("A100 SXM 80GB", "int8", 624.0, 0.002),
        ("A100 SXM 80GB", "fp32", 19.5, 0.002),
    ],
)
def test_compute_peaks_match_datasheets(gpu, dtype, tflops, tol):
    p = known_profile(gpu)
    assert rel(p.compute[dtype]["theoretical"] / 1e12, tflops) < tol


DATASHEET_CASES = [(gpu, key, val) for gpu, spec in ceilings.KNOWN_GPUS.items()
                   for key, val in spec["datasheet"].items() if key != "mem"]


@pytest.mark.parametrize("gpu,dtype,tflops", DATASHEET_CASES)
def test_roofs_match_published_datasheets(gpu, dtype, tflops):
    """Every roof formula against the published dense figure (harness.device.KNOWN_GPUS cites the sources):
    datasheets round to 3-4 digits (L4 tf32: '120 TF sparse' = 60 vs 58 x 2040 MHz x 512 = 60.6)."""
    p = known_profile(gpu)
    assert rel(p.compute[dtype]["theoretical"] / 1e12, tflops) < 0.015
    assert p.compute[dtype]["datasheet"] == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize("gpu", list(ceilings.KNOWN_GPUS))
def test_memory_roofs_match_published_datasheets(gpu):
    p = known_profile(gpu)
    assert rel(p.mem["nvml"], p.mem["datasheet"]) < 0.01


def test_geforce_tensor_roofs_are_keyed_on_the_accumulate_type():
    # RTX 4090 (Ada whitepaper): bf16/fp16 with fp32 accumulate 165.2 TF, fp16 accumulate 330.3; fp8 330.3 / 660.6
    g = known_profile("RTX 4090")
    assert rel(g.compute["bf16"]["theoretical"], 165.2e12) < 0.002
    assert rel(g.compute["fp16_acc16"]["theoretical"], 330.3e12) < 0.002
    assert rel(g.compute["fp8"]["theoretical"], 330.3e12) < 0.002
    assert rel(g.compute["fp8_acc16"]["theoretical"], 660.6e12) < 0.002
    # known-wrong: the data-centre table (what the roofline used before) gives the 4090 twice its bf16 roof
    wrong = theoretical_peak("sm_89", "bf16", 128, 2520)
    assert rel(wrong, 165.2e12) > 0.9 and rel(wrong, 330.3e12) < 0.002
    # RTX 3090 (GA102 whitepaper): 71 TF with fp32 accumulate, 142 with fp16 accumulate
    a = known_profile("RTX 3090")
    assert rel(a.compute["fp16"]["theoretical"], 71e12) < 0.005 and rel(a.compute["fp16_acc16"]["theoretical"],
                                                                         142e12) < 0.005
    # a real device_info dict (GeForce from the name, no explicit flag)
    d = {"name": "NVIDIA GeForce RTX 4090", "cc": "8.9", "sm_count": 128, "max_sm_clock_mhz": 2520,
         "max_mem_clock_mhz": 10501, "mem_bus_width_bits": 384}
    p = ceilings.theoretical_profile(d)
    assert p.device["geforce"] and rel(p.compute["bf16"]["theoretical"], 165.2e12) < 0.002
    assert p.compute["bf16"]["datasheet"] == pytest.approx(165.2e12)  # known board: datasheet kept beside
    # a record that accumulates in fp16 is held to the fp16-accumulate roof
    rec = _rec(dtype="fp16", accumulate="fp16", flops=2 * 8192**3, bytes=3 * 8192**2 * 2, median_ms=10.0)
    assert model.record_compute_dtype(rec) == "fp16_acc16"
    assert model.annotate(rec, p)["attainable_tflops"] == pytest.approx(p.compute["fp16_acc16"]["theoretical"] / 1e12)
    # data-centre parts run both at one rate: an L4 lists no separate acc16 roof and falls back to fp16
    l4 = known_profile("L4")
    assert "fp16_acc16" not in l4.compute and l4.compute_roof("fp16_acc16") == l4.compute_roof("fp16")
    assert rel(l4.compute["fp16"]["theoretical"], 121e12) < 0.005


def test_known_gpu_names():
    kg = dev_mod.known_gpu
    assert kg("NVIDIA H100 80GB HBM3") == "H100 SXM" and kg("NVIDIA H100 PCIe") == "H100 PCIe"
    assert kg("NVIDIA H200") == "H200" and kg("NVIDIA H200 NVL") is None
    assert kg("NVIDIA A100-SXM4-80GB") == "A100 SXM 80GB" and kg("NVIDIA A100-PCIE-40GB") == "A100 40GB"
    assert kg("NVIDIA A10") == "A10" and kg("NVIDIA A10G") is None and kg("NVIDIA L4") == "L4"
    assert kg("NVIDIA GeForce RTX 4090") == "RTX 4090" and kg("NVIDIA GeForce RTX 3090 Ti") is None
    assert kg("NVIDIA L40S") is None and kg(None) is None


def test_h200_datasheet_profile():
    p = known_profile("H200")
    assert p.mem["datasheet"] == pytest.approx(4.8e12) and p.mem["nvml"] == pytest.approx(4.8e12)
    assert rel(p.compute["bf16"]["theoretical"], 989.4e12) < 0.002 and p.board_uuid is None
    # the lent board reports a 3201 MHz memory clock: NVML's roof is 2.4% above the datasheet, which stays beside it
    board = ceilings.theoretical_profile({"name": "NVIDIA H200", "cc": "9.0", "sm_count": 132, "uuid": "GPU-h200",
                                          "max_sm_clock_mhz": 1980, "max_mem_clock_mhz": 3201,
                                          "mem_bus_width_bits": 6144})
    assert rel(board.mem["nvml"], 4.917e12) < 1e-3 and board.mem["datasheet"] == pytest.approx(4.8e12)
    assert board.board_uuid == "GPU-h200"


def test_device_facts_live_in_harness_device_one_way():
    import ast

    for mod in ("harness/device.py",):
        tree = ast.parse((ROOT / mod).read_text())
        names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [x for x in names if x.startswith("roofline")], names
    assert ceilings.nvml_peak_bandwidth is dev_mod.nvml_peak_bandwidth and ceilings.arch_of is dev_mod.arch_of


def test_compute_peak_clock_choice():
    # Using NVML's max clock for tensor math would overshoot the datasheet by ~8%: we use 1830 MHz on sm_90.
    assert rel(theoretical_peak("sm_90", "bf16", 132, 1980), 132 * 1830e6 * 4096) < 1e-9
    naive = 132 * 1980e6 * 4096
    assert 1.07 < naive / theoretical_peak("sm_90", "bf16", 132, 1980) < 1.09
    assert known_profile("H100 SXM").compute["bf16"]["clock_mhz"] == 1830.0
    assert theoretical_peak("sm_80", "fp8", 108, 1410) is None  # no fp8 on A100
    assert known_profile("H200").mem["nvml"] == pytest.approx(4.8e12)


def test_flop_tables_cover_archs_and_dtypes():
    for arch in ("sm_80", "sm_86", "sm_89", "sm_90"):
        assert set(ceilings.FLOP_PER_CLK_SM[arch]) == set(ceilings.DTYPES)
    assert ceilings.arch_of("9.0") == "sm_90"
    assert ceilings.arch_of((8, 6)) == "sm_86"
    assert ceilings.arch_of("sm_90a") == "sm_90"
    assert ceilings.arch_of("8.7") == "sm_86"
    assert ceilings.arch_of("10.0") is None  # no silent guess for a new generation
    assert ceilings.arch_of(None) is None


def test_profile_json_roundtrip(tmp_path, h100):
    path = h100.save(tmp_path / "h100" / "profile.json")
    back = load_profile(path)
    assert back.to_dict() == json.loads(json.dumps(h100.to_dict()))
    assert back.mem_roof() == (3.0e12, "measured")
    assert back.compute_roof("bf16") == (790e12, "measured")
    assert back.compute_roof("fp8")[1] == "theoretical"


def test_profile_path_and_get_profile_without_gpu(tmp_path):
    d = {"name": "NVIDIA H100 80GB HBM3", "cc": "9.0", "sm_count": 132, "max_sm_clock_mhz": 1980,
         "max_mem_clock_mhz": 2619, "mem_bus_width_bits": 5120}
    assert ceilings.profile_path(d, tmp_path) == tmp_path / "h100-80gb-hbm3" / "profile.json"
    stored = known_profile("H100 SXM")
    stored.mem["measured"] = 3.01e12
    stored.save(ceilings.profile_path(d, tmp_path))
    assert ceilings.get_profile(tmp_path, measure=False, device=d).mem["measured"] == 3.01e12  # cached wins
    p = ceilings.get_profile(tmp_path / "empty", measure=False, device=d)
    assert p.mem["measured"] is None and rel(p.mem["nvml"], 3.352e12) < 1e-3


# ------------------------------------------------------------------------------------------------ model
def test_attainable_and_ridge(h100):
    th = known_profile("H100 SXM")
    assert rel(model.ridge(th, "bf16"), 295.0) < 0.005  # anchors.md: bf16 ridge 295 FLOP/B
    assert rel(model.ridge(th, "fp8"), 592.0) < 0.005
    assert model.attainable(th, "bf16", 1.0) == pytest.approx(th.mem["nvml"])
    assert model.attainable(th, "bf16", 1e5) == pytest.approx(th.compute["bf16"]["theoretical"])
    # measured roofs win when present
    assert model.attainable(h100, "bf16", 1.0) == pytest.approx(3.0e12)
    assert model.attainable(h100, "bf16", 1e5) == pytest.approx(790e12)
    assert model.ridge(h100, "bf16") == pytest.approx(790e12 / 3.0e12)
    assert model.ridge(h100, "bf16", which="theoretical") == pytest.approx(model.ridge(th, "bf16"))
    assert set(model.ridges(th)) == {"fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8"}


def _rec(**kw):
    r = {"status": "ok", "family": "x", "variant": "v", "backend": "cuda", "dtype": "bf16"}
    r.update(kw)
    return r


def test_annotate_memory_and_compute_bound(h100):
    nbytes = 1e9
    mem = model.annotate(_rec(flops=1e9, bytes=nbytes, median_ms=nbytes / 2.7e12 * 1e3, dtype="fp16"), h100)
    assert mem["bound"] == "memory" and not mem["suspect"]
    assert mem["pct_of_roofline"] == pytest.approx(90.0)
    assert mem["pct_of_theoretical"] == pytest.approx(2.7e12 / h100.mem["nvml"] * 100)
    assert mem["intensity"] == pytest.approx(1.0)
    flops = 2 * 8192**3
    comp = model.annotate(_rec(flops=flops, bytes=3 * 8192**2 * 2, median_ms=flops / 711e12 * 1e3), h100)
    assert comp["bound"] == "compute" and comp["pct_of_roofline"] == pytest.approx(90.0)
    assert comp["attainable_tflops"] == pytest.approx(790.0)
    assert comp["ridge"] == pytest.approx(790 / 3.0)


def test_annotate_flags_above_roof(h100):
    flops = 2 * 4096**3
    r = model.annotate(_rec(flops=flops, bytes=3 * 4096**2 * 2, median_ms=flops / 1.3e15 * 1e3), h100)
    assert r["suspect"] is True and r["pct_of_roofline"] > 100
    assert "above the roofline" in r["suspect_reason"]
    # a memory-bound record faster than DRAM allows (e.g. served from L2) is flagged too
    m = model.annotate(_rec(flops=0, bytes=1e8, median_ms=1e8 / 5e12 * 1e3), h100)
    assert m["bound"] == "memory" and m["suspect"]


def test_annotate_skips_untimed_and_handles_missing(h100):
    assert model.annotate(_rec(status="incorrect", flops=1, bytes=1, median_ms=None), h100) == {}
    assert model.annotate(_rec(flops=1e9, bytes=1e9, median_ms=1.0), None) == {}
    r = model.annotate(_rec(median_ms=1.0), h100)
    assert r["intensity"] is None and "note" in r and r["suspect"] is False
    odd = model.annotate(_rec(flops=1e9, bytes=1e6, median_ms=1.0, dtype="fp4", compute_dtype="fp4"), h100)
    assert "memory roof only" in odd["note"]


def test_poor_library_roof_is_named_and_set_aside(h100):
    # H100 run 2: _int_mm reached 130 TOPS = 6.6% of the 1979 TOPS datasheet
    h100.compute["int8"]["measured"] = 129.7e12
    h100.how["compute.int8.measured"] = "torch._int_mm int8 -> int32"
    assert h100.compute_roof("int8") == (pytest.approx(1978.9e12, rel=1e-3), "theoretical")
    assert h100.compute_roof("bf16") == (790e12, "measured")
    flops = 2 * 8192**3
    r = model.annotate(_rec(dtype="int8", flops=flops, bytes=3 * 8192**2, median_ms=flops / 700e12 * 1e3), h100)
    assert "only 6.6%" in r["note"] and "datasheet roof" in r["note"] and r["roofs"]["compute"] == "theoretical"
    assert r["pct_of_roofline"] == pytest.approx(700 / 1978.9 * 100, rel=1e-3) and not r["suspect"]


def test_above_measured_roof_gets_a_stated_reason(h100):
    h100.compute["bf16"]["measured"] = 667e12  # the run-2 roof that cuBLAS itself beat at 4096^3
    flops = 2 * 4096**3
    r = model.annotate(_rec(flops=flops, bytes=3 * 4096**2 * 2, median_ms=flops / 759e12 * 1e3), h100)
    assert r["pct_of_roofline"] > 100 and r["above_measured_roof"] and not r["suspect"]
    assert "not a hardware limit" in r["above_roof_reason"] and r["above_roof_reason"] in r["note"]
    below = model.annotate(_rec(flops=flops, bytes=3 * 4096**2 * 2, median_ms=flops / 600e12 * 1e3), h100)
    assert not below["above_measured_roof"] and below["above_roof_reason"] is None


def test_annotate_names_another_board(h100):
    h100.device["uuid"] = "GPU-aaaa"
    base = dict(flops=1e12, bytes=1e9, median_ms=2.0)
    other = model.annotate(_rec(device={"uuid": "GPU-bbbb", "name": "NVIDIA H100 80GB HBM3"}, **base), h100)
    assert other["other_board"] and "GPU-bbbb" in other["note"] and "GPU-aaaa" in other["note"]
    same = model.annotate(_rec(device={"uuid": "GPU-aaaa"}, **base), h100)
    assert not same["other_board"] and "GPU-" not in (same.get("note") or "")


def test_predicted_floor_ms(h100):
    # memory-bound: 1 GB at the measured 3.0 TB/s = 0.333 ms; compute-bound: 2*8192^3 at 790 TF = 1.39 ms
    assert model.predicted_floor_ms(1e6, 1e9, "bf16", h100) == pytest.approx(1e9 / 3.0e12 * 1e3)
    assert model.predicted_floor_ms(2 * 8192**3, 3 * 8192**2 * 2, "bf16", h100) == pytest.approx(
        2 * 8192**3 / 790e12 * 1e3)
    assert model.predicted_floor_ms(0, 1e9, "fp4", h100) == pytest.approx(1e9 / 3.0e12 * 1e3)  # no fp4 roof
    with pytest.raises(ValueError):
        model.predicted_floor_ms(1e9, 1e9, "bf16", Profile(device={}, mem={}, compute={}))


def test_reports_and_figures_rederive_placement(h100):
    """A stored 'roofline' dict from before the per-variant roof (753%, suspect) is never shown again."""
    from harness import report
    from roofline import plot

    flops = 2 * 4096**3
    rec = _rec(family="matmul", variant="torch_fp32_tf32", dtype="tf32", shape="M=4096,N=4096,K=4096",
               flops=flops, bytes=3 * 4096**2 * 4, median_ms=flops / 300e12 * 1e3, tflops=300.0,
               roofline={"pct_of_roofline": 753.0, "suspect": True, "intensity": 680.0, "bound": "compute"})
    rows = report.napkin_rows([rec], h100)
    assert "753%" not in " ".join(rows[0]) and "(suspect)" not in " ".join(rows[0])
    fresh = model.annotate(rec, h100)
    assert f"{fresh['pct_of_roofline']:.0f}%" in rows[0]
    _, info = plot.roofline_figure([rec], h100)
    assert "above its roof (suspect)" not in info["legend"]
    assert report.napkin_rows([rec], None)[0][-1] in ("n/a", report.NA)  # no profile: no placement


# ------------------------------------------------------------------------------------------------ figures
def test_roofline_figure_labels_best_per_family_and_backend(records, h100):
    from roofline import plot

    timed = plot.ok_records(records)
    best = {}
    for r in timed:
        k = (r["family"], r["backend"])
        if k not in best or r["flops"] / r["median_ms"] > best[k]["flops"] / best[k]["median_ms"]:
            best[k] = r
    for width in ("column", "full"):
        fig, info = plot.roofline_figure(records, h100, width=width)
        ax = fig.axes[0]
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert "intensity" in ax.get_xlabel() and "FLOP/s" in ax.get_ylabel()
        shown = {t.split(" ")[0] for t in info["labels"] + info["skipped"]}
        assert shown == {r["variant"] for r in best.values()}  # only the best of each family and backend
        assert {r["variant"] for r in timed} == {row["variant"] for row in info["table"]}  # the rest: the table
        texts = {t.get_text().split(" ")[0] for t in ax.texts}
        assert {t.split(" ")[0] for t in info["labels"]} <= texts
        assert {"softmax", "matmul", "Triton", "CUDA", "library (torch)"} <= set(info["legend"])
        assert ("bf16", "theoretical") in info["roofs"] and ("bf16", "measured") in info["roofs"]
        assert "above its roof (suspect)" in info["legend"]
        # roofs carry value and unit; ridges their unit
        assert "bf16/fp16 measured 790 TFLOP/s" in info["roof_labels"]
        assert any(t.startswith("bf16/fp16 theoretical") and t.endswith("TFLOP/s") for t in info["roof_labels"])
        assert "HBM copy 3 TB/s" in info["roof_labels"] and any("FLOP/B" in t for t in info["roof_labels"])
        assert "cuda_v6_broken" not in shown  # not timed: not drawn
        assert "commit" in info["footer"] and info["footer"] in {t.get_text() for t in fig.texts}
    _, info = plot.roofline_figure([r for r in records if r["family"] == "matmul"], h100, width="full")
    assert not info["skipped"]


def test_family_colours_never_the_suspect_colour():
    from matplotlib.colors import to_rgb

    from roofline import plot

    recs = [{"family": f"fam{i}"} for i in range(12)]
    red = to_rgb(plot.SUSPECT_COLOR)
    for c in plot.family_colors(recs).values():
        r, g, b = to_rgb(c)
        assert not (r > 0.6 and g < 0.4 and b < 0.4), c  # known-wrong: tab10's red (0.84, 0.15, 0.16) would fail
        assert (r, g, b) != red
    assert to_rgb(matplotlib_tab10_red()) not in {to_rgb(c) for c in plot.family_colors(recs).values()}


def matplotlib_tab10_red():
    import matplotlib

    return matplotlib.colormaps["tab10"](3)


def test_flagged_points_are_marked(records, h100):
    from roofline import plot

    recs = [dict(r) for r in records if r["family"] == "softmax"]
    recs[0]["flags"] = ["launch-bound"]
    recs[1]["flags"] = ["unstable"]
    fig, info = plot.roofline_figure(recs, h100)
    assert {"hollow: launch-bound", "+: unstable timing"} <= set(info["legend"])
    fig, info = plot.roofline_figure([r for r in records if r["family"] == "softmax"], h100)
    assert "hollow: launch-bound" not in info["legend"]  # no flag, no legend entry


def test_throughput_and_ladder_figures(records, h100):
    from roofline import plot

    fig, info = plot.throughput_figure(records, "softmax", h100)
    assert info["unit"] == "GB/s"
    assert set(info["labels"]) == {r["variant"] for r in records if r["family"] == "softmax"}
    ax = fig.axes[0]
    assert ax.get_ylabel() == "B/s" and ax.get_yscale() == "log" and ax.get_xscale() == "log"
    assert info["x"]["fp16"] == "M" and "N" in ax.get_xlabel()  # M and N vary together: x = M (N along)
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert "torch_softmax (baseline)" in legend
    fig, info = plot.throughput_figure(records, "matmul", h100)
    assert info["unit"] == "TFLOP/s" and "cuda_v9_too_good" in info["labels"]
    fig, info = plot.ladder_figure(records, "softmax", "fp16")
    assert info["labels"] == ["cuda_v1_naive", "cuda_v2_online", "cuda_v3_vec", "triton_fused",
                              "torch_softmax (library)"]  # Triton next to the rungs
    assert info["shape"] == "M=8192,N=16384"
    v, lo, hi = info["ratios"]["cuda_v3_vec"]
    assert lo <= v <= hi and info["ratios"]["torch_softmax (library)"] == (1.0, 1.0, 1.0)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert set(ticks) == set(info["labels"])
    assert plot.ladder_figure(records, "matmul", "bf16")[0] is None  # no ladder records there


def test_throughput_never_joins_different_cases():
    """causal and non-causal points of one variant are separate series; known-wrong: one line through both."""
    from roofline import plot

    recs = []
    for causal in (0, 1):
        for n in (1024, 2048, 4096):
            recs.append({"family": "attention", "variant": "fa", "backend": "triton", "dtype": "bf16", "status": "ok",
                         "shape": f"N={n},causal={causal}", "shape_dims": {"N": n, "causal": causal},
                         "flops": 4.0 * n * n * 128, "bytes": 4.0 * n * 128 * 2,
                         "median_ms": 1e-3 * n / 1024 * (1 + causal),
                         "p10_ms": 0.9e-3 * n / 1024, "p90_ms": 1.1e-3 * n / 1024 * (1 + causal)})
    fig, info = plot.throughput_figure(recs, "attention")
    assert info["x"]["bf16"] == "N"
    assert sorted(info["series"]) == ["fa causal=0", "fa causal=1"]
    lines = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) > 1]
    assert all(len(ln.get_xdata()) == 3 for ln in lines)  # each line: one case's three sizes, never six


def test_draw_all_writes_files(records, h100, tmp_path):
    from roofline import plot

    paths = plot.draw_all(records, h100, tmp_path)
    names = {Path(p).name for p in paths}
    for stem in ("roofline", "roofline_full", "throughput_softmax", "throughput_matmul", "ladder_softmax_fp16"):
        for ext in ("png", "svg", "pdf"):
            assert f"{stem}.{ext}" in names
    assert all(Path(p).stat().st_size > 1000 for p in paths)
    # no profile, odd records: still draws, never raises
    junk = [{"variant": "a"}, {"status": "ok", "variant": "b", "median_ms": 1.0}, {}]
    assert plot.draw_all(records[:3] + junk, None, tmp_path / "bare")


def test_cli_plot_and_profile(records, h100, tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    (res / "softmax.json").write_text(json.dumps([r for r in records if r["family"] == "softmax"]))
    (res / "matmul.json").write_text(json.dumps({"records": [r for r in records if r["family"] == "matmul"]}))
    h100.save(res / "profile.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "roofline", "plot", str(res), "-o", str(tmp_path / "figs")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "profile.json" in out.stdout
    assert (tmp_path / "figs" / "roofline.pdf").stat().st_size > 0
    out = subprocess.run([sys.executable, "-m", "roofline", "plot", str(FIXTURE), "-o", str(tmp_path / "f2"),
                          "--profile", str(res / "profile.json")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "f2" / "ladder_softmax_fp16.svg").exists()
    out = subprocess.run([sys.executable, "-m", "roofline", "plot", str(FIXTURE), "-o", str(tmp_path / "one.png"),
                          "--profile", str(res / "profile.json")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "one.png").is_file() and not (tmp_path / "one.png" / "roofline.png").exists()
    import torch

    if not torch.cuda.is_available():
        out = subprocess.run([sys.executable, "-m", "roofline", "profile"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 1
        assert "Traceback" not in out.stderr and "no CUDA GPU" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------ device layer
def _no_gpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def test_device_layer_without_gpu_gives_notes():
    if not _no_gpu():
        pytest.skip("a GPU is present")
    info = dev_mod.device_info()
    assert info["available"] is False and "note" in info and info["sm_count"] is None
    for k in ("name", "uuid", "sm_count", "cc", "l2_bytes", "max_mem_clock_mhz", "mem_bus_width_bits", "driver"):
        assert k in info
    with dev_mod.NvmlSampler() as s:
        pass
    summ = s.summary()
    assert summ["available"] is False and summ["note"]
    bw = dev_mod.gpm_dram_bw(lambda: None, duration_s=0.01)
    assert bw["available"] is False and bw["note"]


def test_device_layer_with_broken_nvml(monkeypatch):
    """A pynvml whose every call raises (no driver, VM, old driver): notes, never exceptions."""

    class NVMLError(Exception):
        pass

    def boom(*a, **k):
        raise NVMLError("Driver Not Loaded")

    fake = types.ModuleType("pynvml")
    fake.__getattr__ = lambda name: boom  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    info = dev_mod.device_info()
    assert "note" in info and "Driver Not Loaded" in info["note"]
    with dev_mod.NvmlSampler() as s:
        pass
    assert "note" in s.summary()
    assert dev_mod.gpm_dram_bw(lambda: None)["available"] is False


def test_device_layer_with_fake_nvml(monkeypatch):
    """A fake NVML device: fields filled, sampler summarises and names only the 'held back' reasons."""
    fake = types.SimpleNamespace(
        NVML_CLOCK_SM=1, NVML_CLOCK_MEM=2, NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: "h",
        nvmlDeviceGetHandleByUUID=lambda u: "h",
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetUUID=lambda h: "GPU-1234",
        nvmlDeviceGetCudaComputeCapability=lambda h: (9, 0),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=80 * 2**30),
        nvmlDeviceGetMaxClockInfo=lambda h, t: {1: 1980, 2: 2619}[t],
        nvmlDeviceGetClockInfo=lambda h, t: {1: 1755, 2: 2619}[t],
        nvmlDeviceGetMemoryBusWidth=lambda h: 5120,
        nvmlDeviceGetEnforcedPowerLimit=lambda h: 700000,
        nvmlSystemGetDriverVersion=lambda: "560.35.03",
        nvmlSystemGetCudaDriverVersion=lambda: 12060,
        nvmlDeviceGetPowerUsage=lambda h: 650000,
        nvmlDeviceGetTemperature=lambda h, t: 71,
        nvmlDeviceGetCurrentClocksEventReasons=lambda h: 0x1 | 0x4,  # idle (ignored) + sw power cap
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    info = dev_mod.device_info()
    assert info["max_mem_clock_mhz"] == 2619 and info["mem_bus_width_bits"] == 5120
    assert info["power_limit_w"] == 700.0 and info["cuda_driver_version"] == "12.6" and info["cc"] == "9.0"
    assert rel(nvml_peak_bandwidth(info["max_mem_clock_mhz"], info["mem_bus_width_bits"]), 3.352e12) < 1e-3
    with dev_mod.NvmlSampler(period_s=0.005) as s:
        import time

        time.sleep(0.05)
    summ = s.summary()
    assert summ["available"] and summ["n_samples"] >= 2
    assert summ["sm_clock_mhz_median"] == 1755 and summ["power_w_median"] == 650 and summ["temp_c_max"] == 71
    assert summ["throttle_reasons"] == ["sw_power_cap"] and summ["throttled"] is True
    assert dev_mod.reason_names(0x1 | 0x2 | 0x10 | 0x100) == []
    assert dev_mod.reason_names(0x40 | 0x20) == ["sw_thermal_slowdown", "hw_thermal_slowdown"]


def test_sampler_reports_clock_spread(monkeypatch):
    """SM clock p10/p90 and spread from the background thread; a steady clock has none (known-wrong: varying)."""
    import itertools

    clocks = itertools.cycle([1980, 1980, 1755, 1600, 1980])
    fake = types.SimpleNamespace(
        NVML_CLOCK_SM=1, NVML_CLOCK_MEM=2, NVML_TEMPERATURE_GPU=0, nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: "h", nvmlDeviceGetHandleByUUID=lambda u: "h",
        nvmlDeviceGetClockInfo=lambda h, t: next(clocks) if t == 1 else 2619,
        nvmlDeviceGetPowerUsage=lambda h: 650000, nvmlDeviceGetTemperature=lambda h, t: 70,
        nvmlDeviceGetCurrentClocksEventReasons=lambda h: 0,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    import time

    with dev_mod.NvmlSampler(period_s=0.002) as s:
        assert s.running
        t0 = time.perf_counter()
        time.sleep(0.06)
        t1 = time.perf_counter()
    assert not s.running
    cs = s.clock_stats(t0, t1)
    assert cs["p10"] < 1700 and cs["p90"] == 1980 and cs["var_pct"] > 5
    summ = s.summary()
    assert summ["sm_clock_mhz_p10"] < 1700 and summ["sm_clock_var_pct"] > 5
    steady = dev_mod.NvmlSampler()
    steady.samples = [{"t": float(i), "sm_clock_mhz": 1980} for i in range(10)]
    assert steady.clock_stats()["var_pct"] == 0.0 and steady.clock_stats(100.0, 200.0)["p10"] == 1980


def test_headline_gemms_join_the_roof_sweep():
    shapes = ceilings._headline_gemms()
    assert {(4096, 4096, 4096), (8192, 8192, 8192), (256, 14336, 4096)} <= set(shapes)
    assert all(m >= 128 for m, _, _ in shapes)  # decode-size M is not a compute roof


# ------------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
def test_gpu_profile_and_sampler(tmp_path):
    import torch

    info = dev_mod.device_info()
    assert info["available"] and info["sm_count"] and info["max_mem_clock_mhz"]
    prof = ceilings.get_profile(tmp_path, measure=True, device=info)
    assert (ceilings.profile_path(info, tmp_path)).exists()
    assert 0.5 < prof.mem["measured"] / prof.mem["nvml"] < 1.02, prof.how
    assert prof.board_uuid == info["uuid"]
    for dt in ("bf16", "fp16", "fp32"):
        c = prof.compute[dt]
        assert c["measured"] and c["measured"] < 1.05 * c["theoretical"], (dt, c, prof.how)
        assert c["sweep"] and c["measured"] == max(c["sweep"].values()) and c["clock_mhz_p10"], (dt, c)
    assert len(prof.compute["bf16"]["sweep"]) >= 5
    n = 1 << 28
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    with dev_mod.NvmlSampler() as s:
        for _ in range(200):
            dst.copy_(src)
        torch.cuda.synchronize()
    summ = s.summary()
    assert summ["available"] and summ["n_samples"] >= 1 and summ["sm_clock_mhz_median"]
    bw = dev_mod.gpm_dram_bw(lambda: dst.copy_(src), duration_s=0.3)
    if bw["available"]:
        assert 0.5 < bw["bytes_per_call"] / (2 * n) < 1.5, bw

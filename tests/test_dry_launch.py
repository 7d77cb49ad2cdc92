"""Launch geometry that only the run knows (issue 30): a course launcher whose block size comes from a loop, whose
grid comes from a device attribute, or which asks the occupancy API. The X-ray's source reader must say "unknown"
for these (not the value before the loop); a dry run of the launcher in the CPU interpreter (launches logged, no
kernel run) then gives the real geometry, except where the interpreter cannot answer as the GPU would.

Known-wrong variants these catch: a reader that evaluates a loop body once (block 32 or 2 instead of 256 or 64), a
reader that keeps ``int sms = 0`` after ``cudaDeviceGetAttribute(&sms, ...)`` (grid 0), a dry mode that runs the
kernel (the broken kernel faults), an occupancy answer without a register model taken as the GPU's, geometry from
device memory no kernel wrote.
"""

from __future__ import annotations

import pytest

from harness import byo, interp, launches, registry, xray
from tests.test_course import COURSE, _occupancy_by_hand, needs_tools

FILE = COURSE / "dry_launch" / "kernels.cuh"
SHAPE = "M=100,N=200,K=30"
DRY = "launch recorded by a dry run of the launcher on the CPU interpreter at this shape"


@pytest.fixture(scope="module")
def course():
    """The fixture's five kernel numbers registered as sgemm variants; (problem, shape, {number: variant})."""
    registry.all_problems()
    names = byo.register_all([byo.Spec("sgemm", str(FILE))], export=False)
    p = registry.REGISTRY["sgemm"]
    try:
        yield p, p.parse_shape(SHAPE), {n: p.variants[f"kernels.cuh#{n}"] for n in range(1, 6)}
    finally:
        for v in names:
            p.variants.pop(v, None)
            byo.SPECS.pop(("sgemm", v), None)


@pytest.fixture(scope="module")
def facts(course):
    p, shape, vs = course
    out = {}
    for n, v in vs.items():
        errors: list[str] = []
        out[n] = xray._byo_facts(v, shape, "sm_90a", errors, p, "fp32")
        assert not errors, (n, errors)
    return out


def test_the_source_reader_leaves_run_time_values_unknown(course):
    """Every number's geometry depends on the run; the reader reports which name it could not know."""
    _, shape, vs = course
    want = {1: "threads", 2: "sms", 3: "threads", 4: "threads", 5: "flag"}
    for n, name in want.items():
        [la] = vs[n].source.launch_plan(n, shape)
        assert la.unknown and any(name in u for u in la.unknown), (n, la)
        assert la.threads not in (32, 2, 0) and la.grid != (0, 1, 1), (n, la)  # never the value before the run
    funcs = {"pick": byo.Func("pick", [("int&", "t"), ("int", "n")], False, False, 0, 0, "t = n;")}
    code = "int a = 1, b = 2, c = 3, d = 4; for (int i = 0; i < n; ++i) a *= 2; while (b < n) { b += 1; } " \
           "query(&c); pick(d, 5); int e = a & b;"
    assert launches.run_dependent(code, funcs) == {"i", "a", "b", "c", "d"}  # `a & b` takes no address


@needs_tools
def test_a_dry_run_gives_the_geometry_the_launcher_computes(facts):
    """#1: the loop doubles 32 -> 256 (N = 200), grid (ceil(200/256), M); #2: two blocks per SM of the H100 SXM
    the interpreter answers as (132 SMs); occupancy at that geometry from the file's own ptxas report."""
    [k1] = facts[1]
    assert (k1["name"], k1["threads"], k1["grid"], k1["dynamic_smem"]) == ("sgemm_rows", 256, [1, 100, 1], 0)
    assert k1["geometry"].startswith(DRY) and "not known" not in k1["geometry"]
    [k2] = facts[2]
    assert (k2["name"], k2["threads"], k2["grid"]) == ("sgemm_stride", 128, [264, 1, 1])
    assert "cudaDeviceGetAttribute (answered as an H100 SXM: 132 SMs)" in k2["geometry"]
    for k in (k1, k2):
        assert "placeholder" not in k["geometry"]  # the record's own alpha and beta (small: drawn for real)
        assert k["occupancy"]["occupancy"] == pytest.approx(
            _occupancy_by_hand(k["registers"], k["threads"], k["static_smem"] + k["dynamic_smem"]))


@needs_tools
def test_a_larger_shape_is_sized_without_drawing_its_data(course, facts):
    """3000^3 fp32 (108 MB): the buffers are sized under FakeTensorMode and left unwritten; sgemm's alpha and beta
    (drawn from a tensor's value) are placeholders, and the geometry says so."""
    p, _, vs = course
    errors: list[str] = []
    [k] = xray._byo_facts(vs[1], p.parse_shape("M=3000,N=3000,K=3000"), "sm_90a", errors, p, "fp32")
    assert (k["threads"], k["grid"]) == (256, [12, 3000, 1]) and "scalar arguments were placeholders" in k["geometry"]


@needs_tools
def test_a_dry_run_runs_no_kernel(course, facts, monkeypatch):
    """#4 launches a kernel that writes 4 MB before C and traps: the dry run records its 64 threads and nothing
    faults; the same launcher run for real in the interpreter does fault (so the kernel is really broken)."""
    [k4] = facts[4]
    assert (k4["name"], k4["threads"], k4["grid"]) == ("sgemm_broken", 64, [1, 1, 1])
    p, shape, vs = course
    import torch

    monkeypatch.setenv(interp.ENV, "1")
    ins = p.make_inputs(shape, "fp32", 0, torch.device("cpu"))
    outs = p.make_outputs(shape, "fp32", torch.device("cpu"))
    with pytest.raises(interp.KernelFault):
        vs[4].fn(ins, outs, shape)


@needs_tools
def test_geometry_the_interpreter_cannot_answer_stays_unknown(course, facts):
    """The occupancy API (no register model here), a read-back of device memory no kernel wrote, a device query
    for a target that is not the H100 the interpreter answers as, a dry run too big for host memory: unknown,
    with the reason, and no occupancy."""
    for n, why in ((3, "cudaOccupancyMaxPotentialBlockSize, which the CPU interpreter does not model"),
                   (5, "device memory read back by cudaMemcpy")):
        [k] = facts[n]
        assert k["threads"] is None and k["grid"] is None and k["occupancy"]["occupancy"] is None, k
        assert k["launch"] == "sgemm_stride<<<?>>> (dry run)"  # the interpreter's answers are not shown either
        assert k["geometry"].startswith(DRY) and f"not known: before this launch, {why}" in k["geometry"]
    p, shape, vs = course
    build = vs[2].source.compile("sm_90a")
    plan, _ = xray._dry_plan(vs[2], 2, p, shape, "fp32", "sm_80", vs[2].source.launch_plan(2, shape), build)
    [la] = plan
    assert la.grid is None and "H100 SXM: 132 SMs), but the target is sm_80" in la.unknown[0]
    big = p.parse_shape("M=16384,N=16384,K=16384")  # 3 GiB of fp32 buffers
    errors: list[str] = []
    [k] = xray._byo_facts(vs[1], big, "sm_90a", errors, p, "fp32")
    assert k["threads"] is None and "a dry run needs 3.0 GiB" in k["geometry"], k["geometry"]


def test_launch_configuration_splits_at_its_top_level_commas():
    """'<' and '>' are template brackets only where they pair up after a name: a comparison or a shift in a launch
    configuration must not swallow the comma after it (the block would then be lost from the launch)."""
    from harness.launches import split_top

    assert split_top("n > 0 ? g : 1, b") == ["n > 0 ? g : 1", "b"]
    assert split_top("n >> 1, 256, 0") == ["n >> 1", "256", "0"]
    assert split_top("n < 64 ? 1 : 2, 64") == ["n < 64 ? 1 : 2", "64"]
    assert split_top("dim3(CEIL_DIV(N, 32), 1), dim3(32, 32), sizeof(float) * BM") == [
        "dim3(CEIL_DIV(N, 32), 1)", "dim3(32, 32)", "sizeof(float) * BM"]
    assert split_top("std::min<int>(n, 4), 128") == ["std::min<int>(n, 4)", "128"]
    assert split_top("tile<a, b<3>>, 4") == ["tile<a, b<3>>", "4"]

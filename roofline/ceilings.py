"""Roofline ceilings: peak DRAM bandwidth and compute peaks (theoretical, datasheet and measured) for one GPU.

Device facts (NVML bandwidth formula, arch detection, known boards and their datasheets) live in ``harness.device``;
this module reads them (one-way dependency: roofline -> harness.device).

Memory roof (theoretical), from NVML (max memory clock x 2 x bus width / 8; the x2 applied once)::

    peak B/s = max mem clock (MHz) x 1e6 x 2 x bus width (bits) / 8

H100 SXM 2619 MHz x 5120 bit -> 3.352 TB/s; A100 40GB 1215 MHz x 5120 bit -> 1.555 TB/s; H200 4.8 TB/s spec /
(2 x 6144 / 8 bytes) -> 3125 MHz, a clock *derived* from the datasheet: the datasheet profile (``known_profile``)
labels that roof "derived", not "nvml". The lent H200 board reports 3201 MHz in NVML (4.917 TB/s, 2.4% above the
datasheet): on a board, whatever NVML says is what the "nvml" roof uses, and the "measured" roof (device-to-device
copy) is preferred.

Compute roof (theoretical) = SMs x clock x FLOP/clk/SM (dense, FMA = 2 FLOP), per-SM rates in ``FLOP_PER_CLK_SM``.
Which clock: NVIDIA's datasheets use two. SIMT and FP64 figures on H100 SXM use the 1980 MHz max boost (66.9 TF fp32
= 132 x 256 x 1.98 GHz), but every low-precision tensor figure implies 1830 MHz (989.4 TF bf16 = 132 x 4096 x
1.830 GHz): NVML's max clock overshoots the tensor peaks by 8.2%. H100 PCIe agrees (756 TF = 114 x 4096 x 1.62 GHz,
max boost 1755 MHz). So: clock = NVML max SM clock for fp64/fp32, and max SM clock x ``TENSOR_CLOCK_RATIO[arch]``
for the tensor dtypes (1830/1980 on sm_90; 1.0 elsewhere). The clock used is stored in the profile.

Tensor roofs are keyed on the ACCUMULATE type. ``bf16``, ``fp16``, ``fp8`` mean fp32 accumulation (``int8``: int32),
what every kernel here uses; ``fp16_acc16`` / ``fp8_acc16`` are the fp16-accumulate rates. Data-centre and
workstation parts run both at the same rate; GeForce Ampere/Ada run fp32-accumulate tensor math (and tf32) at HALF
the fp16-accumulate rate (``GEFORCE_FLOP_PER_CLK_SM``): an RTX 4090 does 165 TF bf16, not 330.

Sources of the per-SM rates (all dense; tests/test_roofline.py checks each against a published datasheet):
* sm_80 (A100) and sm_90 (H100/H200): NVIDIA A100/H100 whitepapers and datasheets. fp64 is the FP64 tensor (DMMA)
  rate that cuBLAS DGEMM uses: 128 on A100 (19.5 TF), 256 on H100 (66.9 TF).
* sm_86 (A10/A40, RTX 30): GA102 whitepaper / A40 and A10 datasheets: fp32 256, tf32 512, fp16/bf16 1024, int8
  2048, fp64 4; no fp8. GeForce (RTX 3090): tf32 256 and fp16/bf16 with fp32 accumulate 512.
* sm_89 (L4/L40S, RTX 40): Ada whitepaper / L40S and L4 datasheets: tf32 512, fp16/bf16 1024, fp8 and int8 2048.
  GeForce (RTX 4090): tf32 256, fp16/bf16 with fp32 accumulate 512, fp8 with fp32 accumulate 1024.

Measured roofs (``measure_profile``, GPU only): each dtype's roof is the BEST of a sweep of library GEMM shapes (the
families' headline shapes included) after a sustained warm-up, with the SM clock logged; the datasheet roof stays
beside it. Where the library reaches < 50% of the datasheet (``_int_mm``: 6.6% on an H100) the profile says so and
placement uses the datasheet roof. A profile records the board (UUID) it was measured on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from harness.device import KNOWN_GPUS, arch_of, is_geforce, known_gpu, nvml_peak_bandwidth

__all__ = [
    "DTYPES", "FLOP_PER_CLK_SM", "GEFORCE_FLOP_PER_CLK_SM", "KNOWN_GPUS", "POOR_LIBRARY_FRAC", "Profile",
    "arch_of", "compute_clock_mhz", "get_profile", "known_profile", "load_profile", "measure_profile",
    "nvml_peak_bandwidth", "profile_path", "theoretical_peak", "theoretical_profile",
]

DTYPES = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp16_acc16", "fp8_acc16")
SIMT_DTYPES = ("fp64", "fp32")  # use the max SM clock; the rest use the tensor datasheet clock
ACC16 = {"fp16_acc16": "fp16", "fp8_acc16": "fp8"}  # fp16-accumulate roof -> its fp32-accumulate sibling

# Dense FLOP (or int OP) per clock per SM, fp32 accumulation (int32 for int8); FMA = 2. Data-centre/workstation
# rates; GeForce overrides below. See the module docstring for sources.
FLOP_PER_CLK_SM: dict[str, dict[str, int | None]] = {
    "sm_80": {"fp64": 128, "fp32": 128, "tf32": 1024, "bf16": 2048, "fp16": 2048, "fp8": None, "int8": 4096,
              "fp16_acc16": 2048, "fp8_acc16": None},
    "sm_86": {"fp64": 4, "fp32": 256, "tf32": 512, "bf16": 1024, "fp16": 1024, "fp8": None, "int8": 2048,
              "fp16_acc16": 1024, "fp8_acc16": None},
    "sm_89": {"fp64": 4, "fp32": 256, "tf32": 512, "bf16": 1024, "fp16": 1024, "fp8": 2048, "int8": 2048,
              "fp16_acc16": 1024, "fp8_acc16": 2048},
    "sm_90": {"fp64": 256, "fp32": 256, "tf32": 2048, "bf16": 4096, "fp16": 4096, "fp8": 8192, "int8": 8192,
              "fp16_acc16": 4096, "fp8_acc16": 8192},
}
# GeForce: fp32-accumulate tensor math and tf32 at half rate (RTX 4090: 165.2 TF bf16 / 330.3 TF fp16-acc16).
GEFORCE_FLOP_PER_CLK_SM: dict[str, dict[str, int]] = {
    "sm_86": {"tf32": 256, "bf16": 512, "fp16": 512},
    "sm_89": {"tf32": 256, "bf16": 512, "fp16": 512, "fp8": 1024},
}
# Datasheet tensor clock / max boost clock (see docstring): H100 SXM 1830/1980.
TENSOR_CLOCK_RATIO = {"sm_80": 1.0, "sm_86": 1.0, "sm_89": 1.0, "sm_90": 1830.0 / 1980.0}
# A measured (library) roof below this fraction of the datasheet roof is not used for placement.
POOR_LIBRARY_FRAC = 0.5


def flop_per_clk_sm(arch: str, dtype: str, geforce: bool = False) -> int | None:
    """Dense FLOP/clk/SM of ``dtype`` (accumulate type in the key) on ``arch``; GeForce half rates applied."""
    if geforce and dtype in GEFORCE_FLOP_PER_CLK_SM.get(arch, {}):
        return GEFORCE_FLOP_PER_CLK_SM[arch][dtype]
    return FLOP_PER_CLK_SM.get(arch, {}).get(dtype)


def compute_clock_mhz(arch: str, dtype: str, max_sm_clock_mhz: float) -> float:
    """The clock the theoretical peak of ``dtype`` uses (see module docstring)."""
    if dtype in SIMT_DTYPES:
        return float(max_sm_clock_mhz)
    return float(max_sm_clock_mhz) * TENSOR_CLOCK_RATIO.get(arch, 1.0)


def theoretical_peak(arch: str, dtype: str, sm_count: int, max_sm_clock_mhz: float, *,
                     geforce: bool = False) -> float | None:
    """Dense peak FLOP/s = SMs x clock x FLOP/clk/SM; None when the arch lacks the dtype (fp8 before sm_89).
    ``dtype`` carries the accumulate type (``fp16`` = fp32 accumulate, ``fp16_acc16`` = fp16 accumulate)."""
    rate = flop_per_clk_sm(arch, dtype, geforce)
    if rate is None or not sm_count or not max_sm_clock_mhz:
        return None
    return sm_count * compute_clock_mhz(arch, dtype, max_sm_clock_mhz) * 1e6 * rate


def _slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", (name or "unknown-gpu").lower()).strip("-")
    return s.replace("nvidia-", "", 1) if s.startswith("nvidia-") else s


gpu_slug = _slug


@dataclasses.dataclass
class Profile:
    """The ceilings of one GPU. JSON round-trips through ``to_dict``/``from_dict`` (``save``/``load_profile``).

    device: ``harness.device.device_info()`` of the board (``uuid`` names the board the roofs were measured on)
    mem: {"nvml": B/s, "measured": B/s, "datasheet": B/s} (any may be None)
    compute: {dtype: {"theoretical": FLOP/s, "measured": FLOP/s, "datasheet": FLOP/s, "clock_mhz": ...,
              "accumulate": "fp32"|"int32"|"fp16", "library_pct": measured/theoretical x 100,
              "poor_library": bool, "sweep": {shape: FLOP/s}, "clock_mhz_p10"/"clock_mhz_p90": during the sweep}}
    how: {"mem.nvml": "...", "mem.measured": "...", "compute.<dtype>.measured": "...", ...}
    """

    device: dict[str, Any]
    mem: dict[str, float | None]
    compute: dict[str, dict[str, Any]]
    how: dict[str, str] = dataclasses.field(default_factory=dict)
    timestamp: str = ""
    arch: str | None = None

    @property
    def name(self) -> str:
        return str(self.device.get("name") or "unknown GPU")

    @property
    def board_uuid(self) -> str | None:
        """UUID of the board the profile describes (None for datasheet-only profiles)."""
        return self.device.get("uuid")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields}
        kw.setdefault("device", {})
        kw.setdefault("mem", {"nvml": None, "measured": None})
        kw.setdefault("compute", {})
        return cls(**kw)

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return p

    def mem_roof(self) -> tuple[float | None, str]:
        """(B/s, which): measured if present (and >= 50% of NVML's), else nvml, else the datasheet figure."""
        meas, nvml, ds = self.mem.get("measured"), self.mem.get("nvml"), self.mem.get("datasheet")
        if meas and not (nvml and meas < POOR_LIBRARY_FRAC * nvml):
            return float(meas), "measured"
        if nvml:  # "derived" where the clock came from the datasheet bandwidth, not from NVML (known_profile)
            return float(nvml), str(self.device.get("mem_clock_source") or "nvml")
        if ds:
            return float(ds), "datasheet"
        return None, "none"

    def entry(self, dtype: str) -> tuple[dict[str, Any], str]:
        """(compute entry, the key it came from): an fp16-accumulate roof the profile does not list (it equals the
        fp32-accumulate one on non-GeForce parts) falls back to its fp32-accumulate sibling."""
        if dtype in self.compute:
            return self.compute[dtype] or {}, dtype
        if dtype in ACC16 and not self.device.get("geforce") and not is_geforce(self.name):
            return self.compute.get(ACC16[dtype]) or {}, ACC16[dtype]
        return {}, dtype

    def compute_roof(self, dtype: str) -> tuple[float | None, str]:
        """(FLOP/s, which): the measured (library) roof if present and >= 50% of the theoretical one, else the
        theoretical (datasheet-formula) roof. ``roof_note`` says why when a measured roof was set aside."""
        c, _ = self.entry(dtype)
        th, meas = c.get("theoretical"), c.get("measured")
        if meas and not (th and meas < POOR_LIBRARY_FRAC * th):
            return float(meas), "measured"
        if th:
            return float(th), "theoretical"
        if meas:
            return float(meas), "measured"
        return None, "none"

    def roof_note(self, dtype: str) -> str | None:
        """Why placement of ``dtype`` does not use its measured roof (library < 50% of the datasheet), else None."""
        c, key = self.entry(dtype)
        th, meas = c.get("theoretical"), c.get("measured")
        if meas and th and meas < POOR_LIBRARY_FRAC * th:
            how = self.how.get(f"compute.{key}.measured", "library GEMM")
            return (f"{key}: the library reaches only {meas / th * 100:.1f}% of the datasheet roof ({how}); "
                    f"placement uses the datasheet roof")
        return None


def load_profile(path: str | os.PathLike) -> Profile:
    """Read a stored profile JSON (works with no GPU)."""
    return Profile.from_dict(json.loads(Path(path).read_text()))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


ACCUMULATE = {"int8": "int32", "fp16_acc16": "fp16", "fp8_acc16": "fp16", "fp64": "fp64"}


def theoretical_profile(device: dict[str, Any]) -> Profile:
    """Profile with only the datasheet/NVML ceilings filled in (no measurement): usable on any machine given a
    ``device_info()`` dict (or a synthetic one: name, cc, sm_count, max_sm_clock_mhz, max_mem_clock_mhz,
    mem_bus_width_bits; optional ``geforce``). Boards in ``KNOWN_GPUS`` also get their published datasheet numbers
    (``mem["datasheet"]``, ``compute[dt]["datasheet"]``) beside the formula. The fp16-accumulate roofs are listed
    only where they differ from the fp32-accumulate ones (GeForce)."""
    dev = dict(device)
    arch = arch_of(dev.get("cc")) or dev.get("arch")
    geforce = bool(dev.get("geforce")) or is_geforce(dev.get("name"))
    dev["geforce"] = geforce
    known = dev.get("known_gpu") or known_gpu(dev.get("name"))
    sheet = (KNOWN_GPUS.get(known) or {}).get("datasheet", {}) if known else {}
    how: dict[str, str] = {}
    clk, width = dev.get("max_mem_clock_mhz"), dev.get("mem_bus_width_bits")
    nvml_bw = nvml_peak_bandwidth(clk, width) if clk and width else None
    # a board's profile reads the clock from NVML; a datasheet profile (known_profile) may only have one derived
    # from the published bandwidth: its roof is then labelled "derived", never "nvml"
    how["mem.nvml"] = (
        f"max mem clock {clk} MHz x 1e6 x 2 x {width} bit / 8" + (f" (the clock: {dev['mem_clock_note']})"
                                                                  if dev.get("mem_clock_note") else "")
        if nvml_bw else "NVML memory clock/bus width unknown"
    )
    if sheet:
        how["datasheet"] = f"published datasheet numbers of the {known} (harness.device.KNOWN_GPUS)"
    compute: dict[str, dict[str, Any]] = {}
    sms, sm_clk = dev.get("sm_count"), dev.get("max_sm_clock_mhz")
    for dt in DTYPES:
        if dt in ACC16 and not geforce:
            continue
        peak = theoretical_peak(arch, dt, sms, sm_clk, geforce=geforce) if arch else None
        entry: dict[str, Any] = {"theoretical": peak, "measured": None, "accumulate": ACCUMULATE.get(dt, "fp32")}
        if dt in sheet:
            entry["datasheet"] = float(sheet[dt]) * 1e12
        if peak:
            entry["clock_mhz"] = round(compute_clock_mhz(arch, dt, sm_clk), 1)
            basis = "max SM clock" if dt in SIMT_DTYPES else f"max SM clock x {TENSOR_CLOCK_RATIO.get(arch, 1.0):.4f}"
            how[f"compute.{dt}.theoretical"] = (
                f"{sms} SMs x {entry['clock_mhz']} MHz ({basis}) x {flop_per_clk_sm(arch, dt, geforce)} FLOP/clk/SM"
                + (" (GeForce rate)" if geforce and dt in GEFORCE_FLOP_PER_CLK_SM.get(arch, {}) else "")
            )
        else:
            entry["note"] = f"no {dt} rate for {arch or 'unknown arch'}"
        compute[dt] = entry
    mem = {"nvml": nvml_bw, "measured": None, "datasheet": float(sheet["mem"]) if "mem" in sheet else None}
    return Profile(device=dev, mem=mem, compute=compute, how=how, timestamp=_now(), arch=arch)


def known_profile(name: str) -> Profile:
    """Datasheet profile of a GPU in ``KNOWN_GPUS`` (tests, figures without a stored profile): the formula roofs
    plus the published numbers; no board UUID, nothing measured."""
    spec = {k: v for k, v in KNOWN_GPUS[name].items() if k not in ("match", "datasheet")}
    arch = spec.pop("arch")
    label = f"NVIDIA {'GeForce ' if spec.get('geforce') else ''}{name} (datasheet)"
    return theoretical_profile({"name": label, "cc": f"{arch[3]}.{arch[4]}", "known_gpu": name, **spec})


# ---------------------------------------------------------------------------------------------- measurement (GPU)
# GEMM shapes (M, N, K) swept per dtype; the roof is the best. Square sizes plus the families' headline shapes
# (matmul 4096^3 / 8192^3, quant_gemm W8A8 M=256 N=14336 K=4096, the Llama-3-8B MLP 4096x14336x4096), which
# ``_headline_gemms`` adds from the registry when it loads. SIMT dtypes (fp32, fp64) stop at 8192 (a 16384^3 fp64
# GEMM takes ~0.15 s).
GEMM_SWEEP = [(2048, 2048, 2048), (4096, 4096, 4096), (6144, 6144, 6144), (8192, 8192, 8192),
              (4096, 14336, 4096), (8192, 8192, 4096), (16384, 16384, 16384), (256, 14336, 4096)]
SIMT_SWEEP = [(2048, 2048, 2048), (4096, 4096, 4096), (8192, 8192, 8192)]
MEASURED_DTYPES = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8")  # fp16-accumulate: no torch GEMM


def _headline_gemms() -> list[tuple[int, int, int]]:
    """(M, N, K) of the matmul and quant_gemm families' headline shapes (empty if the registry does not load)."""
    out = []
    try:
        from harness.registry import get_problem

        for fam in ("matmul", "quant_gemm"):
            for shape, _ in get_problem(fam).headline:
                m, n, k = int(shape["M"]), int(shape["N"]), int(shape["K"])
                if m >= 128:  # decode-size M (1, 16) is memory-bound: not a compute roof
                    out.append((m, n, k))
    except Exception:  # noqa: BLE001 - the roof still has the built-in sweep
        pass
    return out


def _gemm_fn(dt: str, m: int, n: int, k: int):
    """(callable running one GEMM, description) on random inputs (zeros run ~13% faster on an H200)."""
    import torch

    dev = "cuda"
    if dt in ("bf16", "fp16", "fp32", "tf32", "fp64"):
        tdt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "tf32": torch.float32,
               "fp64": torch.float64}[dt]
        a = torch.randn(m, k, device=dev, dtype=tdt)
        b = torch.randn(k, n, device=dev, dtype=tdt)
        c = torch.empty(m, n, device=dev, dtype=tdt)
        return (lambda: torch.matmul(a, b, out=c)), f"torch.matmul {dt}"
    if dt == "fp8":
        a = torch.randn(m, k, device=dev).to(torch.float8_e4m3fn)
        b = torch.randn(n, k, device=dev).to(torch.float8_e4m3fn).t()  # column-major B, as _scaled_mm requires
        one = torch.ones((), device=dev)
        # use_fast_accum=True: the fastest library fp8 path, so the roof is not below what a kernel can reach
        return (lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16,
                                         use_fast_accum=True)), "torch._scaled_mm e4m3 -> bf16, fast accum"
    if dt == "int8":
        a = torch.randint(-8, 8, (m, k), device=dev, dtype=torch.int8)
        b = torch.randint(-8, 8, (k, n), device=dev, dtype=torch.int8)
        return (lambda: torch._int_mm(a, b)), "torch._int_mm int8 -> int32"
    raise ValueError(dt)


def _rate(fn, flops: float, batch_ms: float = 25.0, repeats: int = 5, warmup_s: float = 0.1) -> float:
    """Sustained FLOP/s of back-to-back calls: events around a batch of >= ``batch_ms``, median of ``repeats``
    batches, after ``warmup_s`` of calls (no L2 flush: a roof is the library's best steady state)."""
    import torch

    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < warmup_s or n < 2:
        fn()
        n += 1
        torch.cuda.synchronize()
    per_ms = (time.perf_counter() - t0) * 1e3 / n
    k = max(2, min(1000, int(batch_ms / max(per_ms, 1e-3))))
    rates = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(k):
            fn()
        b.record()
        b.synchronize()
        rates.append(flops * k / (a.elapsed_time(b) / 1e3))
    rates.sort()
    return rates[len(rates) // 2]


def _measure_copy(n: int, repeats: int) -> float:
    """Bytes/s of dst.copy_(src) for n-byte buffers, counting n read + n written (buffers freed on return)."""
    import torch

    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    return 2.0 * n * _rate(lambda: dst.copy_(src), 1.0, repeats=repeats)  # _rate(fn, 1.0) = calls per second


def measure_profile(device: dict[str, Any] | None = None, copy_bytes: int = 2 << 30, repeats: int = 5,
                    warmup_s: float = 3.0, dtypes: tuple[str, ...] = MEASURED_DTYPES,
                    shapes: list[tuple[int, int, int]] | None = None) -> Profile:
    """Measure this GPU's ceilings: a device-to-device copy (>= 1 GiB; bytes read + written) and, per dtype, the
    best library GEMM over a shape sweep (``GEMM_SWEEP`` + the families' headline shapes), after ``warmup_s`` of
    sustained bf16 GEMMs (clocks and temperature settle under load; a short warm-up on a cold card reads a boost it
    cannot hold). The SM clock is sampled (NVML) during each dtype's sweep. Each failure is None with a note in
    ``how``. ~30-60 s on an H100/H200. Raises RuntimeError without CUDA."""
    import torch

    from harness.device import NvmlSampler, device_info

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU: cannot measure a roofline profile here")
    if device is None:
        device = device_info()
    if not device.get("sm_count"):
        props = torch.cuda.get_device_properties(0)
        device = {**device, "name": props.name, "sm_count": props.multi_processor_count,
                  "cc": f"{props.major}.{props.minor}"}
    prof = theoretical_profile(device)
    torch.cuda.synchronize()
    sweep = list(dict.fromkeys((shapes or GEMM_SWEEP) + _headline_gemms()))
    # sustained warm-up: the card reaches the clock it holds under a long GEMM load before anything is measured
    try:
        fn, _ = _gemm_fn("bf16", 8192, 8192, 8192)
        with NvmlSampler() as s:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < warmup_s:
                for _ in range(10):
                    fn()
                torch.cuda.synchronize()
        cs = s.clock_stats() or {}
        prof.how["warmup"] = (f"{warmup_s:g} s of bf16 8192^3 GEMMs; SM clock p10/p90 "
                              f"{cs.get('p10')}/{cs.get('p90')} MHz")
        del fn
    except Exception as e:  # noqa: BLE001
        prof.how["warmup"] = f"failed: {type(e).__name__}: {e}"[:300]
    torch.cuda.empty_cache()
    # Memory: copy n bytes = n read + n written. 2 GiB buffers: far beyond L2 (50 MB), so every byte is DRAM.
    try:
        n = max(copy_bytes, 1 << 30)
        prof.mem["measured"] = _measure_copy(n, repeats)
        prof.how["mem.measured"] = (f"device-to-device copy of {n / 2**30:.1f} GiB (read + write), median of "
                                    f"{repeats} batches of back-to-back copies")
    except Exception as e:  # noqa: BLE001
        prof.how["mem.measured"] = f"failed: {type(e).__name__}: {e}"[:300]
    torch.cuda.empty_cache()
    for dt in dtypes:
        entry = prof.compute.get(dt)
        if entry is None:
            continue
        if entry.get("theoretical") is None and dt == "fp8":
            prof.how[f"compute.{dt}.measured"] = f"not measured: {entry.get('note', 'unsupported')}"
            continue
        results: dict[str, float] = {}
        errors: list[str] = []
        desc = ""
        prev_tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = dt == "tf32"
        try:
            with NvmlSampler() as s:
                for m, n_, k in (SIMT_SWEEP if dt in SIMT_DTYPES else sweep):
                    try:
                        fn, desc = _gemm_fn(dt, m, n_, k)
                        results[f"{m}x{n_}x{k}"] = _rate(fn, 2.0 * m * n_ * k, repeats=repeats)
                        del fn
                    except Exception as e:  # noqa: BLE001 - a shape the library rejects
                        errors.append(f"{m}x{n_}x{k}: {type(e).__name__}: {str(e)[:80]}")
                    torch.cuda.empty_cache()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev_tf32
        cs = s.clock_stats() or {}
        entry["clock_mhz_p10"], entry["clock_mhz_p90"] = cs.get("p10"), cs.get("p90")
        if not results:
            entry["measured"] = None
            prof.how[f"compute.{dt}.measured"] = "unavailable: " + "; ".join(errors)[:300]
            continue
        best = max(results, key=results.get)
        entry["measured"] = results[best]
        entry["sweep"] = results
        th = entry.get("theoretical")
        tf32 = " (allow_tf32=True)" if dt == "tf32" else " (allow_tf32=False)" if dt == "fp32" else ""
        prof.how[f"compute.{dt}.measured"] = (
            f"{desc}{tf32}: best of {len(results)} shapes ({best}), median of {repeats} batches each; SM clock "
            f"p10/p90 {cs.get('p10')}/{cs.get('p90')} MHz" + (f"; failed: {'; '.join(errors)}" if errors else ""))
        if th:
            entry["library_pct"] = results[best] / th * 100.0
            entry["poor_library"] = results[best] < POOR_LIBRARY_FRAC * th
    prof.timestamp = _now()
    return prof


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gpu-workbench" / "profiles"


def profile_path(device: dict[str, Any], cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the profile of ``device`` is cached: <cache_dir>/<gpu-slug>/profile.json when cache_dir is given
    (e.g. bench/results), else ~/.cache/gpu-workbench/profiles/<gpu-slug>.json."""
    slug = _slug(str(device.get("name") or "unknown-gpu"))
    if cache_dir is not None:
        return Path(cache_dir) / slug / "profile.json"
    return default_cache_dir() / f"{slug}.json"


def get_profile(cache_dir: str | os.PathLike | None = None, measure: bool = True,
                device: dict[str, Any] | None = None, refresh: bool = False) -> Profile:
    """The profile of this machine's GPU: the cached JSON if present (and not ``refresh``, and measured on this
    board when a GPU can re-measure it), else measured (GPU and ``measure``) and cached, else theoretical only
    (no caching of theoretical-only profiles). Without a GPU returns
    a theoretical profile whose device carries the "no GPU" note and no ceilings. Never raises for a missing GPU."""
    if device is None:
        from harness.device import device_info

        device = device_info()
    path = profile_path(device, cache_dir)
    try:
        import torch

        gpu = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        gpu = False
    if path.exists() and not refresh:
        try:
            cached = load_profile(path)
            other_board = cached.board_uuid and device.get("uuid") and cached.board_uuid != device.get("uuid")
            if not (other_board and gpu and measure):  # a profile of another board is re-measured on this one
                return cached
        except Exception:  # noqa: BLE001 - a corrupt cache is re-measured
            pass
    if gpu and measure:
        prof = measure_profile(device)
        prof.save(path)
        return prof
    return theoretical_profile(device)

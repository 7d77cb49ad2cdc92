"""Roofline ceilings: peak DRAM bandwidth and compute peaks (theoretical and measured) for one GPU.

Memory roof (theoretical), from NVML (max memory clock x 2 x bus width / 8; the x2 applied once)::

    peak B/s = max mem clock (MHz) x 1e6 x 2 x bus width (bits) / 8

The x2 is applied exactly once: NVML reports half the per-pin data rate for HBM and GDDR alike (applying it twice is
a known bug elsewhere). H100 SXM 2619 MHz x 5120 bit -> 3.352 TB/s; A100 40GB 1215 MHz x 5120 bit -> 1.555 TB/s;
H200 4.8 TB/s spec / (2 x 6144 / 8 bytes) -> 3125 MHz (HBM3e at 6.25 Gb/s per pin). Some H200 boards are reported
at 3201 MHz max memory clock in NVML, which gives 4.917 TB/s (2.4% above the marketing figure): whatever NVML says
is what the "nvml" roof uses, and the "measured" roof (device-to-device copy) is what ``annotate`` prefers anyway.

Compute roof (theoretical) = SMs x clock x FLOP/clk/SM (dense, FMA = 2 FLOP), with the per-SM rates in
``FLOP_PER_CLK_SM``. Which clock: NVIDIA's own datasheets use two. SIMT and FP64 figures on H100 SXM use the
1980 MHz max boost (66.9 TF fp32 = 132 x 256 x 1.98 GHz; 66.9 TF fp64 tensor = 132 x 256 x 1.98 GHz), but every
low-precision tensor figure implies 1830 MHz (989.4 TF bf16 = 132 x 4096 x 1.830 GHz), i.e. NVML's max clock
overshoots the tensor peaks by 8.2%. H100 PCIe agrees (756 TF = 114 x 4096 x 1.62 GHz, max boost 1755 MHz; ratio
0.923). So: clock = NVML max SM clock for fp64/fp32, and max SM clock x ``TENSOR_CLOCK_RATIO[arch]`` for tf32, bf16,
fp16, fp8, int8 (ratio 1830/1980 on sm_90; 1.0 elsewhere: A100's 312 TF = 108 x 2048 x 1.41 GHz = its max boost).
The clock used is stored in the profile (``compute[dtype]["clock_mhz"]``) so every number can be recomputed.

Sources of the per-SM rates (all dense):
* sm_80 (A100) and sm_90 (H100/H200): anchors.md (NVIDIA A100 and H100 whitepapers). fp64 is the FP64 *tensor*
  (DMMA) rate that cuBLAS DGEMM (torch.matmul fp64) uses: 128 on A100 (19.5 TF), 256 on H100 (66.9 TF); the SIMT
  fp64 rate (anchors' "FP64 64 -> 128") is half that.
* sm_86 (A10/A40/RTX 30): A40 datasheet / GA102 whitepaper: 37.4 TF fp32 = 84 SMs x 256 x 1.74 GHz; fp16/bf16 tensor
  149.7 TF -> 1024; tf32 74.8 TF -> 512; int8 299.3 TOPS -> 2048; fp64 = 1/64 of fp32 -> 4; no fp8. (GeForce parts
  run fp16 with fp32 accumulation at half this rate.)
* sm_89 (L4/L40S/RTX 40): L40S datasheet / Ada whitepaper: 91.6 TF fp32 = 142 x 256 x 2.52 GHz; tf32 183 TF -> 512;
  fp16/bf16 362 TF -> 1024; fp8 and int8 733 -> 2048; fp64 1/64 of fp32 -> 4.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

DTYPES = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8")
SIMT_DTYPES = ("fp64", "fp32")  # use the max SM clock; the rest use the tensor datasheet clock

# Dense FLOP (or int OP) per clock per SM; FMA = 2. See the module docstring for sources.
FLOP_PER_CLK_SM: dict[str, dict[str, int | None]] = {
    "sm_80": {"fp64": 128, "fp32": 128, "tf32": 1024, "bf16": 2048, "fp16": 2048, "fp8": None, "int8": 4096},
    "sm_86": {"fp64": 4, "fp32": 256, "tf32": 512, "bf16": 1024, "fp16": 1024, "fp8": None, "int8": 2048},
    "sm_89": {"fp64": 4, "fp32": 256, "tf32": 512, "bf16": 1024, "fp16": 1024, "fp8": 2048, "int8": 2048},
    "sm_90": {"fp64": 256, "fp32": 256, "tf32": 2048, "bf16": 4096, "fp16": 4096, "fp8": 8192, "int8": 8192},
}
# Datasheet tensor clock / max boost clock (see docstring): H100 SXM 1830/1980.
TENSOR_CLOCK_RATIO = {"sm_80": 1.0, "sm_86": 1.0, "sm_89": 1.0, "sm_90": 1830.0 / 1980.0}

# Fallbacks when NVML is missing but the GPU is known by name (max boost MHz, max mem clock MHz, bus bits, SMs).
KNOWN_GPUS: dict[str, dict[str, Any]] = {
    "H100 SXM": {"arch": "sm_90", "sm_count": 132, "max_sm_clock_mhz": 1980, "max_mem_clock_mhz": 2619,
                 "mem_bus_width_bits": 5120},
    # H100 PCIe: 2.0 TB/s spec / (2 x 5120 / 8) = 1562.5 MHz (derived, not read from a board)
    "H100 PCIe": {"arch": "sm_90", "sm_count": 114, "max_sm_clock_mhz": 1755, "max_mem_clock_mhz": 1562.5,
                  "mem_bus_width_bits": 5120},
    # H200: 4.8 TB/s spec / (2 x 6144 / 8) = 3125 MHz (derived; boards may report 3201 MHz -> 4.917 TB/s)
    "H200": {"arch": "sm_90", "sm_count": 132, "max_sm_clock_mhz": 1980, "max_mem_clock_mhz": 3125,
             "mem_bus_width_bits": 6144},
    "A100 SXM 80GB": {"arch": "sm_80", "sm_count": 108, "max_sm_clock_mhz": 1410, "max_mem_clock_mhz": 1593,
                      "mem_bus_width_bits": 5120},
    "A100 40GB": {"arch": "sm_80", "sm_count": 108, "max_sm_clock_mhz": 1410, "max_mem_clock_mhz": 1215,
                  "mem_bus_width_bits": 5120},
}


def nvml_peak_bandwidth(max_mem_clock_mhz: float, bus_width_bits: int) -> float:
    """Peak DRAM bytes/s from NVML's max memory clock (MHz) and bus width (bits): clock x 1e6 x 2 x width / 8."""
    return float(max_mem_clock_mhz) * 1e6 * 2 * int(bus_width_bits) / 8


def arch_of(cc: str | float | tuple | None) -> str | None:
    """'9.0' / (9, 0) / 9.0 -> 'sm_90'; unknown -> None. Newer archs than the table map to the nearest lower one
    only when the major matches (sm_87 -> sm_86), else None (no silent guess for a new generation)."""
    if cc is None:
        return None
    try:
        if isinstance(cc, tuple):
            major, minor = int(cc[0]), int(cc[1])
        else:
            t = str(cc).strip().lower().replace("sm_", "").rstrip("a")
            if "." in t:
                a, b = t.split(".")[:2]
                major, minor = int(a), int(b[:1] or 0)
            elif t.isdigit() and len(t) >= 2:
                major, minor = int(t[:-1]), int(t[-1])
            else:
                return None
    except ValueError:
        return None
    cands = [a for a in FLOP_PER_CLK_SM if int(a[3:-1]) == major and int(a[-1]) <= minor]
    return max(cands, key=lambda a: int(a[-1])) if cands else None


def compute_clock_mhz(arch: str, dtype: str, max_sm_clock_mhz: float) -> float:
    """The clock the theoretical peak of ``dtype`` uses (see module docstring)."""
    if dtype in SIMT_DTYPES:
        return float(max_sm_clock_mhz)
    return float(max_sm_clock_mhz) * TENSOR_CLOCK_RATIO.get(arch, 1.0)


def theoretical_peak(arch: str, dtype: str, sm_count: int, max_sm_clock_mhz: float) -> float | None:
    """Dense peak FLOP/s = SMs x clock x FLOP/clk/SM; None when the arch lacks the dtype (fp8 before sm_89)."""
    rate = FLOP_PER_CLK_SM.get(arch, {}).get(dtype)
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

    mem: {"nvml": B/s or None, "measured": B/s or None}
    compute: {dtype: {"theoretical": FLOP/s or None, "measured": FLOP/s or None, "clock_mhz": ..., "note": ...}}
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
        """(B/s, which): measured if present, else nvml."""
        if self.mem.get("measured"):
            return float(self.mem["measured"]), "measured"
        if self.mem.get("nvml"):
            return float(self.mem["nvml"]), "nvml"
        return None, "none"

    def compute_roof(self, dtype: str) -> tuple[float | None, str]:
        """(FLOP/s, which): measured if present, else theoretical."""
        c = self.compute.get(dtype) or {}
        if c.get("measured"):
            return float(c["measured"]), "measured"
        if c.get("theoretical"):
            return float(c["theoretical"]), "theoretical"
        return None, "none"


def load_profile(path: str | os.PathLike) -> Profile:
    """Read a stored profile JSON (works with no GPU)."""
    return Profile.from_dict(json.loads(Path(path).read_text()))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def theoretical_profile(device: dict[str, Any]) -> Profile:
    """Profile with only the datasheet/NVML ceilings filled in (no measurement): usable on any machine given a
    ``device_info()`` dict (or a synthetic one: name, cc, sm_count, max_sm_clock_mhz, max_mem_clock_mhz,
    mem_bus_width_bits)."""
    dev = dict(device)
    arch = arch_of(dev.get("cc")) or dev.get("arch")
    how: dict[str, str] = {}
    clk, width = dev.get("max_mem_clock_mhz"), dev.get("mem_bus_width_bits")
    nvml_bw = nvml_peak_bandwidth(clk, width) if clk and width else None
    how["mem.nvml"] = (
        f"max mem clock {clk} MHz x 1e6 x 2 x {width} bit / 8" if nvml_bw else "NVML memory clock/bus width unknown"
    )
    compute: dict[str, dict[str, Any]] = {}
    sms, sm_clk = dev.get("sm_count"), dev.get("max_sm_clock_mhz")
    for dt in DTYPES:
        peak = theoretical_peak(arch, dt, sms, sm_clk) if arch else None
        entry: dict[str, Any] = {"theoretical": peak, "measured": None}
        if peak:
            entry["clock_mhz"] = round(compute_clock_mhz(arch, dt, sm_clk), 1)
            basis = "max SM clock" if dt in SIMT_DTYPES else f"max SM clock x {TENSOR_CLOCK_RATIO.get(arch, 1.0):.4f}"
            how[f"compute.{dt}.theoretical"] = (
                f"{sms} SMs x {entry['clock_mhz']} MHz ({basis}) x {FLOP_PER_CLK_SM[arch][dt]} FLOP/clk/SM"
            )
        else:
            entry["note"] = f"no {dt} rate for {arch or 'unknown arch'}"
        compute[dt] = entry
    return Profile(device=dev, mem={"nvml": nvml_bw, "measured": None}, compute=compute, how=how,
                   timestamp=_now(), arch=arch)


def known_profile(name: str) -> Profile:
    """Theoretical profile of a GPU in ``KNOWN_GPUS`` (tests, figures without a stored profile)."""
    spec = dict(KNOWN_GPUS[name])
    arch = spec.pop("arch")
    return theoretical_profile({"name": f"NVIDIA {name} (datasheet)", "cc": f"{arch[3]}.{arch[4]}", **spec})


# ---------------------------------------------------------------------------------------------- measurement (GPU)
def _time_cuda(fn, repeats: int, warmup_s: float = 0.2) -> float:
    """Median seconds of fn() by CUDA events, after a time-based warm-up (clock ramp)."""
    import torch

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < warmup_s:
        fn()
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


def _measure_matmul(dt: str, n: int, repeats: int) -> tuple[float, str]:
    import torch

    dev = "cuda"
    flops = 2.0 * n * n * n
    if dt in ("bf16", "fp16", "fp32", "tf32", "fp64"):
        tdt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "tf32": torch.float32,
               "fp64": torch.float64}[dt]
        a = torch.randn(n, n, device=dev, dtype=tdt)
        b = torch.randn(n, n, device=dev, dtype=tdt)
        c = torch.empty(n, n, device=dev, dtype=tdt)
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = dt == "tf32"
        try:
            s = _time_cuda(lambda: torch.matmul(a, b, out=c), repeats)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev
        tf32 = " (allow_tf32=True)" if dt == "tf32" else " (allow_tf32=False)" if dt == "fp32" else ""
        return flops / s, f"torch.matmul {n}^3 {dt}{tf32}, median of {repeats} (CUDA events)"
    if dt == "fp8":
        a = torch.randn(n, n, device=dev).to(torch.float8_e4m3fn)
        b = torch.randn(n, n, device=dev).to(torch.float8_e4m3fn).t()  # column-major B, as _scaled_mm requires
        one = torch.ones((), device=dev)
        # use_fast_accum=True: the fastest library fp8 path, so the roof is not below what a kernel can reach
        s = _time_cuda(lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16,
                                                use_fast_accum=True), repeats)
        return flops / s, f"torch._scaled_mm {n}^3 e4m3 -> bf16, per-tensor scales, fast accum, median of {repeats}"
    if dt == "int8":
        a = torch.randint(-8, 8, (n, n), device=dev, dtype=torch.int8)
        b = torch.randint(-8, 8, (n, n), device=dev, dtype=torch.int8)
        s = _time_cuda(lambda: torch._int_mm(a, b), repeats)
        return flops / s, f"torch._int_mm {n}^3 int8 -> int32, median of {repeats}"
    raise ValueError(dt)


def _measure_copy(n: int, repeats: int) -> float:
    """Bytes/s of dst.copy_(src) for n-byte buffers, counting n read + n written (buffers freed on return)."""
    import torch

    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    return 2.0 * n / _time_cuda(lambda: dst.copy_(src), repeats)


MATMUL_N = {"bf16": 8192, "fp16": 8192, "fp8": 8192, "int8": 8192, "tf32": 8192, "fp32": 4096, "fp64": 4096}


def measure_profile(device: dict[str, Any] | None = None, copy_bytes: int = 2 << 30, repeats: int = 20) -> Profile:
    """Measure the ceilings on this GPU: a device-to-device copy (>= 1 GiB; counts bytes read + written) and
    torch.matmul / _scaled_mm / _int_mm per dtype. Each measurement that fails is None with a note in ``how``.
    Takes ~15-30 s on an H100. Raises RuntimeError without CUDA."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU: cannot measure a roofline profile here")
    if device is None:
        from harness.device import device_info

        device = device_info()
    if not device.get("sm_count"):
        props = torch.cuda.get_device_properties(0)
        device = {**device, "name": props.name, "sm_count": props.multi_processor_count,
                  "cc": f"{props.major}.{props.minor}"}
    prof = theoretical_profile(device)
    torch.cuda.synchronize()
    # Memory: copy n bytes = n read + n written. 2 GiB buffers: far beyond L2 (50 MB), so every byte is DRAM.
    try:
        n = max(copy_bytes, 1 << 30)
        prof.mem["measured"] = _measure_copy(n, repeats)
        prof.how["mem.measured"] = f"device-to-device copy of {n / 2**30:.1f} GiB (read + write), median of {repeats}"
    except Exception as e:  # noqa: BLE001
        prof.how["mem.measured"] = f"failed: {type(e).__name__}: {e}"[:300]
    torch.cuda.empty_cache()
    for dt in DTYPES:
        entry = prof.compute[dt]
        if entry.get("theoretical") is None and dt in ("fp8",):
            prof.how[f"compute.{dt}.measured"] = f"not measured: {entry.get('note', 'unsupported')}"
            continue
        try:
            reps = 5 if dt == "fp64" else repeats
            flops, how = _measure_matmul(dt, MATMUL_N[dt], reps)
            entry["measured"] = flops
            prof.how[f"compute.{dt}.measured"] = how
        except Exception as e:  # noqa: BLE001 - e.g. _scaled_mm missing in this torch, int8 on an old arch
            entry["measured"] = None
            prof.how[f"compute.{dt}.measured"] = f"unavailable: {type(e).__name__}: {e}"[:300]
        torch.cuda.empty_cache()
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
    """The profile of this machine's GPU: the cached JSON if present (and not ``refresh``), else measured (GPU and
    ``measure``) and cached, else theoretical only (no caching of theoretical-only profiles). Without a GPU returns
    a theoretical profile whose device carries the "no GPU" note and no ceilings. Never raises for a missing GPU."""
    if device is None:
        from harness.device import device_info

        device = device_info()
    path = profile_path(device, cache_dir)
    if path.exists() and not refresh:
        try:
            return load_profile(path)
        except Exception:  # noqa: BLE001 - a corrupt cache is re-measured
            pass
    try:
        import torch

        gpu = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        gpu = False
    if gpu and measure:
        prof = measure_profile(device)
        prof.save(path)
        return prof
    return theoretical_profile(device)

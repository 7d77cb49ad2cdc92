"""What GPU we are on, and what it was doing while we timed it (NVML via ``pynvml`` = nvidia-ml-py).

Everything here degrades to a dict with a ``"note"`` when there is no GPU, no NVML library or an old driver: these
functions are called by the runner on every machine (the CPU laptop included) and must never raise.

* ``device_info(index=0)``: static properties (SMs, L2, clocks, bus width, power limit, driver, board UUID) for
  records and for the roofline ceilings.
* Device facts the roofline reads (dependencies run one way: ``roofline`` -> ``harness.device``, never back):
  ``nvml_peak_bandwidth``, ``arch_of``, ``is_geforce``, ``KNOWN_GPUS`` (board specs with their published datasheet
  numbers) and ``known_gpu(name)``.
* ``NvmlSampler``: a context manager that samples SM/memory clocks, power, temperature and clock-event ("throttle")
  reasons every ~15 ms in a background thread during a timed region; ``.summary()`` says whether the GPU was held
  back (power cap, thermal, slowdown) while the numbers were taken, and the SM clock's p10/p90 and spread;
  ``.clock_stats(t0, t1)`` gives those for a time window (``harness.timing.time_calls(sampler=...)`` uses it).
* ``gpm_dram_bw(fn)``: Hopper+ GPM counter ``NVML_GPM_METRIC_DRAM_BW_UTIL`` around a loop of ``fn()``: measured DRAM
  traffic, to compare with a kernel's minimum-byte model (bytes/call measured vs modelled).
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

NO_GPU_NOTE = "no NVIDIA GPU/NVML here: timings are CPU timings"


# ---------------------------------------------------------------------------------------------- device facts
def nvml_peak_bandwidth(max_mem_clock_mhz: float, bus_width_bits: int) -> float:
    """Peak DRAM bytes/s from NVML's max memory clock (MHz) and bus width (bits): clock x 1e6 x 2 x width / 8.

    The x2 is applied exactly once: NVML reports half the per-pin data rate for HBM and GDDR alike (applying it
    twice is a known bug elsewhere). H100 SXM 2619 MHz x 5120 bit -> 3.352 TB/s."""
    return float(max_mem_clock_mhz) * 1e6 * 2 * int(bus_width_bits) / 8


ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90")  # the architectures the roofline has FLOP/clk/SM tables for


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
    cands = [a for a in ARCHS if int(a[3:-1]) == major and int(a[-1]) <= minor]
    return max(cands, key=lambda a: int(a[-1])) if cands else None


def is_geforce(name: str | None) -> bool:
    """GeForce boards run fp16/bf16/fp8 tensor math with fp32 accumulation (and tf32) at half the rate of the
    data-centre/workstation parts of the same chip (RTX 4090: 165 TF bf16 vs 330 TF with fp16 accumulation)."""
    return "geforce" in str(name or "").lower()


# Board specs (max boost MHz, max mem clock MHz as NVML reports it, bus bits, SMs) and the PUBLISHED datasheet
# numbers (dense, no sparsity; TFLOP/s, memory B/s) that tests/test_roofline.py holds the roofline formulas to.
# Tensor keys accumulate in fp32 (int32 for int8) -- what every kernel here does; "*_acc16" = fp16 accumulation.
# Sources: H100 SXM/PCIe and H200: NVIDIA H100 / H200 datasheets (anchors.md); A100: A100 datasheet; RTX 4090:
# NVIDIA Ada GPU architecture whitepaper, appendix table "GeForce RTX 4090" (FP16 tensor 330.3 TF with FP16
# accumulate, 165.2 with FP32 accumulate; FP8 660.6 / 330.3; TF32 82.6; INT8 660.6 TOPS); RTX 3090: NVIDIA Ampere
# GA102 GPU architecture whitepaper, "GeForce RTX 3090" (FP16 tensor 142 / 71 with FP16 / FP32 accumulate, TF32
# 35.6, INT8 284); L4: NVIDIA L4 datasheet (sparse figures halved: TF32 120 -> 60, FP16/BF16 242 -> 121, FP8/INT8
# 485 -> 242.5); A10: NVIDIA A10 datasheet (TF32 62.5, BF16/FP16 125, INT8 250). Memory clocks not read from a board
# are derived from the spec bandwidth (marked "derived").
KNOWN_GPUS: dict[str, dict[str, Any]] = {
    "H100 SXM": {"arch": "sm_90", "sm_count": 132, "max_sm_clock_mhz": 1980, "max_mem_clock_mhz": 2619,
                 "mem_bus_width_bits": 5120, "match": r"H100(?!.*(PCIe|NVL))",
                 "datasheet": {"mem": 3.35e12, "fp64": 67, "fp32": 66.9, "tf32": 494.7, "bf16": 989.4,
                               "fp16": 989.4, "fp8": 1978.9, "int8": 1978.9}},
    # H100 PCIe: 2.0 TB/s spec / (2 x 5120 / 8) = 1562.5 MHz (derived)
    "H100 PCIe": {"arch": "sm_90", "sm_count": 114, "max_sm_clock_mhz": 1755, "max_mem_clock_mhz": 1562.5,
                  "mem_bus_width_bits": 5120, "match": r"H100.*PCIe", "mem_clock_source": "derived",
                  "mem_clock_note": "derived from the 2.0 TB/s datasheet figure, not read from a board",
                  "datasheet": {"mem": 2.0e12, "fp64": 51, "fp32": 51, "tf32": 378, "bf16": 756, "fp16": 756,
                                "fp8": 1513, "int8": 1513}},
    # H200 SXM: 4.8 TB/s spec / (2 x 6144 / 8) = 3125 MHz (derived; the lent board reports 3201 MHz -> 4.917 TB/s
    # in NVML, 2.4% above the datasheet); compute rates are the H100 SXM's (same GH100 die and clocks).
    "H200": {"arch": "sm_90", "sm_count": 132, "max_sm_clock_mhz": 1980, "max_mem_clock_mhz": 3125,
             "mem_bus_width_bits": 6144, "match": r"H200(?!.*NVL)", "mem_clock_source": "derived",
             "mem_clock_note": "derived from the 4.8 TB/s datasheet figure; NVML reads 3201 MHz on the lent H200 "
                               "board: 3201 MHz x 2 x 6144 bit / 8 = 4.92 TB/s",
             "datasheet": {"mem": 4.8e12, "fp64": 67, "fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4,
                           "fp8": 1978.9, "int8": 1978.9}},
    "A100 SXM 80GB": {"arch": "sm_80", "sm_count": 108, "max_sm_clock_mhz": 1410, "max_mem_clock_mhz": 1593,
                      "mem_bus_width_bits": 5120, "match": r"A100-SXM4?-80GB|A100 SXM 80GB",
                      "datasheet": {"mem": 2.039e12, "fp64": 19.5, "fp32": 19.5, "tf32": 156, "bf16": 312,
                                    "fp16": 312, "int8": 624}},
    "A100 40GB": {"arch": "sm_80", "sm_count": 108, "max_sm_clock_mhz": 1410, "max_mem_clock_mhz": 1215,
                  "mem_bus_width_bits": 5120, "match": r"A100.*40GB",
                  "datasheet": {"mem": 1.555e12, "fp64": 19.5, "fp32": 19.5, "tf32": 156, "bf16": 312, "fp16": 312,
                                "int8": 624}},
    "RTX 4090": {"arch": "sm_89", "sm_count": 128, "max_sm_clock_mhz": 2520, "max_mem_clock_mhz": 10501,
                 "mem_bus_width_bits": 384, "geforce": True, "match": r"GeForce RTX 4090\s*$",
                 "datasheet": {"mem": 1.008e12, "fp64": 1.29, "fp32": 82.6, "tf32": 82.6, "bf16": 165.2,
                               "fp16": 165.2, "fp16_acc16": 330.3, "fp8": 330.3, "fp8_acc16": 660.6,
                               "int8": 660.6}},
    "RTX 3090": {"arch": "sm_86", "sm_count": 82, "max_sm_clock_mhz": 1695, "max_mem_clock_mhz": 9751,
                 "mem_bus_width_bits": 384, "geforce": True, "match": r"GeForce RTX 3090\s*$",
                 "datasheet": {"mem": 936e9, "fp32": 35.6, "tf32": 35.6, "bf16": 71, "fp16": 71, "fp16_acc16": 142,
                               "int8": 284}},
    "L4": {"arch": "sm_89", "sm_count": 58, "max_sm_clock_mhz": 2040, "max_mem_clock_mhz": 6251,
           "mem_bus_width_bits": 192, "match": r"\bL4\s*$",
           "datasheet": {"mem": 300e9, "fp32": 30.3, "tf32": 60, "bf16": 121, "fp16": 121, "fp8": 242.5,
                         "int8": 242.5}},
    "A10": {"arch": "sm_86", "sm_count": 72, "max_sm_clock_mhz": 1695, "max_mem_clock_mhz": 6251,
            "mem_bus_width_bits": 384, "match": r"\bA10\s*$",
            "datasheet": {"mem": 600e9, "fp32": 31.2, "tf32": 62.5, "bf16": 125, "fp16": 125, "int8": 250}},
}


def known_gpu(name: str | None) -> str | None:
    """The ``KNOWN_GPUS`` key of a device name ("NVIDIA H100 80GB HBM3" -> "H100 SXM"), or None."""
    text = str(name or "")
    for key, spec in KNOWN_GPUS.items():
        if re.search(spec["match"], text):
            return key
    return None

# Clock-event reason bits (nvmlClocksEventReason*; the deprecated ThrottleReason names have the same values).
# Idle, application-clock setting, sync boost and display clock are not "held back by power/heat": ignored.
_REASONS = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x200: "board_limit",
    0x400: "reliability",
}
_IGNORED_REASONS = 0x1 | 0x2 | 0x10 | 0x100


def _nvml():
    """(pynvml module, None) after nvmlInit, or (None, why)."""
    try:
        import pynvml
    except Exception as e:  # noqa: BLE001 - any import problem means "no NVML"
        return None, f"{NO_GPU_NOTE} (pynvml not importable: {type(e).__name__})"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"{NO_GPU_NOTE} (nvmlInit failed: {_err(e)})"
    return pynvml, None


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".strip().rstrip(":")


def _s(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


def _try(fn: Callable[[], Any], default: Any = None) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - one unsupported query must not lose the others
        return default


def _torch_props(index: int) -> Any:
    try:
        import torch

        if torch.cuda.is_available() and index < torch.cuda.device_count():
            return torch.cuda.get_device_properties(index)
    except Exception:  # noqa: BLE001
        pass
    return None


def _handle(pynvml: Any, index: int, props: Any = None) -> Any:
    """NVML handle of torch's device ``index``: matched by UUID when torch exposes it (CUDA_VISIBLE_DEVICES may
    renumber devices), else by index."""
    uuid = getattr(props, "uuid", None) if props is not None else None
    if uuid is not None:
        text = str(uuid)
        h = _try(lambda: pynvml.nvmlDeviceGetHandleByUUID(text if text.startswith("GPU-") else f"GPU-{text}"))
        if h is not None:
            return h
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def device_info(index: int = 0) -> dict[str, Any]:
    """Static properties of GPU ``index``. Keys are always present (None when unknown); ``available`` is False and
    ``note`` says why when there is no GPU/NVML. Clocks in MHz, sizes in bytes, power in W."""
    info: dict[str, Any] = dict.fromkeys(
        (
            "name", "uuid", "sm_count", "cc", "l2_bytes", "memory_bytes", "max_sm_clock_mhz", "max_mem_clock_mhz",
            "mem_bus_width_bits", "cur_sm_clock_mhz", "cur_mem_clock_mhz", "power_limit_w", "driver",
            "cuda_driver_version",
        )
    )
    info["index"] = index
    info["available"] = False
    props = _torch_props(index)
    if props is not None:
        info["name"] = props.name
        info["sm_count"] = props.multi_processor_count
        info["cc"] = f"{props.major}.{props.minor}"
        info["l2_bytes"] = getattr(props, "L2_cache_size", None)
        info["memory_bytes"] = props.total_memory
        info["available"] = True
    pynvml, why = _nvml()
    if pynvml is None:
        info["note"] = why if props is None else f"CUDA GPU visible to torch but NVML unavailable ({why})"
        return info
    try:
        h = _handle(pynvml, index, props)
    except Exception as e:  # noqa: BLE001
        info["note"] = f"{NO_GPU_NOTE} (no NVML device {index}: {_err(e)})"
        return info
    info["available"] = True
    sm, mem = pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_MEM
    info["name"] = info["name"] or _try(lambda: _s(pynvml.nvmlDeviceGetName(h)))
    info["uuid"] = _try(lambda: _s(pynvml.nvmlDeviceGetUUID(h)))
    if info["cc"] is None:
        cc = _try(lambda: pynvml.nvmlDeviceGetCudaComputeCapability(h))
        info["cc"] = f"{cc[0]}.{cc[1]}" if cc else None
    if info["memory_bytes"] is None:
        info["memory_bytes"] = _try(lambda: int(pynvml.nvmlDeviceGetMemoryInfo(h).total))
    info["max_sm_clock_mhz"] = _try(lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, sm))
    info["max_mem_clock_mhz"] = _try(lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, mem))
    info["mem_bus_width_bits"] = _try(lambda: pynvml.nvmlDeviceGetMemoryBusWidth(h))
    info["cur_sm_clock_mhz"] = _try(lambda: pynvml.nvmlDeviceGetClockInfo(h, sm))
    info["cur_mem_clock_mhz"] = _try(lambda: pynvml.nvmlDeviceGetClockInfo(h, mem))
    limit = _try(lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(h)) or _try(
        lambda: pynvml.nvmlDeviceGetPowerManagementLimit(h)
    )
    info["power_limit_w"] = limit / 1000.0 if limit else None
    info["driver"] = _try(lambda: _s(pynvml.nvmlSystemGetDriverVersion()))
    v = _try(lambda: pynvml.nvmlSystemGetCudaDriverVersion())
    info["cuda_driver_version"] = f"{v // 1000}.{(v % 1000) // 10}" if isinstance(v, int) else v
    if props is None:
        info["note"] = "NVML device present but torch sees no CUDA device: timings are CPU timings"
    return info


def _pct(sorted_vals: list[float], q: float) -> float:
    """Linear-interpolated percentile of an ascending list (numpy's default), without importing numpy here."""
    k = (len(sorted_vals) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return float(sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo))


def reason_names(mask: int) -> list[str]:
    """Names of the clock-event bits that mean "held back" (power cap, thermal, slowdown); idle etc. dropped."""
    mask = int(mask) & ~_IGNORED_REASONS
    names = [name for bit, name in _REASONS.items() if mask & bit]
    rest = mask & ~sum(_REASONS)
    if rest:
        names.append(f"other_0x{rest:x}")
    return names


class NvmlSampler:
    """Sample clocks/power/temperature/clock-event reasons every ``period_s`` during a ``with`` block.

    >>> with NvmlSampler() as s:
    ...     run_timed_loop()
    >>> s.summary()  # {'sm_clock_mhz_median': 1980, ..., 'throttled': False}

    Without NVML it does nothing and ``summary()`` returns ``{"available": False, "note": ...}``.
    """

    def __init__(self, index: int = 0, period_s: float = 0.015, max_samples: int = 20000):
        self.index = index
        self.period_s = period_s
        self.max_samples = max_samples
        self.samples: list[dict[str, Any]] = []
        self.note: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pynvml: Any = None
        self._h: Any = None
        self._reasons_fn: Callable[[Any], int] | None = None
        self._t0 = 0.0
        self._t1 = 0.0

    @property
    def running(self) -> bool:
        """True inside the ``with`` block (time_calls enters a sampler only when it is not running)."""
        return self._thread is not None and self._thread.is_alive()

    def clock_stats(self, t0: float | None = None, t1: float | None = None) -> dict[str, Any] | None:
        """SM clock p10 / p90 / median (MHz) and spread ``var_pct`` = (p90/p10 - 1) x 100 of the samples taken
        between perf_counter times t0 and t1 (all when None); None without samples."""
        vals = [s["sm_clock_mhz"] for s in list(self.samples) if s.get("sm_clock_mhz")
                and (t0 is None or s["t"] >= t0) and (t1 is None or s["t"] <= t1)]
        if not vals and (t0 is not None or t1 is not None):  # a region shorter than one period: nearest samples
            vals = [s["sm_clock_mhz"] for s in list(self.samples)[-2:] if s.get("sm_clock_mhz")]
        if not vals:
            return None
        vals.sort()
        p10 = _pct(vals, 10)
        p90 = _pct(vals, 90)
        return {"p10": p10, "p90": p90, "median": statistics.median(vals), "n": len(vals),
                "var_pct": (p90 / p10 - 1.0) * 100.0 if p10 else None}

    def __enter__(self) -> NvmlSampler:
        try:
            pynvml, why = _nvml()
            if pynvml is None:
                self.note = why
                return self
            self._pynvml = pynvml
            self._h = _handle(pynvml, self.index, _torch_props(self.index))
            for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
                fn = getattr(pynvml, name, None)
                if fn is not None and _try(lambda f=fn: f(self._h)) is not None:
                    self._reasons_fn = fn
                    break
            self._sample()  # one sample before the region even if it is shorter than a period
            self._thread = threading.Thread(target=self._run, name="NvmlSampler", daemon=True)
            self._t0 = time.perf_counter()
            self._thread.start()
        except Exception as e:  # noqa: BLE001
            self.note = f"NVML sampling unavailable: {_err(e)}"
            self._h = None
        return self

    def __exit__(self, *exc: Any) -> None:
        self._t1 = time.perf_counter()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            if self._h is not None:
                _try(self._sample)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            if len(self.samples) >= self.max_samples:
                break
            try:
                self._sample()
            except Exception as e:  # noqa: BLE001
                self.note = f"NVML sampling stopped: {_err(e)}"
                break

    def _sample(self) -> None:
        p, h = self._pynvml, self._h
        s = {
            "t": time.perf_counter(),
            "sm_clock_mhz": _try(lambda: p.nvmlDeviceGetClockInfo(h, p.NVML_CLOCK_SM)),
            "mem_clock_mhz": _try(lambda: p.nvmlDeviceGetClockInfo(h, p.NVML_CLOCK_MEM)),
            "power_w": _try(lambda: p.nvmlDeviceGetPowerUsage(h) / 1000.0),
            "temp_c": _try(lambda: p.nvmlDeviceGetTemperature(h, p.NVML_TEMPERATURE_GPU)),
            "reasons": _try(lambda: int(self._reasons_fn(h))) if self._reasons_fn else None,
        }
        self.samples.append(s)

    def summary(self) -> dict[str, Any]:
        if self._h is None or not self.samples:
            return {"available": False, "note": self.note or NO_GPU_NOTE, "n_samples": 0}

        def med(key: str) -> float | None:
            vals = [s[key] for s in self.samples if s[key] is not None]
            return statistics.median(vals) if vals else None

        temps = [s["temp_c"] for s in self.samples if s["temp_c"] is not None]
        mask = 0
        for s in self.samples:
            mask |= s["reasons"] or 0
        names = reason_names(mask)
        cs = self.clock_stats()
        out = {
            "available": True,
            "n_samples": len(self.samples),
            "duration_s": round(self._t1 - self._t0, 4) if self._t1 else None,
            "sm_clock_mhz_median": med("sm_clock_mhz"),
            "sm_clock_mhz_min": min((s["sm_clock_mhz"] for s in self.samples if s["sm_clock_mhz"]), default=None),
            "sm_clock_mhz_p10": (cs or {}).get("p10"),
            "sm_clock_mhz_p90": (cs or {}).get("p90"),
            "sm_clock_var_pct": (cs or {}).get("var_pct"),
            "mem_clock_mhz_median": med("mem_clock_mhz"),
            "power_w_median": med("power_w"),
            "temp_c_max": max(temps) if temps else None,
            "throttle_reasons": names,
            "throttled": bool(names),
        }
        if self._reasons_fn is None:
            out["note"] = "clock-event reasons not reported by this driver"
        elif self.note:
            out["note"] = self.note
        return out


def gpm_dram_bw(fn: Callable[[], Any], duration_s: float = 0.3, index: int = 0) -> dict[str, Any]:
    """Measured DRAM bandwidth while ``fn()`` runs in a loop, from Hopper+ GPM (``NVML_GPM_METRIC_DRAM_BW_UTIL``).

    Returns ``{"available": True, "dram_bw_util_pct", "gbps", "peak_gbps", "calls", "seconds", "bytes_per_call"}``
    (GB/s = util% x NVML peak bandwidth; bytes/call = GB/s x seconds / calls, so launch gaps count as idle DRAM in
    GB/s but not in bytes/call), or ``{"available": False, "note": why}``. Never raises: an exception from ``fn``
    is reported in the note too.
    """
    try:
        pynvml, why = _nvml()
        if pynvml is None:
            return {"available": False, "note": why}
        props = _torch_props(index)
        if props is None:
            return {"available": False, "note": "torch sees no CUDA device: nothing to sample"}
        h = _handle(pynvml, index, props)
        if props.major < 9:
            return {"available": False, "note": f"GPM needs Hopper or newer (cc {props.major}.{props.minor})"}
        if not hasattr(pynvml, "nvmlGpmMetricsGet"):
            return {"available": False, "note": "this pynvml has no GPM bindings"}
        sup = _try(lambda: pynvml.nvmlGpmQueryDeviceSupport(h))
        if sup is None or not sup.isSupportedDevice:
            return {"available": False, "note": "NVML GPM not supported on this device/driver (VM or MIG?)"}
        import torch

        clk = _try(lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM))
        width = _try(lambda: pynvml.nvmlDeviceGetMemoryBusWidth(h))
        if not clk or not width:
            return {"available": False, "note": "NVML reports no max memory clock / bus width: no peak to scale by"}
        peak = nvml_peak_bandwidth(clk, width)
        s1 = pynvml.nvmlGpmSampleAlloc()
        s2 = pynvml.nvmlGpmSampleAlloc()
        try:
            fn()
            torch.cuda.synchronize()
            pynvml.nvmlGpmSampleGet(h, s1)
            t0 = time.perf_counter()
            calls = 0
            while True:
                fn()
                calls += 1
                if calls % 8 == 0 or calls < 8:
                    torch.cuda.synchronize()
                    if time.perf_counter() - t0 >= duration_s:
                        break
            torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            pynvml.nvmlGpmSampleGet(h, s2)
            mg = pynvml.c_nvmlGpmMetricsGet_t()
            mg.version = pynvml.NVML_GPM_METRICS_GET_VERSION
            mg.numMetrics = 1
            mg.sample1 = s1
            mg.sample2 = s2
            mg.metrics[0].metricId = pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL
            pynvml.nvmlGpmMetricsGet(mg)
            if mg.metrics[0].nvmlReturn != 0:
                return {"available": False, "note": f"GPM DRAM_BW_UTIL returned NVML error {mg.metrics[0].nvmlReturn}"}
            util = float(mg.metrics[0].value)
        finally:
            _try(lambda: pynvml.nvmlGpmSampleFree(s1))
            _try(lambda: pynvml.nvmlGpmSampleFree(s2))
        bw = util / 100.0 * peak
        return {
            "available": True,
            "dram_bw_util_pct": util,
            "gbps": bw / 1e9,
            "peak_gbps": peak / 1e9,
            "calls": calls,
            "seconds": seconds,
            "bytes_per_call": bw * seconds / calls,
            "note": "GPM DRAM_BW_UTIL x NVML peak (max mem clock x 2 x bus width / 8); includes launch gaps",
        }
    except Exception as e:  # noqa: BLE001
        return {"available": False, "note": f"GPM measurement failed: {_err(e)}"}

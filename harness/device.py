"""What GPU we are on, and what it was doing while we timed it (NVML via ``pynvml`` = nvidia-ml-py).

Everything here degrades to a dict with a ``"note"`` when there is no GPU, no NVML library or an old driver: these
functions are called by the runner on every machine (the CPU laptop included) and must never raise.

* ``device_info(index=0)``: static properties (SMs, L2, clocks, bus width, power limit, driver) for records and for
  the roofline ceilings (``roofline.ceilings.nvml_peak_bandwidth``).
* ``NvmlSampler``: a context manager that samples SM/memory clocks, power, temperature and clock-event ("throttle")
  reasons every ~15 ms in a background thread during a timed region; ``.summary()`` says whether the GPU was held
  back (power cap, thermal, slowdown) while the numbers were taken.
* ``gpm_dram_bw(fn)``: Hopper+ GPM counter ``NVML_GPM_METRIC_DRAM_BW_UTIL`` around a loop of ``fn()``: measured DRAM
  traffic, to compare with a kernel's minimum-byte model (bytes/call measured vs modelled).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

NO_GPU_NOTE = "no NVIDIA GPU/NVML here: timings are CPU timings"

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
        out = {
            "available": True,
            "n_samples": len(self.samples),
            "duration_s": round(self._t1 - self._t0, 4) if self._t1 else None,
            "sm_clock_mhz_median": med("sm_clock_mhz"),
            "sm_clock_mhz_min": min((s["sm_clock_mhz"] for s in self.samples if s["sm_clock_mhz"]), default=None),
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

        from roofline.ceilings import nvml_peak_bandwidth

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

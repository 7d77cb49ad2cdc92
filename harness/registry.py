"""The one registry that tests, benchmarks and plots iterate.

A *problem* (a kernel family: softmax, matmul, ...) owns everything that is not a submission: how inputs are made,
the float64 reference, the FLOP and minimum-byte models, tolerances and shapes. A *variant* is one submission for
that problem: a Triton launcher, a CUDA kernel, or a library baseline (backend ``torch``).

Families live in ``harness/families/<name>.py`` and register themselves on import; ``harness.families.load_all()``
imports every family module. Adding a variant is one ``problem.add_variant(...)`` call (see docs/adding-a-kernel.md).

Calling convention of a variant (``Variant.fn``)::

    fn(inputs: dict[str, Tensor], out: dict[str, Tensor] | None, shape: Shape) -> dict[str, Tensor] | None

* ``style="out"`` (kernels): the harness allocates ``problem.make_outputs(...)``, poisons them (NaN, or a sentinel for
  integer outputs) and passes them as ``out``; the variant writes every element and returns None.
* ``style="return"`` (library baselines): ``out`` is None and the variant returns its own output tensors.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp64": torch.float64,
    "fp8": getattr(torch, "float8_e4m3fn", torch.float16),
    "int8": torch.int8,
}
DTYPE_SIZE = {"fp32": 4, "fp16": 2, "bf16": 2, "fp64": 8, "fp8": 1, "int8": 1}

BACKENDS = ("triton", "cuda", "torch")


class RegistryError(ValueError):
    """Bad input to the registry (unknown family/variant/dtype, malformed shape). Message lists the valid choices."""


@dataclass(frozen=True)
class Tolerance:
    """Pass iff ||out-ref||/||ref|| <= rel  and  |out-ref| <= atol + rtol*|ref| elementwise (NaN/Inf never pass)."""

    rel: float
    atol: float
    rtol: float


# Defaults per dtype of the *inputs*. fp32 is tight enough that a hidden TF32 downcast (rel ~3e-4) fails.
DEFAULT_TOL: dict[str, Tolerance] = {
    "fp64": Tolerance(1e-12, 1e-12, 1e-12),
    "fp32": Tolerance(2e-5, 1e-5, 1e-4),
    "fp16": Tolerance(2e-3, 2e-3, 1e-2),
    "bf16": Tolerance(1e-2, 1e-2, 4e-2),
    "fp8": Tolerance(6e-2, 6e-2, 1.5e-1),
    "int8": Tolerance(2e-3, 2e-3, 1e-2),
}


class Shape(dict):
    """A problem size: named dimensions in the problem's order, plus named options (causal, metric, ...).

    ``str(shape)`` is the canonical form used in records and on the command line: ``M=4096,N=1024``.
    """

    def key(self) -> str:
        return ",".join(f"{k}={_fmt(v)}" for k, v in self.items())

    __str__ = key

    def __getattr__(self, name: str) -> Any:  # shape.M
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def _parse_value(text: str, like: Any) -> Any:
    if isinstance(like, bool):
        if text.lower() in ("1", "true", "yes", "y"):
            return True
        if text.lower() in ("0", "false", "no", "n"):
            return False
        raise RegistryError(f"expected a boolean (0/1), got {text!r}")
    if isinstance(like, int):
        try:
            return int(text.replace("_", ""))
        except ValueError:
            raise RegistryError(f"expected an integer, got {text!r}") from None
    if isinstance(like, float):
        return float(text)
    return text


@dataclass
class Variant:
    name: str
    backend: str  # triton | cuda | torch
    fn: Callable[..., Any]
    dtypes: tuple[str, ...]
    baseline: bool = False
    style: str = "out"  # "out" (writes harness-allocated poisoned outputs) or "return"
    description: str = ""  # the idea, one line: shown in tables and reports
    # CUDA variants: the source and kernel name (for the compile step and the ptxas resource report)
    source: Any = None  # harness.cuda.CudaSource
    # kernel name(s) as written in the .cu, template arguments included; "{T}" becomes the dtype's CUDA type
    # (harness.cuda.CUDA_TYPES), so "softmax_v2<{T}>" serves every dtype. A tuple for multi-kernel variants.
    kernel: str | tuple[str, ...] | None = None
    # Returns None when the variant can run this shape/dtype here, else a one-line reason (status "skipped").
    supports: Callable[[Shape, str], str | None] | None = None
    tolerance: dict[str, Tolerance] = field(default_factory=dict)  # per-dtype override (e.g. a tf32 mode)
    ladder: int | None = None  # rung number for numbered CUDA variants (variant-ladder figure)
    # the compute roof this variant runs on when it differs from the problem's (a TF32 mode of an fp32 problem,
    # the bf16 library baseline of a quantized one): roofline placement and the >100% check use it
    compute_dtype: str | None = None
    family: str = ""

    def kernel_names(self, dtype: str) -> tuple[str, ...]:
        from harness.cuda import CUDA_TYPES

        names = (self.kernel,) if isinstance(self.kernel, str) else tuple(self.kernel or ())
        return tuple(n.replace("{T}", CUDA_TYPES.get(dtype, dtype)) for n in names)

    def skip_reason(self, shape: Shape, dtype: str) -> str | None:
        if dtype not in self.dtypes:
            return f"{self.name} does not support {dtype} (supports {', '.join(self.dtypes)})"
        return self.supports(shape, dtype) if self.supports else None


@dataclass
class Problem:
    """A kernel family. See the module docstring for the calling convention."""

    name: str
    dims: tuple[str, ...]  # positional order for "AxBxC" shapes on the command line
    dtypes: tuple[str, ...]
    # make_inputs(shape, dtype, seed, device) -> dict of tensors. Fresh random data per seed, never zeros.
    make_inputs: Callable[[Shape, str, int, torch.device], dict[str, torch.Tensor]]
    # make_outputs(shape, dtype, device) -> dict of empty tensors that a style="out" variant fills.
    make_outputs: Callable[[Shape, str, torch.device], dict[str, torch.Tensor]]
    # reference(inputs, shape, dtype) -> dict of float64 (or integer) tensors, same keys as make_outputs.
    # Inputs arrive as given to the variants; the reference upcasts to float64 itself (harness.check.f64).
    reference: Callable[[dict[str, torch.Tensor], Shape, str], dict[str, torch.Tensor]]
    flops: Callable[[Shape], float]
    min_bytes: Callable[[Shape, str], float]  # fewest DRAM bytes: each input read once, each output written once
    shapes: list[Shape]
    quick: list[Shape]
    options: dict[str, Any] = field(default_factory=dict)  # named non-positional shape options and their defaults
    tolerance: dict[str, Tolerance] = field(default_factory=dict)  # per-dtype override of DEFAULT_TOL
    # check(out, ref, inputs, shape, dtype, tol) -> harness.check.CheckResult; None means the default comparison
    check: Callable[..., Any] | None = None
    description: str = ""
    compute_dtype: Callable[[str, Shape], str] | None = None  # (dtype, shape) -> which compute roof applies
    throughput_unit: str = "TFLOP/s"  # or "GB/s" for memory-bound families: what the tables lead with
    extra_metrics: Callable[[Shape, float], dict[str, float]] | None = None  # (shape, median_ms) -> e.g. queries/s
    # the shapes (with their dtypes) that the benchmark targets name: `bench/run.py --headline`
    headline: list[tuple[Shape, tuple[str, ...]]] = field(default_factory=list)
    variants: dict[str, Variant] = field(default_factory=dict)

    # ---------------------------------------------------------------- variants
    def add_variant(self, name: str, backend: str, fn: Callable[..., Any], dtypes=None, **kw: Any) -> Variant:
        if backend not in BACKENDS:
            raise RegistryError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if name in self.variants:
            raise RegistryError(f"variant {name!r} registered twice in {self.name}")
        v = Variant(name=name, backend=backend, fn=fn, dtypes=tuple(dtypes or self.dtypes), family=self.name, **kw)
        self.variants[name] = v
        return v

    def variant(self, name: str, backend: str, dtypes=None, **kw: Any):
        """Decorator form of add_variant."""

        def deco(fn):
            self.add_variant(name, backend, fn, dtypes=dtypes, **kw)
            return fn

        return deco

    def tol(self, dtype: str, variant: Variant | None = None) -> Tolerance:
        if variant is not None and dtype in variant.tolerance:
            return variant.tolerance[dtype]
        return self.tolerance.get(dtype, DEFAULT_TOL[dtype])

    # ---------------------------------------------------------------- shapes
    def shape(self, **kw: Any) -> Shape:
        unknown = set(kw) - set(self.dims) - set(self.options)
        if unknown:
            fields = list(self.dims) + list(self.options)
            raise RegistryError(f"{self.name}: unknown shape field(s) {sorted(unknown)}; fields are {fields}")
        missing = [d for d in self.dims if d not in kw]
        if missing:
            raise RegistryError(f"{self.name}: shape is missing {missing} (dims are {'x'.join(self.dims)})")
        s = Shape()
        for d in self.dims:
            v = kw[d]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise RegistryError(f"{self.name}: {d} must be a positive integer, got {v!r}")
            s[d] = v
        for o, default in self.options.items():
            s[o] = kw.get(o, default)
        return s

    def parse_shape(self, text: str) -> Shape:
        """'4096x1024', '4096x1024,causal=1' or 'M=4096,N=1024' -> Shape (errors list the expected form)."""
        form = "x".join(self.dims) + "".join(f",{o}={_fmt(v)}" for o, v in self.options.items())
        text = text.strip()
        if not text:
            raise RegistryError(f"{self.name}: empty shape; expected {form}")
        kw: dict[str, Any] = {}
        parts = [p for p in text.split(",") if p]
        if "=" not in parts[0]:
            nums = re.split(r"[x×*]", parts.pop(0))
            if len(nums) != len(self.dims):
                raise RegistryError(f"{self.name}: shape {text!r} has {len(nums)} dims; expected {form}")
            for d, n in zip(self.dims, nums):
                kw[d] = self._value(n, 0, text, form)
        for p in parts:
            if "=" not in p:
                raise RegistryError(f"{self.name}: cannot parse {p!r} in shape {text!r}; expected {form}")
            k, v = p.split("=", 1)
            k = k.strip()
            like = self.options.get(k, 0)
            if k not in self.dims and k not in self.options:
                raise RegistryError(f"{self.name}: unknown shape field {k!r}; expected {form}")
            kw[k] = self._value(v.strip(), like, text, form)
        return self.shape(**kw)

    def _value(self, v: str, like: Any, text: str, form: str) -> Any:
        try:
            return _parse_value(v, like)
        except RegistryError as e:
            raise RegistryError(f"{self.name}: shape {text!r}: {e}; expected {form}") from None


def interpreter() -> bool:
    """True when Triton runs under TRITON_INTERPRET=1 (the CPU machine): slow, and bf16 tl.dot is wrong there."""
    import os

    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def tuning() -> bool:
    """Autotune Triton kernels (default). WB_TUNE=0 takes each kernel's first listed config instead: correctness
    sweeps on a fresh GPU machine then compile one config per kernel, not ten."""
    import os

    return os.environ.get("WB_TUNE", "1") != "0" and not interpreter()


def on_gpu() -> bool:
    return torch.cuda.is_available()


REGISTRY: dict[str, Problem] = {}

# Families that are planned but may not be registered yet: `--kernel X` says so instead of "unknown".
FAMILIES = ("softmax", "matmul", "attention", "quant_gemm", "knn")


def register(problem: Problem) -> Problem:
    if problem.name in REGISTRY:
        raise RegistryError(f"family {problem.name!r} registered twice")
    REGISTRY[problem.name] = problem
    return problem


def get_problem(name: str) -> Problem:
    from harness import families

    families.load_all()
    if name not in REGISTRY:
        if name in FAMILIES:
            raise RegistryError(f"family {name!r} is planned but not implemented yet; available: {sorted(REGISTRY)}")
        raise RegistryError(f"unknown family {name!r}; choose from {sorted(REGISTRY)} or 'all'")
    return REGISTRY[name]


def all_problems() -> list[Problem]:
    from harness import families

    families.load_all()
    return [REGISTRY[n] for n in FAMILIES if n in REGISTRY] + [
        p for n, p in REGISTRY.items() if n not in FAMILIES
    ]


def resolve_group(kernel: str) -> list[str]:
    """``--kernel`` -> family names: 'all', a family, or a group ('attention' is attention + attention_decode)."""
    all_problems()
    names = list(REGISTRY)
    if kernel == "all":
        return names
    group = [n for n in names if n == kernel or n.startswith(kernel + "_")]
    if group:
        return group
    if kernel in FAMILIES:
        raise RegistryError(f"family {kernel!r} is planned but not implemented yet; available: {', '.join(names)}")
    raise RegistryError(f"unknown kernel family {kernel!r}; choose from {', '.join(names + ['all'])}")

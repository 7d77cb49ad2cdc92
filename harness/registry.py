"""The one registry that tests, benchmarks and plots iterate.

A *problem* (a kernel family: softmax, matmul, ...) owns everything that is not a submission: how inputs are made,
the float64 reference, the FLOP and minimum-byte models, tolerances and shapes. A *variant* is one submission for
that problem: a Triton launcher, a CUDA kernel, or a library baseline (backend ``torch``).

Families live in ``harness/families/<name>.py`` and register themselves on import; ``load_all()`` imports every
family module by name (the registry never imports a family: the families import it). Adding a variant is one
``problem.add_variant(...)`` call (see docs/adding-a-kernel.md).

Calling convention of a variant (``Variant.fn``)::

    fn(inputs: dict[str, Tensor], out: dict[str, Tensor] | None, shape: Shape) -> dict[str, Tensor] | None

* ``style="out"`` (kernels): the harness allocates ``problem.make_outputs(...)``, poisons them (NaN, or a sentinel for
  integer outputs) and passes them as ``out``; the variant writes every element and returns None.
* ``style="return"`` (library baselines): ``out`` is None and the variant returns its own output tensors.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from kernels._tuning import interpreter  # noqa: F401  (the families' supports() ask here)

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
    """Pass iff ||out-ref||/||ref|| <= rel  and  |out-ref| <= atol*rms(ref) + rtol*|ref| elementwise (NaN/Inf never
    pass). ``atol`` is in units of the reference's root-mean-square, so one number means the same at every scale."""

    rel: float
    atol: float
    rtol: float

    def tightened(self, other: Tolerance) -> Tolerance:
        """Each bound the smaller of the two: what a variant's own tolerance may do to the family's."""
        return Tolerance(min(self.rel, other.rel), min(self.atol, other.atol), min(self.rtol, other.rtol))


# Unit roundoff u (half an ulp at 1.0) of each precision a result can be declared in. fp8 is e4m3 (3 mantissa bits).
UNIT_ROUNDOFF: dict[str, float] = {
    "fp64": 2.0**-53, "fp32": 2.0**-24, "tf32": 2.0**-11, "fp16": 2.0**-11, "bf16": 2.0**-8, "fp8": 2.0**-4,
}
_LOW = ("tf32", "fp16", "bf16", "fp8")  # computed with fp32 accumulation; stored (or multiplied) at this precision


def derived_tolerance(precision: str, reduction: int = 1, stages: float = 1.0, cond: float = 0.0) -> Tolerance:
    """The tolerance of a result declared at ``precision`` whose elements each reduce ``reduction`` terms.

    An honest result carries its storage rounding (<= u per element, ~0.43u normwise for random data), ``stages``
    more roundings at that precision in multi-stage kernels (attention rounds P before P@V), and fp32 accumulation
    error (~u32·sqrt(K) normwise; the low precisions accumulate in fp32). Normwise the bound is 1.5x that budget:
    honest results measure 0.1-0.45 of it (fp16/bf16/fp32 softmax, GEMM, naive and FA-style attention, K up to
    4096), a result rounded one precision lower measures >= 2x (fp16 -> bf16 is 8x the roundoff, fp32 -> tf32 8192x),
    so it fails at any size. Elementwise the bound is (8 + 2 ln K)x the budget: it grows with the reduction length
    because the tails do (larger logits and partial sums over longer reductions), so millions of honest elements do
    not trip it, while a wrong element or a wrong tile still does.

    ``cond`` is the conditioning of the function at the family's inputs, in units of the compute roundoff: an
    absolute error ua·|x| in the argument of exp becomes a relative error ua·|x| in its result, so a softmax whose
    rows reach |x| = 160 written as exp(x - logsumexp(x)) (the FlashAttention LSE form) is honest at 160·ua."""
    u = UNIT_ROUNDOFF[precision]
    ua = UNIT_ROUNDOFF["fp32"] if precision in _LOW else u
    k = max(1, int(reduction))
    budget = u * stages + ua * (math.sqrt(k) + cond)
    elem = (8.0 + 2.0 * math.log(k)) * budget
    return Tolerance(rel=1.5 * budget, atol=elem, rtol=elem)


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
    # a declared compute precision (a TF32 mode of an fp32 problem): the tolerance and the row's label follow it when
    # the family accepts it (Problem.lower_precisions), and so does the roof
    compute_dtype: str | None = None
    # the compute roof when it differs from the problem's, with no claim about precision (the bf16 library baseline
    # of an int8 quantized scheme): roofline placement and the >100% check use it
    roof_dtype: str | None = None
    # library baselines only (backend "torch"): the family's conversion of the judge's inputs into the library's own
    # layout (FAISS's index object), (inputs, shape) -> anything; run before every call outside the timed region,
    # never cached, and passed to the variant as inputs["_prepared"] (harness.runner: a request of its own before
    # each call, outside the judge's bracket of the call; variant_inputs in tests)
    prepare: Callable[[dict[str, Any], Shape], Any] | None = None
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
    # per-dtype override of the derived tolerance (say why where it is set); None of them may loosen a variant's
    tolerance: dict[str, Tolerance] = field(default_factory=dict)
    # (dtype, shape) -> (precision the outputs are declared at, reduction length per output element, extra roundings
    # at that precision[, conditioning]): the derived tolerance's inputs. Default: (dtype, 1, 1).
    tol_model: Callable[[str, Shape], tuple] | None = None
    # coarser compute precisions a variant may declare (compute_dtype) for a storage precision, e.g. {"fp32":
    # ("tf32",)}: such a variant is checked at the declared precision and labelled "fp32 (tf32)". Any other coarser
    # declaration is refused (it could only loosen its own tolerance).
    lower_precisions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # check(out, ref, inputs, shape, dtype, tol) -> harness.check.CheckResult; None means the default comparison
    check: Callable[..., Any] | None = None
    description: str = ""
    compute_dtype: Callable[[str, Shape], str] | None = None  # (dtype, shape) -> which compute roof applies
    throughput_unit: str = "TFLOP/s"  # or "GB/s" for memory-bound families: what the tables lead with
    extra_metrics: Callable[[Shape, float], dict[str, float]] | None = None  # (shape, median_ms) -> e.g. queries/s
    # the shapes (with their dtypes) that the benchmark targets name: `bench/run.py --headline`
    headline: list[tuple[Shape, tuple[str, ...]]] = field(default_factory=list)
    inout: tuple[str, ...] = ()  # inputs a style="out" variant updates in place (sgemm's C): passed in `out`
    # Spot checks for shapes whose float64 reference is too costly to run on every check (matmul 8192³: 1.1 TFLOP of
    # fp64, ~20 s on an H200, five times per record): output slices along ``spot_dim`` are independent, so the
    # judge may verify a random subset of them, drawn after the call. ``spot(inputs, outputs, shape, idx)`` returns
    # (inputs, outputs, shape) restricted to the indices ``idx`` (sorted int64) of that dimension; see
    # harness.runner.spot_plan for when it applies.
    # magnitude(inputs, shape, dtype) -> {output: sum of |terms| per element, float64} (``abs_reference`` for a
    # reference that is a sum of products of its inputs): the judge's scale where few output elements can cancel
    magnitude: Callable[[dict, Shape, str], dict[str, torch.Tensor]] | None = None
    spot_dim: str | None = None
    spot: Callable[[dict, dict, Shape, torch.Tensor], tuple[dict, dict, Shape]] | None = None
    # the float64 reference's FLOPs when they differ from the variants' (``flops``): an index search's verdict
    # needs the exact neighbours over the whole base, far more than the search does; spot_plan budgets with it
    ref_flops: Callable[[Shape], float] | None = None
    variants: dict[str, Variant] = field(default_factory=dict)
    # other positional orders a shape may be given in, by name (``--shape-order course``): the course's SGEMM takes
    # (M, K, N) where this family's documented order is M x N x K. A record always names its dims ("M=..,N=..").
    orders: dict[str, tuple[str, ...]] = field(default_factory=dict)

    # ---------------------------------------------------------------- variants
    def add_variant(self, name: str, backend: str, fn: Callable[..., Any], dtypes=None, **kw: Any) -> Variant:
        if backend not in BACKENDS:
            raise RegistryError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if name in self.variants:
            raise RegistryError(f"variant {name!r} registered twice in {self.name}")
        if kw.get("prepare") is not None and backend != "torch":
            raise RegistryError(f"{name}: only library baselines (backend torch) may declare prepare; a kernel's "
                                f"work belongs inside the timed call")
        v = Variant(name=name, backend=backend, fn=fn, dtypes=tuple(dtypes or self.dtypes), family=self.name, **kw)
        self.variants[name] = v
        return v

    def variant(self, name: str, backend: str, dtypes=None, **kw: Any):
        """Decorator form of add_variant."""

        def deco(fn):
            self.add_variant(name, backend, fn, dtypes=dtypes, **kw)
            return fn

        return deco

    def tol_for(self, dtype: str, shape: Shape, variant: Variant | None = None) -> tuple[Tolerance, dict[str, Any]]:
        """The tolerance a record is checked at, and how it was made (written into the record).

        Derived from the declared precision's unit roundoff and the reduction length (``derived_tolerance``). A
        variant that declares a coarser compute precision the family accepts (``lower_precisions``: tf32 for an fp32
        GEMM) is checked at that precision and labelled with it ("fp32 (tf32)"); a coarser one the family does not
        accept raises RegistryError (the record is ``incorrect``); a variant's own ``tolerance`` only tightens."""
        model = tuple(self.tol_model(dtype, shape)) if self.tol_model else (dtype, 1, 1.0)
        prec, k, stages = model[:3]
        cond = float(model[3]) if len(model) > 3 else 0.0
        family_prec = prec
        coarser = self._coarser(prec, variant)
        if coarser is not None:
            if coarser not in self.lower_precisions.get(prec, ()):
                ok = ", ".join(self.lower_precisions.get(prec, ())) or "none"
                raise RegistryError(f"{variant.name} declares compute_dtype={coarser!r}, coarser than {prec}, which "
                                    f"{self.name} does not accept as a mode of {prec} (accepted: {ok}): a declaration "
                                    f"can only label a precision the family knows, never loosen a tolerance")
            prec = coarser
        if dtype in self.tolerance and prec == family_prec:
            tol, basis = self.tolerance[dtype], f"{self.name} override for {dtype}"
        elif prec in UNIT_ROUNDOFF:
            tol = derived_tolerance(prec, k, stages, cond)
            basis = f"{prec} (u={UNIT_ROUNDOFF[prec]:.3g}), reduction {k}" + (f", {stages:g} roundings"
                                                                                if stages != 1 else "") \
                + (f", conditioning {cond:g}" if cond else "")
        else:
            tol, basis = Tolerance(0.0, 0.0, 0.0), f"{prec}: exact"
        tightened = False
        if variant is not None and dtype in variant.tolerance:
            t2 = tol.tightened(variant.tolerance[dtype])
            tightened, tol = t2 != tol, t2
        info = {"rel": tol.rel, "atol_rms": tol.atol, "rtol": tol.rtol, "precision": prec, "basis": basis,
                "tightened_by_variant": tightened}
        return tol, info

    @staticmethod
    def _coarser(prec: str, variant: Variant | None) -> str | None:
        """The variant's declared compute precision when it is coarser than ``prec``, else None."""
        cd = variant.compute_dtype if variant is not None else None
        if cd in UNIT_ROUNDOFF and prec in UNIT_ROUNDOFF and UNIT_ROUNDOFF[cd] > UNIT_ROUNDOFF[prec]:
            return cd
        return None

    def precision_label(self, dtype: str, shape: Shape, variant: Variant | None = None) -> str:
        """``dtype``, or "fp32 (tf32)" for a variant that declares a coarser compute precision: its own row, never
        shown as the family's fp32 result."""
        prec = self.tol_model(dtype, shape)[0] if self.tol_model else dtype
        coarser = self._coarser(prec, variant)
        return f"{dtype} ({coarser})" if coarser else dtype

    def tol(self, dtype: str, variant: Variant | None = None, shape: Shape | None = None) -> Tolerance:
        """``tol_for`` without the provenance; the shape defaults to the first quick shape."""
        shape = shape if shape is not None else (self.quick or self.shapes or [Shape()])[0]
        return self.tol_for(dtype, shape, variant)[0]

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

    def order(self, name: str | None = None) -> tuple[str, ...]:
        """The positional order ``name`` ("default" or None: ``dims``; else one of ``orders``)."""
        if name in (None, "", "default"):
            return self.dims
        if name not in self.orders:
            have = ", ".join(["default", *self.orders])
            raise RegistryError(f"{self.name}: no shape order {name!r}; its orders: {have}")
        return self.orders[name]

    def parse_shape(self, text: str, order: str | None = None) -> Shape:
        """'4096x1024', '4096x1024,causal=1' or 'M=4096,N=1024' -> Shape (errors list the expected form).
        Positional numbers follow ``dims``, or the named alternative ``order`` (``orders``); named dims never
        depend on it."""
        dims = self.order(order)
        form = "x".join(dims) + "".join(f",{o}={_fmt(v)}" for o, v in self.options.items())
        text = text.strip()
        if not text:
            raise RegistryError(f"{self.name}: empty shape; expected {form}")
        kw: dict[str, Any] = {}
        parts = [p for p in text.split(",") if p]
        if "=" not in parts[0]:
            nums = re.split(r"[x×*]", parts.pop(0))
            if len(nums) != len(dims):
                raise RegistryError(f"{self.name}: shape {text!r} has {len(nums)} dims; expected {form}")
            for d, n in zip(dims, nums):
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


def abs_reference(reference: Callable[[dict, Shape, str], dict]) -> Callable[[dict, Shape, str], dict]:
    """``Problem.magnitude`` of a reference that sums products of its inputs with non-negative coefficients (matmul,
    sgemm, conv, saxpy): the same reference on |inputs| is the sum of |terms| of every output element."""

    def magnitude(inputs: dict, shape: Shape, dtype: str) -> dict:
        absd = {k: (v.to(torch.float64).abs() if isinstance(v, torch.Tensor) and v.is_floating_point()
                    else abs(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                for k, v in inputs.items()}
        return reference(absd, shape, dtype)

    return magnitude


def on_gpu() -> bool:
    return torch.cuda.is_available()


def gpu_arch_reason(what: str, minimum: tuple[int, int] | None = None, exact: tuple[int, int] | None = None
                    ) -> str | None:
    """A supports() reason when this GPU's compute capability is below ``minimum`` or is not ``exact``:
    "<what>; this GPU is sm_XY". None without a GPU (the runner then only compiles) or when the GPU qualifies."""
    if not torch.cuda.is_available():
        return None
    cc = torch.cuda.get_device_capability()
    if (minimum is not None and cc < minimum) or (exact is not None and cc != exact):
        return f"{what}; this GPU is sm_{cc[0]}{cc[1]}"
    return None


REGISTRY: dict[str, Problem] = {}

# The family modules under harness/families/, in order. One that is not written yet is planned: `--kernel X` says
# so instead of "unknown".
FAMILIES = ("softmax", "matmul", "attention", "quant_gemm", "knn", "ann", "saxpy", "sgemm", "conv1d")
LOAD_ERRORS: dict[str, str] = {}  # family -> traceback of a module that failed to import (bench/run.py reports it)
_loaded = False


def register(problem: Problem) -> Problem:
    if problem.name in REGISTRY:
        raise RegistryError(f"family {problem.name!r} registered twice")
    REGISTRY[problem.name] = problem
    return problem


def load_all() -> None:
    """Import every family module once, in order: ``FAMILIES`` from harness/families/, then those kept outside it
    (your own course-assignment family, a test's toy family) named in ``WB_FAMILIES`` (comma-separated module names
    importable from the repo root or PYTHONPATH; worker processes inherit it). A family whose module fails to import
    lands in ``LOAD_ERRORS`` instead of taking the other families down."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    extra = [m.strip() for m in os.environ.get("WB_FAMILIES", "").split(",") if m.strip()]
    for name in [*FAMILIES, *extra]:
        mod = name if "." in name or name in extra else f"harness.families.{name}"
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod and name in FAMILIES:
                continue  # family not written yet: bench/run.py says "planned but not implemented"
            LOAD_ERRORS[name] = traceback.format_exc(limit=3)
        except Exception:
            LOAD_ERRORS[name] = traceback.format_exc(limit=3)
    prime_cuda_sources()


def prime_cuda_sources() -> None:
    """Every CUDA variant's kernels (every dtype) join their source's instantiation list before anything compiles:
    one build per .cu and arch, with the same cache key in every process."""
    for problem in REGISTRY.values():
        for v in problem.variants.values():
            if v.backend == "cuda" and v.source is not None and hasattr(v.source, "_ensure_instantiated"):
                for d in v.dtypes:
                    for k in v.kernel_names(d):
                        v.source._ensure_instantiated(k)


def get_problem(name: str) -> Problem:
    load_all()
    if name not in REGISTRY:
        if name in FAMILIES:
            raise RegistryError(f"family {name!r} is planned but not implemented yet; available: {sorted(REGISTRY)}")
        raise RegistryError(f"unknown family {name!r}; choose from {sorted(REGISTRY)} or 'all'")
    return REGISTRY[name]


def all_problems() -> list[Problem]:
    load_all()
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

"""Attention family: the float64 reference, the Triton kernels under the interpreter, and the checker's teeth.

CPU part (TRITON_INTERPRET=1, tiny shapes, < 60 s): the chunked float64 reference agrees with torch's math SDPA in
float64 (bottom-right causal, GQA) and with itself unchunked; fully masked rows give O = 0 and LSE = -inf; the Triton
prefill and split-K decode kernels pass the family check in fp16 and fp32 (bf16 tl.dot is wrong in the interpreter);
known-wrong variants are rejected. GPU part (``gpu`` marker): every variant x dtype x quick shape through the runner's
check, plus a few mid-size irregular shapes.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness.check import CheckResult
from harness.families import attention as fam
from harness.registry import Shape
from harness.runner import check_once

DEV = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
P, DEC = fam.PREFILL, fam.DECODE


def _sdpa_math_f64(q, k, v, causal):
    """torch's own math SDPA in float64 with an explicit bottom-right mask (independent of our reference)."""
    B, H, Nq, D = q.shape
    Nkv = k.shape[2]
    g = H // k.shape[1]
    k, v = k.double().repeat_interleave(g, 1), v.double().repeat_interleave(g, 1)
    mask = torch.ones(Nq, Nkv, dtype=torch.bool).tril(Nkv - Nq) if causal else None
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q.double(), k, v, attn_mask=mask)


def _lse_f64(q, k, causal):
    g = q.shape[1] // k.shape[1]
    s = q.double() @ k.double().repeat_interleave(g, 1).transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        Nq, Nkv = q.shape[2], k.shape[2]
        s = s.masked_fill(~torch.ones(Nq, Nkv, dtype=torch.bool).tril(Nkv - Nq), float("-inf"))
    return torch.logsumexp(s, -1)


@pytest.mark.parametrize("B,H,Hkv,Nq,Nkv,D,causal", [
    (2, 4, 4, 17, 17, 16, False), (2, 4, 4, 17, 17, 16, True), (1, 6, 2, 9, 31, 32, True),
    (1, 4, 1, 1, 17, 16, True), (1, 2, 2, 40, 40, 64, False), (1, 2, 1, 30, 50, 8, True),
])
def test_reference_matches_torch_math_sdpa(B, H, Hkv, Nq, Nkv, D, causal):
    s = P.shape(B=B, H=H, Hkv=Hkv, Nq=Nq, Nkv=Nkv, D=D, causal=causal)
    inp = P.make_inputs(s, "fp32", 0, torch.device("cpu"))
    ref = P.reference(inp, s, "fp32")
    assert ref["o"].dtype == torch.float64 and ref["lse"].dtype == torch.float64
    torch.testing.assert_close(ref["o"], _sdpa_math_f64(inp["q"], inp["k"], inp["v"], causal), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ref["lse"], _lse_f64(inp["q"], inp["k"], causal), rtol=1e-10, atol=1e-12)


def test_reference_chunking_is_exact(monkeypatch):
    s = P.shape(B=1, H=4, Hkv=2, Nq=37, Nkv=29, D=16, causal=True)
    inp = P.make_inputs(s, "fp32", 3, torch.device("cpu"))
    whole = P.reference(inp, s, "fp32")
    monkeypatch.setattr(fam, "REF_CHUNK_BYTES", 4 * 29 * 8 * 5)  # 5 query rows per chunk
    pieces = P.reference(inp, s, "fp32")
    for k in whole:
        torch.testing.assert_close(pieces[k], whole[k], rtol=0, atol=1e-14)


def test_fully_masked_rows_give_zero_and_minus_inf():
    s = P.shape(B=1, H=2, Hkv=2, Nq=33, Nkv=20, D=16, causal=True)
    inp = P.make_inputs(s, "fp16", 0, torch.device("cpu"))
    ref = P.reference(inp, s, "fp16")
    assert not torch.isnan(ref["o"]).any() and not torch.isnan(ref["lse"]).any()
    assert torch.all(ref["o"][:, :, :13] == 0) and torch.all(ref["lse"][:, :, :13] == float("-inf"))
    assert torch.isfinite(ref["lse"][:, :, 13:]).all()
    from kernels.attention import attention

    o, lse = attention(inp["q"].to(DEV), inp["k"].to(DEV), inp["v"].to(DEV), causal=True)
    assert not torch.isnan(o).any() and not torch.isnan(lse).any()
    assert torch.all(o[:, :, :13] == 0) and torch.all(lse[:, :, :13] == float("-inf"))


def test_flops_and_bytes():
    s = P.shape(B=2, H=8, Hkv=2, Nq=1024, Nkv=1024, D=128)
    assert P.flops(s) == 4 * 2 * 8 * 1024 * 1024 * 128
    sc = P.shape(B=2, H=8, Hkv=2, Nq=1024, Nkv=1024, D=128, causal=True)
    assert P.flops(sc) == 4 * 2 * 8 * 128 * (1024 * 1025 // 2)  # unmasked pairs, ~half
    assert P.flops(P.shape(B=1, H=1, Hkv=1, Nq=30, Nkv=10, D=16, causal=True)) == 4 * 16 * sum(range(1, 11))
    assert P.min_bytes(s, "bf16") == (2 * 2 * 8 * 1024 * 128 + 2 * 2 * 2 * 1024 * 128) * 2 + 4 * 2 * 8 * 1024
    d = DEC.shape(B=5, H=8, Hkv=2, Nq=1, Nkv=100, D=64, ragged=True)
    lens = [fam._decode_seqlens(d, seed) for seed in range(4)]
    assert all(int(x.sum()) == fam._decode_total(d) for x in lens)  # random lengths, fixed total
    assert all(int(x.min()) >= 1 and int(x.max()) <= 100 for x in lens)
    assert not torch.equal(lens[0], lens[1])
    assert DEC.flops(d) == 4 * 8 * 1 * 64 * fam._decode_total(d)


# --------------------------------------------------------------------------------------- Triton under the interpreter
def _check(problem, name, dtype, shape, seed=0):
    v = problem.variants[name]
    reason = v.supports(shape, dtype) if v.supports else None
    if reason:
        pytest.skip(reason)
    return check_once(problem, v, dtype, shape, seed, DEV)


@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
@pytest.mark.parametrize("shape", [str(s) for s in P.quick] + [
    "B=2,H=4,Hkv=2,Nq=20,Nkv=33,D=24,causal=1",  # GQA, Nq < Nkv bottom-right, head dim not a power of two
    "B=1,H=3,Hkv=1,Nq=17,Nkv=1,D=16,causal=0",
])
def test_triton_prefill_interpreter(dtype, shape):
    res = _check(P, "triton_fa2", dtype, P.parse_shape(shape))
    assert res.ok, res.message
    assert res.extra.get("lse_checked") is True


@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
@pytest.mark.parametrize("shape", [str(s) for s in DEC.quick])
def test_triton_decode_interpreter(dtype, shape):
    res = _check(DEC, "triton_splitk", dtype, DEC.parse_shape(shape), seed=1)
    assert res.ok, res.message


@pytest.mark.parametrize("splits", [1, 2, 3, 7])
def test_decode_split_counts_and_ragged(splits):
    from kernels.attention import decode_attention

    s = DEC.shape(B=4, H=4, Hkv=2, Nq=2, Nkv=45, D=16, ragged=True)
    inp = DEC.make_inputs(s, "fp32", 5, DEV)
    inp["seqlens"] = torch.tensor([1, 45, 16, 17], dtype=torch.int32, device=DEV)  # a split boundary at 16
    # garbage beyond each valid length must not leak in
    for b, L in enumerate(inp["seqlens"].tolist()):
        inp["k"][b, :, L:] = 1e4
        inp["v"][b, :, L:] = float("nan")
    o, lse = decode_attention(inp["q"], inp["k"], inp["v"], inp["seqlens"], num_splits=splits)
    ref = DEC.reference(inp, s, "fp32")
    torch.testing.assert_close(o.double().cpu(), ref["o"].cpu(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lse.double().cpu(), ref["lse"].cpu(), rtol=1e-5, atol=1e-5)


def test_baselines_check_o_only():
    s = P.quick[1]
    res = check_once(P, P.variants["sdpa_math"], "fp16", s, 0, DEV)
    assert res.ok, res.message
    assert res.extra["lse_checked"] is False


# ------------------------------------------------------------------------------------------ known-wrong variants
def _torch_attn(inputs, causal_shift=0, causal=True):
    q, k, v = inputs["q"].double(), inputs["k"].double(), inputs["v"].double()
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    Nq, Nkv = q.shape[2], k.shape[2]
    if causal:
        keep = torch.ones(Nq, Nkv, dtype=torch.bool, device=q.device).tril(Nkv - Nq + causal_shift)
        s = s.masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse.nan_to_num(0, 0, 0)[..., None])
    return (p @ v).to(inputs["q"].dtype), lse.float()


def _run_wrong(problem, fn, dtype, shape, style="out"):
    v = problem.add_variant(f"wrong_{len(problem.variants)}", "torch", fn, style=style)
    try:
        return check_once(problem, v, dtype, problem.parse_shape(shape), 0, DEV)
    finally:
        del problem.variants[v.name]


@pytest.mark.parametrize("shift", [-1, 1])
def test_causal_off_by_one_rejected(shift):
    def wrong(i, o, s):
        oo, ll = _torch_attn(i, causal_shift=shift)
        o["o"].copy_(oo)
        o["lse"].copy_(ll)

    def right(i, o, s):
        oo, ll = _torch_attn(i)
        o["o"].copy_(oo)
        o["lse"].copy_(ll)

    assert _run_wrong(P, right, "fp16", "B=1,H=2,Hkv=1,Nq=17,Nkv=17,D=16,causal=1").ok  # the harness itself is sane
    res = _run_wrong(P, wrong, "fp16", "B=1,H=2,Hkv=1,Nq=17,Nkv=17,D=16,causal=1")
    assert not res.ok


def test_top_left_causal_rejected():
    """SDPA's is_causal=True with Nq != Nkv is top-left aligned: must fail our bottom-right problem."""
    def top_left(i, o, s):
        return {"o": F.scaled_dot_product_attention(i["q"].float(), i["k"].float(), i["v"].float(),
                                                    is_causal=True).to(i["q"].dtype)}

    res = _run_wrong(P, top_left, "fp16", "B=1,H=2,Hkv=2,Nq=5,Nkv=17,D=16,causal=1", style="return")
    assert not res.ok


def test_missing_lse_rejected_for_kernels():
    def o_only(i, o, s):
        o["o"].copy_(_torch_attn(i, causal=False)[0])

    res = _run_wrong(P, o_only, "fp16", "B=1,H=2,Hkv=1,Nq=17,Nkv=17,D=16,causal=0")
    assert not res.ok and "lse" in res.message


def test_decode_ignoring_seqlens_rejected():
    from kernels.attention import decode_attention

    def ignores(i, o, s):
        full = torch.full_like(i["seqlens"], i["k"].shape[2])
        decode_attention(i["q"], i["k"], i["v"], full, out=o["o"], lse=o["lse"])

    res = _run_wrong(DEC, ignores, "fp16", "B=3,H=4,Hkv=2,Nq=1,Nkv=37,D=16,ragged=1")
    assert not res.ok


def test_shape_parsing_and_registry():
    from harness.registry import REGISTRY

    assert REGISTRY["attention"] is P and REGISTRY["attention_decode"] is DEC
    s = P.parse_shape("2x16x4x128x256x64,causal=1")
    assert isinstance(s, Shape) and s.Hkv == 4 and s.causal is True
    assert P.variants["sdpa_flash"].baseline and DEC.variants["sdpa"].baseline
    assert isinstance(fam._check({"o": torch.zeros(1)}, {"o": torch.zeros(2), "lse": torch.zeros(1)}, {}, s, "bf16",
                                 P.tol("bf16")), CheckResult)


# ---------------------------------------------------------------------------------------------------------- GPU
def _all_cases():
    for prob in (P, DEC):
        extra = [] if prob is DEC else ["B=2,H=8,Hkv=2,Nq=1000,Nkv=1000,D=128,causal=1",
                                        "B=1,H=4,Hkv=4,Nq=257,Nkv=4097,D=64,causal=1"]
        if prob is DEC:
            extra = ["B=5,H=32,Hkv=8,Nq=1,Nkv=3000,D=128,ragged=1", "B=2,H=8,Hkv=8,Nq=4,Nkv=1025,D=64,ragged=1"]
        for name in prob.variants:
            for dtype in ("bf16", "fp16", "fp32"):
                for shape in [str(s) for s in prob.quick] + extra:
                    yield pytest.param(prob.name, name, dtype, shape, id=f"{prob.name}-{name}-{dtype}-{shape}")


@pytest.mark.gpu
@pytest.mark.parametrize("family,variant,dtype,shape", list(_all_cases()))
def test_gpu_every_variant(family, variant, dtype, shape):
    prob = P if family == "attention" else DEC
    v = prob.variants[variant]
    s = prob.parse_shape(shape)
    reason = v.supports(s, dtype) if v.supports else None
    if reason:
        pytest.skip(reason)
    for seed in (0, 1):
        res = check_once(prob, v, dtype, s, seed, DEV)
        assert res.ok, res.message

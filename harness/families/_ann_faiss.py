"""FAISS baselines of the ``ann`` family: the judge's index handed to FAISS as it is (same centroids, codebooks,
lists, ids and codes; nothing retrained, nothing re-encoded), searched by ``IndexIVFFlat`` / ``IndexIVFPQ`` on the
CPU and, where faiss-gpu is installed, on the GPU.

FAISS keeps its own index layout, so turning the judge's tensors into a FAISS index is index construction, not
search: ``prepare_cpu`` / ``prepare_gpu`` run as the variants' ``prepare`` (harness.runner.VariantSide.prepare), before
every call and outside the timed region, exactly like the index build of every other variant. The timed call is
FAISS's coarse search (``quantizer.search``, which also gives the probes the verdict needs) and
``search_preassigned`` — what ``index.search`` does inside — plus, with ``rerank``, the exact distances of the k·r
candidates from an ``IndexFlatL2`` of the raw vectors (``compute_distance_subset``: what ``IndexRefineFlat``
computes) and the k best of them. IVFPQ uses FAISS's precomputed tables (``precompute_table``: part of FAISS's
index, built in ``prepare``). CPU timings use as many OpenMP threads as torch has.
"""

from __future__ import annotations

from typing import Any

import torch


class Prepared:
    """A FAISS index built from the judge's inputs, with the arrays it points into kept alive."""

    def __init__(self, index: Any, quantizer: Any, refine: Any = None, keep: tuple = (), res: Any = None):
        self.index, self.quantizer, self.refine, self.keep, self.res = index, quantizer, refine, keep, res


def available() -> str | None:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return "faiss is not installed (pip install faiss-cpu; the test extra brings it)"
    return None


def prepare_cpu(inputs: dict[str, torch.Tensor], shape) -> Prepared:
    import faiss
    import numpy as np

    D, nlist = shape.D, shape.nlist
    cent = np.ascontiguousarray(inputs["centroids"].detach().cpu().numpy())
    quant = faiss.IndexFlatL2(D)
    quant.add(cent)
    if shape.pq == 0:
        index = faiss.IndexIVFFlat(quant, D, nlist)
        codes = np.ascontiguousarray(inputs["list_vecs"].detach().cpu().numpy()).view(np.uint8)
    else:
        index = faiss.IndexIVFPQ(quant, D, nlist, shape.pq, 8)
        cb = np.ascontiguousarray(inputs["codebooks"].detach().cpu().numpy())
        faiss.copy_array_to_vector(cb.ravel(), index.pq.centroids)
        codes = np.ascontiguousarray(inputs["list_codes"].detach().cpu().numpy())
    index.is_trained = True
    ids = np.ascontiguousarray(inputs["list_ids"].detach().cpu().numpy())
    off = inputs["list_offsets"].detach().cpu().tolist()
    for lst in range(nlist):
        a, b = off[lst], off[lst + 1]
        if b > a:  # add_entries copies: the slices only need to live through the call
            index.invlists.add_entries(lst, b - a, faiss.swig_ptr(ids[a:b]), faiss.swig_ptr(codes[a:b]))
    index.ntotal = ids.shape[0]
    refine = None
    if shape.pq > 0:
        index.precompute_table()
        if shape.rerank > 0:
            refine = faiss.IndexFlatL2(D)
            refine.add(np.ascontiguousarray(inputs["base"].detach().cpu().numpy()))
    index.nprobe = shape.nprobe
    return Prepared(index, quant, refine, (cent,))


def _finish(d: torch.Tensor, i: torch.Tensor, probe: torch.Tensor, dev) -> dict[str, torch.Tensor]:
    none = i < 0
    d = torch.where(none, torch.full_like(d, float("inf")), d.float())
    return {"dist": d.to(dev).contiguous(), "idx": i.long().to(dev).contiguous(), "probe": probe.long().to(dev)
            .contiguous()}


def _k(shape) -> int:
    return min(shape.k, shape.N)


def search_cpu(inputs: dict[str, Any], out, shape) -> dict[str, torch.Tensor]:
    import faiss
    import numpy as np

    prep = inputs.get("_prepared") or prepare_cpu(inputs, shape)
    faiss.omp_set_num_threads(torch.get_num_threads())
    x = np.ascontiguousarray(inputs["x"].detach().cpu().numpy())
    k = _k(shape)
    rr = shape.pq > 0 and shape.rerank > 0
    K = min(shape.N, k * shape.rerank) if rr else k
    dq, iq = prep.quantizer.search(x, shape.nprobe)
    d, i = prep.index.search_preassigned(x, K, iq, dq)
    if rr:
        ex = np.empty_like(d)
        prep.refine.compute_distance_subset(x.shape[0], faiss.swig_ptr(x), K, faiss.swig_ptr(ex), faiss.swig_ptr(i))
        ex = np.where(i < 0, np.inf, ex)
        o = np.argsort(ex, axis=1, kind="stable")[:, :k]
        d, i = np.take_along_axis(ex, o, 1), np.take_along_axis(i, o, 1)
    return _finish(torch.from_numpy(d), torch.from_numpy(i), torch.from_numpy(iq), inputs["x"].device)


def gpu_available(shape=None, dtype=None) -> str | None:
    reason = available()
    if reason:
        return reason
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        return "faiss has no GPU support here (faiss-gpu is not installed)"
    if not torch.cuda.is_available():
        return "no GPU"
    return None


def prepare_gpu(inputs: dict[str, torch.Tensor], shape) -> Prepared:
    import faiss

    cpu = prepare_cpu(inputs, shape)
    res = faiss.StandardGpuResources()
    co = faiss.GpuClonerOptions()
    co.useFloat16 = False  # fp32 tables and vectors: the same arithmetic the verdict's bands describe
    index = faiss.index_cpu_to_gpu(res, torch.cuda.current_device(), cpu.index, co)
    index.nprobe = shape.nprobe
    return Prepared(index, index.quantizer, None, (cpu,), res)


def search_gpu(inputs: dict[str, Any], out, shape) -> dict[str, torch.Tensor]:
    import faiss.contrib.torch_utils  # noqa: F401  (torch tensors in and out, on the device)

    prep = inputs.get("_prepared") or prepare_gpu(inputs, shape)
    x = inputs["x"].contiguous()
    k = _k(shape)
    rr = shape.pq > 0 and shape.rerank > 0
    K = min(shape.N, k * shape.rerank) if rr else k
    dq, iq = prep.quantizer.search(x, shape.nprobe)
    if hasattr(prep.index, "search_preassigned"):
        d, i = prep.index.search_preassigned(x, K, iq, dq)
    else:  # older faiss-gpu: the same search with its own (identical, deterministic) coarse step
        d, i = prep.index.search(x, K)
    if rr:  # IndexRefineFlat's step on the device: exact fp32 distances of the k·r candidates, the k best
        base = inputs["base"]
        ex = ((x[:, None, :] - base[i.clamp(min=0)]) ** 2).sum(-1)
        ex = torch.where(i < 0, torch.full_like(ex, float("inf")), ex)
        o = torch.argsort(ex, dim=1, stable=True)[:, :k]
        d, i = ex.gather(1, o), i.gather(1, o)
    return _finish(d, i, iq, x.device)


def register_faiss_variants(problem) -> None:
    problem.add_variant("faiss_cpu", "torch", search_cpu, style="return", prepare=prepare_cpu,
                        supports=lambda s, d: available(),
                        description="FAISS IndexIVFFlat / IndexIVFPQ (precomputed tables) on the CPU, same index; "
                                    "re-rank as IndexRefineFlat (CPU timing)")
    problem.add_variant("faiss_gpu", "torch", search_gpu, style="return", prepare=prepare_gpu,
                        supports=gpu_available,
                        description="(GPU-unverified) FAISS GpuIndexIVFFlat / GpuIndexIVFPQ (fp32), same index; "
                                    "re-rank in torch as IndexRefineFlat")

"""Hot-loop model of the X-ray: is a kernel's main loop bound by issue slots, a functional pipe, the tensor cores,
DRAM or the shared-memory port? Answered statically from the SASS, without a GPU.

    python -m harness inspect --kernel attention --variants cuda_v3_wgmma     # the "hot loop" lines
    python -m harness.hotloop path/to/k.cubin [symbol] [--warps 8]             # every loop of one cubin

How (``find_loops`` on one function's SASS, ``model`` per loop):

* **Control flow.** ``cuobjdump -sass`` gives every instruction with its address and branch targets. Basic blocks
  end at a branch, EXIT/RET or a branch target; ``CALL`` targets are extra roots (subroutines). Dominators
  (Cooper-Harvey-Kennedy) give the back edges u -> h (h dominates u) and each natural loop {h + every block that
  reaches u without h}. A loop whose latch is ``BRA.U.ANY`` is a *uniform* loop (the compiler's loop over the
  distinct values of a non-uniform operand, e.g. around a TMA issue: once when the operand is warp-uniform); a loop
  of <= 8 instructions around an mbarrier try-wait, a nanosleep or a setmaxnreg try-alloc, with no tensor, TMA or
  memory instruction, is a *wait* loop (a retry). Neither is a hot loop.
* **One iteration.** The loop's main range is [header, last latch]; body blocks outside it are the compiler's
  out-of-line cold paths (wait retries) and are not counted. Inner loops are contracted: a uniform or wait loop
  counts once, a real inner loop counts trips x its own iteration when its trip count is a compile-time constant
  (an ``ISETP`` of a register stepped by an immediate against an immediate, initialised by an immediate before the
  loop) and is otherwise left out (``partial``). The counted iteration is the longest path from the header to a latch
  through the remaining forward edges (``instr``); the shortest is reported too (``instr_min``: rarely taken
  branches, e.g. a new quantisation group, make the two differ).
* **Per iteration**, counts by pipe (tensor with shapes, fp32, fp16x2, fp64, alu, imad, xu = MUFU + conversions,
  shfl, lsu, tma, sync, branch, uniform, other), global bytes per warp (LDG/STG/LDGSTS/ATOM/RED width x 32 lanes;
  UTMALDG boxes are set on the host, so TMA bytes are not visible: counted as ``tma`` ops), shared-port bytes per
  warp (LDS/STS/LDSM/LDGSTS, and wgmma's shared-memory operands once per warpgroup) and tensor FMAs per warp.

The cycle model (``model``): W warps of the SM run the loop together, spread over the 4 schedulers (SM
sub-partitions), so the busiest scheduler holds ceil(W / 4) of them. Per iteration of all W warps:

* issue  = instr x ceil(W/4): one warp-instruction per scheduler per cycle;
* pipe   = the busiest non-tensor pipe: count x 32 / (lanes per sub-partition per cycle) x ceil(W/4), lanes from the
  CUDA C++ Programming Guide table "Throughput of Native Arithmetic Instructions" (results per clock per SM,
  cc 8.0 / 9.0): fp32 add/mul/fma 64 / 128, fp16x2 128 instruction lanes (256 results) on both, fp64 32 / 64,
  integer add/logic/shift/compare/min/max 64, integer multiply-add 64, MUFU and type conversions 16, shuffles 32.
  (F2FP packing runs on the ALU: Nsight Compute's pipeline notes, "fast FP32-to-FP16 conversion" on the ALU.)
* tensor = sum over tensor instructions of FMAs per warp / (tensor-core FMAs per sub-partition per cycle) x
  ceil(W/4). Per-SM dense rates are ``roofline.ceilings.FLOP_PER_CLK_SM`` (A100 whitepaper: 256 fp16 FMA/clk per
  tensor core, 4 per SM = 2048 FLOP/clk/SM; H100 whitepaper: twice that per SM, 4096; fp8/int8 twice fp16; tf32
  half): one tensor core per sub-partition. A wgmma m64nNkK is issued by each of the warpgroup's 4 warps (one per
  sub-partition), each doing its 16 rows: 16 N K FMAs. mma.sync (HMMA) is charged the same per-core rate, an upper
  bound on what it reaches on sm_90 (arXiv 2402.13499 measures mma.sync well below wgmma on Hopper).
* memory = W x DRAM bytes / (DRAM B/clk/SM), the roof being the profile's memory roof / (SMs x clock). DRAM bytes
  per warp-iteration: the requested global bytes (LDG/STG/LDGSTS/atomics x 32 lanes; not sectors), or, when smaller,
  the iteration's share of the problem's minimum bytes in proportion to its FLOPs (tensor FMAs, FFMA/HFMA2 lanes):
  a GEMM's tiles are re-read from L2 and a GEMV's activations are broadcast, so DRAM sees that share, not every
  request. A tensor loop fed by TMA (no requested bytes in the loop) gets its share.
* shared = W x shared-port bytes / 128 B/clk/SM (32 banks x 4 B).

The bound is the largest; ``non_tensor_issue`` = (instr - tensor instr) x ceil(W/4) is the number that must hide
under the tensor time for a tensor-core kernel to reach its roof. W: the X-ray's occupancy (blocks/SM x warps per
block), else ``__launch_bounds__`` (EIATTR_MAX_THREADS) for host-mode launchers; a warp-specialised kernel
(SETMAXREG in the SASS) runs its tensor loops on all warps but one warpgroup (the producer) and its TMA-only loops on
one warp. All of it is a model of the SASS, not a measurement: GPU numbers come from the benchmark.
"""

from __future__ import annotations

import functools
import math
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

# ------------------------------------------------------------------------------------------------ SASS text
_FUNC = re.compile(r"^\s*Function\s*:\s*(\S+)")
_LINE = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+\{?\s*(?:@(!?U?P[T\d]+)\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Za-z0-9_]+)*)"
                   r"\s*([^;]*);")
_HEX = re.compile(r"0x([0-9a-f]+)")


@dataclass(frozen=True)
class Insn:
    addr: int
    pred: str  # "" (always), "P0", "!P3", "UP0", "PT", "!PT"
    op: str  # opcode with modifiers: "HGMMA.64x128x16.F32.BF16"
    args: str  # operand text

    @property
    def base(self) -> str:
        return self.op.split(".", 1)[0]


def parse_sass(text: str) -> dict[str, list[Insn]]:
    """``cuobjdump -sass`` text -> function symbol -> its instructions in address order."""
    funcs: dict[str, list[Insn]] = {}
    cur: list[Insn] | None = None
    for line in text.splitlines():
        m = _FUNC.match(line)
        if m:
            cur = funcs.setdefault(m.group(1), [])
            continue
        if cur is None:
            continue
        m = _LINE.match(line)
        if m:
            cur.append(Insn(int(m.group(1), 16), m.group(2) or "", m.group(3), m.group(4).strip()))
    return funcs


def _tool(name: str) -> str:
    from harness.sm import tool

    exe = tool(name)
    if exe is None:
        raise FileNotFoundError(f"{name} not found (ships with the triton wheel or the CUDA toolkit)")
    return exe


@functools.lru_cache(maxsize=32)
def _sass_cached(path: str, mtime: float) -> dict[str, list[Insn]]:
    res = subprocess.run([_tool("cuobjdump"), "-sass", path], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"cuobjdump -sass {os.path.basename(path)}: {res.stderr.strip()[:300]}")
    return parse_sass(res.stdout)


def sass(cubin: str | os.PathLike) -> dict[str, list[Insn]]:
    p = str(cubin)
    return _sass_cached(p, os.path.getmtime(p))


@functools.lru_cache(maxsize=32)
def _bounds_cached(path: str, mtime: float) -> dict[str, int]:
    out = subprocess.run([_tool("cuobjdump"), "-elf", path], capture_output=True, text=True).stdout
    res: dict[str, int] = {}
    cur = None
    lines = out.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\.nv\.info\.(\S+)", line.strip())
        if m:
            cur = m.group(1)
        elif cur and "EIATTR_MAX_THREADS" in line:
            for nxt in lines[i + 1:i + 4]:
                if "Value:" in nxt:
                    dims = [int(v, 16) for v in _HEX.findall(nxt)]
                    if dims:
                        res[cur] = math.prod(dims)
                    break
    return res


def launch_bounds(cubin: str | os.PathLike) -> dict[str, int]:
    """Function symbol -> max threads per block from ``__launch_bounds__`` (EIATTR_MAX_THREADS), where declared."""
    p = str(cubin)
    return _bounds_cached(p, os.path.getmtime(p))


# ------------------------------------------------------------------------------------------------ pipes
TENSOR = {"HGMMA", "QGMMA", "IGMMA", "BGMMA", "HMMA", "IMMA", "DMMA", "BMMA"}
FP32 = {"FFMA", "FADD", "FMUL", "FFMA32I", "FADD32I", "FMUL32I", "FSWZADD"}
FP16 = {"HFMA2", "HADD2", "HMUL2", "HFMA2_32I", "HADD2_32I", "HMUL2_32I"}
FP64 = {"DFMA", "DADD", "DMUL"}
XU = {"MUFU", "F2F", "F2I", "I2F", "FRND", "I2I"}
IMAD = {"IMAD", "IMUL", "IMAD32I", "IMUL32I", "IDP", "IMADSP"}
SHFL = {"SHFL"}
GLOBAL = {"LDG", "STG", "LDGSTS", "LD", "ST", "ATOM", "ATOMG", "RED", "REDG"}
SHARED = {"LDS", "STS", "LDSM", "STSM", "ATOMS"}
LSU = GLOBAL | SHARED | {"LDL", "STL", "LDC", "MATCH", "CCTL"}
TMA = {"UTMALDG", "UTMASTG", "UBLKCP", "UTMAPF", "UTMACCTL", "UTMAREDG", "UBLKRED", "UBLKPF"}
SYNC = {"BAR", "SYNCS", "WARPSYNC", "MEMBAR", "FENCE", "ERRBAR", "DEPBAR", "WARPGROUP", "LDGDEPBAR", "ARRIVES",
        "NANOSLEEP", "CGAERRBAR", "ACQBULK", "ELECT", "USETMAXREG", "SETMAXREG"}
BRANCHES = {"BRA", "BRX", "JMP", "JMX"}
ENDS = {"EXIT", "RET", "KILL", "BPT"}
BRANCH = BRANCHES | ENDS | {"CALL", "BSSY", "BSYNC", "BREAK", "YIELD", "BMOV"}
ALU = {"IADD3", "IADD", "IADD32I", "LOP3", "LOP", "LOP32I", "SHF", "SHL", "SHR", "ISETP", "FSETP", "HSETP2", "DSETP",
       "PLOP3", "SEL", "FSEL", "FMNMX", "IMNMX", "HMNMX2", "VIMNMX", "VIMNMX3", "VIADD", "VIADDMNMX", "MOV", "MOV32I",
       "PRMT", "LEA", "IABS", "P2R", "R2P", "ISCADD", "BMSK", "SGXT", "FLO", "POPC", "BREV", "F2FP", "I2FP", "F2IP",
       "FCHK", "VOTE", "CS2R", "CSET", "CSETP", "PSETP", "ISET", "FSET", "LEPC", "VABSDIFF", "VABSDIFF4", "IDE",
       "FMNMX3", "FADD3"}
# lanes per SM per clock of each SIMT pipe (CUDA C++ Programming Guide, "Throughput of Native Arithmetic
# Instructions"; see the module docstring). fp16x2 counts instruction lanes (2 results each).
PIPE_LANES = {
    "sm_80": {"fp32": 64, "fp16x2": 128, "fp64": 32, "alu": 64, "imad": 64, "xu": 16, "shfl": 32},
    "sm_86": {"fp32": 128, "fp16x2": 128, "fp64": 2, "alu": 64, "imad": 64, "xu": 16, "shfl": 32},
    "sm_89": {"fp32": 128, "fp16x2": 64, "fp64": 2, "alu": 64, "imad": 64, "xu": 16, "shfl": 32},
    "sm_90": {"fp32": 128, "fp16x2": 128, "fp64": 64, "alu": 64, "imad": 64, "xu": 16, "shfl": 32},
}
SHARED_BYTES_PER_CLK = 128  # 32 banks x 4 B per SM per clock (sm_80 / sm_90)
SCHEDULERS = 4


def pipe(op: str) -> str:
    """The issue class of one SASS opcode (see the module docstring)."""
    base = op.split(".", 1)[0]
    if base in TENSOR:
        return "tensor"
    if base in TMA:
        return "tma"
    for name, members in (("fp32", FP32), ("fp16x2", FP16), ("fp64", FP64), ("xu", XU), ("imad", IMAD),
                          ("shfl", SHFL), ("lsu", LSU), ("sync", SYNC), ("branch", BRANCH), ("alu", ALU)):
        if base in members:
            return name
    if base.startswith("U") or base in ("R2UR", "S2UR", "R2UR"):
        return "uniform"
    return "other"


def _lane_bytes(op: str) -> int:
    mods = op.split(".")[1:]
    for w in ("128", "64"):
        if w in mods:
            return int(w) // 8
    for m in mods:
        if m in ("U16", "S16"):
            return 2
        if m in ("U8", "S8"):
            return 1
    return 4


_MMA_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)$")
_HMMA_SHAPE = {"16816": (16, 8, 16), "1688": (16, 8, 8), "1684": (16, 8, 4), "16832": (16, 8, 32),
               "8816": (8, 8, 16), "8832": (8, 8, 32), "884": (8, 8, 4), "16864": (16, 8, 64), "168256": (16, 8, 256)}


def tensor_op(op: str) -> tuple[str, int, int] | None:
    """(dtype of the rate, FMAs per warp-instruction, shared-memory operand bytes per warp) of a tensor op; None if
    the shape is not understood. dtype keys ``roofline.ceilings.FLOP_PER_CLK_SM`` (fp32-accumulate names)."""
    parts = op.split(".")
    base, mods = parts[0], parts[1:]
    upper = {m.upper() for m in mods}
    if base == "DMMA":
        dt = "fp64"
    elif base in ("QGMMA",) or upper & {"E4M3", "E5M2"}:
        dt = "fp8"
    elif base in ("IGMMA", "IMMA"):
        dt = "int8"
    elif "TF32" in upper:
        dt = "tf32"
    elif base == "BGMMA" or base == "BMMA":
        return None
    else:
        dt = "bf16" if "F32" in upper or "BF16" in upper else "fp16_acc16"
    shape = None
    for m in mods:
        s = _MMA_SHAPE.match(m)
        if s:
            shape = tuple(int(v) for v in s.groups())
            break
        if m in _HMMA_SHAPE:
            shape = _HMMA_SHAPE[m]
            break
    if shape is None:
        return None
    mm, n, k = shape
    if base in ("HGMMA", "QGMMA", "IGMMA"):  # issued by each warp of the warpgroup: 16 of the 64 rows each
        return dt, (mm // 4) * n * k, 0
    return dt, mm * n * k, 0


def _wgmma_smem_bytes(insn: Insn) -> int:
    """Shared-memory operand bytes of one wgmma per warp: A (unless from registers) and B, once per warpgroup."""
    s = next((_MMA_SHAPE.match(m) for m in insn.op.split(".")[1:] if _MMA_SHAPE.match(m)), None)
    if s is None:
        return 0
    mm, n, k = (int(v) for v in s.groups())
    upper = insn.op.upper()
    eb = 1 if any(t in upper for t in ("E4M3", "E5M2", ".S8", ".U8")) else 4 if "TF32" in upper else 2
    args = [a.strip() for a in insn.args.split(",")]
    a_in_regs = len(args) > 1 and args[1].startswith("R")
    return ((0 if a_in_regs else mm * k * eb) + n * k * eb) // 4


# arithmetic operations per lane of a SIMT instruction (FMA = 2; a packed half2 op does two; IDP.4A four MACs,
# IDP.2A two: x2 below): the FLOPs that give a loop its share of the problem's DRAM bytes
_SIMT_FLOPS = {"FFMA": 2, "FFMA32I": 2, "FADD": 1, "FADD32I": 1, "FMUL": 1, "FMUL32I": 1, "DFMA": 2, "DADD": 1,
               "DMUL": 1, "HFMA2": 4, "HFMA2_32I": 4, "HADD2": 2, "HMUL2": 2, "HADD2_32I": 2, "HMUL2_32I": 2,
               "IDP": 8}


def insn_counts(insns: list[Insn]) -> Counter:
    """Per-warp counts of a straight run of instructions: 'instr', each pipe, 'tensor:<op>', 'fma:<dtype>', 'flops',
    'global_bytes', 'shared_bytes', 'tma_ops'."""
    c: Counter = Counter()
    for i in insns:
        c["instr"] += 1
        p = pipe(i.op)
        c[p] += 1
        base = i.base
        c["flops"] += 32 * _SIMT_FLOPS.get(base, 0) * (2 if base == "IDP" and ".2A" in i.op else 1)
        if p == "tensor":
            c["tensor:" + i.op] += 1
            t = tensor_op(i.op)
            if t:
                c["fma:" + t[0]] += t[1]
                c["flops"] += 2 * t[1]
            if base in ("HGMMA", "QGMMA", "IGMMA", "BGMMA"):
                c["shared_bytes"] += _wgmma_smem_bytes(i)
        elif base in GLOBAL:
            c["global_bytes"] += 32 * _lane_bytes(i.op)
            if base == "LDGSTS":
                c["shared_bytes"] += 32 * _lane_bytes(i.op)
        elif base in ("LDS", "STS", "ATOMS"):
            c["shared_bytes"] += 32 * _lane_bytes(i.op)
        elif base in ("LDSM", "STSM"):
            mods = i.op.split(".")
            c["shared_bytes"] += 128 * (4 if "4" in mods else 2 if "2" in mods else 1)
        elif p == "tma":
            c["tma_ops"] += 1
    return c


# ------------------------------------------------------------------------------------------------ control flow
def _target(i: Insn) -> int | None:
    m = _HEX.findall(i.args)
    return int(m[-1], 16) if m else None


@dataclass
class Block:
    idx: int
    start: int  # index of the first instruction
    end: int  # one past the last
    succ: list[int]
    addr: int = 0
    last_addr: int = 0


def blocks_of(insns: list[Insn]) -> tuple[list[Block], list[int]]:
    """Basic blocks of one function and the root blocks (entry, CALL targets)."""
    at = {i.addr: n for n, i in enumerate(insns)}
    leaders, calls = {0}, set()
    for n, i in enumerate(insns):
        b = i.base
        if b in BRANCHES or b == "CALL":
            t = _target(i)
            if t is not None and t in at:
                leaders.add(at[t])
                if b == "CALL":
                    calls.add(at[t])
            leaders.add(n + 1)
        elif b in ENDS:
            leaders.add(n + 1)
    starts = sorted(x for x in leaders if x < len(insns))
    blk_of = {s: k for k, s in enumerate(starts)}
    blocks = []
    for k, s in enumerate(starts):
        e = starts[k + 1] if k + 1 < len(starts) else len(insns)
        last = insns[e - 1]
        b, always = last.base, last.pred in ("", "PT")
        succ: list[int] = []
        nxt = blk_of.get(e)
        if b in BRANCHES:
            t = _target(last)
            if b == "BRA" and t is not None and t in at:
                succ.append(blk_of[at[t]])
            if not always and last.pred != "!PT" and nxt is not None:
                succ.append(nxt)
            elif last.pred == "!PT" and nxt is not None:
                succ = [nxt]
        elif b in ENDS:
            if not always and nxt is not None:
                succ.append(nxt)
        elif nxt is not None:
            succ.append(nxt)
        blocks.append(Block(k, s, e, list(dict.fromkeys(succ)), insns[s].addr, last.addr))
    roots = [0] + sorted(blk_of[c] for c in calls if c in blk_of)
    return blocks, roots


def dominators(blocks: list[Block], roots: list[int]) -> dict[int, int]:
    """Immediate dominators (Cooper, Harvey, Kennedy) of every block reachable from the roots; the roots hang under
    a virtual node -1."""
    order: list[int] = []
    seen: set[int] = set()
    for r in roots:  # iterative post-order DFS
        if r in seen:
            continue
        stack = [(r, iter(blocks[r].succ))]
        seen.add(r)
        while stack:
            node, it = stack[-1]
            nxt = next((s for s in it if s not in seen), None)
            if nxt is None:
                order.append(node)
                stack.pop()
            else:
                seen.add(nxt)
                stack.append((nxt, iter(blocks[nxt].succ)))
    rpo = list(reversed(order))
    num = {b: n for n, b in enumerate(rpo)}
    num[-1] = -1
    preds: dict[int, list[int]] = {b: [] for b in rpo}
    for b in rpo:
        for s in blocks[b].succ:
            preds[s].append(b)
    idom: dict[int, int] = {r: -1 for r in roots}

    def intersect(a: int, b: int) -> int:
        while a != b:
            while num[a] > num[b]:
                a = idom[a]
            while num[b] > num[a]:
                b = idom[b]
        return a

    changed = True
    while changed:
        changed = False
        for b in rpo:
            if b in roots:
                continue
            ps = [p for p in preds[b] if p in idom]
            if not ps:
                continue
            new = ps[0]
            for p in ps[1:]:
                new = intersect(p, new)
            if idom.get(b) != new:
                idom[b] = new
                changed = True
    return idom


def _dominates(idom: dict[int, int], a: int, b: int) -> bool:
    while b != -1:
        if a == b:
            return True
        b = idom.get(b, -1)
    return False


@dataclass
class Loop:
    header: int  # block index
    latches: list[int]
    body: set[int]
    kind: str = "loop"  # loop | uniform | wait
    parent: int | None = None  # header block of the enclosing loop
    children: list[int] | None = None
    trips: int | None = None


def natural_loops(blocks: list[Block], roots: list[int], insns: list[Insn]) -> dict[int, Loop]:
    idom = dominators(blocks, roots)
    preds: dict[int, list[int]] = {b: [] for b in range(len(blocks))}
    for b in idom:
        for s in blocks[b].succ:
            preds[s].append(b)
    loops: dict[int, Loop] = {}
    for b in idom:
        for s in blocks[b].succ:
            if s in idom and _dominates(idom, s, b):
                lp = loops.setdefault(s, Loop(s, [], {s}))
                lp.latches.append(b)
                stack = [b]
                while stack:
                    x = stack.pop()
                    if x in lp.body:
                        continue
                    lp.body.add(x)
                    stack.extend(preds[x])
    for lp in loops.values():
        ops = [insns[n] for b in lp.body for n in range(blocks[b].start, blocks[b].end)]
        latch_ops = [insns[blocks[x].end - 1] for x in lp.latches]
        if any(".U.ANY" in i.op for i in latch_ops):
            lp.kind = "uniform"
        elif len(ops) <= 8 and any(i.base in ("SYNCS", "NANOSLEEP") or "TRYWAIT" in i.op or "SETMAXREG" in i.base
                                   for i in ops) and not any(pipe(i.op) in ("tensor", "tma") or i.base in GLOBAL
                                                             or i.base in SHARED for i in ops):
            lp.kind = "wait"
    for h, lp in loops.items():  # the enclosing loop: the smallest other body containing this one
        outer = [o for o in loops.values() if o.header != h and lp.body < o.body]
        lp.parent = min(outer, key=lambda o: len(o.body)).header if outer else None
    for lp in loops.values():
        lp.children = [h for h, o in loops.items() if o.parent == lp.header]
    return loops


# ------------------------------------------------------------------------------------------------ trip counts
_IMM = r"(-?0x[0-9a-f]+|-?\d+)"


def _imm(s: str) -> int | None:
    s = s.strip()
    if s in ("RZ", "URZ"):
        return 0
    try:
        return int(s, 16) if s.lstrip("-").startswith("0x") else int(s)
    except ValueError:
        return None


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def trip_count(lp: Loop, blocks: list[Block], insns: list[Insn]) -> int | None:
    """Compile-time trip count of a single-latch loop counted by an immediate step against an immediate bound, the
    counter initialised by an immediate before the header; None when the pattern is not there."""
    if len(lp.latches) != 1:
        return None
    lb = blocks[lp.latches[0]]
    br = insns[lb.end - 1]
    if br.base != "BRA" or not br.pred or br.pred in ("PT", "!PT"):
        return None
    neg, p = br.pred.startswith("!"), br.pred.lstrip("!")
    body_idx = sorted(n for b in lp.body for n in range(blocks[b].start, blocks[b].end))
    setp = [n for n in body_idx if n < lb.end - 1 and insns[n].base in ("ISETP", "UISETP")
            and insns[n].args.split(",")[0].strip() == p]
    if not setp:
        return None
    s = insns[setp[-1]]
    a = [x.strip() for x in s.args.split(",")]
    mods = s.op.split(".")
    cmp = next((m for m in mods[1:] if m in ("EQ", "NE", "LT", "LE", "GT", "GE")), None)
    if cmp is None or len(a) < 4 or a[1] != "PT" and a[1] != "UPT":
        return None
    reg, bound = a[2], _imm(a[3])
    if bound is None or a[-1] not in ("PT", "UPT"):
        return None
    unsigned = "U32" in mods
    steps = []
    for n in body_idx:
        i = insns[n]
        args = [x.strip() for x in i.args.split(",")]
        if not args or args[0] != reg:
            continue
        if i.base in ("IADD3", "UIADD3") and len(args) == 4 and args[1] == reg and args[3] in ("RZ", "URZ"):
            steps.append((n, _imm(args[2])))
        elif i.base == "VIADD" and len(args) == 3 and args[1] == reg:
            steps.append((n, _imm(args[2])))
        else:
            steps.append((n, None))  # any other write: not a simple counter
    if len(steps) != 1 or steps[0][1] is None:
        return None
    step_at, step = steps[0]
    init = None
    for n in range(blocks[lp.header].start - 1, -1, -1):  # the last write of reg before the header, in address order
        i = insns[n]
        args = [x.strip() for x in i.args.split(",")]
        if not args or args[0] != reg:
            continue
        if i.base in ("MOV", "UMOV", "MOV32I") and len(args) == 2:
            init = _imm(args[1])
        elif i.op.startswith("IMAD.MOV") and len(args) == 4 and args[1] == "RZ" and args[2] == "RZ":
            init = _imm(args[3])
        elif i.base == "CS2R" and len(args) == 2 and args[1] == "SRZ":
            init = 0
        break
    if init is None:
        return None
    after = step_at < setp[-1]  # the compare sees the stepped value

    def holds(v: int) -> bool:
        x, y = (v & 0xFFFFFFFF, bound & 0xFFFFFFFF) if unsigned else (_signed32(v), _signed32(bound))
        return {"EQ": x == y, "NE": x != y, "LT": x < y, "LE": x <= y, "GT": x > y, "GE": x >= y}[cmp]

    v = init
    for trips in range(1, 1 << 16):
        checked = v + step if after else v
        taken = holds(checked) != neg  # branch back taken
        v += step
        if not taken:
            return trips
    return None


# ------------------------------------------------------------------------------------------------ one iteration
def _counts(blocks: list[Block], insns: list[Insn], b: int) -> Counter:
    return insn_counts(insns[blocks[b].start:blocks[b].end])


def _iteration(lp: Loop, loops: dict[int, Loop], blocks: list[Block], insns: list[Insn],
               done: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Longest and shortest header -> latch path of one loop with its inner loops contracted."""
    hi = max(blocks[x].last_addr for x in lp.latches)
    lo = blocks[lp.header].addr
    main = {b for b in lp.body if lo <= blocks[b].addr <= hi}
    cold = sum(blocks[b].end - blocks[b].start for b in lp.body - main)
    rep: dict[int, int] = {}  # block -> its node: itself or the outermost child loop holding it
    weight: dict[int, Counter] = {}
    partial = False
    inner = []
    for ch in lp.children or []:
        c = loops[ch]
        info = done[ch]
        for b in c.body:
            rep[b] = ch
        if c.kind in ("uniform", "wait"):
            weight[ch] = Counter(info["counts"])
        elif c.trips is not None and not info["partial"]:
            weight[ch] = Counter({k: v * c.trips for k, v in info["counts"].items()})
            inner.append({"addr": f"0x{blocks[ch].addr:04x}", "trips": c.trips})
        else:
            weight[ch] = Counter()
            partial = True
            inner.append({"addr": f"0x{blocks[ch].addr:04x}", "trips": c.trips})
    for b in main:
        if b not in rep:
            rep[b] = b
            weight[b] = _counts(blocks, insns, b)
    nodes = sorted({rep[b] for b in main}, key=lambda n: blocks[n].addr)
    order = {n: k for k, n in enumerate(nodes)}
    succ: dict[int, set[int]] = {n: set() for n in nodes}
    latch_nodes = set()
    for b in main:
        for s in blocks[b].succ:
            if s == lp.header and b in lp.latches:
                latch_nodes.add(rep[b])
            elif s in main and rep[s] != rep[b] and order[rep[s]] > order[rep[b]]:
                succ[rep[b]].add(rep[s])
    # longest / shortest path header -> latch in address order (forward edges only)
    best: dict[int, tuple[int, int, tuple[int, ...]]] = {}  # node -> (max instr, min instr, nodes on the max path)
    for n in nodes:
        if n == lp.header:
            best[n] = (weight[n]["instr"], weight[n]["instr"], (n,))
        if n not in best:
            continue
        mx, mn, path = best[n]
        for s in succ[n]:
            w = weight[s]["instr"]
            old = best.get(s)
            if old is None or mx + w > old[0]:
                best[s] = (mx + w, mn + w if old is None else min(mn + w, old[1]), path + (s,))
            else:
                best[s] = (old[0], min(mn + w, old[1]), old[2])
    ends = [best[n] for n in latch_nodes if n in best]
    if ends:
        top = max(ends, key=lambda t: t[0])
        path, instr_min = list(top[2]), min(t[1] for t in ends)
    else:  # no forward path (irreducible layout): everything in range once
        path = nodes
        instr_min = sum(weight[n]["instr"] for n in nodes)
    counts = sum((weight[n] for n in path), Counter())
    seq: list[Insn] = []
    for n in path:  # the iteration's instructions in order (a contracted inner loop: its blocks once, in address order)
        bs = sorted((b for b in main if rep[b] == n), key=lambda b: blocks[b].addr)
        for b in bs:
            seq += insns[blocks[b].start:blocks[b].end]
    return {"counts": dict(counts), "instr_min": instr_min, "cold": cold, "partial": partial, "inner": inner,
            "range": (lo, hi), "exposed": exposed_after_wait(seq)}


WGMMA = ("HGMMA", "QGMMA", "IGMMA", "BGMMA")


def exposed_after_wait(seq: list[Insn]) -> int | None:
    """Instructions of one iteration that run while this warpgroup has no wgmma in flight: those after a
    ``wgmma.wait_group 0`` (``WARPGROUP.DEPBAR.LE gsb0, 0x0``) and before the next wgmma, the loop taken as a cycle.
    None when the loop issues no wgmma. With wait_group >= 1 the previous group is still running: nothing exposed."""
    if not any(i.base in WGMMA for i in seq):
        return None
    exposed, count = False, 0
    for rnd in (0, 1):  # the first round sets the state the iteration starts in (the previous iteration's end)
        for i in seq:
            if i.base in WGMMA:
                exposed = False
            elif i.base == "WARPGROUP" and "DEPBAR" in i.op:
                depth = _HEX.findall(i.args)
                exposed = bool(depth) and int(depth[-1], 16) == 0
            elif exposed and rnd and i.base != "WARPGROUP":
                count += 1
    return count


def find_loops(insns: list[Insn]) -> list[dict[str, Any]]:
    """Every natural loop of one function with its per-iteration counts (innermost first)."""
    if not insns:
        return []
    blocks, roots = blocks_of(insns)
    loops = natural_loops(blocks, roots, insns)
    for lp in loops.values():
        if lp.kind == "loop":
            lp.trips = trip_count(lp, blocks, insns)

    def depth(h: int) -> int:
        d, p = 0, loops[h].parent
        while p is not None:
            d, p = d + 1, loops[p].parent
        return d

    done: dict[int, dict[str, Any]] = {}
    out = []
    for h in sorted(loops, key=lambda h: (-depth(h), blocks[h].addr)):
        lp = loops[h]
        it = _iteration(lp, loops, blocks, insns, done)
        done[h] = it
        c = it["counts"]
        out.append({
            "addr": f"0x{it['range'][0]:04x}", "latch": f"0x{it['range'][1]:04x}", "kind": lp.kind,
            "depth": depth(h), "parent": None if lp.parent is None else f"0x{blocks[lp.parent].addr:04x}",
            "trips": lp.trips, "inner": it["inner"], "partial": it["partial"],
            "instr": c.get("instr", 0), "instr_min": it["instr_min"], "cold_instr": it["cold"],
            "pipes": {k: v for k, v in c.items() if ":" not in k and k not in ("instr", "global_bytes", "shared_bytes",
                                                                                 "tma_ops", "flops")},
            "flops": c.get("flops", 0),
            "tensor_ops": {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("tensor:")},
            "tensor_fma": {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("fma:")},
            "global_bytes": c.get("global_bytes", 0), "shared_bytes": c.get("shared_bytes", 0),
            "tma_ops": c.get("tma_ops", 0), "exposed": it["exposed"],
        })
    return out


def kernel_loops(cubin: str | os.PathLike, symbol: str, bounds: bool = True) -> dict[str, Any]:
    """The worker-side facts of one kernel: its loops, whether it is warp-specialised, and (``bounds``: when the
    launch's block size is unknown) its ``__launch_bounds__``."""
    insns = sass(cubin).get(symbol, [])
    return {"loops": find_loops(insns), "warp_specialised": any("SETMAXREG" in i.base for i in insns),
            "max_threads": launch_bounds(cubin).get(symbol) if bounds else None}


# ------------------------------------------------------------------------------------------------ cycle model
def _arch_key(arch: str) -> str:
    a = arch[:-1] if arch.endswith("a") else arch
    return a if a in PIPE_LANES else "sm_90"


def machine(arch: str, profile=None) -> dict[str, Any]:
    """Per-SM rates the model uses: tensor FMA/clk per sub-partition by dtype, SIMT lanes, DRAM B/clk/SM. The
    profile (``xray.load_profile``) gives DRAM bandwidth, SM count and clock when its arch matches; otherwise the
    first datasheet GPU of the arch in ``harness.device.KNOWN_GPUS``."""
    from roofline import ceilings

    key = _arch_key(arch)
    prof = profile if profile is not None and getattr(profile, "arch", None) == key else None
    if prof is None:
        name = next((n for n, g in ceilings.KNOWN_GPUS.items() if g["arch"] == key and not g.get("geforce")), None)
        prof = ceilings.known_profile(name) if name else None
    mem, sms, clock = None, None, None
    if prof is not None:
        mem = prof.mem_roof()[0]
        sms = prof.device.get("sm_count")
        ent = prof.compute.get("bf16") or {}
        clock = ent.get("clock_mhz") or prof.device.get("max_sm_clock_mhz")
    tensor = {dt: r / 2 / SCHEDULERS for dt, r in ceilings.FLOP_PER_CLK_SM[key].items() if r}
    return {"arch": key, "tensor_fma_per_sp": tensor, "lanes": PIPE_LANES[key], "profile": prof.name if prof else None,
            "dram_bytes_per_clk_sm": mem / (sms * clock * 1e6) if mem and sms and clock else None,
            "clock_mhz": clock}


def loop_warps(k: dict[str, Any], lp: dict[str, Any]) -> tuple[int | None, str]:
    """Warps per SM that run loop ``lp`` of kernel facts ``k`` (see the module docstring) and how that was found."""
    occ = k.get("occupancy") or {}
    hl = k.get("loops") or {}
    threads, note = k.get("threads"), "occupancy"
    blocks = occ.get("blocks_per_sm")
    if not threads and hl.get("max_threads"):
        threads, note = hl["max_threads"], "block from __launch_bounds__"
        if not blocks:
            from harness.sm import occupancy

            blocks = occupancy(k.get("arch", "sm_90"), k.get("registers", 0), threads, k.get("static_smem"))[
                "blocks_per_sm"]
    if not threads or not blocks:
        return None, "block size unknown"
    per_block = -(-threads // 32)
    if hl.get("warp_specialised"):
        if lp.get("tensor_ops"):
            per_block, note = max(per_block - 4, 1), note + "; warp-specialised: consumer warpgroups"
        elif lp.get("tma_ops"):
            per_block, note = 1, note + "; warp-specialised: one producer warp"
    return blocks * per_block, note


def model(lp: dict[str, Any], warps: int, mach: dict[str, Any], flops: float | None = None,
          nbytes: float | None = None) -> dict[str, Any]:
    """Cycles per iteration of ``warps`` warps of one SM running loop ``lp`` (see the module docstring). ``flops`` and
    ``nbytes`` (the problem's FLOPs and minimum bytes) give a tensor loop its share of the DRAM bytes."""
    wps = -(-warps // SCHEDULERS)
    p = lp["pipes"]
    issue = lp["instr"] * wps
    pipes = {name: p.get(name, 0) * 32 * SCHEDULERS / lanes * wps for name, lanes in mach["lanes"].items()}
    pname = max(pipes, key=pipes.get) if pipes else None
    tensor = 0.0
    unknown = []
    for dt, fma in lp["tensor_fma"].items():
        rate = mach["tensor_fma_per_sp"].get(dt)
        if rate:
            tensor += fma / rate * wps
        else:
            unknown.append(dt)
    loop_flops = lp.get("flops", 0)  # tensor FMAs x 2 + SIMT arithmetic lanes (FADD/FMUL count too: an upper bound)
    dram = float(lp["global_bytes"])  # per warp per iteration
    basis = "requested"
    if loop_flops and flops and nbytes and (dram or lp["tensor_fma"]):
        # tiles re-read from L2 (and broadcast loads) do not reach DRAM: it sees at most this loop's share of the
        # problem's minimum bytes, in proportion to the FLOPs the iteration does
        share = nbytes * loop_flops / flops
        if share < dram or not dram:
            dram, basis = share, "share of min bytes"
    mem_rate = mach["dram_bytes_per_clk_sm"]
    memory = warps * dram / mem_rate if mem_rate else None
    shared = warps * lp["shared_bytes"] / SHARED_BYTES_PER_CLK
    cycles = {"issue": issue, "pipe": pipes.get(pname, 0.0) if pname else 0.0, "tensor": tensor,
              "memory": memory, "shared": shared}
    bound = max((k for k, v in cycles.items() if v is not None), key=lambda k: cycles[k])
    if bound == "pipe":
        bound = pname  # "alu-bound", "xu-bound", ...
    exposed = lp.get("exposed")
    if exposed:  # wgmma.wait_group 0 inside the iteration: this work cannot overlap this warpgroup's own MMAs
        cycles["serial"] = tensor + exposed * wps
    tensor_instr = p.get("tensor", 0)
    return {"warps": warps, "warps_per_scheduler": wps,
            "cycles": {k: None if v is None else round(v, 1) for k, v in cycles.items()},
            "pipe_name": pname, "bound": bound, "non_tensor_issue": (lp["instr"] - tensor_instr) * wps,
            "exposed_issue": None if exposed is None else exposed * wps, "dram_bytes_per_warp": round(dram, 1),
            "dram_basis": basis, "tensor_dtypes_without_rate": unknown,
            "tma_bytes_unknown": lp.get("tma_ops", 0) > 0 and basis == "requested"}


def hot_candidates(loops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The loops that may be a kernel's hot loop, hot first (trip counts are mostly runtime values, so this is a
    rule, not a measurement). With tensor ops: the innermost real loops holding them (a 0-1 trip bookkeeping loop
    inside a K loop does not count), most tensor FMAs first. Without: the real loops that do arithmetic (FLOPs), else
    those with memory traffic, else all; a loop is dropped when an inner candidate does at least half its FLOPs (the
    work is inside), not when its inner loops only copy tiles; most FLOPs, then bytes, first. Ties go to the lowest
    address: of two versions of one loop (FA3-style unmasked / masked tiles, a peeled tail) the compiler lays out the
    first in source order first."""
    real = [lp for lp in loops if lp["kind"] == "loop"]
    tensor = [lp for lp in real if lp["tensor_ops"]]
    if tensor:
        inner = [lp for lp in tensor if not any(_inside(o, lp, loops) for o in tensor if o is not lp)]
        return sorted(inner, key=lambda lp: (-sum(lp["tensor_fma"].values()), -lp["global_bytes"],
                                             int(lp["addr"], 16)))
    for test in (lambda lp: lp.get("flops"), lambda lp: lp["global_bytes"] or lp["shared_bytes"] or lp["tma_ops"],
                 lambda lp: True):
        cand = [lp for lp in real if test(lp)]
        if cand:
            break
    else:
        return []

    def work_inside(lp: dict[str, Any]) -> float:
        return sum(o.get("flops", 0) * (o["trips"] or 1) for o in cand if o is not lp and _inside(o, lp, loops))

    inner = [lp for lp in cand if not (lp.get("flops") and 2 * work_inside(lp) >= lp["flops"])] or cand
    return sorted(inner, key=lambda lp: (-lp.get("flops", 0), -lp["global_bytes"], int(lp["addr"], 16)))


def pick_hot(loops: list[dict[str, Any]]) -> dict[str, Any] | None:
    cand = hot_candidates(loops)
    return cand[0] if cand else None


def _inside(a: dict[str, Any], b: dict[str, Any], loops: list[dict[str, Any]]) -> bool:
    """Loop a is nested (at any depth) in loop b."""
    by = {lp["addr"]: lp for lp in loops}
    p = a["parent"]
    while p is not None:
        if p == b["addr"]:
            return True
        p = by[p]["parent"] if p in by else None
    return False


def attach(rec: dict[str, Any], profile=None) -> dict[str, Any]:
    """Parent side of the X-ray: the cycle model of every real loop of every kernel of a worker record; sets
    ``kernel["hot_loops"]`` (hot loop first) in place and returns the record."""
    for k in rec.get("kernels") or []:
        hl = k.get("loops")
        if not isinstance(hl, dict) or "loops" not in hl:
            continue
        mach = machine(rec.get("arch", "sm_90"), profile)
        cand = hot_candidates(hl["loops"])
        hot = cand[0] if cand else None
        # printed under the hot loop: other versions of it (masked tiles, a peeled tail) -- the same tensor ops, or
        # for a loop without them at least a quarter of its instructions -- not the epilogue's small loops
        alts = [id(x) for x in cand[1:] if x["tensor_ops"] == hot["tensor_ops"]
                and (x["tensor_ops"] or 4 * x["instr"] >= hot["instr"])][:2]
        out = []
        for lp in sorted((x for x in hl["loops"] if x["kind"] == "loop"), key=lambda x: x is not hot):
            w, note = loop_warps({**k, "arch": rec.get("arch", "sm_90")}, lp)
            m = model(lp, w, mach, rec.get("flops"), rec.get("bytes")) if w else \
                {"warps": None, "bound": None, "cycles": None}
            out.append({**lp, **m, "hot": lp is hot, "alt": id(lp) in alts, "warps_note": note,
                        "machine": mach["profile"]})
        k["hot_loops"] = out
    return rec


def compact(rec: dict[str, Any]) -> dict[str, Any] | None:
    """The records' ``xray.hot_loop``: the hot loop of the record's kernel with the most issue cycles in it."""
    best = None
    for k in rec.get("kernels") or []:
        for lp in k.get("hot_loops") or []:
            if lp.get("hot") and lp.get("cycles") and (best is None or lp["cycles"]["issue"] > best[1]["cycles"]
                                                       ["issue"]):
                best = (k, lp)
    if best is None:
        return None
    k, lp = best
    return {"kernel": k["name"], "addr": lp["addr"], "instr": lp["instr"], "warps": lp["warps"],
            "issue": lp["cycles"]["issue"], "pipe": lp["cycles"]["pipe"], "pipe_name": lp["pipe_name"],
            "tensor": lp["cycles"]["tensor"], "memory": lp["cycles"]["memory"], "shared": lp["cycles"]["shared"],
            "serial": lp["cycles"].get("serial"), "non_tensor_issue": lp["non_tensor_issue"],
            "exposed_issue": lp.get("exposed_issue"), "bound": lp["bound"], "trips": lp["trips"]}


def _c(v: float | None) -> str:
    return "?" if v is None else f"{v:.0f}"


def lines(rec: dict[str, Any], width: int = 80, every: bool = False) -> list[str]:
    """Text for ``inspect`` (80 columns): two lines per hot loop, one per sibling candidate (``alt``), every other
    real loop one line when ``every``."""
    out = []
    for k in rec.get("kernels") or []:
        name = k["name"] if len(k["name"]) <= 40 else k["name"][:37] + "..."
        for lp in k.get("hot_loops") or []:
            if not (lp.get("hot") or lp.get("alt") or every):
                continue
            cy = lp.get("cycles")
            if cy is None:
                out.append(_wrap(f"  loop @{lp['addr']} {name}: {lp['instr']} instr/iter/warp ({lp['warps_note']})",
                                 width))
                continue
            if not lp.get("hot"):
                out.append(_wrap(f"    also @{lp['addr']}: {lp['instr']} instr, issue {_c(cy['issue'])} vs tensor "
                                 f"{_c(cy['tensor'])}, {lp['pipe_name']} {_c(cy['pipe'])} -> {lp['bound']}-bound",
                                 width))
                continue
            trips = f", x{lp['trips']} per outer iter" if lp.get("trips") else ""
            out.append(_wrap(f"  hot loop @{lp['addr']} of {name}, {lp['warps']} warps/SM{trips}:", width))
            out.append(_wrap(f"    {lp['instr']} instr/iter/warp; issue {_c(cy['issue'])} vs tensor "
                             f"{_c(cy['tensor'])} cycles -> {lp['bound']}-bound", width))
            mem = _c(cy["memory"]) + ("+TMA" if lp.get("tma_bytes_unknown") else "")
            extra = f"    {lp['pipe_name']} {_c(cy['pipe'])}, mem {mem}, smem {_c(cy['shared'])}"
            if cy.get("serial"):
                extra += f"; wait 0 exposes {lp['exposed_issue']}: serial {_c(cy['serial'])}"
            if lp["instr_min"] != lp["instr"]:
                extra += f"; min path {lp['instr_min']}"
            if lp.get("partial"):
                extra += "; inner loops of runtime trips left out"
            out.append(_wrap(extra, width))
    return out


def _wrap(s: str, width: int) -> str:
    if len(s) <= width:
        return s
    cut = s.rfind(" ", 0, width)
    return s[:cut] + "\n     " + s[cut + 1:]


# ------------------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m harness.hotloop", description="loops of a cubin's SASS")
    ap.add_argument("cubin")
    ap.add_argument("symbol", nargs="?")
    ap.add_argument("--warps", type=int, default=4, help="warps per SM running each loop (default 4)")
    ap.add_argument("--arch", default="sm_90a")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    funcs = sass(a.cubin)
    mach = machine(a.arch)
    res = {}
    for sym, insns in funcs.items():
        if a.symbol and sym != a.symbol:
            continue
        res[sym] = [{**lp, **model(lp, a.warps, mach)} for lp in find_loops(insns)]
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    for sym, lps in res.items():
        print(sym)
        for lp in lps:
            cy = lp["cycles"]
            print(f"  {lp['kind']:7s} @{lp['addr']}..{lp['latch']} depth {lp['depth']} trips {lp['trips']}: "
                  f"{lp['instr']} instr (min {lp['instr_min']}), issue {_c(cy['issue'])} tensor {_c(cy['tensor'])} "
                  f"{lp['pipe_name']} {_c(cy['pipe'])} mem {_c(cy['memory'])} -> {lp['bound']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

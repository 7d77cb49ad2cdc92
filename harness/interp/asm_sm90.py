"""Asm handlers for Hopper (sm_90a) PTX: the inline-asm statements of mbarrier, cp.async.bulk.tensor (TMA), wgmma,
setmaxnreg and the proxy fences become calls of the CPU models in ``include/wbcpu_ptx90.h`` (registered in
``rewrite.ASM_HANDLERS``).

Why handlers rather than ``#ifdef WB_INTERPRET`` branches in the helpers: the kernel source (and its SASS) stays exactly
what nvcc compiles, and a user's own file with CUTLASS-style inline PTX gets a verdict without edits. A statement is
taken only when every instruction in it is understood; the idioms besides single instructions are the ones CUTLASS and
the workbench use: a ``setp`` feeding wgmma's scale-d predicate, the ``try_wait`` retry loop (``@!p bra LABEL``) and
``selp`` turning a predicate into a register. Anything else keeps the default "not interpreted".
"""

from __future__ import annotations

import re
from typing import Any

# The statements are rewrite.AsmStmt (template, outputs, inputs, file, line); rewrite.py imports this module to
# register HANDLERS, so this one does not import it back.
AsmStmt = Any

_SPLIT = re.compile(r"[;\n]")
_OPER = re.compile(r"%(\d+|=)")


class _Unsupported(Exception):
    pass


def _split_args(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for c in text:
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        if c == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += c
    if cur.strip():
        out.append(cur.strip())
    return out


def _parse(template: str) -> list[tuple[str | None, str, list[str], str | None]]:
    """[(guard, opcode, args, label)]: guard like '!p' or 'p'; label set on a bare 'NAME:' line (opcode '')."""
    out = []
    for raw in _SPLIT.split(template):
        s = raw.strip()
        while s.startswith("{") or s.startswith("}"):
            s = s[1:].strip()
        while s.endswith("}"):
            s = s[:-1].strip()
        if not s or s.startswith("//") or s.startswith(".reg"):
            continue
        m = re.match(r"^([\w$%=]+):\s*(.*)$", s)
        if m:
            out.append((None, "", [], m.group(1)))
            s = m.group(2).strip()
            if not s:
                continue
        guard = None
        m = re.match(r"^@(!?)([%\w]+)\s+(.*)$", s)
        if m:
            guard, s = m.group(1) + m.group(2), m.group(3)
        parts = s.split(None, 1)
        out.append((guard, parts[0], _split_args(parts[1]) if len(parts) > 1 else [], None))
    return out


class _Ctx:
    def __init__(self, stmt: AsmStmt):
        self.stmt = stmt
        self.ops = [e for _, e in stmt.outputs] + [e for _, e in stmt.inputs]
        self.cons = [c for c, _ in stmt.outputs] + [c for c, _ in stmt.inputs]
        self.preds: dict[str, str] = {}
        self.loc = f'::wb::Loc{{"{stmt.file}", {stmt.line}}}'

    def val(self, tok: str) -> str:
        """A source operand: %N, an immediate, or a predicate name."""
        tok = tok.strip()
        if tok in self.preds:
            return self.preds[tok]
        m = re.fullmatch(r"%(\d+)", tok)
        if m:
            i = int(m.group(1))
            if i >= len(self.ops):
                raise _Unsupported(tok)
            return f"({self.ops[i]})"
        if re.fullmatch(r"-?(0[xX][0-9a-fA-F]+|\d+)", tok):
            return tok
        raise _Unsupported(tok)

    def lval(self, tok: str) -> str | None:
        tok = tok.strip()
        if tok == "_":
            return None
        m = re.fullmatch(r"%(\d+)", tok)
        if not m or int(m.group(1)) >= len(self.stmt.outputs):
            raise _Unsupported(tok)
        return f"({self.ops[int(m.group(1))]})"

    def shared(self, tok: str, generic: bool) -> str:
        """The 32-bit shared offset of an address operand '[...]'."""
        tok = tok.strip()
        if not (tok.startswith("[") and tok.endswith("]")):
            raise _Unsupported(tok)
        v = self.val(tok[1:-1])
        return f"(uint32_t)__cvta_generic_to_shared((const void*)(uintptr_t)({v}))" if generic else f"(uint32_t)({v})"


def _mbar(ctx: _Ctx, op: str, args: list[str], ins: list, i: int) -> tuple[str, int]:
    generic = ".shared" not in op
    if op.startswith("mbarrier.init"):
        return f"::wb::ptx90::mbar_init({ctx.shared(args[0], generic)}, (uint32_t)({ctx.val(args[1])}), {ctx.loc});", i
    if op.startswith("mbarrier.arrive.expect_tx"):
        dst = ctx.lval(args[0])
        call = f"::wb::ptx90::mbar_arrive_expect_tx({ctx.shared(args[1], generic)}, (uint32_t)({ctx.val(args[2])}), " \
               f"{ctx.loc})"
        return (f"{dst} = {call};" if dst else f"{call};"), i
    if op.startswith("mbarrier.arrive"):
        if ".noComplete" in op:
            raise _Unsupported(op)
        dst = ctx.lval(args[0])
        count = ctx.val(args[2]) if len(args) > 2 else "1"
        release = "0" if ".relaxed" in op else "1"
        call = f"::wb::ptx90::mbar_arrive({ctx.shared(args[1], generic)}, (uint32_t)({count}), {release}, {ctx.loc})"
        return (f"{dst} = {call};" if dst else f"{call};"), i
    if op.startswith("mbarrier.expect_tx"):
        return f"::wb::ptx90::mbar_expect_tx({ctx.shared(args[0], generic)}, (uint32_t)({ctx.val(args[1])}), " \
               f"{ctx.loc});", i
    if op.startswith("mbarrier.complete_tx"):
        return f"::wb::ptx90::mbar_complete_tx({ctx.shared(args[0], generic)}, (uint32_t)({ctx.val(args[1])}), " \
               f"{ctx.loc});", i
    if op.startswith(("mbarrier.try_wait.parity", "mbarrier.test_wait.parity")):
        pred, addr, parity = args[0], ctx.shared(args[1], generic), ctx.val(args[2])
        # the retry loop: LABEL: try_wait p; @!p bra LABEL  ->  a blocking wait
        nxt = ins[i + 1] if i + 1 < len(ins) else None
        label_before = i > 0 and ins[i - 1][3] is not None
        if nxt and nxt[1].startswith("bra") and nxt[0] == "!" + pred and label_before and \
                nxt[2] and nxt[2][0] == ins[i - 1][3]:
            return f"::wb::ptx90::mbar_wait_parity({addr}, (uint32_t)({parity}), {ctx.loc});", i + 1
        # CUTLASS's form: LAB_WAIT: try_wait p; @p bra DONE; bra LAB_WAIT; DONE:
        if label_before and i + 3 < len(ins) and nxt[1].startswith("bra") and nxt[0] == pred and \
                ins[i + 2][1].startswith("bra") and ins[i + 2][0] is None and ins[i + 2][2] == [ins[i - 1][3]] and \
                ins[i + 3][3] is not None and nxt[2] == [ins[i + 3][3]]:
            return f"::wb::ptx90::mbar_wait_parity({addr}, (uint32_t)({parity}), {ctx.loc});", i + 2
        name = f"wb_p_{re.sub(r'[^A-Za-z0-9_]', '_', pred)}"
        ctx.preds[pred] = name
        return f"bool {name} = ::wb::ptx90::mbar_try_wait_parity({addr}, (uint32_t)({parity}), {ctx.loc});", i
    raise _Unsupported(op)


def _tma(ctx: _Ctx, op: str, args: list[str]) -> str:
    m = re.match(r"cp\.async\.bulk\.tensor\.([1-5])d\.shared::(cta|cluster)", op)
    if not m or ".global" not in op or "mbarrier::complete_tx::bytes" not in op or ".multicast" in op \
            or ".im2col" in op or len(args) != 3:
        raise _Unsupported(op)
    rank = int(m.group(1))
    src = args[1].strip()
    mm = re.fullmatch(r"\[\s*([^,]+),\s*\{([^}]*)\}\s*\]", src)
    if not mm:
        raise _Unsupported(src)
    coords = [ctx.val(c) for c in mm.group(2).split(",")]
    if len(coords) != rank:
        raise _Unsupported(src)
    cs = ", ".join(f"(int)({c})" for c in coords)
    return (f"{{ const int wb_c[{rank}] = {{{cs}}}; ::wb::ptx90::tma_load({ctx.shared(args[0], False)}, "
            f"(uint64_t)({ctx.val(mm.group(1))}), {ctx.shared(args[2], False)}, {rank}, wb_c, {ctx.loc}); }}")


def _wgmma(ctx: _Ctx, op: str, args: list[str]) -> str:
    m = re.fullmatch(r"wgmma\.mma_async\.sync\.aligned\.(m64n\d+k\d+\.\w+\.\w+\.\w+)", op)
    if not m:
        raise _Unsupported(op)
    spec = m.group(1)
    dlist = args[0].strip()
    if not (dlist.startswith("{") and dlist.endswith("}")):
        raise _Unsupported(dlist)
    ds = [t.strip() for t in dlist[1:-1].split(",")]
    dptr = []
    for t in ds:
        mm = re.fullmatch(r"%(\d+)", t)
        if not mm or int(mm.group(1)) >= len(ctx.stmt.outputs) or "f" not in ctx.cons[int(mm.group(1))]:
            raise _Unsupported(t)  # f32 accumulators only
        dptr.append(f"&({ctx.ops[int(mm.group(1))]})")
    a = args[1].strip()
    rest = args[2:]
    fp8 = any(t in spec for t in (".e4m3", ".e5m2"))
    if a.startswith("{"):
        regs = [ctx.val(t) for t in a[1:-1].split(",")]
        # d, {a}, b-desc, scale-d, imm-scale-a, imm-scale-b[, imm-trans-b]
        if len(rest) not in (4, 5):
            raise _Unsupported(op)
        b, sd, sa, sb = rest[:4]
        ta, tb = "0", (rest[4] if len(rest) == 5 else "0")
        areg = f"uint32_t wb_a[{len(regs)}] = {{{', '.join(f'(uint32_t)({r})' for r in regs)}}};"
        a_args, da = f"wb_a, {len(regs)}", "0"
    else:
        # d, a-desc, b-desc, scale-d, imm-scale-a, imm-scale-b[, imm-trans-a, imm-trans-b]
        if len(rest) not in ((4,) if fp8 else (4, 6)):
            raise _Unsupported(op)
        b, sd, sa, sb = rest[:4]
        ta, tb = (rest[4], rest[5]) if len(rest) == 6 else ("0", "0")
        areg, a_args, da = "", "nullptr, 0", f"(uint64_t)({ctx.val(a)})"
    return (f"{{ float* wb_d[{len(dptr)}] = {{{', '.join(dptr)}}}; {areg} "
            f"::wb::ptx90::wgmma(\"{spec}\", wb_d, {len(dptr)}, {a_args}, {da}, (uint64_t)({ctx.val(b)}), "
            f"(int)({ctx.val(sd)}), (int)({ctx.val(sa)}), (int)({ctx.val(sb)}), (int)({ctx.val(ta)}), "
            f"(int)({ctx.val(tb)}), {ctx.loc}); }}")


def translate(stmt: AsmStmt) -> str | None:
    """C++ for the statement, or None when some instruction in it is not one of ours."""
    tmpl = stmt.template.strip()
    if not tmpl:
        return "((void)0)"  # an empty asm: a compiler fence (CUTLASS's warpgroup_fence_operand)
    try:
        ins = _parse(tmpl)
        ctx = _Ctx(stmt)
        code: list[str] = []
        i = 0
        while i < len(ins):
            guard, op, args, label = ins[i]
            if label is not None or not op:
                i += 1
                continue
            if guard is not None:
                raise _Unsupported(f"@{guard} {op}")
            if re.fullmatch(r"setp\.(ne|eq)\.(b32|u32|s32)", op):
                cmp = "!=" if ".ne." in op else "=="
                name = f"wb_p_{re.sub(r'[^A-Za-z0-9_]', '_', args[0])}"
                code.append(f"bool {name} = ({ctx.val(args[1])}) {cmp} ({ctx.val(args[2])});")
                ctx.preds[args[0]] = name
            elif re.fullmatch(r"selp\.(b32|u32|s32)", op):
                dst = ctx.lval(args[0])
                code.append(f"{dst} = ({ctx.val(args[3])}) ? ({ctx.val(args[1])}) : ({ctx.val(args[2])});")
            elif op.startswith(("mbarrier.", )):
                c, i = _mbar(ctx, op, args, ins, i)
                code.append(c)
            elif op.startswith("cp.async.bulk.tensor."):
                code.append(_tma(ctx, op, args))
            elif op.startswith("fence.proxy.async"):
                code.append(f"::wb::ptx90::fence_proxy_async({ctx.loc});")
            elif op == "fence.mbarrier_init.release.cluster":
                code.append(f"::wb::ptx90::fence_mbarrier_init({ctx.loc});")
            elif op == "wgmma.fence.sync.aligned":
                code.append(f"::wb::ptx90::wgmma_fence({ctx.loc});")
            elif op == "wgmma.commit_group.sync.aligned":
                code.append(f"::wb::ptx90::wgmma_commit({ctx.loc});")
            elif op == "wgmma.wait_group.sync.aligned":
                code.append(f"::wb::ptx90::wgmma_wait((int)({ctx.val(args[0])}), {ctx.loc});")
            elif op.startswith("wgmma.mma_async."):
                code.append(_wgmma(ctx, op, args))
            elif re.fullmatch(r"setmaxnreg\.(inc|dec)\.sync\.aligned\.u32", op):
                inc = "1" if ".inc." in op else "0"
                code.append(f"::wb::ptx90::setmaxnreg({inc}, (int)({ctx.val(args[0])}), {ctx.loc});")
            else:
                raise _Unsupported(op)
            i += 1
    except (_Unsupported, IndexError):
        return None
    return "({ " + " ".join(code) + " })"


_CACHE: dict[int, str | None] = {}


def _pred(stmt: AsmStmt) -> bool:
    _CACHE[id(stmt)] = code = translate(stmt)
    return code is not None


def _handler(stmt: AsmStmt) -> str:
    code = _CACHE.pop(id(stmt), None)
    return code if code is not None else translate(stmt)  # type: ignore[return-value]


HANDLERS = [(_pred, _handler)]

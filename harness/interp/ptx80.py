"""Asm handlers for the sm_80-era PTX instructions (issue 28): the asm text nvcc assembles, run on the CPU.

``rewrite.py`` hands every ``asm(...)`` statement of the user's code to :data:`rewrite.ASM_HANDLERS`; the handler here
parses the instruction text (opcode, qualifiers, operand order, immediates), binds each ``%N`` to the statement's
operand expression and emits a C++ call into the models of ``include/wbcpu_ptx80.h`` with the operands as raw
register bits. Why the asm text and not a C++ twin of each helper: the CPU then runs exactly what the GPU build
assembles (``{%4, %5, %6, %7}`` bound in the wrong order, a missing ``.trans``, a wrong ``wait_group`` count are wrong
here too), and a student's own inline PTX works without our helpers.

Handled (one instruction per asm statement, no predicate guard; anything else falls through to the default
"not interpreted" handler, naming the instruction):

* ``cp.async.{ca,cg}.shared{::cta}.global{.L2::*}`` with cp-size and optional src-size / cache-policy,
  ``cp.async.commit_group``, ``cp.async.wait_group N``, ``cp.async.wait_all``;
* ``ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}{.shared{::cta}}.b16``;
* ``mma.sync.aligned.m16n8k{4,8,16,32}.row.col{.satfinite}.{dtype}.{atype}.{btype}.{ctype}`` (f16, bf16, tf32, s8,
  u8; f32 / f16 / s32 accumulators);
* ``lop3.b32``, ``prmt.b32{.f4e,.b4e,.rc8,.ecl,.ecr,.rc16}``, ``shfl.sync.{up,down,bfly,idx}.b32``,
  ``ex2.approx{.ftz}.f32``, ``mov`` of special registers (%laneid, %warpid, %tid, %ntid, %ctaid, %nctaid,
  %dynamic_smem_size, %lanemask_*, %clock, %clock64, %globaltimer, %smid, %nsmid) and of plain operands;
* ``ld`` / ``st`` (``.global``, ``.shared``, ``.const``, generic; ``.nc``, cache operators and eviction hints are
  performance hints; ``.v2`` / ``.v4``) as instrumented C++ accesses, ``atom`` / ``red`` through the runtime's checked
  atomics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.interp.rewrite import AsmStmt, _cstr, _split_top


class _Unsupported(Exception):
    """This form is not modelled: the default handler names it."""


# ----------------------------------------------------------------------------------------------- operand parsing
@dataclass
class Op:
    kind: str  # "reg" (%N), "imm" (literal), "special" (%%name), "vec" (items), "addr" (base + offset), "name"
    index: int = -1
    value: int = 0
    name: str = ""
    items: tuple = ()
    base: Op | None = None
    offset: int = 0


def _split(text: str) -> list[str]:
    """Operands at the top-level commas (not inside {vectors} or [addresses])."""
    return [p.strip() for p in _split_top(text, ",") if p.strip()]


def _int(text: str) -> int:
    t = text.strip().lower().rstrip("u")
    return int(t, 0)


def parse_operand(text: str) -> Op:
    t = text.strip()
    if t.startswith("{") and t.endswith("}"):
        return Op("vec", items=tuple(parse_operand(x) for x in _split(t[1:-1])))
    if t.startswith("[") and t.endswith("]"):
        m = re.fullmatch(r"\[\s*([^\]+\-]+?)\s*(?:([+-])\s*(\w+))?\s*\]", t)
        if not m:
            raise _Unsupported(t)
        off = _int(m.group(3)) if m.group(3) else 0
        return Op("addr", base=parse_operand(m.group(1)), offset=-off if m.group(2) == "-" else off)
    m = re.fullmatch(r"%(\d+)", t)
    if m:
        return Op("reg", index=int(m.group(1)))
    m = re.fullmatch(r"%%([\w.]+)", t)
    if m:
        return Op("special", name=m.group(1))
    if re.fullmatch(r"-?(0[xX][0-9a-fA-F]+|\d+)[uU]?", t):
        return Op("imm", value=_int(t))
    if re.fullmatch(r"[A-Za-z_]\w*", t):
        return Op("name", name=t)
    raise _Unsupported(t)


# ----------------------------------------------------------------------------------------------- code generation
class Gen:
    """The C++ for one asm statement: operand bindings, then the model call, then the outputs written back."""

    def __init__(self, stmt: AsmStmt):
        self.stmt = stmt
        self.ops: list[tuple[str, str, bool]] = []  # (constraint letter, expression, is_output)
        self.decls: list[str] = []
        self.body: list[str] = []
        self.tmp = 0
        for k, (cons, expr) in enumerate(stmt.outputs):
            letter = cons.lstrip("=+&")
            self.ops.append((letter, expr, True))
            self.decls.append(f"auto& wb_op{k} = ({expr});")
        n_out = len(stmt.outputs)
        for j, (cons, expr) in enumerate(stmt.inputs):
            k = n_out + j
            letter = cons.lstrip("=+&")
            if letter.isdigit():  # matching constraint: the output's current value
                self.ops.append((self.ops[int(letter)][0], f"wb_op{int(letter)}", False))
                continue
            self.ops.append((letter, expr, False))
            if letter not in ("n", "i"):
                self.decls.append(f"const auto wb_op{k} = ({expr});")

    def loc(self) -> str:
        return f"::wb::Loc{{{_cstr(self.stmt.file)}, {self.stmt.line}}}"

    def fresh(self, stem: str = "wb_t") -> str:
        self.tmp += 1
        return f"{stem}{self.tmp}"

    def _reg(self, op: Op) -> tuple[str, str, bool]:
        if op.kind != "reg" or op.index >= len(self.ops):
            raise _Unsupported("operand")
        return self.ops[op.index]

    def bits(self, op: Op) -> str:
        """uint64_t bits of an input operand (register, immediate, special register)."""
        if op.kind == "imm":
            return f"((uint64_t){op.value}ll)"
        if op.kind == "special":
            return f"((uint64_t){special(op.name)})"
        letter, expr, _ = self._reg(op)
        if letter in ("n", "i"):
            return f"((uint64_t)(long long)({expr}))"
        if letter == "f":
            return f"::wb_ptx::fbits((float)wb_op{op.index})"
        if letter == "d":
            return f"::wb_ptx::fbits((double)wb_op{op.index})"
        return f"::wb_ptx::bits_of(wb_op{op.index})"

    def u32(self, op: Op) -> str:
        return f"((uint32_t){self.bits(op)})"

    def imm(self, op: Op) -> str:
        """A compile-time integer operand (a literal or an "n" operand)."""
        if op.kind == "imm":
            return str(op.value)
        letter, expr, _ = self._reg(op)
        if letter not in ("n", "i"):
            raise _Unsupported("immediate expected")
        return f"({expr})"

    def store(self, op: Op, value: str) -> None:
        if op.kind == "name" and op.name == "_":
            return
        letter, _, is_out = self._reg(op)
        if not is_out:
            raise _Unsupported("output operand expected")
        self.body.append(f"::wb_ptx::set_bits(wb_op{op.index}, (uint64_t)({value}));")

    def address(self, op: Op, shared: bool) -> str:
        if op.kind != "addr":
            raise _Unsupported("address expected")
        base = self.bits(op.base)
        fn = "::wb_ptx::shared_addr" if shared else "::wb_ptx::generic_addr"
        return f"({fn}({base}) + ({op.offset}))"

    def code(self) -> str:
        return "do { " + " ".join(self.decls + self.body) + " } while (0)"


# ----------------------------------------------------------------------------------------------- special registers
_SPECIAL = {
    "laneid": "::wb_ptx::laneid()", "warpid": "::wb_ptx::warpid()",
    "dynamic_smem_size": "::wb_ptx::dynamic_smem_size()",
    "lanemask_eq": "__lanemask_eq()", "lanemask_lt": "__lanemask_lt()", "lanemask_le": "__lanemask_le()",
    "lanemask_gt": "__lanemask_gt()", "lanemask_ge": "__lanemask_ge()",
    "clock": "(uint32_t)::wb::clock64()", "clock64": "(uint64_t)::wb::clock64()", "globaltimer": "__globaltimer()",
    "smid": "__smid()", "nsmid": "__nsmid()",
}
for _v, _c in (("tid", "threadIdx"), ("ntid", "blockDim"), ("ctaid", "blockIdx"), ("nctaid", "gridDim")):
    for _a in "xyz":
        _SPECIAL[f"{_v}.{_a}"] = f"{_c}.{_a}"


def special(name: str) -> str:
    if name not in _SPECIAL:
        raise _Unsupported(f"%{name}")
    return _SPECIAL[name]


# ----------------------------------------------------------------------------------------------- instructions
_MMA_TYPES = {"f16": "F16", "bf16": "BF16", "tf32": "TF32", "f32": "F32", "s8": "S8", "u8": "U8", "s32": "S32"}
_TYPE_BITS = {"f16": 16, "bf16": 16, "tf32": 32, "f32": 32, "s8": 8, "u8": 8, "s32": 32}
_MMA_SHAPES = {("f16", 8), ("f16", 16), ("bf16", 8), ("bf16", 16), ("tf32", 4), ("tf32", 8), ("s8", 16),
               ("s8", 32), ("u8", 16), ("u8", 32)}


def _regs(g: Gen, op: Op, n: int) -> list[Op]:
    items = list(op.items) if op.kind == "vec" else [op]
    if len(items) != n:
        raise _Unsupported(f"{n} registers expected, got {len(items)}")
    return items


def _array(g: Gen, ops: list[Op]) -> str:
    name = g.fresh("wb_r")
    g.body.append(f"uint32_t {name}[{max(1, len(ops))}] = {{{', '.join(g.u32(o) for o in ops) or '0'}}};")
    return name


def h_mma(g: Gen, quals: list[str], ops: list[Op]) -> None:
    if quals[:2] != ["sync", "aligned"] or len(quals) < 5 or len(ops) != 4:
        raise _Unsupported("mma form")
    m = re.fullmatch(r"m16n8k(\d+)", quals[2])
    if not m or quals[3:5] != ["row", "col"]:
        raise _Unsupported("mma shape / layout")
    k = int(m.group(1))
    rest = quals[5:]
    satf = "satfinite" in rest
    types = [q for q in rest if q != "satfinite"]
    if len(types) != 4 or any(t not in _MMA_TYPES for t in types):
        raise _Unsupported("mma types")
    dt, at, bt, ct = types
    if at != bt and not ({at, bt} <= {"s8", "u8"}):
        raise _Unsupported("mma: atype != btype")
    if (at, k) not in _MMA_SHAPES or (bt, k) not in _MMA_SHAPES:
        raise _Unsupported("mma shape for this type")
    integer = at in ("s8", "u8")
    if integer != (dt == "s32") or integer != (ct == "s32") or (satf and not integer):
        raise _Unsupported("mma accumulator type")
    n_a, n_b = 16 * k // 32 * _TYPE_BITS[at] // 32, k * 8 // 32 * _TYPE_BITS[bt] // 32
    n_c, n_d = 4 * _TYPE_BITS[ct] // 32, 4 * _TYPE_BITS[dt] // 32
    d, a, b, c = (_regs(g, ops[0], n_d), _regs(g, ops[1], n_a), _regs(g, ops[2], n_b), _regs(g, ops[3], n_c))
    ra, rb, rc = _array(g, a), _array(g, b), _array(g, c)
    rd = g.fresh("wb_d")
    tys = ", ".join(f"::wb_ptx::{_MMA_TYPES[t]}" for t in (at, bt, ct, dt))
    g.body.append(f"uint32_t {rd}[4]; ::wb_ptx::Mma<16, 8, {k}, {tys}, {'true' if satf else 'false'}>::run({rd}, "
                  f"{ra}, {rb}, {rc}, {g.loc()});")
    for i, o in enumerate(d):
        g.store(o, f"{rd}[{i}]")


def h_ldmatrix(g: Gen, quals: list[str], ops: list[Op]) -> None:
    q = [x for x in quals if x not in ("shared", "shared::cta")]
    if q[:3] != ["sync", "aligned", "m8n8"] or len(ops) != 2 or q[-1] != "b16":
        raise _Unsupported("ldmatrix form")
    num = {"x1": 1, "x2": 2, "x4": 4}.get(q[3]) if len(q) > 3 else None
    trans = "trans" in q[4:-1]
    if num is None or [x for x in q[4:-1] if x != "trans"]:
        raise _Unsupported("ldmatrix qualifiers")
    shared = "shared" in quals or "shared::cta" in quals
    regs = _regs(g, ops[0], num)
    out = g.fresh("wb_r")
    g.body.append(f"uint32_t {out}[{num}]; ::wb_ptx::ldmatrix<{num}, {'true' if trans else 'false'}>({out}, "
                  f"{g.address(ops[1], shared)}, {g.loc()});")
    for j, r in enumerate(regs):
        g.store(r, f"{out}[{j}]")


def h_cp_async(g: Gen, quals: list[str], ops: list[Op], opcode: str) -> None:
    if quals == ["commit_group"] and not ops:
        g.body.append("::wb_ptx::cp_async_commit();")
        return
    if quals == ["wait_group"] and len(ops) == 1:
        g.body.append(f"::wb_ptx::cp_async_wait({g.imm(ops[0])});")
        return
    if quals == ["wait_all"] and not ops:
        g.body.append("::wb_ptx::cp_async_wait_all();")
        return
    if not quals or quals[0] not in ("ca", "cg") or len(ops) < 3:
        raise _Unsupported("cp.async form")
    rest = quals[1:]
    if rest[:1] not in (["shared"], ["shared::cta"]) or "global" not in rest:
        raise _Unsupported("cp.async state spaces")
    hint = "L2::cache_hint" in rest
    if [x for x in rest if x not in ("shared", "shared::cta", "global", "L2::cache_hint", "L2::64B", "L2::128B",
                                     "L2::256B")]:
        raise _Unsupported("cp.async qualifiers")
    extra = ops[3:]
    if hint:
        if not extra:
            raise _Unsupported("cp.async: .L2::cache_hint without a cache-policy")
        extra = extra[:-1]
    if len(extra) > 1 or (extra and extra[0].kind == "name"):
        raise _Unsupported("cp.async: ignore-src predicate")  # a predicate needs a multi-instruction block
    cp_size = g.imm(ops[2])
    src_size = f"(long long){g.u32(extra[0])}" if extra else "-1ll"  # a .u32 operand
    cg = "true" if quals[0] == "cg" else "false"
    g.body.append(f"::wb_ptx::cp_async({_cstr(opcode)}, {g.address(ops[0], True)}, "
                  f"{g.address(ops[1], False)}, (int)({cp_size}), {src_size}, {cg}, {g.loc()});")


def h_lop3(g: Gen, quals: list[str], ops: list[Op]) -> None:
    if quals != ["b32"] or len(ops) != 5:
        raise _Unsupported("lop3 form")
    d, a, b, c, lut = ops
    g.store(d, f"::wb_ptx::lop3({g.u32(a)}, {g.u32(b)}, {g.u32(c)}, (uint32_t)({g.imm(lut)}))")


_PRMT_MODES = {"": 0, "f4e": 1, "b4e": 2, "rc8": 3, "ecl": 4, "ecr": 5, "rc16": 6}


def h_prmt(g: Gen, quals: list[str], ops: list[Op]) -> None:
    if not quals or quals[0] != "b32" or len(quals) > 2 or len(ops) != 4:
        raise _Unsupported("prmt form")
    mode = _PRMT_MODES.get(quals[1] if len(quals) > 1 else "")
    if mode is None:
        raise _Unsupported("prmt mode")
    d, a, b, c = ops
    g.store(d, f"::wb_ptx::prmt({g.u32(a)}, {g.u32(b)}, {g.u32(c)}, {mode})")


def h_shfl(g: Gen, quals: list[str], ops: list[Op]) -> None:
    modes = {"up": 0, "down": 1, "bfly": 2, "idx": 3}
    if len(quals) != 3 or quals[0] != "sync" or quals[1] not in modes or quals[2] != "b32" or len(ops) != 5:
        raise _Unsupported("shfl form")
    d, a, b, c, mask = ops
    g.store(d, f"::wb_ptx::shfl<{modes[quals[1]]}>({g.u32(a)}, {g.u32(b)}, {g.u32(c)}, {g.u32(mask)}, nullptr, "
               f"{g.loc()})")


def h_ex2(g: Gen, quals: list[str], ops: list[Op]) -> None:
    if quals not in (["approx", "f32"], ["approx", "ftz", "f32"]) or len(ops) != 2:
        raise _Unsupported("ex2 form")
    ftz = "true" if "ftz" in quals else "false"
    g.store(ops[0], f"::wb::f2u(::wb_ptx::ex2_approx(::wb::u2f({g.u32(ops[1])}), {ftz}))")


def h_mov(g: Gen, quals: list[str], ops: list[Op]) -> None:
    if len(quals) != 1 or quals[0] not in ("u32", "b32", "s32", "u64", "b64", "s64", "f32", "f64") or len(ops) != 2:
        raise _Unsupported("mov form")
    g.store(ops[0], g.bits(ops[1]))


_LD_TYPES = {"b8": "uint8_t", "u8": "uint8_t", "s8": "int8_t", "b16": "uint16_t", "u16": "uint16_t",
             "s16": "int16_t", "b32": "uint32_t", "u32": "uint32_t", "s32": "int32_t", "f32": "uint32_t",
             "b64": "uint64_t", "u64": "uint64_t", "s64": "int64_t", "f64": "uint64_t"}
_HINTS = re.compile(r"(ca|cg|cs|lu|cv|wb|wt|nc|weak|volatile|relaxed|acquire|release|cta|gpu|sys|L1::\w+|L2::\w+)$")


def _mem_quals(quals: list[str]) -> tuple[str, int, str]:
    space, vec, ty = "", 1, ""
    for q in quals:
        if q in ("global", "shared", "shared::cta", "const", "local", "param"):
            space = q
        elif q in ("v2", "v4"):
            vec = int(q[1])
        elif q in _LD_TYPES:
            ty = q
        elif not _HINTS.fullmatch(q):
            raise _Unsupported(f".{q}")
    if not ty or space == "param":
        raise _Unsupported("ld/st type")
    return space, vec, ty


def h_ld(g: Gen, quals: list[str], ops: list[Op]) -> None:
    space, vec, ty = _mem_quals(quals)
    if len(ops) != 2:
        raise _Unsupported("ld form")
    regs = _regs(g, ops[0], vec)
    ct = _LD_TYPES[ty]
    v = g.fresh("wb_v")
    g.body.append(f"const ::wb_ptx::Vec<{ct}, {vec}> {v} = *reinterpret_cast<const ::wb_ptx::Vec<{ct}, {vec}>*>("
                  f"{g.address(ops[1], space.startswith('shared'))});")
    for i, r in enumerate(regs):
        g.store(r, f"::wb_ptx::bits_of({v}.x[{i}])")


def h_st(g: Gen, quals: list[str], ops: list[Op]) -> None:
    space, vec, ty = _mem_quals(quals)
    if len(ops) != 2:
        raise _Unsupported("st form")
    regs = _regs(g, ops[1], vec)
    ct = _LD_TYPES[ty]
    v = g.fresh("wb_v")
    vals = ", ".join(f"({ct}){g.bits(r)}" for r in regs)
    g.body.append(f"const ::wb_ptx::Vec<{ct}, {vec}> {v} = {{{{{vals}}}}}; *reinterpret_cast<::wb_ptx::Vec<{ct}, "
                  f"{vec}>*>({g.address(ops[0], space.startswith('shared'))}) = {v};")


_ATOM_OPS = {"add": "AOP_ADD", "min": "AOP_MIN", "max": "AOP_MAX", "and": "AOP_AND", "or": "AOP_OR",
             "xor": "AOP_XOR", "exch": "AOP_EXCH", "inc": "AOP_INC", "dec": "AOP_DEC"}
_ATOM_TYPES = {"u32": "unsigned", "s32": "int", "b32": "unsigned", "u64": "unsigned long long",
               "s64": "long long", "b64": "unsigned long long", "f32": "float", "f64": "double"}


def h_atom(g: Gen, quals: list[str], ops: list[Op], red: bool) -> None:
    space, op, ty = "", "", ""
    for q in quals:
        if q in ("global", "shared", "shared::cta"):
            space = q
        elif q in _ATOM_OPS or q == "cas":
            op = q
        elif q in _ATOM_TYPES:
            ty = q
        elif q not in ("relaxed", "acquire", "release", "acq_rel", "sem", "cta", "gpu", "sys"):
            raise _Unsupported(f".{q}")
    if not op or not ty or (red and op == "cas"):
        raise _Unsupported("atom form")
    ct = _ATOM_TYPES[ty]
    shared = space.startswith("shared")

    def val(o: Op) -> str:
        b = g.bits(o)
        if ty in ("f32", "f64"):
            return f"::wb_ptx::as_float<{ct}>({b})"
        return f"({ct}){b}"

    if red:
        if len(ops) != 2:
            raise _Unsupported("red form")
        g.body.append(f"(void)::wb_ptx::atom<{ct}>(::wb::{_ATOM_OPS[op]}, reinterpret_cast<{ct}*>("
                      f"{g.address(ops[0], shared)}), {val(ops[1])});")
        return
    addr = f"reinterpret_cast<{ct}*>({g.address(ops[1], shared)})"
    if op == "cas":
        if len(ops) != 4:
            raise _Unsupported("atom.cas form")
        call = f"::wb_ptx::atom_cas<{ct}>({addr}, {val(ops[2])}, {val(ops[3])})"
    else:
        if len(ops) != 3:
            raise _Unsupported("atom form")
        call = f"::wb_ptx::atom<{ct}>(::wb::{_ATOM_OPS[op]}, {addr}, {val(ops[2])})"
    g.store(ops[0], f"::wb_ptx::bits_of({call})")


HANDLERS = {"mma": h_mma, "ldmatrix": h_ldmatrix, "lop3": h_lop3, "prmt": h_prmt, "shfl": h_shfl, "ex2": h_ex2,
            "mov": h_mov, "ld": h_ld, "st": h_st, "atom": lambda g, q, o: h_atom(g, q, o, red=False),
            "red": lambda g, q, o: h_atom(g, q, o, red=True)}


def translate(stmt: AsmStmt) -> str | None:
    """C++ for the statement, or None when it is not one of the forms above."""
    text = stmt.template
    if "@" in text or stmt.template.count(";") > 1 or re.search(r"^\s*\w+:", text, re.M) or ".reg" in text:
        return None
    ins = stmt.instructions
    if len(ins) != 1:
        return None
    m = re.fullmatch(r"([\w.:]+)\s*(.*?)\s*;?\s*", ins[0], re.S)
    if not m:
        return None
    opcode, rest = m.group(1), m.group(2)
    head, *quals = opcode.split(".")
    try:
        ops = [parse_operand(x) for x in _split(rest)] if rest else []
        g = Gen(stmt)
        if head == "cp" and quals[:1] == ["async"] and "bulk" not in quals:
            h_cp_async(g, quals[1:], ops, opcode)
        elif head in HANDLERS:
            HANDLERS[head](g, quals, ops)
        else:
            return None
    except (_Unsupported, ValueError, IndexError):
        return None
    return g.code()


def install(handlers: list) -> None:
    """Register the handlers (once) in front of the default one."""
    if not any(getattr(h, "__name__", "") == "translate" for _, h in handlers):
        handlers.append((lambda s: translate(s) is not None, translate))

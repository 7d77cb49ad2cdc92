"""Launch geometry read from a host launcher's source: which kernels a course launcher launches at one shape, and the
grid, block and dynamic shared memory of each ``kernel<<<grid, block, smem>>>(...)``.

The X-ray of a student's file cannot run the file's own launcher without a GPU, so it reads the launch statements:
the launcher's parameters take the record's values (the kernel number and the shape's dims, bound by name as in the
run), ``switch`` arms on them are resolved, and the declarations before each launch (``constexpr int BM = 64, BN =
64;``, ``const int threads = 256;``, ``dim3 block(32, 32);``, ``#define CEIL_DIV(a, b) ...``, template arguments) are
evaluated as C integer arithmetic (truncating division, C's ``%``, shifts, ``?:``, casts, ``min``/``max``,
``sizeof`` of the scalar types). Calls into other functions of the file are followed (3 levels) with their arguments
bound to the callee's parameters. Anything that depends on a value only the run knows (``cudaOccupancyMax...``, a
device query, a loop) stays unknown and is reported as such, never guessed: names assigned inside a loop or written
through a pointer or reference are forgotten (:func:`run_dependent`). The X-ray then asks a dry run of the launcher
in the CPU interpreter (harness.xray._dry_plan).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from harness.cuda import normalize_kernel_name


class Unknown(Exception):
    """An expression the reader cannot evaluate from the source alone."""


SIZEOF = {"float": 4, "double": 8, "int": 4, "unsigned": 4, "uint": 4, "half": 2, "__half": 2, "__nv_bfloat16": 2,
          "nv_bfloat16": 2, "float2": 8, "float4": 16, "int2": 8, "int4": 16, "char": 1, "int8_t": 1, "uint8_t": 1,
          "short": 2, "long": 8, "size_t": 8, "int64_t": 8, "uint64_t": 8, "int32_t": 4, "uint32_t": 4,
          "__nv_fp8_e4m3": 1}
TYPES = {"int", "unsigned", "signed", "uint", "size_t", "long", "short", "char", "int32_t", "int64_t", "uint32_t",
         "uint64_t", "ptrdiff_t", "std::size_t", "auto"}
_BIN = {"||": 1, "&&": 2, "|": 3, "^": 4, "&": 5, "==": 6, "!=": 6, "<": 7, ">": 7, "<=": 7, ">=": 7, "<<": 8,
        ">>": 8, "+": 9, "-": 9, "*": 10, "/": 10, "%": 10}
_TOK = re.compile(r"(0[xX][0-9a-fA-F]+|\d+)[uUlL]*(?![\w.])|([A-Za-z_]\w*(?:::[A-Za-z_]\w*)*)|"
                  r"(<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%()<>!~&|^?:,.])")
Value = Any  # int, or a dim3 as a tuple of three ints


def tokens(text: str) -> list[tuple[str, Any]]:
    out, pos, text = [], 0, text.strip()
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        m = _TOK.match(text, pos)
        if not m:
            raise Unknown(f"cannot read {text[pos:pos + 24]!r}")
        if m.group(1):
            s = m.group(1)
            out.append(("num", int(s, 16) if s[:2].lower() == "0x" else int(s)))
        elif m.group(2):
            out.append(("id", m.group(2)))
        else:
            out.append(("op", m.group(3)))
        pos = m.end()
    return out


def _cdiv(a: int, b: int) -> int:
    if b == 0:
        raise Unknown("division by zero")
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _apply(op: str, a: Value, b: Value) -> int:
    if isinstance(a, tuple) or isinstance(b, tuple):
        raise Unknown("arithmetic on a dim3")
    if op == "/":
        return _cdiv(a, b)
    if op == "%":
        return a - _cdiv(a, b) * b
    return int({"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "<<": lambda: a << b,
                ">>": lambda: a >> b, "&": lambda: a & b, "|": lambda: a | b, "^": lambda: a ^ b,
                "<": lambda: a < b, ">": lambda: a > b, "<=": lambda: a <= b, ">=": lambda: a >= b,
                "==": lambda: a == b, "!=": lambda: a != b, "&&": lambda: bool(a) and bool(b),
                "||": lambda: bool(a) or bool(b)}[op]())


def dim3(vals: list[Value]) -> tuple[int, int, int]:
    if not 1 <= len(vals) <= 3 or any(isinstance(v, tuple) for v in vals):
        raise Unknown("dim3 takes 1 to 3 integers")
    return tuple([int(v) for v in vals] + [1] * (3 - len(vals)))  # type: ignore[return-value]


class _Parser:
    def __init__(self, toks: list[tuple[str, Any]], env: dict[str, Value]):
        self.t, self.i, self.env = toks, 0, env

    def peek(self, k: int = 0) -> tuple[str | None, Any]:
        j = self.i + k
        return self.t[j] if j < len(self.t) else (None, None)

    def take(self) -> tuple[str | None, Any]:
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, op: str) -> None:
        if self.take() != ("op", op):
            raise Unknown(f"expected {op!r}")

    def expr(self, min_prec: int = 0) -> Value:
        left = self.unary()
        while True:
            kind, op = self.peek()
            if kind == "op" and op == "?" and min_prec == 0:
                self.take()
                a = self.expr(0)
                self.expect(":")
                b = self.expr(0)
                left = a if left else b
                continue
            if kind != "op" or op not in _BIN or _BIN[op] < max(min_prec, 1):
                return left
            self.take()
            left = _apply(op, left, self.expr(_BIN[op] + 1))

    def _is_cast(self) -> int:
        """Tokens left of a '(type)' cast whose '(' was just taken: the type names and ')' (0: not a cast)."""
        j = 0
        while self.peek(j)[0] == "id" and (self.peek(j)[1] in TYPES or self.peek(j)[1] in SIZEOF):
            j += 1
        return j + 1 if j > 0 and self.peek(j) == ("op", ")") else 0

    def args(self) -> list[Value]:
        self.expect("(")
        out: list[Value] = []
        if self.peek() == ("op", ")"):
            self.take()
            return out
        while True:
            out.append(self.expr(0))
            kind, op = self.take()
            if op == ")":
                return out
            if op != ",":
                raise Unknown("bad argument list")

    def unary(self) -> Value:
        kind, v = self.take()
        if kind == "num":
            return self.postfix(v)
        if kind == "op" and v == "(":
            n = self._is_cast()
            if n:
                self.i += n
                val = self.unary()
                if isinstance(val, tuple):
                    raise Unknown("cast of a dim3")
                return int(val)
            val = self.expr(0)
            self.expect(")")
            return self.postfix(val)
        if kind == "op" and v in "-+!~":
            val = self.unary()
            if isinstance(val, tuple):
                raise Unknown("unary op on a dim3")
            return {"-": -val, "+": val, "!": int(not val), "~": ~val}[v]
        if kind == "id":
            if v == "sizeof":
                self.expect("(")
                names = []
                while self.peek()[0] == "id":
                    names.append(self.take()[1])
                self.expect(")")
                size = SIZEOF.get(" ".join(names)) or SIZEOF.get(names[-1] if names else "")
                if size is None:
                    raise Unknown(f"sizeof({' '.join(names)})")
                return size
            if v in ("static_cast", "std::static_cast"):
                self.expect("<")
                while self.peek() != ("op", ">"):
                    if self.take()[0] is None:
                        raise Unknown("unterminated cast")
                self.take()
                (val,) = self.args()
                return int(val)
            if v in ("true", "false"):
                return int(v == "true")
            if self.peek() == ("op", "("):
                a = self.args()
                base = v.split("::")[-1]
                if base == "dim3":
                    return self.postfix(dim3(a))
                if base in ("min", "max", "fmin", "fmax") and len(a) == 2 and not any(isinstance(x, tuple) for x in a):
                    return self.postfix(min(a) if "min" in base else max(a))
                if base in ("abs",) and len(a) == 1:
                    return abs(a[0])
                raise Unknown(f"call to {v}()")
            if v in self.env:
                return self.postfix(self.env[v])
            raise Unknown(f"{v} is not known from the source")
        raise Unknown(f"unexpected {v!r}")

    def postfix(self, val: Value) -> Value:
        while self.peek() == ("op", "."):
            self.take()
            _, member = self.take()
            if not isinstance(val, tuple) or member not in ("x", "y", "z"):
                raise Unknown(f".{member}")
            val = val["xyz".index(member)]
        return val


def evaluate(text: str, env: dict[str, Value], macros: dict[str, tuple[list[str] | None, str]] | None = None
             ) -> Value:
    """A C integer expression (or a dim3) with ``env``'s values; raises Unknown when something is not known."""
    p = _Parser(tokens(expand(text, macros or {})), env)
    val = p.expr(0)
    if p.i != len(p.t):
        raise Unknown(f"trailing {p.t[p.i][1]!r}")
    return val


# ------------------------------------------------------------------------------------------------ macros
def macros_of(text: str) -> dict[str, tuple[list[str] | None, str]]:
    """#define NAME body / #define NAME(a, b) body (continuations joined) -> {NAME: (params or None, body)}."""
    out: dict[str, tuple[list[str] | None, str]] = {}
    joined = re.sub(r"\\\n", " ", text)
    for m in re.finditer(r"^\s*#\s*define\s+([A-Za-z_]\w*)(\(([^)]*)\))?[ \t]*(.*)$", joined, re.M):
        params = [p.strip() for p in m.group(3).split(",") if p.strip()] if m.group(2) else None
        out[m.group(1)] = (params, m.group(4).strip())
    return out


def _balanced(text: str, start: int) -> int:
    """Index just past the ')' matching the '(' at ``start``."""
    depth = 0
    for k in range(start, len(text)):
        depth += text[k] == "("
        depth -= text[k] == ")"
        if depth == 0:
            return k + 1
    raise Unknown("unbalanced parentheses")


def split_top(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside (), [], {} and <> (template brackets). A '<' opens a bracket only after a name and
    not as '<<' or '<='; a '>' closes one only when a '<' is open, so ``a > 0 ? x : y, b`` (a comparison) and
    ``n >> 1, 256`` (a shift) split at their comma; a '<' left open at the end was a comparison: split again
    without angle brackets."""
    for angles in (True, False):
        parts, stack, cur = [], [], ""
        for i, ch in enumerate(text):
            prev = text[:i].rstrip()[-1:]
            if ch in "([{" or (angles and ch == "<" and (prev.isalnum() or prev == "_")
                               and text[i + 1:i + 2] not in ("<", "=") and text[i - 1:i] != "<"):
                stack.append(ch)
            elif ch in ")]}" or (ch == ">" and stack and stack[-1] == "<"):
                if stack:
                    stack.pop()
            if ch == sep and not stack:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        parts.append(cur)
        if not (angles and "<" in stack):
            break
    return [p.strip() for p in parts]


def expand(text: str, macros: dict[str, tuple[list[str] | None, str]], depth: int = 12) -> str:
    """Macros substituted textually (function-like ones with their arguments in parentheses)."""
    for _ in range(depth):
        changed = False
        for name, (params, body) in macros.items():
            for m in list(re.finditer(r"\b" + re.escape(name) + r"\b", text))[::-1]:
                if params is None:
                    text = text[:m.start()] + f"({body})" + text[m.end():]
                    changed = True
                    continue
                j = m.end()
                while j < len(text) and text[j].isspace():
                    j += 1
                if j >= len(text) or text[j] != "(":
                    continue
                end = _balanced(text, j)
                args = split_top(text[j + 1:end - 1])
                out = body
                for p, a in zip(params, args):
                    out = re.sub(r"\b" + re.escape(p) + r"\b", f"({a})", out)
                text = text[:m.start()] + f"({out})" + text[end:]
                changed = True
        if not changed:
            break
    return text


# ------------------------------------------------------------------------------------------------ statements
_INT_DECL = re.compile(r"^(?:static\s+|inline\s+|constexpr\s+|const\s+|unsigned\s+|signed\s+)*"
                       r"(?:int|uint|unsigned|size_t|std::size_t|long(?:\s+long)?|short|int32_t|int64_t|uint32_t|"
                       r"uint64_t|auto|unsigned)\b\s*(?!\()(.*)$", re.S)
_DIM3_DECL = re.compile(r"^(?:const\s+)?dim3\s+([A-Za-z_]\w*)\s*(?:\((.*)\)|\{(.*)\}|=\s*(.*))$", re.S)
_ASSIGN = re.compile(r"^([A-Za-z_]\w*)\s*(=|\+=|-=|\*=|/=|%=|<<=|>>=)\s*(.*)$", re.S)
_LAUNCH = re.compile(r"([A-Za-z_]\w*)\s*(<(?:[^<>;]|<[^<>;]*>)*>)?\s*<<<")
_CALL = re.compile(r"([A-Za-z_]\w*)\s*(<(?:[^<>;]|<[^<>;]*>)*>)?\s*\(")


def statements(code: str) -> list[str]:
    """Statements in order, split at ';', '{' and '}' outside parentheses; case labels dropped."""
    out, depth, cur = [], 0, ""
    for ch in code:
        depth += ch == "("
        depth -= ch == ")"
        if ch in ";{}" and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    clean = []
    for s in out:
        s = re.sub(r"^\s*(?:(?:case\s+[^:]+|default)\s*:\s*)+", "", s).strip()
        if s:
            clean.append(s)
    return clean


def _block_span(code: str, pos: int) -> tuple[int, int] | None:
    """(start of '{', index past its '}') of the block opening at or after ``pos``."""
    j = code.find("{", pos)
    if j < 0 or code[pos:j].strip():
        return None
    depth = 0
    for k in range(j, len(code)):
        depth += code[k] == "{"
        depth -= code[k] == "}"
        if depth == 0:
            return j, k + 1
    return None


def active_code(code: str, env: dict[str, Value], macros: dict | None = None) -> str:
    """``code`` with each ``switch (expr)`` whose value is known replaced by the arm that runs (its ``case`` for the
    value, else ``default``; fall-through between arms is followed until a ``break``)."""
    for m in re.finditer(r"\bswitch\s*\(", code):
        end = _balanced(code, m.end() - 1)
        try:
            val = evaluate(code[m.end():end - 1], env, macros)
        except Unknown:
            continue
        span = _block_span(code, end)
        if span is None:
            continue
        block = code[span[0] + 1:span[1] - 1]
        labels = list(re.finditer(r"\b(?:case\s+([^:]+?)|default)\s*:(?!:)", block))
        start = None
        for lab in labels:
            if lab.group(1) is not None:
                try:
                    if evaluate(lab.group(1), env, macros) == val:
                        start = lab.end()
                        break
                except Unknown:
                    continue
        if start is None:
            start = next((lab.end() for lab in labels if lab.group(1) is None), None)
        arm = ""
        if start is not None:
            rest = block[start:]
            rest = re.sub(r"\b(?:case\s+[^:]+?|default)\s*:(?!:)", " ", rest)
            stop = re.search(r"\bbreak\s*;|\breturn\b[^;]*;", rest)
            arm = rest[:stop.start()] if stop else rest
        return active_code(code[:m.start()] + "{" + arm + "}" + code[span[1]:], env, macros)
    return code


@dataclass
class Launch:
    """One ``kernel<<<grid, block, smem>>>`` as read at a shape."""

    base: str  # the kernel's name
    kernel: str  # normalised specialisation ("sgemm_1d_tiling<64,64,8,8>"), or the base name
    text: str  # the launch as written (shortened)
    block: tuple[int, int, int] | None = None
    grid: tuple[int, int, int] | None = None
    dyn_smem: int | None = None
    unknown: list[str] = field(default_factory=list)  # what could not be evaluated, and why
    notes: list[str] = field(default_factory=list)  # what a dry run's geometry rests on (device queries answered)

    @property
    def threads(self) -> int | None:
        return None if self.block is None else self.block[0] * self.block[1] * self.block[2]


def _as_dim3(v: Value) -> tuple[int, int, int]:
    return v if isinstance(v, tuple) else (int(v), 1, 1)


def _declare(stmt: str, env: dict[str, Value], macros: dict) -> None:
    """Update ``env`` with what ``stmt`` declares or assigns (a value that cannot be evaluated is forgotten)."""
    m = _DIM3_DECL.match(stmt)
    if m:
        name, a, b, c = m.groups()
        try:
            if c is not None:
                v = evaluate(c, env, macros)
                env[name] = _as_dim3(v)
            else:
                env[name] = dim3([evaluate(x, env, macros) for x in split_top(a if a is not None else b)])
        except Unknown:
            env.pop(name, None)
        return
    m = _INT_DECL.match(stmt)
    if m and not re.match(r"^[A-Za-z_]\w*\s*\(", m.group(1)):
        for part in split_top(m.group(1)):
            d = re.match(r"^\**\s*([A-Za-z_]\w*)\s*(?:=\s*(.*)|\((.*)\)|\{(.*)\})?$", part, re.S)
            if not d:
                continue
            name, expr = d.group(1), d.group(2) or d.group(3) or d.group(4)
            try:
                if expr is None:
                    raise Unknown("no initialiser")
                v = evaluate(expr, env, macros)
                env[name] = v if isinstance(v, tuple) else int(v)
            except Unknown:
                env.pop(name, None)
        return
    m = _ASSIGN.match(stmt)
    if m and m.group(1) in env:
        name, op, expr = m.groups()
        try:
            v = evaluate(expr, env, macros)
            env[name] = v if op == "=" else _apply(op[:-1], env[name], v)
        except Unknown:
            env.pop(name, None)


_LOOP = re.compile(r"\b(for|while)\s*\(|\bdo\s*\{")
_WRITE = re.compile(r"\b([A-Za-z_]\w*)\s*(?:[-+*/%&|^]|<<|>>)?=(?!=)|\b([A-Za-z_]\w*)\s*(?:\+\+|--)|"
                    r"(?:\+\+|--)\s*([A-Za-z_]\w*)")


def run_dependent(code: str, funcs: dict[str, Any] | None = None) -> set[str]:
    """Names whose value the source alone does not give: assigned inside a loop (its trip count is the run's), or
    written through a pointer or reference (``cudaDeviceGetAttribute(&sms, ...)``, a helper's ``int&`` parameter).
    The reader forgets them, so a launch that uses one reports it unknown instead of its value before the loop."""
    names: set[str] = set()
    for m in _LOOP.finditer(code):
        end = m.end() - 1
        try:
            if m.group(1):
                end = _balanced(code, m.end() - 1)
            rest = code[end:]
            if rest.lstrip().startswith("{") or not m.group(1):
                span = _block_span(code, end)
                stop = span[1] if span else len(code)
            else:
                stop = end + (rest.find(";") + 1 if ";" in rest else len(rest))
        except Unknown:
            stop = len(code)
        for w in _WRITE.finditer(code[m.start():stop]):
            names.add(w.group(1) or w.group(2) or w.group(3))
    for k, ch in enumerate(code):  # unary & (an address taken): the character before it opens an operand
        if ch == "&" and code[k + 1:k + 2] != "&" and code[k - 1:k] != "&":
            before = code[:k].rstrip()[-1:]
            m = re.match(r"\s*([A-Za-z_]\w*)", code[k + 1:])
            if m and (not before or before in "(,={;?:!"):
                names.add(m.group(1))
    for cm in _CALL.finditer(code):
        f = (funcs or {}).get(cm.group(1))
        if f is None or not any("&" in t for t, _ in f.params):
            continue
        try:
            args = split_top(code[cm.end():_balanced(code, cm.end() - 1) - 1])
        except Unknown:
            continue
        for (t, _), a in zip(f.params, args):
            if "&" in t and re.fullmatch(r"\s*[A-Za-z_]\w*\s*", a):
                names.add(a.strip())
    return names


def read_launches(code: str, env: dict[str, Value], funcs: dict[str, Any], macros: dict,
                  depth: int = 3) -> list[Launch]:
    """Every ``<<<>>>`` launch that ``code`` reaches with ``env``'s values, in order; calls into ``funcs`` (the file's
    host functions, harness.byo.Func) are followed ``depth`` levels with their parameters bound to the arguments.
    Names the run decides (:func:`run_dependent`) are never given a value."""
    volatile = run_dependent(code, funcs)
    env = {k: v for k, v in env.items() if k not in volatile}
    out: list[Launch] = []
    for stmt in statements(active_code(code, env, macros)):
        lm = _LAUNCH.search(stmt)
        if lm:
            out.append(_launch(stmt, lm, env, macros))
            continue
        _declare(stmt, env, macros)
        for name in volatile & env.keys():
            env.pop(name)
        for cm in _CALL.finditer(stmt):
            f = funcs.get(cm.group(1))
            if f is None or f.is_global or not f.body or depth <= 0:
                continue
            try:
                args = split_top(stmt[cm.end():_balanced(stmt, cm.end() - 1) - 1])
            except Unknown:
                continue
            sub: dict[str, Value] = {k: v for k, v in env.items() if k.isupper()}  # file-level constants
            for (_, pname), a in zip(f.params, args):
                try:
                    sub[pname] = evaluate(a, env, macros)
                except Unknown:
                    pass
            out += read_launches(f.body, sub, funcs, macros, depth - 1)
    return out


def _launch(stmt: str, lm: re.Match, env: dict[str, Value], macros: dict) -> Launch:
    base, targs = lm.group(1), lm.group(2)
    close = stmt.find(">>>", lm.end())
    cfg = split_top(stmt[lm.end():close]) if close > 0 else []
    text = " ".join(stmt[lm.start():close + 3 if close > 0 else len(stmt)].split())
    la = Launch(base=base, kernel=base, text=text[:160])
    if targs:
        vals = []
        for a in split_top(targs[1:-1]):
            try:
                v = evaluate(a, env, macros)
                vals.append("true" if v is True else str(v))
            except Unknown as e:
                if re.fullmatch(r"[A-Za-z_][\w:<>, ]*", a) and a not in env and not a.isupper():
                    vals.append(a)  # a type argument (float, __half)
                else:
                    la.unknown.append(f"template argument {a!r}: {e}")
                    vals.append(a)
        la.kernel = normalize_kernel_name(f"{base}<{','.join(vals)}>")
    for what, idx in (("grid", 0), ("block", 1), ("dyn_smem", 2)):
        if idx >= len(cfg):
            if what == "dyn_smem":
                la.dyn_smem = 0  # <<<grid, block>>>: no dynamic shared memory
            continue
        try:
            v = evaluate(cfg[idx], env, macros)
            if what == "dyn_smem":
                la.dyn_smem = int(v) if not isinstance(v, tuple) else None
            else:
                setattr(la, what, _as_dim3(v))
        except Unknown as e:
            la.unknown.append(f"{what} {cfg[idx]!r}: {e}")
    return la

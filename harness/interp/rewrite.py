"""Rewrite a preprocessed CUDA translation unit into host C++ for the CPU runtime (harness/interp).

The input is ``g++ -E`` output (our include folder first, so ``cuda_runtime.h`` & co. are ``wbcpu.h``). Only regions
whose line markers point at the user's own files are touched (not the system's headers, not ours), and every
replacement keeps the number of newlines of what it replaces, so compiler errors, DWARF and addr2line still give the
user's ``file:line``:

* ``kernel<<<grid, block[, smem[, stream]]>>>(args)`` becomes ``::wb::kl("kernel", dim3(grid), dim3(block), smem,
  stream, [&](auto&&... a) { kernel(a...); }, args)``: the arguments are evaluated once on the host, and the generic
  lambda keeps template-argument deduction working; every CUDA thread calls it with copies of them;
* ``extern __shared__ T name[];`` becomes a pointer to the launch's dynamic shared area;
* any other ``__shared__`` declaration becomes ``auto& name = ::wb::smem_var<T, tag, align>("name", file, line)``: a
  slot of the shared window that memcheck knows by name (red zones around it) and racecheck shadows;
* ``asm``/``asm volatile`` statements go to an *asm handler*: the default one ends the launch "not interpreted" with
  the first instruction's opcode (``ASM_HANDLERS`` is where PTX instructions with CPU semantics plug in, issue 28:
  each handler gets the parsed template, outputs, inputs and clobbers and returns C++);
* ``__noinline__`` becomes ``__attribute__((noinline))`` (a macro would break libstdc++'s own attribute spelling),
  ``__assert_fail`` becomes the runtime's (a failed device assert ends the launch), and ``exit()``/``abort()`` calls
  in the user's host code throw instead of ending the worker (a course ``CUDA_CHECK`` calls ``exit``).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass, field

INCLUDE_MARK = "/interp/include/"


class RewriteError(ValueError):
    """A construct the rewriter cannot handle, with the user's file:line."""


# ----------------------------------------------------------------------------------------------- lexical scan
_LEX = re.compile(r'R"([^()\\\s]{0,16})\((?:.|\n)*?\)\1"'  # raw string
                  r'|"(?:\\.|[^"\\\n])*"'  # string
                  r"|'(?:\\.|[^'\\\n])*'"  # character
                  r"|[{}]"
                  r"|^[ \t]*#[^\n]*", re.M)  # line markers and #pragma lines
_MARKER = re.compile(r'^# (\d+) "((?:\\.|[^"\\])*)"((?: \d+)*)[ \t]*$', re.M)


@dataclass
class Unit:
    text: str
    user: list[tuple[int, int]] = field(default_factory=list)  # [start, end) spans of the user's own files
    user_starts: list[int] = field(default_factory=list)
    literals: list[tuple[int, int]] = field(default_factory=list)  # string/char literal and directive spans
    lit_starts: list[int] = field(default_factory=list)
    braces: list[tuple[int, str]] = field(default_factory=list)  # (position, "{" or "}")
    brace_pos: list[int] = field(default_factory=list)
    markers: list[tuple[int, int, str]] = field(default_factory=list)  # (position of the line after, line, file)
    marker_pos: list[int] = field(default_factory=list)


def scan(text: str, is_user_file: Callable[[str, str], bool]) -> Unit:
    u = Unit(text)
    cur_user, start = False, 0
    decided: dict[str, bool] = {}  # per file, from the marker that first names it (its #include entry): a later
    # marker with flag 3 inside a user file only says that a system header's macro (assert) was expanded there
    for m in _MARKER.finditer(text):
        fname, flags = m.group(2).encode().decode("unicode_escape"), m.group(3)
        user = decided.setdefault(fname, is_user_file(fname, flags))
        if cur_user:
            u.user.append((start, m.start()))
        cur_user, start = user, m.end() + 1
        u.markers.append((m.end() + 1, int(m.group(1)), fname))
    if cur_user:
        u.user.append((start, len(text)))
    u.marker_pos = [p for p, _, _ in u.markers]
    for m in _LEX.finditer(text):
        tok = m.group(0)
        if tok in "{}" and len(tok) == 1:
            u.braces.append((m.start(), tok))
        else:
            u.literals.append((m.start(), m.end()))
    u.lit_starts = [s for s, _ in u.literals]
    u.brace_pos = [p for p, _ in u.braces]
    return u


def in_user(u: Unit, pos: int) -> bool:
    if len(u.user_starts) != len(u.user):
        u.user_starts = [s for s, _ in u.user]
    i = bisect.bisect_right(u.user_starts, pos) - 1
    return i >= 0 and u.user[i][0] <= pos < u.user[i][1]


def in_literal(u: Unit, pos: int) -> bool:
    i = bisect.bisect_right(u.lit_starts, pos) - 1
    return i >= 0 and u.literals[i][0] <= pos < u.literals[i][1]


def where(u: Unit, pos: int) -> tuple[str, int]:
    """The user's (file, line) of a position in the preprocessed text."""
    i = bisect.bisect_right(u.marker_pos, pos) - 1
    if i < 0:
        return "?", 0
    p, line, fname = u.markers[i]
    return fname, line + u.text.count("\n", p, pos)


def skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def match_paren(u: Unit, i: int) -> int:
    """Index just past the bracket closing the one at ``i`` (strings and characters skipped)."""
    text = u.text
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack: list[str] = []
    j = i
    while j < len(text):
        if text[j] in "\"'":
            k = bisect.bisect_right(u.lit_starts, j) - 1
            if k >= 0 and u.literals[k][0] == j:
                j = u.literals[k][1]
                continue
        c = text[j]
        if c in pairs:
            stack.append(pairs[c])
        elif c in ")]}":
            if not stack or stack.pop() != c:
                raise RewriteError(f"unbalanced {c!r}")
            if not stack:
                return j + 1
        j += 1
    raise RewriteError("unbalanced brackets")


def enclosing_brace(u: Unit, pos: int) -> int | None:
    """Position of the innermost '{' not closed before ``pos`` (None: file scope)."""
    i = bisect.bisect_left(u.brace_pos, pos) - 1
    depth = 0
    while i >= 0:
        p, c = u.braces[i]
        if c == "}":
            depth += 1
        elif depth:
            depth -= 1
        else:
            return p
        i -= 1
    return None


_NS_HEAD = re.compile(r'(\bnamespace\b[\w:\s]*|\bextern\s*"C(\+\+)?"\s*)$')
_CLASS_HEAD = re.compile(r"\b(struct|class|union)\b[^;{}()]*$")


def scope_kind(u: Unit, pos: int) -> str:
    """'file', 'namespace', 'class' or 'block' (a function body, lambda or statement block) at ``pos``."""
    b = enclosing_brace(u, pos)
    if b is None:
        return "file"
    head = u.text[max(0, b - 400):b]
    head = re.split(r"[;{}]", head)[-1]
    head = re.sub(r"^[ \t]*#[^\n]*$", "", head, flags=re.M).strip()
    if _NS_HEAD.search(head):
        return "namespace"
    if _CLASS_HEAD.search(head):
        return "class"
    return "block"


# ----------------------------------------------------------------------------------------------- asm statements
@dataclass
class AsmStmt:
    template: str  # the instruction text (string literals joined, escapes decoded)
    outputs: list[tuple[str, str]]  # (constraint, C++ expression)
    inputs: list[tuple[str, str]]
    clobbers: list[str]
    file: str
    line: int

    @property
    def instructions(self) -> list[str]:
        out = []
        for raw in re.split(r"[;\n]", self.template):
            s = raw.strip()
            s = re.sub(r"^[{}]\s*", "", s).strip()
            if not s or s in "{}" or s.startswith(".reg") or s.startswith("//") or re.fullmatch(r"[\w$%=]+:", s):
                continue
            s = re.sub(r"^@!?[%\w]+\s+", "", s)
            out.append(s)
        return out

    @property
    def opcode(self) -> str:
        ins = self.instructions
        if not ins:
            return "asm"
        first = ins[0]
        op = first.split()[0]
        special = re.search(r"%%(\w+)", first)
        if op.startswith("mov") and special:
            return f"{op} %{special.group(1)}"
        return op


def _c_string(lit: str) -> str:
    body = lit[1:-1]
    return bytes(body, "utf-8").decode("unicode_escape", errors="replace")


def _split_top(text: str, sep: str, angles: bool = False) -> list[str]:
    """Split at ``sep`` outside brackets and strings; ``angles``: '<...>' count as brackets too (declarations, where
    they are template argument lists). An asm statement's ':' sections split at every top-level ':' (``::: "memory"``
    is three empty-or-not sections: a C++ '::' can only occur inside an operand's parentheses)."""
    parts, depth, cur, i, quote = [], 0, "", 0, ""
    opens, closes = ("([{<", ")]}>") if angles else ("([{", ")]}")
    while i < len(text):
        c = text[i]
        if quote:
            cur += c
            if c == "\\" and i + 1 < len(text):
                cur += text[i + 1]
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
            cur += c
        elif c in opens:
            depth += 1
            cur += c
        elif c in closes:
            depth -= 1
            cur += c
        elif c == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    parts.append(cur)
    return parts


def parse_asm(body: str, file: str, line: int) -> AsmStmt:
    sections = _split_top(body, ":")
    tmpl = "".join(_c_string(s) for s in re.findall(r'"(?:\\.|[^"\\])*"', sections[0]))

    def operands(sec: str) -> list[tuple[str, str]]:
        out = []
        for op in _split_top(sec, ","):
            m = re.match(r'\s*(?:\[\w+\]\s*)?("(?:\\.|[^"\\])*")\s*\((.*)\)\s*$', op, re.S)
            if m:
                out.append((_c_string(m.group(1)), m.group(2).strip()))
        return out

    outs = operands(sections[1]) if len(sections) > 1 else []
    ins = operands(sections[2]) if len(sections) > 2 else []
    clob = [_c_string(s) for s in re.findall(r'"(?:\\.|[^"\\])*"', sections[3])] if len(sections) > 3 else []
    return AsmStmt(tmpl, outs, ins, clob, file, line)


def _cstr(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def not_interpreted(stmt: AsmStmt) -> str:
    """The default asm handler: the launch ends with the instruction named (status `skipped` in a record)."""
    return f"::wb::not_interpreted({_cstr(stmt.opcode)}, ::wb::Loc{{{_cstr(stmt.file)}, {stmt.line}}})"


# Issue 28 plugs PTX instructions in here: (predicate on the parsed statement, handler returning C++ code). The
# first matching entry wins; the default handler above applies when none does.
ASM_HANDLERS: list[tuple[Callable[[AsmStmt], bool], Callable[[AsmStmt], str]]] = []


def asm_code(stmt: AsmStmt) -> str:
    for pred, handler in ASM_HANDLERS:
        if pred(stmt):
            return handler(stmt)
    return not_interpreted(stmt)


# ----------------------------------------------------------------------------------------------- the rewrite
_ASM = re.compile(r"\b(?:asm|__asm__|__asm)\b(?:\s+(?:volatile|__volatile__|inline|goto))*\s*\(")
_LAUNCH = re.compile(r"<<<")
_SHARED = re.compile(r"\b__shared__\b")
_SIMPLE = re.compile(r"\b(__noinline__|__assert_fail)\b")
_EXIT = re.compile(r"(?<![\w.>:])(?:(std\s*::\s*)|::\s*)?\b(exit|abort)\s*\(")


@dataclass
class Edit:
    start: int
    end: int
    text: str


def _keep_lines(orig: str, new: str) -> str:
    return new + "\n" * (orig.count("\n") - new.count("\n"))


def _callee_start(text: str, i: int) -> int:
    """Start of the kernel expression ending just before ``i`` (``name``, ``ns::name<T, 4>``)."""
    j = i
    while j > 0 and text[j - 1] in " \t\n":
        j -= 1
    while True:
        if j > 0 and text[j - 1] == ">":  # template arguments
            depth, k = 0, j - 1
            while k >= 0:
                if text[k] == ">":
                    depth += 1
                elif text[k] == "<":
                    depth -= 1
                    if depth == 0:
                        break
                k -= 1
            j = k
            while j > 0 and text[j - 1] in " \t\n":
                j -= 1
        k = j
        while k > 0 and (text[k - 1].isalnum() or text[k - 1] == "_"):
            k -= 1
        if k == j:
            raise RewriteError("no kernel name before <<<")
        j = k
        m = re.search(r"::\s*$", text[max(0, j - 8):j])
        if m:
            j = j - len(m.group(0))
            while j > 0 and text[j - 1] in " \t\n":
                j -= 1
            if j > 0 and (text[j - 1].isalnum() or text[j - 1] in "_>"):
                continue
        return j


def _launch_edit(u: Unit, pos: int) -> Edit:
    text = u.text
    cs = _callee_start(text, pos)
    callee = " ".join(text[cs:pos].split())
    # the configuration runs to the first '>>>' outside brackets
    j, depth = pos + 3, 0
    while j < len(text):
        if in_literal(u, j):
            j += 1
            continue
        c = text[j]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith(">>>", j):
            break
        j += 1
    else:
        raise RewriteError(f"{callee}<<<...: no closing >>>")
    cfg = [" ".join(c.split()) for c in _split_top(text[pos + 3:j], ",")]
    if not 2 <= len(cfg) <= 4:
        raise RewriteError(f"{callee}<<<...>>>: expected 2 to 4 configuration arguments, got {len(cfg)}")
    k = skip_ws(text, j + 3)
    if k >= len(text) or text[k] != "(":
        raise RewriteError(f"{callee}<<<...>>>: no argument list")
    end = match_paren(u, k)
    args = text[k + 1:end - 1].strip()
    smem = cfg[2] if len(cfg) > 2 else "0"
    stream = cfg[3] if len(cfg) > 3 else "0"
    new = (f"::wb::kl({_cstr(callee)}, dim3({cfg[0]}), dim3({cfg[1]}), (size_t)({smem}), (cudaStream_t)({stream}), "
           f"[&](auto&&... wb_a) {{ {callee}(wb_a...); }}{', ' + args if args else ''})")
    return Edit(cs, end, _keep_lines(text[cs:end], " ".join(new.split("\n"))))


def _statement_span(u: Unit, pos: int) -> tuple[int, int]:
    """[start, end) of the declaration statement holding ``pos`` (end includes its ';')."""
    text = u.text
    s = pos
    while s > 0 and text[s - 1] not in ";{}":
        s -= 1
    while True:  # skip whitespace and whole directive/marker lines
        s = skip_ws(text, s)
        if text.startswith("#", s):
            nl = text.find("\n", s)
            s = len(text) if nl < 0 else nl + 1
            continue
        break
    e = pos
    depth = 0
    while e < len(text):
        if in_literal(u, e):
            e += 1
            continue
        c = text[e]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == ";" and depth <= 0:
            return s, e + 1
        e += 1
    raise RewriteError("__shared__ declaration without ';'")


_ATTR = re.compile(r"__attribute__\s*\(\(")
_ALIGN_NUM = re.compile(r"\baligned\s*\(\s*([^()]+?)\s*\)|\balignas\s*\(\s*([^()]+?)\s*\)")


def _strip_attributes(decl: str) -> tuple[str, str | None]:
    """Remove __attribute__((...)), alignas(...) and [[...]]; return the rest and the alignment asked for."""
    align = None
    out, i = "", 0
    while i < len(decl):
        m = _ATTR.match(decl, i)
        a = re.match(r"\balignas\s*\(", decl[i:]) if (i == 0 or not (decl[i - 1].isalnum() or decl[i - 1] == "_")) \
            else None
        if m or a:
            j = i + (m.end() - m.start() if m else a.end()) - 1
            depth = 0
            k = j
            while k < len(decl):
                if decl[k] == "(":
                    depth += 1
                elif decl[k] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                k += 1
            span = decl[i:k + 1 + (1 if m else 0)]
            n = _ALIGN_NUM.search(span)
            if n:
                align = (n.group(1) or n.group(2)).strip()
            i = k + 1 + (1 if m else 0)
            continue
        if decl.startswith("[[", i):
            k = decl.find("]]", i)
            i = k + 2 if k >= 0 else len(decl)
            continue
        out += decl[i]
        i += 1
    return out, align


_DECLARATOR = re.compile(r"^(.*?)([A-Za-z_]\w*)\s*((?:\[[^\]]*\]\s*)*)$", re.S)


def _shared_edit(u: Unit, pos: int, counter: list[int], fname: str, line: int) -> Edit:
    text = u.text
    s, e = _statement_span(u, pos)
    stmt = text[s:e]
    body, align = _strip_attributes(stmt[:-1])
    toks = body.split()
    is_extern = "extern" in toks
    body = re.sub(r"\b(extern|static|__shared__)\b", " ", body)
    decls = _split_top(body, ",", angles=True)
    scope = scope_kind(u, pos)
    if scope == "class":
        raise RewriteError(f"{fname}:{line}: __shared__ member of a class is not supported")
    static = "static " if scope != "block" else ""
    m = _DECLARATOR.match(decls[0].strip())
    if not m:
        raise RewriteError(f"{fname}:{line}: cannot parse the __shared__ declaration {' '.join(stmt.split())!r}")
    base_type = m.group(1).strip()
    base_nostars = re.sub(r"[\s*&]+$", "", base_type)
    out = []
    for k, d in enumerate(decls):
        m = _DECLARATOR.match(d.strip()) if k == 0 else _DECLARATOR.match(base_nostars + " " + d.strip())
        if not m:
            raise RewriteError(f"{fname}:{line}: cannot parse the __shared__ declarator {d.strip()!r}")
        ty, name, dims = m.group(1).strip(), m.group(2), "".join(m.group(3).split())
        if "=" in d:
            raise RewriteError(f"{fname}:{line}: __shared__ variable {name} has an initializer (not allowed in CUDA)")
        if is_extern:
            if dims.startswith("[]"):
                out.append(f"{static}{ty}* const {name} = reinterpret_cast<{ty}*>(::wb::dyn_smem());")
            else:
                out.append(f"{static}{ty}{dims}& {name} = *reinterpret_cast<{ty}{dims}*>(::wb::dyn_smem());")
            continue
        counter[0] += 1
        n = counter[0]
        al = f"({align})" if align else "16"
        out.append(f"struct wb_tag_{n}; typedef {ty} wb_st_{n}{dims}; {static}auto& {name} = "
                   f"::wb::smem_var<wb_st_{n}, wb_tag_{n}, {al}>({_cstr(name)}, {_cstr(fname)}, {line});")
    return Edit(s, e, _keep_lines(stmt, " ".join(out)))


def rewrite(text: str, is_user_file: Callable[[str, str], bool]) -> str:
    """The rewritten unit (same lines). ``is_user_file(path, marker_flags)`` picks the regions to rewrite."""
    u = scan(text, is_user_file)
    edits: list[Edit] = []
    counter = [0]

    def usable(pos: int) -> bool:
        return in_user(u, pos) and not in_literal(u, pos)

    for m in _ASM.finditer(text):
        if not usable(m.start()):
            continue
        if scope_kind(u, m.start()) != "block":
            continue  # a file-scope asm("...") directive: left to the assembler
        end = match_paren(u, m.end() - 1)
        f, ln = where(u, m.start())
        stmt = parse_asm(text[m.end():end - 1], f, ln)
        edits.append(Edit(m.start(), end, _keep_lines(text[m.start():end], asm_code(stmt))))
    for m in _LAUNCH.finditer(text):
        if usable(m.start()) and not any(ed.start <= m.start() < ed.end for ed in edits):
            try:
                edits.append(_launch_edit(u, m.start()))
            except RewriteError as e:
                f, ln = where(u, m.start())
                raise RewriteError(f"{f}:{ln}: {e}") from None
    for m in _SHARED.finditer(text):
        if usable(m.start()) and not any(ed.start <= m.start() < ed.end for ed in edits):
            f, ln = where(u, m.start())
            edits.append(_shared_edit(u, m.start(), counter, f, ln))
    for m in _SIMPLE.finditer(text):
        if usable(m.start()) and not any(ed.start <= m.start() < ed.end for ed in edits):
            new = "__attribute__((noinline))" if m.group(1) == "__noinline__" else "wb_assert_fail"
            edits.append(Edit(m.start(), m.end(), new))
    for m in _EXIT.finditer(text):
        if usable(m.start()) and not any(ed.start <= m.start() < ed.end for ed in edits):
            prev = text[max(0, m.start() - 40):m.start()].rstrip()
            if re.search(r"\b(void|int|extern|noreturn\]\]|__attribute__\(\(\w+\)\))$", prev):
                continue  # a declaration of exit/abort, not a call
            edits.append(Edit(m.start(), m.end(), f"::wb_{m.group(2)}("))
    edits.sort(key=lambda ed: ed.start)
    out, last = [], 0
    for ed in edits:
        if ed.start < last:
            f, ln = where(u, ed.start)
            raise RewriteError(f"{f}:{ln}: overlapping constructs the rewriter cannot separate")
        out.append(text[last:ed.start])
        out.append(ed.text)
        last = ed.end
    out.append(text[last:])
    return "".join(out)


# Hopper PTX (issue 28): mbarrier, cp.async.bulk.tensor, wgmma, setmaxnreg, proxy fences (asm_sm90.py)
from harness.interp.asm_sm90 import HANDLERS as _SM90_HANDLERS  # noqa: E402

ASM_HANDLERS.extend(_SM90_HANDLERS)

"""Policy expressions in CEL, the Common Expression Language (docs/rules.md, policy version 3).

Evaluated by the `common-expression-language` package (`import cel`, a Rust CEL interpreter).
CEL has no side effects, no attribute access into Python objects and no loops beyond its
bounded list macros, so an expression can only read the context the Verifier builds from its own
measurements and call the functions registered here.

Type discipline: CEL keeps `int` and `double` apart in arithmetic (`1 + 1.0` is an error). Every
number the Verifier puts into the context is a double, so `compute.flops > 1e25`,
`compute.flops >= 4.0 * compute.H` and `steps > 100` all work (CEL compares numbers across types);
`4 * compute.H` is an int times a double and is refused when the policy loads. `size()` gives an
int. A null fact, a JSON null in `hp` included, is absent: reading it is an error, `has()` is false.

Checks at load: length and nesting limits, known names, functions and fixed keys (`compute`,
`benchmarks`, `program`), literal regexes for the data functions, CEL syntax, and one probe
evaluation on a typed stand-in context that catches type errors and non-boolean results.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from computewatch.verifier._cel_functions import CEL_FUNCTIONS, LEGACY_FUNCTIONS, kind_of

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "CelExpr",
    "EvalError",
    "ExprError",
    "Unknown",
    "Vocabulary",
    "cel_string",
    "compile_cel",
    "interpreter",
    "make_context",
]

@lru_cache(maxsize=1)
def interpreter() -> Any:
    """The `cel` package, imported on first use: it loads its own command line (typer, rich,
    prompt_toolkit), which importing the policy engine should not pay for."""
    import cel

    return cel


MAX_LENGTH = 1000  # characters of one expression
MAX_DEPTH = 24  # nesting of (), [] and {}


class ExprError(ValueError):
    """An expression that is not acceptable (detected when the policy loads)."""


class EvalError(ValueError):
    """An expression that could not be evaluated on these facts."""


@dataclass(frozen=True)
class Unknown:
    """A fact with no value; `name` is its path in the facts, `why` says what is missing."""

    name: str
    why: str


@dataclass(frozen=True)
class Vocabulary:
    """What an expression may name: top-level facts and namespaces with fixed keys."""

    names: frozenset[str]
    fixed_keys: Mapping[str, frozenset[str]]  # namespace -> its only keys (literal access only)


# CEL's own functions and macros a policy may call (operators are always allowed), and ours.
_BUILTINS = frozenset({
    "size", "contains", "startsWith", "endsWith", "matches", "int", "double", "string", "bool", "type", "dyn",
    "has", "all", "exists", "exists_one", "map", "filter",
})  # fmt: skip
_TYPE_NAMES = frozenset({"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"})
_REGEX_FUNCTIONS = frozenset({"data_fraction"})  # run Python `re` on the Prover's bytes: literal patterns only
_MACROS = ("all", "exists", "exists_one", "map", "filter")

_TOKEN = re.compile(
    r"""(?P<space>\s+|//[^\n]*)
      | (?P<string>[rRbB]{0,2}(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
      | (?P<number>0[xX][0-9a-fA-F]+[uU]?|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[uU]?)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]{}])""",
    re.VERBOSE | re.DOTALL,
)
_OPEN, _CLOSE = "([{", ")]}"


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _tokens(source: str) -> list[_Token]:
    out, pos = [], 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            raise ExprError(f"syntax error: unexpected character {source[pos]!r} at column {pos + 1}")
        pos = m.end()
        kind = m.lastgroup or "space"
        if kind != "space":
            out.append(_Token(kind, m.group()))
    return out


@dataclass(frozen=True)
class CelExpr:
    """A checked CEL expression. `shown` is the text outcomes quote (a legacy rule's own text)."""

    source: str
    shown: str
    program: Any  # cel.Program
    names: frozenset[str]  # top-level facts it reads
    functions: frozenset[str]  # our extension functions it calls
    paths: frozenset[str]  # fixed-namespace keys it reads, e.g. "compute.flops"

    def evaluate(self, context: Any, unknown: Sequence[Unknown] = ()) -> bool:
        """True/false on a `make_context` context, or EvalError naming why there is no value."""
        try:
            value = self.program.execute(context)
        except Exception as exc:
            raise EvalError(self._explain(exc, unknown)) from None
        if not isinstance(value, bool):
            raise EvalError(f"evaluates to {kind_of(value)}, not true/false")
        return value

    def _explain(self, exc: Exception, unknown: Sequence[Unknown]) -> str:
        for u in unknown:  # a fact the Verifier could not establish is the reason, not CEL's wording
            if u.name in self.paths or u.name in self.names or any(p.startswith(u.name + ".") for p in self.paths):
                return f"{u.name} is unknown ({u.why})"
        return _one_line(exc)


def make_context(variables: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]]) -> Any:
    """A `cel.Context`: built once per run (converting a long `lr` list costs milliseconds), then
    shared by every rule; `approved` is set per rule with `add_variable`."""
    return interpreter().Context(dict(variables), dict(functions))


def _one_line(exc: Exception) -> str:
    text = str(exc)
    m = re.search(r"Function '(\w+)' error: Python function call failed: \w+: (.*?)(?:\. Check function arguments.*)?$", text, re.DOTALL)
    if m:  # one of our functions refused its input
        return m.group(2) if m.group(1) in LEGACY_FUNCTIONS else f"{m.group(1)}(): {m.group(2)}"
    if isinstance(exc, KeyError):
        return f"no such key {text}"
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    first = re.split(r"\.(?:\s|$)", " ".join(text.split()), maxsplit=1)[0]  # CEL's advice follows the first sentence
    return first[:300]


def cel_string(value: str) -> str:
    """`value` as a CEL string literal (double-quoted; escapes for quotes, backslashes, non-printables)."""
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _binders(tokens: Sequence[_Token]) -> set[str]:
    """Names bound by the list macros: `xs.all(x, ...)` binds x."""
    bound = set()
    for i in range(len(tokens) - 4):
        t = tokens[i : i + 5]
        if (t[0].text, t[2].text, t[4].text) == (".", "(", ",") and t[1].text in _MACROS and t[3].kind == "ident":
            bound.add(t[3].text)
    return bound


def _static_checks(source: str, vocabulary: Vocabulary, max_depth: int) -> tuple[set[str], set[str]]:
    """Limits, fixed keys and literal regexes; returns (paths read, string literals of regex functions)."""
    tokens = _tokens(source)
    depth = deepest = 0
    for t in tokens:
        if t.text in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif t.text in _CLOSE:
            depth -= 1
    if deepest > max_depth:
        raise ExprError(f"expression nested too deeply (at most {max_depth} levels)")
    bound = _binders(tokens)
    paths: set[str] = set()
    regexes: set[str] = set()
    for i, t in enumerate(tokens):
        if t.kind != "ident":
            continue
        if t.text.startswith("_"):
            raise ExprError(f"name {t.text!r} is not allowed (names starting with '_' are refused)")
        after = tokens[i + 1 : i + 4]
        before = tokens[i - 1].text if i else ""
        if t.text in vocabulary.fixed_keys and t.text not in bound and before != ".":
            paths.add(_fixed_key(t.text, after, vocabulary.fixed_keys[t.text]))
        if t.text in _REGEX_FUNCTIONS and before != ".":
            if not (len(after) == 3 and after[0].text == "(" and after[1].kind == "string" and after[2].text == ")"):
                raise ExprError(f"{t.text}() needs a literal string regex as its only argument")
            pattern = _literal(after[1].text)
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ExprError(f"{t.text}(): bad regex {pattern!r}: {exc}") from None
            regexes.add(pattern)
    return paths, regexes


def _fixed_key(namespace: str, after: Sequence[_Token], allowed: frozenset[str]) -> str:
    key = None
    if len(after) >= 2 and after[0].text == "." and after[1].kind == "ident":
        key = after[1].text
    elif len(after) == 3 and after[0].text == "[" and after[1].kind == "string" and after[2].text == "]":
        key = _literal(after[1].text)
    if key is None:
        raise ExprError(f"{namespace} needs a literal key ({namespace}.name or {namespace}[\"name\"])")
    if key not in allowed:
        raise ExprError(f"{namespace} has no key {key!r} (known: {', '.join(sorted(allowed)) or 'none declared'})")
    return f"{namespace}.{key}"


def _literal(token: str) -> str:
    value = interpreter().evaluate(token)  # CEL decodes its own escapes
    if not isinstance(value, str):
        raise ExprError(f"{token} is not a string literal")
    return value


def _syntax(exc: Exception) -> str:
    text = str(exc)
    m = re.search(r"ERROR: <input>:(\d+):(\d+): (?:Syntax error: )?([^\n]*)", text)
    if not m:
        return f"syntax error: {' '.join(text.split())[:200]}"
    detail = re.sub(r" expecting \{.*", "", m.group(3))
    return f"syntax error at column {m.group(2)}: {detail}"  # cel reports 1-based columns


def compile_cel(
    source: str,
    vocabulary: Vocabulary,
    probe: tuple[Mapping[str, Any], Mapping[str, Callable[..., Any]]] | None,
    *,
    shown: str | None = None,
    legacy: bool = False,
) -> CelExpr:
    """Check and compile `source`; ExprError says what is wrong in one line.

    `probe` is a typed stand-in context and its functions: the expression is evaluated on it once,
    and a type error or a non-boolean result there is refused now rather than on every run.
    `legacy`: a translation of a legacy expression, which its own parser has already bounded
    (the translation adds parentheses and characters, so CEL's limits are relaxed fourfold).
    """
    scale = 4 if legacy else 1
    if not isinstance(source, str):
        raise ExprError(f"an expression must be a string, got {type(source).__name__}")
    source = source.strip()
    if not source:
        raise ExprError("empty expression")
    if len(source) > MAX_LENGTH * scale:
        raise ExprError(f"expression longer than {MAX_LENGTH} characters")
    paths, _ = _static_checks(source, vocabulary, MAX_DEPTH * scale)
    try:
        program = interpreter().compile(source)
    except (ValueError, RuntimeError) as exc:
        raise ExprError(_syntax(exc)) from None
    refs = program.references()
    tokens = _tokens(source)
    bound = _binders(tokens)
    unknown = sorted(set(refs["variables"]) - vocabulary.names - bound - _TYPE_NAMES)
    if unknown:
        raise ExprError(f"unknown name {unknown[0]!r}; known names: {', '.join(sorted(vocabulary.names))}")
    called = {f for f in refs["functions"] if re.fullmatch(r"[A-Za-z][\w.]*", f)}
    # a call written as a method (`x.f(...)`) or a free function: the token stream names them all
    for i, t in enumerate(tokens[:-1]):
        if t.kind == "ident" and tokens[i + 1].text == "(":
            called.add(t.text)
    bad = sorted(called - _BUILTINS - CEL_FUNCTIONS - (LEGACY_FUNCTIONS if legacy else frozenset()))
    if bad:
        raise ExprError(f"unknown function {bad[0]!r}; known: {', '.join(sorted(_BUILTINS | CEL_FUNCTIONS))}")
    expr = CelExpr(
        source=source,
        shown=shown if shown is not None else source,
        program=program,
        names=frozenset(set(refs["variables"]) & vocabulary.names),
        functions=frozenset(called & CEL_FUNCTIONS),
        paths=frozenset(paths),
    )
    if probe is not None:
        _probe(expr, *probe)
    return expr


def _probe(expr: CelExpr, context: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]]) -> None:
    try:
        value = expr.program.execute(make_context(context, functions))
    except (TypeError, RuntimeError, ValueError) as exc:
        text = str(exc)
        if any(m in text for m in ("No such overload", "Unsupported operation", "Unexpected type")):
            raise ExprError(f"type error: {_one_line(exc)} (numbers in the context are doubles: write 4.0, not 4)") from None
        return  # a missing hp key or an unknown fact: the probe cannot tell, the run will
    except (KeyError, ZeroDivisionError, OverflowError):
        return
    if not isinstance(value, bool):
        raise ExprError(f"expression does not evaluate to true/false (it gives {kind_of(value)}; compare it: x > 1.0, x == 'a')")


class _QuietFunctionErrors(logging.Filter):
    """The cel package logs a warning each time a registered function raises; ours raise by design
    (a missing fact is an `error` outcome, reported in the verdict), so those lines are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Python function '")


logging.getLogger("cel").addFilter(_QuietFunctionErrors())

"""The legacy policy expression language (policy versions 1 and 2): a parser and checker only.

Policies of version 3 are written in CEL (verifier/_cel.py). A version 1 or 2 expression, a
small subset of Python expressions, is parsed here with `ast` (nothing is ever passed to
eval/exec), checked against the vocabulary, and translated to CEL by verifier/_legacy.py, so
one evaluator decides every policy. Size, depth and number magnitude are bounded.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from computewatch.verifier._cel import ExprError

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_NODES",
    "Expr",
    "ExprError",
    "Signature",
    "Vocabulary",
    "parse",
]

MAX_LENGTH = 1000  # characters of one expression
MAX_NODES = 200  # AST nodes of one expression
MAX_DEPTH = 24  # AST nesting
_MAX_INT_BITS = 1024  # integers beyond ~1e308 are refused (floats overflow there anyway)


@dataclass(frozen=True)
class Signature:
    """A callable name: its arity, and which argument (if any) must be a literal regex."""

    min_args: int
    max_args: int
    regex_arg: int | None = None


@dataclass(frozen=True)
class Vocabulary:
    """What an expression may name: top-level facts, namespaces with fixed keys, functions."""

    names: frozenset[str]
    fixed_keys: Mapping[str, frozenset[str]]  # namespace -> its only keys (literal access only)
    functions: Mapping[str, Signature]


_COMPARE_NAMES = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.In: "in", ast.NotIn: "not in",
}  # fmt: skip
_BINOP_NAMES = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_REFUSED_NAMES = {
    "Lambda": "lambda", "ListComp": "a comprehension", "SetComp": "a comprehension",
    "DictComp": "a comprehension", "GeneratorExp": "a comprehension", "NamedExpr": "':='",
    "Await": "await", "Yield": "yield", "YieldFrom": "yield", "IfExp": "'x if c else y'",
    "Starred": "'*' unpacking", "Slice": "slicing", "JoinedStr": "an f-string",
    "Dict": "a dict literal", "Set": "a set literal",
}  # fmt: skip


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.BinOp):
        return f"operator {type(node.op).__name__} (allowed: + - * /)"
    if isinstance(node, ast.UnaryOp):
        return f"unary operator {type(node.op).__name__}"
    return _REFUSED_NAMES.get(type(node).__name__, type(node).__name__)


def _depth(tree: ast.AST) -> int:
    deepest, stack = 0, [(tree, 1)]
    while stack:  # iterative: a deep tree must not exhaust Python's own recursion
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _literal_key(node: ast.expr) -> str | int | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        key = node.slice.value
        return key if isinstance(key, (str, int)) and not isinstance(key, bool) else None
    return None


class _Checker:
    """Static checks: allowed nodes, names, keys of fixed namespaces, call arity, literal regexes."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary
        self.names: set[str] = set()
        self.functions: set[str] = set()
        self.keys: dict[str, set[str]] = {}
        self._callees: set[int] = set()  # Name nodes that are a call's function, not a fact

    def check(self, node: ast.AST) -> None:
        for child in ast.walk(node):
            self._node(child)

    def _node(self, node: ast.AST) -> None:
        voc = self.vocabulary
        if isinstance(node, (ast.Expression, ast.Load, ast.boolop, ast.cmpop, ast.operator, ast.unaryop)):
            return
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, float) and not math.isfinite(value):
                raise ExprError(f"number {value!r} is not finite")
            if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _MAX_INT_BITS:
                raise ExprError("integer literal too large")
            if value is None or not isinstance(value, (bool, int, float, str)):
                raise ExprError(f"literal {value!r} is not allowed (numbers, strings, True, False)")
        elif isinstance(node, ast.Name):
            if id(node) in self._callees:
                return
            if node.id in voc.functions:
                raise ExprError(f"{node.id!r} is a function: call it, {node.id}(...)")
            if node.id not in voc.names:
                raise ExprError(f"unknown name {node.id!r}; known names: {', '.join(sorted(voc.names))}")
            self.names.add(node.id)
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                raise ExprError(f"attribute {node.attr!r} is not allowed (names starting with '_' are refused)")
            self._fixed_key(node)
        elif isinstance(node, ast.Subscript):
            if isinstance(node.slice, ast.Slice):
                raise ExprError("slicing is not allowed")
            self._fixed_key(node)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOP_NAMES:
                raise ExprError(f"{_describe(node)} is not allowed")
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _COMPARE_NAMES:
                    raise ExprError(f"comparison {type(op).__name__} is not allowed")
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
                raise ExprError(f"{_describe(node)} is not allowed")
        elif isinstance(node, ast.Call):
            self._call(node)
        elif not isinstance(node, (ast.BoolOp, ast.List, ast.Tuple)):
            raise ExprError(f"{_describe(node)} is not allowed")

    def _fixed_key(self, node: ast.Attribute | ast.Subscript) -> None:
        base = node.value
        if not (isinstance(base, ast.Name) and base.id in self.vocabulary.fixed_keys):
            return
        key = _literal_key(node)
        allowed = self.vocabulary.fixed_keys[base.id]
        if not isinstance(key, str):
            raise ExprError(f"{base.id} needs a literal key ({base.id}.name or {base.id}[\"name\"])")
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none declared"
            raise ExprError(f"{base.id} has no key {key!r} (known: {known})")
        self.keys.setdefault(base.id, set()).add(key)

    def _call(self, node: ast.Call) -> None:
        if not isinstance(node.func, ast.Name):
            what = "a method" if isinstance(node.func, ast.Attribute) else _describe(node.func)
            raise ExprError(f"{what} cannot be called: only named functions can be called")
        name = node.func.id
        sig = self.vocabulary.functions.get(name)
        if sig is None:
            raise ExprError(f"unknown function {name!r}; known: {', '.join(sorted(self.vocabulary.functions))}")
        if node.keywords:
            raise ExprError(f"{name}() takes no keyword arguments")
        n = len(node.args)
        if not sig.min_args <= n <= sig.max_args:
            want = str(sig.min_args) if sig.min_args == sig.max_args else f"{sig.min_args} to {sig.max_args}"
            raise ExprError(f"{name}() takes {want} argument(s), got {n}")
        if sig.regex_arg is not None and sig.regex_arg < n:
            arg = node.args[sig.regex_arg]
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                raise ExprError(f"{name}() needs a literal string regex as argument {sig.regex_arg + 1}")
            try:
                re.compile(arg.value)
            except re.error as exc:
                raise ExprError(f"{name}(): bad regex {arg.value!r}: {exc}") from None
        self.functions.add(name)
        self._callees.add(id(node.func))  # ast.walk yields a Call before its children


@dataclass(frozen=True)
class Expr:
    """A checked expression: its source, tree, and the facts and functions it uses."""

    source: str
    tree: ast.Expression
    names: frozenset[str]
    functions: frozenset[str]
    keys: Mapping[str, frozenset[str]]  # fixed-namespace keys it reads (e.g. benchmarks)


def parse(source: str, vocabulary: Vocabulary, *, boolean: bool = True) -> Expr:
    """Parse and check `source`; `boolean` refuses expressions that cannot be true/false."""
    if not isinstance(source, str):
        raise ExprError(f"an expression must be a string, got {type(source).__name__}")
    if not source.strip():
        raise ExprError("empty expression")
    if len(source) > MAX_LENGTH:
        raise ExprError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"syntax error: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ExprError(f"cannot parse: {type(exc).__name__}") from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_NODES:
        raise ExprError(f"expression too large ({nodes} nodes; at most {MAX_NODES})")
    if _depth(tree) > MAX_DEPTH:
        raise ExprError(f"expression nested too deeply (at most {MAX_DEPTH} levels)")
    checker = _Checker(vocabulary)
    checker.check(tree)
    body = tree.body
    if boolean and (
        isinstance(body, (ast.BinOp, ast.List, ast.Tuple))
        or (isinstance(body, ast.UnaryOp) and not isinstance(body.op, ast.Not))
        or (isinstance(body, ast.Constant) and not isinstance(body.value, bool))
    ):
        raise ExprError("expression does not evaluate to true/false (compare it: x > 1, x == 'a')")
    return Expr(
        source=source.strip(),
        tree=tree,
        names=frozenset(checker.names),
        functions=frozenset(checker.functions),
        keys={k: frozenset(v) for k, v in checker.keys.items()},
    )

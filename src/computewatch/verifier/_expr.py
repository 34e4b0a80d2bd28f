"""The policy expression language: a small, safe subset of Python expressions (docs/rules.md).

Parsed with `ast` and walked by hand: nothing is ever passed to eval/exec, no Python attribute
is ever read (``a.b`` is a key lookup in a facts dict), and only whitelisted functions can be
called. Size, depth and number magnitude are bounded so that a policy cannot stall the Verifier.

A fact that is missing (JSON null, a FLOP count the counter could not establish) is an
`Unknown`; using it raises `EvalError`, except where ``and``/``or`` is decided without it.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_NODES",
    "EvalError",
    "Expr",
    "ExprError",
    "Signature",
    "Unknown",
    "Vocabulary",
    "known",
    "number",
    "parse",
]

MAX_LENGTH = 1000  # characters of one expression
MAX_NODES = 200  # AST nodes of one expression
MAX_DEPTH = 24  # AST nesting
_MAX_INT_BITS = 1024  # integers beyond ~1e308 are refused (floats overflow there anyway)


class ExprError(ValueError):
    """An expression that is not in the language (detected before any evaluation)."""


class EvalError(ValueError):
    """An expression that could not be evaluated on these facts."""


@dataclass(frozen=True)
class Unknown:
    """A fact with no value; `name` is its path in the facts, `why` says what is missing."""

    name: str
    why: str

    def error(self) -> EvalError:
        return EvalError(f"{self.name} is unknown ({self.why})")


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

    def evaluate(self, env: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]]) -> Any:
        return _Evaluator(env, functions).eval(self.tree.body)


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


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def known(value: Any) -> Any:
    """`value`, or the EvalError an Unknown stands for."""
    if isinstance(value, Unknown):
        raise value.error()
    return value


def number(value: Any, what: str) -> int | float:
    value = known(value)
    if not _is_number(value):
        raise EvalError(f"{what} needs a number, got {_kind(value)}")
    return value


def _checked(value: int | float) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise EvalError("arithmetic overflow (result is not finite)")
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise EvalError("arithmetic overflow (integer too large)")
    return value


def _label(node: ast.expr) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # noqa: BLE001 - a label only; never let it mask the real error
        text = type(node).__name__
    return text if len(text) <= 60 else text[:57] + "..."


class _Evaluator:
    def __init__(self, env: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]]) -> None:
        self.env = env
        self.functions = functions

    def eval(self, node: ast.expr) -> Any:
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:  # parse() admitted only the node types below
            raise EvalError(f"{type(node).__name__} is not allowed")
        return method(node)

    def _Constant(self, node: ast.Constant) -> Any:
        return node.value

    def _Name(self, node: ast.Name) -> Any:
        if node.id not in self.env:
            return Unknown(node.id, "not provided")
        value = self.env[node.id]
        return Unknown(node.id, "null") if value is None else value

    def _lookup(self, node: ast.Attribute | ast.Subscript, key: Any) -> Any:
        base = self.eval(node.value)
        path = f"{_label(node.value)}"
        base = known(base)
        if isinstance(base, Mapping):
            if not isinstance(key, str):
                raise EvalError(f"{path} is a table; its keys are strings, got {_kind(key)}")
            if key not in base:
                keys = sorted(str(k) for k in base)
                shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
                raise EvalError(f"{path} has no key {key!r} (keys: {shown or 'none'})")
            value = base[key]
            return Unknown(f"{path}.{key}", "null") if value is None else value
        if isinstance(base, (list, tuple)):
            if not _is_number(key) or not isinstance(key, int):
                raise EvalError(f"{path} is a list; index it with an integer, got {_kind(key)}")
            if not -len(base) <= key < len(base):
                raise EvalError(f"{path}[{key}] is out of range (length {len(base)})")
            value = base[key]
            return Unknown(f"{path}[{key}]", "null") if value is None else value
        raise EvalError(f"{path} is {_kind(base)}; it has no keys")

    def _Attribute(self, node: ast.Attribute) -> Any:
        return self._lookup(node, node.attr)

    def _Subscript(self, node: ast.Subscript) -> Any:
        return self._lookup(node, known(self.eval(node.slice)))

    def _List(self, node: ast.List) -> list[Any]:
        return [self.eval(e) for e in node.elts]

    _Tuple = _List

    def _BoolOp(self, node: ast.BoolOp) -> bool:
        # Kleene logic: `and` is false as soon as one operand is false, even if another could
        # not be evaluated (so an unknown fact does not make an inapplicable rule an error).
        decisive = isinstance(node.op, ast.Or)
        first_error: EvalError | None = None
        for operand in node.values:
            try:
                value = known(self.eval(operand))
                if not isinstance(value, bool):
                    raise EvalError(f"'{_label(operand)}' is {_kind(value)}, not true/false")
            except EvalError as exc:
                first_error = first_error or exc
                continue
            if value is decisive:
                return decisive
        if first_error is not None:
            raise first_error
        return not decisive

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        value = known(self.eval(node.operand))
        if isinstance(node.op, ast.Not):
            if not isinstance(value, bool):
                raise EvalError(f"'not' needs true/false, got {_kind(value)}")
            return not value
        value = number(value, "unary minus" if isinstance(node.op, ast.USub) else "unary plus")
        return -value if isinstance(node.op, ast.USub) else value

    def _BinOp(self, node: ast.BinOp) -> int | float:
        symbol = _BINOP_NAMES[type(node.op)]
        left = number(self.eval(node.left), f"'{symbol}'")
        right = number(self.eval(node.right), f"'{symbol}'")
        if symbol == "+":
            return _checked(left + right)
        if symbol == "-":
            return _checked(left - right)
        if symbol == "*":
            return _checked(left * right)
        if right == 0:
            raise EvalError(f"division by zero in '{_label(node)}'")
        try:
            return _checked(left / right)
        except OverflowError:
            raise EvalError("arithmetic overflow (result is not finite)") from None

    def _Compare(self, node: ast.Compare) -> bool:
        left = known(self.eval(node.left))
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = known(self.eval(right_node))
            if not _compare(type(op), left, right):
                return False
            left = right
        return True

    def _Call(self, node: ast.Call) -> Any:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        fn = self.functions.get(name) if name is not None else None
        if fn is None:
            raise EvalError(f"function {name!r} is not available")
        args = [known(self.eval(a)) for a in node.args]
        return fn(*args)


def _compare(op: type[ast.cmpop], left: Any, right: Any) -> bool:
    symbol = _COMPARE_NAMES[op]
    if op in (ast.In, ast.NotIn):
        if isinstance(right, str):
            if not isinstance(left, str):
                raise EvalError(f"'{symbol}' a string needs a string on the left, got {_kind(left)}")
            found = left in right
        elif isinstance(right, (list, tuple)):
            found = any(_same_kind(left, x) and left == x for x in right if not isinstance(x, Unknown))
        elif isinstance(right, Mapping):
            found = isinstance(left, str) and left in right
        else:
            raise EvalError(f"'{symbol}' needs a string, list or table on the right, got {_kind(right)}")
        return found if op is ast.In else not found
    if not _same_kind(left, right):
        raise EvalError(f"cannot compare {_kind(left)} with {_kind(right)} using '{symbol}'")
    if op is ast.Eq:
        return left == right
    if op is ast.NotEq:
        return left != right
    if not (_is_number(left) or isinstance(left, str)):
        raise EvalError(f"'{symbol}' needs numbers or strings, got {_kind(left)}")
    if op is ast.Lt:
        return left < right
    if op is ast.LtE:
        return left <= right
    if op is ast.Gt:
        return left > right
    return left >= right


def _same_kind(a: Any, b: Any) -> bool:
    return _kind(a) == _kind(b)

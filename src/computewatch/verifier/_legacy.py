"""Translate a legacy policy expression (versions 1 and 2, verifier/_expr.py) to CEL.

One evaluator decides every policy: a version 1 or 2 rule is parsed by the legacy parser, then
rewritten node by node into CEL text that means the same on the Verifier's typed context
(docs/rules.md, "Legacy expressions"). Numbers become double literals (the context's numbers are
doubles), except list indexes; `len(x)` becomes `double(size(x))`; `a < b < c` becomes
`(a < b) && (b < c)`; `in` becomes CEL `in` on lists and maps and `contains()` on strings; `==`
becomes `legacy_equal(a, b)`, which refuses values of different kinds as the legacy language did
(CEL's `==` is false there, which would let a Prover's mistyped claim slip past a ban).
"""

from __future__ import annotations

import ast

from computewatch.verifier._cel import ExprError, cel_string, interpreter
from computewatch.verifier._expr import Expr

__all__ = ["to_cel"]

_RESERVED = frozenset({
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if",
    "import", "let", "loop", "package", "namespace", "return", "var", "void", "while",
})  # fmt: skip
_COMPARE = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_BINOP = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_LISTS = frozenset({"lr", "program.uses", "program.imports"})  # facts known to be lists


def to_cel(expr: Expr) -> str:
    """The CEL text of a checked legacy expression."""
    return _Translator().node(expr.tree.body)


def _double(value: int | float) -> str:
    try:
        text = repr(float(value))
    except OverflowError:
        raise ExprError("integer literal too large for a double") from None
    return text if any(c in text for c in ".e") else text + ".0"


def _cel_regex(arg: ast.expr) -> None:
    """CEL's `matches` uses RE2 syntax: a Python-only construct (look-around, backreference) is refused now."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        try:
            interpreter().evaluate(f'"".matches({cel_string(arg.value)})')
        except (RuntimeError, ValueError, TypeError) as exc:
            first = str(exc).split("\n")[0]
            raise ExprError(f"matches(): regex {arg.value!r} is not RE2 syntax, which CEL uses ({first})") from None


def _identifier(name: str) -> bool:
    return name.isidentifier() and name.isascii() and name not in _RESERVED and not name.startswith("_")


class _Translator:
    def node(self, node: ast.expr) -> str:
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:  # the legacy checker admitted only the node types below
            raise ExprError(f"{type(node).__name__} has no CEL translation")
        result: str = method(node)
        return result

    def _Constant(self, node: ast.Constant) -> str:
        value = node.value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return _double(value)
        if isinstance(value, str):
            return cel_string(value)
        raise ExprError(f"literal {value!r} has no CEL translation")

    def _Name(self, node: ast.Name) -> str:
        return node.id

    def _Attribute(self, node: ast.Attribute) -> str:
        base = self.node(node.value)
        return f"{base}.{node.attr}" if _identifier(node.attr) else f"{base}[{cel_string(node.attr)}]"

    def _Subscript(self, node: ast.Subscript) -> str:
        base = self.node(node.value)
        key = node.slice
        if isinstance(key, ast.UnaryOp) and isinstance(key.op, ast.USub) and isinstance(key.operand, ast.Constant):
            key = ast.Constant(-key.operand.value) if isinstance(key.operand.value, int) and not isinstance(key.operand.value, bool) else key
        if isinstance(key, ast.Constant) and isinstance(key.value, int) and not isinstance(key.value, bool):
            # list indexes stay ints; a negative one counts from the end as in the legacy language
            return f"{base}[{key.value}]" if key.value >= 0 else f"{base}[size({base}) - {-key.value}]"
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return f"{base}.{key.value}" if _identifier(key.value) else f"{base}[{cel_string(key.value)}]"
        return f"{base}[{self.node(key)}]"

    def _List(self, node: ast.List | ast.Tuple) -> str:
        return "[" + ", ".join(self.node(e) for e in node.elts) + "]"

    _Tuple = _List

    def _BoolOp(self, node: ast.BoolOp) -> str:
        joiner = " && " if isinstance(node.op, ast.And) else " || "
        return "(" + joiner.join(self.node(v) for v in node.values) + ")"

    def _UnaryOp(self, node: ast.UnaryOp) -> str:
        operand = self.node(node.operand)
        if isinstance(node.op, ast.Not):
            return f"!{operand}"
        if isinstance(node.op, ast.USub):
            return f"(-{operand})"
        return f"(0.0 + {operand})"  # unary plus: a number, as the legacy language required

    def _BinOp(self, node: ast.BinOp) -> str:
        return f"({self.node(node.left)} {_BINOP[type(node.op)]} {self.node(node.right)})"

    def _Compare(self, node: ast.Compare) -> str:
        parts, left = [], node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            parts.append(self._compare(op, left, right))
            left = right
        return parts[0] if len(parts) == 1 else "(" + " && ".join(parts) + ")"

    def _compare(self, op: ast.cmpop, left: ast.expr, right: ast.expr) -> str:
        a, b = self.node(left), self.node(right)
        if isinstance(op, (ast.Eq, ast.NotEq)):  # an error across kinds, as it always was (CEL's == is false)
            return f"legacy_equal({a}, {b})" if isinstance(op, ast.Eq) else f"!legacy_equal({a}, {b})"
        if type(op) in _COMPARE:
            return f"({a} {_COMPARE[type(op)]} {b})"
        if isinstance(right, (ast.List, ast.Tuple)) or b in _LISTS:
            found = f"({a} in {b})"
        elif isinstance(right, ast.Constant) and isinstance(right.value, str):
            found = f"{b}.contains({a})"
        else:  # a list, a map (key membership) or a string (substring), known only at evaluation
            found = f"(type({b}) == string ? {b}.contains({a}) : {a} in {b})"
        return found if isinstance(op, ast.In) else f"!{found}"

    def _Call(self, node: ast.Call) -> str:
        name = node.func.id if isinstance(node.func, ast.Name) else ""
        args = [self.node(a) for a in node.args]
        if name == "len":
            return f"double(size({args[0]}))"
        if name in ("min", "max") and len(args) > 1:
            return f"{name}([{', '.join(args)}])"
        if name == "matches":
            _cel_regex(node.args[1])
            return f"{args[0]}.matches({args[1]})"
        return f"{name}({', '.join(args)})"

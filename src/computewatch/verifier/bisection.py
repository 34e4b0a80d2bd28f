"""Bisection (issue 19, after Verde/RepOps and Srivastava-Arora-Boneh): narrow a disagreement
to the first diverging step of a segment, then to the first diverging operator of that step.

Steps. A segment [lo, hi) whose replay did not reproduce its end: the Verifier holds the
committed digest of every intermediate state. Each round it asks the Prover for the state at the
midpoint m (through the challenge/response exchange), checks that it hashes to the commitment of
step m - 1, replays [lo, m) from the agreed state at lo and compares with it: agreement moves lo
to m, disagreement moves hi to m. At most ceil(log2 L) rounds for L = hi - lo steps, and the step
that remains, hi - 1, is the first whose committed result the Verifier cannot reproduce.

Operators. For that one step both sides hash every operator's outputs in dispatch order
(`step_replay.OpTrace`); the Prover commits to its list (the response names the list's
digest) and the two sides compare a binary hash tree over the leaves (RFC 9162 leaf and node
hashes over ``canonical_json([name, digest])``, pairs left to right, an odd node carried up):
each round the Prover reveals the two children of the disputed node and the Verifier descends
into the leftmost one that differs from its own, so ceil(log2 ops) rounds name the first
operator whose outputs differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.merkle import leaf_hash, node_hash, root_from_leaves

__all__ = ["OperatorDivergence", "StepDivergence", "bisect_operators", "bisect_segment", "bisect_steps", "op_leaves", "ops_root"]


def op_leaves(ops: Sequence[Sequence[str]]) -> list[bytes]:
    return [canonical_json([str(name), str(digest)]) for name, digest in ops]


def ops_root(ops: Sequence[Sequence[str]]) -> str | None:
    leaves = op_leaves(ops)
    return root_from_leaves(leaves).hex() if leaves else None


@dataclass(frozen=True)
class StepDivergence:
    step: int | None  # the first step whose committed result is not reproduced (None: all agree)
    rounds: int
    bound: int


def bisect_steps(lo: int, hi: int, agrees: Callable[[int, int], bool]) -> StepDivergence:
    """`agrees(a, b)`: replaying [a, b) from the (agreed) state at a reproduces the committed
    state at b. Assumes the replay of [lo, hi) disagrees; finds the first bad step."""
    bound = math.ceil(math.log2(hi - lo)) if hi - lo > 1 else 0
    rounds = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        rounds += 1
        if agrees(lo, mid):
            lo = mid
        else:
            hi = mid
    return StepDivergence(lo, rounds, bound)


@dataclass(frozen=True)
class OperatorDivergence:
    index: int | None  # first operator whose outputs differ (None: the traces agree)
    operator: str | None
    rounds: int
    bound: int


def _level_up(nodes: list[bytes]) -> list[bytes]:
    return [node_hash(nodes[i], nodes[i + 1]) if i + 1 < len(nodes) else nodes[i] for i in range(0, len(nodes), 2)]


def bisect_operators(mine: Sequence[Sequence[str]], theirs: Sequence[Sequence[str]]) -> OperatorDivergence:
    """Walk the two operator trees down to the first differing leaf. The Prover's tree is built
    over its claimed list, padded to the Verifier's length (a missing operator differs)."""
    n = max(len(mine), len(theirs))
    bound = math.ceil(math.log2(n)) if n > 1 else 0
    if n == 0:
        return OperatorDivergence(None, None, 0, 0)
    pad = [b"\x00missing"]
    a = [leaf_hash(x) for x in op_leaves(mine)] + pad * (n - len(mine))
    b = [leaf_hash(x) for x in op_leaves(theirs)] + pad * (n - len(theirs))
    levels_a, levels_b = [a], [b]
    while len(levels_a[-1]) > 1:
        levels_a.append(_level_up(levels_a[-1]))
        levels_b.append(_level_up(levels_b[-1]))
    if levels_a[-1] == levels_b[-1]:
        return OperatorDivergence(None, None, 0, bound)
    index, rounds = 0, 0
    for depth in range(len(levels_a) - 2, -1, -1):
        rounds += 1  # the Prover reveals the two children of the disputed node
        left = 2 * index
        index = left if levels_a[depth][left] != levels_b[depth][left] else left + 1
    name = mine[index][0] if index < len(mine) else (theirs[index][0] if index < len(theirs) else None)
    return OperatorDivergence(index, str(name) if name is not None else None, rounds, bound)



def bisect_segment(
    lo: int,
    hi: int,
    ask_state: Callable[[int], object],
    state_digest: Callable[[object], tuple[str, str]],
    replay: Callable[[object, int, int], tuple[str, str]],
    committed: Callable[[int], tuple[str, str]],
) -> StepDivergence:
    """Bisection over a segment's committed step digests (exact mode). `ask_state(s)` is the
    Prover's answer for the state at step s (a challenge/response round), `state_digest` its
    (weights, optimizer) digests, `replay(state, a, b)` the judge's replay of [a, b) from it,
    `committed(s)` the committed digests of the state at s. An answer that does not hash to its
    commitment is itself a violation: `ValueError` names the step."""
    states: dict[int, object] = {}

    def at(s: int) -> object:
        if s not in states:
            state = ask_state(s)
            if state_digest(state) != committed(s):
                raise ValueError(f"the Prover's state at step {s} does not hash to its commitment")
            states[s] = state
        return states[s]

    return bisect_steps(lo, hi, lambda a, b: replay(at(a), a, b) == committed(b))

"""Bisection of a segment that failed in tolerance mode (issue 19): to one step, then one operator.

In exact mode the replay's digest after every step names the first step off the committed chain
(`spot_checks.localize_segments`). In tolerance mode no digest matches (every step differs in its
last bits), so the judge bisects by distance over the Prover's answered states: the state at lo
is agreed (the checkpoint the segment started from, or an answered state that agreed); each
round takes the Prover's state at the midpoint m (an answer to a challenge of step m, hashed here
against the commitment of step m - 1: one that does not hash is a violation), replays [lo, m)
from the agreed state in the sandboxed executor (`step_replay.tensor_replayer`, one warm
executor) and compares the result with it by the calibrated distance: within epsilon moves lo to
m, beyond moves hi to m. At most ceil(log2 L) rounds for L steps; then the step lo is replayed
once more with the operator trace on, and the two traces are bisected to the first operator
(`bisection.bisect_operators`).

The Prover's states come through the challenge/response exchange: `verify --responses DIR`
hands in its answers (any challenge of the run, in the mode it was issued for). A round whose
state no response holds ends the bisection for now; the entry says which step to challenge next
(`next_challenge`), so the Verifier runs `computewatch challenge RUN --at STEP` and verifies
again with the answer: one exchange per round.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from computewatch.crypto.errors import ComputewatchError, FormatError
from computewatch.formats.challenge import check_challenge, read_response, response_object
from computewatch.formats.checkpoint import decode_checkpoint
from computewatch.formats.commitments import checkpoint_commitment
from computewatch.verifier.bisection import bisect_operators, bisect_steps

__all__ = ["answered_states", "bisect_tolerance_segment"]


class _Missing(Exception):
    def __init__(self, step: int) -> None:
        super().__init__(step)
        self.step = step


def answered_states(responses: Sequence[str], seed: bytes) -> dict[str, dict[int, dict[str, Any]]]:
    """Rank 0's answered states per run and step, from the response folders whose challenge
    carries the Verifier's tag (the others are judged, and refused, by `spot_checks`)."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for folder in responses:
        try:
            resp = read_response(folder)
            challenge = check_challenge(resp.get("challenge"), seed)
        except FormatError:
            continue
        for a in resp["answers"]:
            if a["rank"] == 0 and a["before"] and a["refused"] is None:
                out.setdefault(challenge["run_id"], {})[int(a["step"])] = dict(a, _folder=str(Path(folder).resolve()))
    return out


def _distance(replayed: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], base: dict[str, torch.Tensor], names: Sequence[str]) -> float:
    """Relative L2 distance of the replayed weights from the Prover's, normalised by the update
    the Prover claims over the same steps (as segment replay measures it)."""
    from computewatch.verifier._compare import distance

    flat = lambda d: torch.cat([d[n].detach().reshape(-1).double() for n in names])  # noqa: E731
    r, c, b = flat(replayed), flat(theirs), flat(base)
    parts = {"diff2": float(torch.dot(r - c, r - c)), "update2": float(torch.dot(c - b, c - b)),
             "replayed2": float(torch.dot(r - b, r - b)), "dot": float(torch.dot(r - b, c - b))}
    return float(distance([parts])["relative"])


def bisect_tolerance_segment(
    run: Any,
    rid: str,
    lo: int,
    hi: int,
    summary: dict[str, Any],
    answers: dict[int, dict[str, Any]],
    epsilon: float,
    *,
    sandbox: bool = True,
    data_dir: str | None = None,
    time_scale: float = 1.0,
) -> dict[str, Any]:
    """The `localized` entry of the failed segment [lo, hi) of the staged single-rank `run`."""
    from computewatch.verifier._examine import _ckpt_bytes
    from computewatch.verifier.step_replay import tensor_replayer

    names = [reg.param for reg in run.layout.chips[0]]
    entry: dict[str, Any] = {"run": rid, "segment": [lo, hi], "step": None, "operator": None, "distance": None, "via": "bisection",
                             "round_bound": math.ceil(math.log2(hi - lo)) if hi - lo > 1 else 0}
    if hi - lo > 1 and not any(lo < s < hi for s in answers):  # no round can run yet: no executor started
        mid = (lo + hi) // 2
        entry.update(next_challenge=mid, note=f"bisection needs the Prover's state at step {mid}: challenge that step and verify again with the answer")
        return entry
    raw: dict[int, bytes] = {lo: _ckpt_bytes(run, lo, 0)}  # the checkpoint the segment replay started from

    def committed(s: int) -> list[str]:
        return list(summary["initial"][0]) if s == 0 else list(summary["state"][s - 1][0])

    def state(s: int) -> bytes:
        if s not in raw:
            a = answers.get(s)
            if a is None and s == hi:
                raw[s] = _ckpt_bytes(run, s, 0)  # the segment's end checkpoint (the chain check pins it)
                return raw[s]
            if a is None:
                raise _Missing(s)
            data = response_object(a["_folder"], a["before"])
            ckpt = decode_checkpoint(data, what=f"answered state before step {s}")
            if ckpt.step != s or ckpt.rank != 0 or list(checkpoint_commitment(ckpt.model, names, ckpt.optimizer_tensors)) != committed(s):
                raise ComputewatchError(f"the Prover's state at step {s} does not hash to its commitment")
            raw[s] = data
        return raw[s]

    dists: dict[tuple[int, int], float] = {}
    try:
        with tensor_replayer(run, sandbox=sandbox, data_dir=data_dir, time_scale=time_scale) as replay:

            def agrees(a: int, b: int) -> bool:
                start, theirs = state(a), state(b)
                model, _opt, _ops = replay(start, a, b)
                d = _distance(model, decode_checkpoint(theirs).model, decode_checkpoint(start).model, names)
                dists[(a, b)] = d
                return d <= epsilon

            found = bisect_steps(lo, hi, agrees)
            t = found.step
            entry.update(step=t, rounds=found.rounds)
            if t is None:
                return entry
            a = answers.get(t)
            model, _opt, mine = replay(state(t), t, t + 1, trace=True)
            if t + 1 in raw or t + 1 in answers or t + 1 == hi:
                entry["distance"] = _distance(model, decode_checkpoint(state(t + 1)).model, decode_checkpoint(state(t)).model, names)
            theirs: list[list[str]] = []
            if a is not None and a.get("ops"):
                import json

                theirs = json.loads(response_object(a["_folder"], a["ops"]))
            ops = bisect_operators(mine, theirs) if theirs else None
            if ops is None:
                entry["note"] = f"challenge step {t} to have its operator named"
            else:
                entry.update(operator=ops.operator, operator_index=ops.index, operator_rounds=ops.rounds, operator_round_bound=ops.bound)
    except _Missing as missing:
        entry["next_challenge"] = missing.step
        entry["note"] = f"bisection needs the Prover's state at step {missing.step}: challenge that step and verify again with the answer"
    except (ComputewatchError, FormatError, ValueError) as exc:
        entry["note"] = f"bisection stopped: {exc}"
        entry["problem"] = str(exc)
    return entry

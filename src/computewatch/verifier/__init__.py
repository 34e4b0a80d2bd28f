"""computewatch.verifier: the Verifier (paper §3, §5.1-5.2, Appendix D).

It trusts nothing of the Prover's: it starts from the logs of the chips it inspected, pins the
chipmaker roots and the Prover keys itself, and reads the Prover's evidence only through the
published formats (`computewatch.formats`), inside a trusted cluster of sandboxed processes.
It never imports `computewatch.prover` or `computewatch.chip` (a test enforces it). Names are
imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from computewatch._lazy import lazy_exports

if TYPE_CHECKING:  # the names as the type checker sees them; at run time _WHERE loads them on first use
    from computewatch.verifier._examine import replay_steps
    from computewatch.verifier.cluster import TrustedCluster
    from computewatch.verifier.evidence import ChipEvidence, EvidenceError, read_chip
    from computewatch.verifier.flops import count_flops
    from computewatch.verifier.selection import select_segments
    from computewatch.verifier.verification import CHECKS, VerifyRequest, verify

_WHERE = {
    "CHECKS": "verification",
    "ChipEvidence": "evidence",
    "EvidenceError": "evidence",
    "TrustedCluster": "cluster",
    "replay_steps": "_examine",
    "VerifyRequest": "verification",
    "count_flops": "flops",
    "read_chip": "evidence",
    "select_segments": "selection",
    "verify": "verification",
}
__all__ = [
    "CHECKS",
    "ChipEvidence",
    "EvidenceError",
    "TrustedCluster",
    "VerifyRequest",
    "count_flops",
    "read_chip",
    "replay_steps",
    "select_segments",
    "verify",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

"""computewatch.verifier: the Verifier (paper §3, §5.1-5.2, Appendix D).

It trusts nothing of the Prover's: it starts from the logs of the chips it inspected, pins the
chipmaker roots and the Prover keys itself, and reads the Prover's evidence only through the
published formats (`computewatch.formats`), inside a trusted cluster of sandboxed processes.
It never imports `computewatch.prover` or `computewatch.chip` (a test enforces it). Names are
imported lazily.
"""

from __future__ import annotations

from computewatch._lazy import lazy_exports

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
__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

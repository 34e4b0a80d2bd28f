"""The firmware's own check of its log against its sealed state, at every boot.

Sealed state records the log's size and RFC 9162 root whenever it is written (boot, epoch
commit, snapshot trigger, clean stop), together with the boot counter. The log on the owner's
storage must still extend that tree head, hash-chain line by line, and hold the boot the
counter says. A log cut back, edited or swapped behind the firmware's back fails one of these;
the firmware then reports the damage in every later attestation (sticky, like the tamper flag).

An honest crash never trips a check: appends are whole lines (a torn fragment is cut before
this runs, and it was never counted), sealed state is written before the entries it precedes,
and a crash between a sealed write and the next append leaves the log exactly at the recorded
size.
"""

from __future__ import annotations

import hashlib

from computewatch.chip.log import ChipLog
from computewatch.chip.state import NVState
from computewatch.formats.chip_entry import GENESIS_PREV, parse_entry_line

__all__ = ["log_damage"]


def log_damage(log: ChipLog, nv: NVState, serial: str) -> list[str]:
    """What the log shows that sealed state says cannot be (empty when consistent)."""
    problems: list[str] = []
    n = len(log)
    if n < nv.log_size:
        problems.append(
            f"the log holds {n} entries but sealed state recorded {nv.log_size}: entries were cut from the log"
        )
    elif log.root(nv.log_size).hex() != nv.log_root:
        problems.append(
            f"the log's first {nv.log_size} entries differ from those sealed state recorded: entries were edited or replaced"
        )
    prev = GENESIS_PREV
    for i, e in enumerate(log):
        fields = parse_entry_line(e.line)  # parsed once already when the log was opened
        if e.counter != i or fields["prev"] != prev or fields["serial"] != serial:
            problems.append(f"entry {i} breaks the log's counter, hash chain or serial: the log was edited")
            break
        prev = hashlib.sha256(e.line).hexdigest()
    boots = [e.boot for e in log if e.kind == "boot"]
    last_boot = boots[-1] if boots else 0
    if last_boot > nv.reset_count:
        problems.append(
            f"the log records boot {last_boot} but sealed state counts {nv.reset_count} boots: "
            "the log comes from elsewhere or sealed state was rolled back"
        )
    elif n > nv.log_size and log[n - 1].boot != nv.reset_count:
        # Entries after the last sealed write belong to the boot that write recorded.
        problems.append(
            f"sealed state counts {nv.reset_count} boots but the log's last entries are of boot {log[n - 1].boot}: "
            "boots were cut from the log"
        )
    return problems

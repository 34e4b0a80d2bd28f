"""The root of trust's monotonic counter: rollback-protected storage the owner cannot restore.

A real chip keeps a counter its owner can read but never lower: a TPM 2.0 NV counter
(TPM_NT_COUNTER), an eMMC/UFS Replay Protected Memory Block (RPMB) write counter, or fuses
burned one at a time. The firmware raises it at every write of sealed state and stores the new
value inside that state, so sealed state copied off the chip and put back later (a backup of the
whole chip folder) is bound to a counter value the hardware has already passed: the firmware
sees it at the next boot (`check`) and reports it as log damage (tamper flag, attestation).

Modelled as one small file per chip, named by the chip's device key id, in a folder OUTSIDE
the owner-writable chip folder: `$COMPUTEWATCH_ROOT_OF_TRUST` when set, else `.root-of-trust/`
beside the chip folder (the rack's hardware, which a copy of the chip folder does not carry).
The model's assumption (paper §6.2), as for sealed state: the owner copies and restores the chip
folder but cannot write this store except through `advance`, which never lowers a counter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from computewatch.chip.errors import ChipError
from computewatch.crypto.atomic import atomic_write
from computewatch.crypto.canonical import canonical_json

__all__ = ["ROT_ENV", "CounterRollbackError", "CounterStore", "check"]

ROT_ENV = "COMPUTEWATCH_ROOT_OF_TRUST"
_FOLDER = ".root-of-trust"


class CounterRollbackError(ChipError):
    """A request to lower (or re-use) a monotonic counter: the hardware refuses it."""


class CounterStore:
    """The monotonic counters of the chips whose root of trust lives in `folder`."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    @classmethod
    def for_chip(cls, state_dir: str | os.PathLike[str], folder: str | os.PathLike[str] | None = None) -> CounterStore:
        """The store of the chip in `state_dir`: `folder` if given, else $COMPUTEWATCH_ROOT_OF_TRUST,
        else `.root-of-trust` beside the chip folder."""
        if folder is None:
            folder = os.environ.get(ROT_ENV) or Path(state_dir).absolute().parent / _FOLDER
        return cls(folder)

    def _path(self, chip_id: str) -> Path:
        if not chip_id or not all(c in "0123456789abcdef" for c in chip_id):
            raise ChipError(f"a counter is named by a device key id (lowercase hex), got {chip_id!r}")
        return self.folder / f"{chip_id}.json"

    def read(self, chip_id: str) -> int:
        """The counter's value; 0 for a chip whose counter was never raised."""
        path = self._path(chip_id)
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            raise ChipError(f"root-of-trust counter {str(path)!r} is unreadable: {exc}") from None
        value = doc.get("counter") if isinstance(doc, dict) and doc.get("v") == 1 else None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ChipError(f"root-of-trust counter {str(path)!r} is malformed")
        return value

    def advance(self, chip_id: str, value: int) -> None:
        """Raise the counter to `value` (durably); a value at or below the current one is refused."""
        current = self.read(chip_id)
        if not isinstance(value, int) or value <= current:
            raise CounterRollbackError(
                f"monotonic counter {chip_id[:16]}... stands at {current}: it only moves up, {value!r} refused"
            )
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self._path(chip_id), canonical_json({"v": 1, "counter": value}), mode=0o600)


def check(sealed: int, counter: int) -> str | None:
    """Compare the counter value sealed state is bound to with the hardware counter at boot.

    Sealed state is written before the counter is raised (a crash between the two leaves it one
    ahead, which the boot completes); any other difference is a restored copy or a reset counter.
    Returns the damage in words, or None."""
    if sealed in (counter, counter + 1):
        return None
    if sealed < counter:
        return (
            f"sealed state is bound to root-of-trust counter {sealed} but the counter reads {counter}: "
            "the chip's state was restored from a copy taken earlier, or another copy of the chip ran since"
        )
    return (
        f"sealed state is bound to root-of-trust counter {sealed} but the counter reads {counter}: "
        "the chip's counter was reset or its state moved onto another root of trust"
    )

"""Several server processes over one database (`computewatch serve --workers N`).

The parent process validates the settings, migrates the database, creates the checkpoint key
and runs the verify-job worker (one per service: jobs are claimed by one process only); uvicorn
then starts N worker processes that share the listening socket, each building its app from the
settings the parent hands over in `$COMPUTEWATCH_SERVE_CONFIG` (`app_from_env`). Every process
keeps its own group commit; the database is the log copy they share: a chip's entries may land
in any process, each process catches its per-chip checker up from the database before it
refuses an entry as out of order and before it serves a tree head, and the (serial, counter)
primary key decides between two processes offered the same counter (see `ChipLogs`).
A worker process whose parent dies is killed with it (Linux), so a kill -9 of the server stops
every process that could acknowledge an entry.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_ENV", "app_from_env", "config_for_workers", "freeze_heap"]

CONFIG_ENV = "COMPUTEWATCH_SERVE_CONFIG"


def config_for_workers(db: str, data: Path, verifier_pubs: list[Path], verify_workers: int) -> str:
    """The settings every worker process builds its app from (JSON; keys travel as PEM)."""
    from computewatch.crypto.signing import VerifyKey

    return json.dumps({"db": db, "data": str(data), "verify_workers": verify_workers, "parent": os.getpid(),
                       "verifiers": {p.stem: VerifyKey.load(p).to_pem().decode() for p in verifier_pubs}})


def app_from_env() -> Any:
    """uvicorn's app factory in each worker process (no verify-job worker: the parent runs it)."""
    from computewatch.crypto.signing import VerifyKey
    from computewatch.service.app import create_app

    cfg = json.loads(os.environ[CONFIG_ENV])
    _die_with_parent(int(cfg["parent"]))
    verifiers = {name: VerifyKey.from_pem(pem.encode()) for name, pem in cfg["verifiers"].items()}
    app = create_app(cfg["db"], cfg["data"], verifiers=verifiers, worker=False, verify_workers=int(cfg["verify_workers"]))
    freeze_heap()
    return app


def freeze_heap() -> None:
    """Take the objects a server process holds once started out of the cyclic garbage
    collector's view (`gc.freeze`): the imported packages are most of the heap, and a full
    collection walked all of them (100-240 ms measured under load), stalling every request of
    the process. Frozen objects are still freed by reference counting; only cycles among them
    stay (start-up objects live as long as the process anyway)."""
    import gc

    gc.collect()
    gc.freeze()


def _die_with_parent(parent: int) -> None:
    """Linux: this process gets SIGKILL when its parent (the supervisor, pid `parent`) dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call
        os._exit(1)

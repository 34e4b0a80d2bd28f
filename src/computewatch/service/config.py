"""The service's settings: database, data folder, Verifier keys, limits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from computewatch.crypto.signing import VerifyKey

__all__ = ["ServiceConfig"]


@dataclass
class ServiceConfig:
    """`db_url`: the registry database; `data_dir`: the service's files (its signing key, raw
    inputs Provers hand over under `inputs/`, verdicts under `verdicts/`); `verifiers`: name ->
    public key of the Verifier role (sees everything); limits in bytes and seconds."""

    db_url: str
    data_dir: Path
    verifiers: Mapping[str, VerifyKey] = field(default_factory=dict)
    max_body: int = 4 << 20  # a signed write
    max_entry: int = 256 << 10  # one chip log entry line
    max_batch: int = 4 << 20  # a batch of chip log entries (POST /v1/chips/{serial}/batches)
    max_batch_entries: int = 4096
    max_upload: int = 1 << 30  # a raw-input archive
    max_unpacked: int = 4 << 30  # what one archive may unpack to
    max_members: int = 100_000
    max_skew_s: int = 300  # a statement's time may differ from the server's by this much
    session_ttl_s: int = 12 * 3600
    worker: bool = True  # run verify jobs in a background thread
    verify_in_process: bool = False  # tests: run the trusted cluster's jobs in this process
    verify_workers: int = 1
    job_poll_s: float = 0.5
    request_threads: int = 256  # requests handled in threads at once (most wait for a commit)
    clock: Callable[[], datetime] | None = None  # the register's clock (tests)

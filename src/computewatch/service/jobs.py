"""Verify jobs: a Prover (or the Verifier) hands raw inputs to the trusted cluster; a worker
thread runs `computewatch.verifier.verify` on them and records the verdict (JSON, the HTML
report and its figures under `<data>/verdicts/job-<id>/`), with progress in `service_jobs`.

A job names run directories and chip state directories by paths relative to the service's data
folder (never outside it), or a chip by `{"serial": S}`: the service's own copy of that
report-mode chip's log. A job left `running` by a crash is queued again at the next start.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select, update

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.signing import VerifyKey
from computewatch.registry import Registry
from computewatch.registry import db as reg_db
from computewatch.registry import schema as rs
from computewatch.service import schema as ss
from computewatch.service.config import ServiceConfig
from computewatch.service.errors import ServiceError
from computewatch.service.logs import ChipLogs
from computewatch.service.models import ChipCopy, VerifyJob
from computewatch.service.statements import format_time

__all__ = ["JobStore", "Worker", "check_job_body", "scrub_paths"]

log = logging.getLogger("computewatch.service.worker")

_MODES = ("exact", "tolerance")


def _inside(data_dir: Path, rel: Any, what: str, under: str | None = None) -> Path:
    """`rel` resolved under the data folder (and under `under`, a subfolder, when given: an
    owner may name only what it uploaded, `inputs/<owner>/...`); 403 outside, 422 if missing."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel or len(rel) > 1000:
        raise ServiceError(422, f"{what}: a path relative to the service's data folder, got {rel!r:.80}")
    root = data_dir.resolve()
    path = (root / rel).resolve()
    if path != root and root not in path.parents:
        raise ServiceError(403, f"{what} {rel!r} leads outside the service's data folder")
    if under is not None:
        mine = (root / under).resolve()
        if path != mine and mine not in path.parents:
            raise ServiceError(403, f"{what} {rel!r} is not among the submitter's own inputs ({under}/...)")
    if not path.is_dir():
        raise ServiceError(422, f"{what} {rel!r}: no such folder under the service's data folder")
    return path


def check_job_body(body: VerifyJob, data_dir: Path, owner: str | None, held: set[str] | None) -> dict[str, Any]:
    """Validate a job request. `owner`: the submitting owner, whose paths must lie under its
    own `inputs/<owner>/` (None: the Verifier, anywhere under the data folder); `held`: the
    serials the submitter holds (None: any)."""
    under = None if owner is None else f"inputs/{owner}"
    for r in body.runs:
        if not (_inside(data_dir, r, "run", under) / "manifest.dsse.json").is_file():
            raise ServiceError(422, f"run {r!r} is not a transcript (no manifest.dsse.json)")
    chips: list[Any] = []
    for c in body.chips:
        if isinstance(c, ChipCopy):
            if held is not None and c.serial not in held:
                raise ServiceError(403, f"chip {c.serial!r} is not held by the submitter")
            chips.append({"serial": c.serial})
        else:
            _inside(data_dir, c, "chip", under)
            chips.append(c)
    return {"runs": list(body.runs), "chips": chips, "mode": body.mode, "segments": body.segments}


def scrub_paths(text: str, *roots: Path) -> str:
    """`text` with the server's absolute folders replaced by names relative to them: answers
    never show where the service keeps its files."""
    for root in sorted({str(r) for r in roots}, key=len, reverse=True):
        text = text.replace(root + "/", "").replace(root, ".")
    return text


class JobStore:
    def __init__(self, engine: Engine, data_dir: Path) -> None:
        self._engine = engine
        self._data = data_dir

    def folder(self, job_id: int) -> Path:
        return self._data / "verdicts" / f"job-{int(job_id)}"

    def create(self, conn: Any, owner: str, body: dict[str, Any]) -> int:
        res = conn.execute(
            insert(ss.jobs).values(
                owner=owner, status="queued", request=canonical_json(body).decode(), stage="queued", done=0, total=0,
                fraction=0.0, created_at=format_time(),
            )
        )
        return int(res.inserted_primary_key[0])

    @staticmethod
    def _doc(row: Any) -> dict[str, Any]:
        return {
            "id": int(row.id), "owner": row.owner, "status": row.status,
            "request": {k: v for k, v in json.loads(row.request).items() if k != "challenge_secret"},  # the secret is never shown
            "progress": {"stage": row.stage, "done": int(row.done), "total": int(row.total), "fraction": float(row.fraction)},
            "verdict": row.verdict, "error": row.error, "created_at": row.created_at, "started_at": row.started_at,
            "finished_at": row.finished_at,
        }

    def get(self, job_id: int) -> dict[str, Any]:
        with reg_db.read(self._engine) as conn:
            row = conn.execute(select(ss.jobs).where(ss.jobs.c.id == job_id)).first()
        if row is None:
            raise ServiceError(404, f"no job {job_id}")
        return self._doc(row)

    def secret(self, job_id: int) -> str | None:
        """The step-challenge secret a job was handed (the worker's use only)."""
        with reg_db.read(self._engine) as conn:
            row = conn.execute(select(ss.jobs.c.request).where(ss.jobs.c.id == job_id)).first()
        return json.loads(row.request).get("challenge_secret") if row is not None else None

    def list(self, owner: str | None = None) -> list[dict[str, Any]]:
        q = select(ss.jobs).order_by(ss.jobs.c.id.desc())
        if owner is not None:
            q = q.where(ss.jobs.c.owner == owner)
        with reg_db.read(self._engine) as conn:
            return [self._doc(r) for r in conn.execute(q)]

    def _set(self, job_id: int, **values: Any) -> None:
        with reg_db.write(self._engine) as conn:
            conn.execute(update(ss.jobs).where(ss.jobs.c.id == job_id).values(**values))

    def claim_next(self) -> dict[str, Any] | None:
        with reg_db.write(self._engine) as conn:
            row = conn.execute(select(ss.jobs).where(ss.jobs.c.status == "queued").order_by(ss.jobs.c.id).limit(1)).first()
            if row is None:
                return None
            conn.execute(update(ss.jobs).where(ss.jobs.c.id == row.id).values(status="running", started_at=format_time(), stage="starting"))
        return self._doc(row)

    def requeue_interrupted(self) -> int:
        with reg_db.write(self._engine) as conn:
            return int(conn.execute(update(ss.jobs).where(ss.jobs.c.status == "running").values(status="queued", stage="queued (restarted)")).rowcount)

    def progress(self, job_id: int, stage: str, done: int, total: int) -> None:
        self._set(job_id, stage=stage[:64], done=int(done), total=int(total), fraction=(done / total) if total else 0.0)

    def finish(self, job_id: int, verdict: str | None, error: str | None) -> None:
        self._set(job_id, status="failed" if error else "done", verdict=verdict, error=error, finished_at=format_time(),
                  fraction=1.0 if not error else 0.0, stage="finished" if not error else "failed")

    def verdict(self, job_id: int) -> dict[str, Any]:
        path = self.folder(job_id) / "verdict.json"
        if not path.is_file():
            raise ServiceError(404, f"job {job_id} has no verdict (yet)")
        return json.loads(path.read_bytes())

    def record(self, job_id: int, doc: dict[str, Any]) -> None:
        """Write the verdict, its figures and its HTML report (the worker; tests use it to seed)."""
        from computewatch.crypto.atomic import atomic_write
        from computewatch.verifier.plots import figures as make_figures
        from computewatch.verifier.report import write_report

        folder = self.folder(job_id)
        (folder / "figures").mkdir(parents=True, exist_ok=True)
        figs = make_figures(doc)
        for name, png in figs.items():
            atomic_write(folder / "figures" / f"{name}.png", png if isinstance(png, bytes) else png.encode())
        write_report(doc, folder / "report.html", figures=figs)
        atomic_write(folder / "verdict.json", json.dumps(doc, sort_keys=True, indent=1).encode())

    def figure_names(self, job_id: int) -> builtins.list[str]:  # `list` here is the method above
        folder = self.folder(job_id) / "figures"
        return sorted(p.stem for p in folder.glob("*.png")) if folder.is_dir() else []


class Worker:
    """One background thread running queued jobs, one at a time."""

    def __init__(self, store: JobStore, reg: Registry, logs: ChipLogs, config: ServiceConfig) -> None:
        self._store = store
        self._reg = reg
        self._logs = logs
        self._config = config
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._store.requeue_interrupted()
        self._thread = threading.Thread(target=self._loop, name="computewatch-verify-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._store.claim_next()
            except Exception:
                log.warning("verify worker cannot read the job queue; retrying", exc_info=True)
                job = None
            if job is None:
                self._stop.wait(self._config.job_poll_s)
                continue
            self.run(job)

    def run(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        scratch = Path(tempfile.mkdtemp(prefix=f"computewatch-job-{job_id}-"))
        roots = (self._config.data_dir.resolve(), self._config.data_dir, scratch)
        log.info("job %d of %s started: %d run(s), %d chip(s)", job_id, job["owner"], len(job["request"]["runs"]), len(job["request"]["chips"]))
        try:
            doc = self._verify(job, scratch)
            # The verdict names inputs relative to the data folder, never the server's paths.
            doc = json.loads(scrub_paths(json.dumps(doc), *roots))
            self._store.record(job_id, doc)
            self._store.finish(job_id, doc.get("verdict"), None)
            log.info("job %d finished: %s", job_id, doc.get("verdict"))
        except Exception as exc:
            log.exception("job %d failed", job_id)
            reason = exc.reason if isinstance(exc, ServiceError) else " ".join(str(exc).split()) or type(exc).__name__
            self._store.finish(job_id, None, scrub_paths(reason, *roots)[:2000])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _chip_dirs(self, chips: list[Any], scratch: Path) -> list[Path]:
        out = []
        for c in chips:
            if not isinstance(c, dict):
                out.append(self._config.data_dir / c)
                continue
            serial = c["serial"]
            folder = scratch / "chips" / serial
            (folder / "log").mkdir(parents=True)
            with reg_db.read(self._reg.engine) as conn:
                row = conn.execute(select(rs.items.c.certificate).where(rs.items.c.label == serial)).first()
            if row is None or row.certificate is None:
                raise ServiceError(404, f"chip {serial!r} is not registered")
            # The layout `computewatch.verifier.read_chip` reads: certificate.json and log/chip.log.
            (folder / "certificate.json").write_bytes(bytes(row.certificate))
            lines = self._logs.lines(serial, 0, 10**9)
            (folder / "log" / "chip.log").write_bytes(b"".join(line + b"\n" for line in lines))
            out.append(folder)
        return out

    def _verify(self, job: dict[str, Any], scratch: Path) -> dict[str, Any]:
        from computewatch.verifier import VerifyRequest, verify

        body = job["request"]
        trust = self._reg.verifier_trust()
        if job["owner"] in self._config.verifiers:
            provers: list[VerifyKey] = list(trust["prover_keys"])
        else:
            provers = [self._reg.owner_key(job["owner"])]
        last = [0.0]

        def progress(stage: str, done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.3 or done >= total:
                last[0] = now
                self._store.progress(job["id"], stage, done, total)

        secret = self._store.secret(job["id"]) if body.get("responses") else None
        request = VerifyRequest(
            runs=[self._config.data_dir / r for r in body["runs"]],
            chips=self._chip_dirs(body["chips"], scratch),
            chipmaker_roots=list(trust["chipmaker_roots"]),
            prover_keys=provers,
            # Step challenges are judged with the secret that tagged them, and their deadline by
            # the service's clock when the last response arrived.
            seed=bytes.fromhex(secret) if secret else os.urandom(32),
            responses=[self._config.data_dir / p for p in body.get("responses", [])],
            now_ns=int(body["responses_received_ns"]) if body.get("responses_received_ns") else None,
            known_heads=trust["known_heads"],
            mode=body["mode"],
            segments=None if body.get("segments", "auto") == "auto" else body["segments"],
            workers=self._config.verify_workers,
            in_process=self._config.verify_in_process,
        )
        return verify(request, progress)

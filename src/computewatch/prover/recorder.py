"""The Recorder: what a lab adds to an ordinary PyTorch training loop to keep a transcript.

    commitment = DatasetCommitment.from_samples(samples)
    nonce = new_nonce()
    seed = derive_run_seed(commitment.root, nonce)
    model = build_model(init_generator(seed))            # W0 from the committed seed
    ...
    program = ProgramSource.from_folder("my_training_code/", "train:make_program")
    with Recorder(run_dir, model=model, optimizer=opt, scheduler=sched, hyperparameters=hp,
                  dataset=commitment, nonce=nonce, program=program,
                  chip=chip, config=RunConfig(checkpoint=CheckpointConfig(every=500),
                                              chip=ChipConfig(seconds_per_step=None))) as rec:
        for step, ids in batches(seed, len(commitment), batch_size, steps, rec.start_step):
            loss = train_step(model, opt, sched, collate([data[i] for i in ids]))
            rec.step(step, ids, loss)                   # after optimizer.step()

`program` is the training program a Verifier replays the run with (docs/formats.md, "Training
program"): its files are copied into the run directory's ``program/`` folder and bound by the
precommitment's ``code_digest``, together with this process's replay environment (torch
version, thread count, CPU capability, deterministic algorithms). On entry the Recorder
writes the program files and the signed manifest, has the chip log the precommitment digest and
its memory map (before the first optimizer step), and checkpoints W0. Each `step` call hands the
step's busy time to the chip (which may snapshot its shard at this boundary) and queues the step
record; every k steps it copies the state to CPU memory and a background thread encodes, hashes
and stores the checkpoint. `RunConfig` (computewatch.prover.config) says how: checkpoint
interval, the chip's busy time per step, rank and world size (unset: those of
torch.distributed), run id. With ``resume=True`` an existing run directory is continued from its
latest complete checkpoint (see `resume_point`), and the snapshots its chip logged and copied out
that the killed process never recorded are recorded then.

Step commitments (issue 19; ``checkpoint.step_commitments``, on by default): after every step each rank
commits the digest of its weights (the chip's shard digest), of its optimizer state and the
update norm (`computewatch.prover.commitments`, computed on a background thread that the next
optimizer step waits for); rank 0 gathers them once per checkpoint into the step records
(format v2) and re-signs the manifest over the step records (predicate v3). Under
torch.distributed every rank must reach `flush()` together (it gathers commitments).

Step numbering: step t consumes batch t and produces W_{t+1}; the chip is told the boundary
``t + 1`` (the number of optimizer steps completed), which is also the step a checkpoint or a
snapshot of W_{t+1} is filed under.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any, Protocol

import torch

from computewatch import _faults
from computewatch.crypto.errors import ComputewatchError, FormatError
from computewatch.crypto.digest import blake3_bytes
from computewatch.crypto.signing import SigningKey
from computewatch.crypto.merkle import root_from_leaves
from computewatch.formats.checkpoint import (
    CheckpointIndex,
    capture,
    encode_checkpoint,
    restore,
)
from computewatch.formats.commitments import StateCommitment
from computewatch.formats.dataset import DatasetCommitment
from computewatch.formats.layout import ShardLayout
from computewatch.formats.manifest import (
    MANIFEST_FILE,
    Manifest,
    prover_key,
    read_manifest,
    write_manifest,
    write_public_key,
)
from computewatch.formats.precommitment import Precommitment
from computewatch.formats.program import PROGRAM_DIR, ProgramSource, code_digest_of, current_environment
from computewatch.formats.seed import derive_run_seed
from computewatch.formats.snapshot_records import encode_snapshot_record, snapshot_file
from computewatch.formats.steps import StepLog, StepRecord, batch_root
from computewatch.formats.storage import ObjectStore, RunStorage, StoreError
from computewatch.prover.commitments import StepCommitter
from computewatch.prover.config import LEGACY_FIELDS, RunConfig, resolve_config
from computewatch.prover.writer import BackgroundWriter

__all__ = ["ChipLike", "Recorder", "local_tensors", "resume_point"]


class ChipLike(Protocol):
    """What the Recorder needs from `computewatch.chip.Chip`."""

    def attach(self, tensors: Sequence[torch.Tensor], storage_dir: Any) -> Any: ...
    def log_precommitment(self, digest: bytes, run_id: str) -> Any: ...
    def log_memory_map(self, memory_map: dict[str, Any], run_id: str) -> Any: ...
    def step_boundary(self, step: int, busy_seconds: float) -> list[Any]: ...


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    # DDP keeps the real module in .module; FSDP2 modifies the module in place.
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def local_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """The parameter memory this process holds, in `named_parameters` order (FSDP: local shards)."""
    return [p.to_local() if hasattr(p, "to_local") else p for _, p in _unwrap(model).named_parameters()]


def _chip_id(chip: Any) -> str | None:
    for attr in ("serial", "chip_id", "id"):
        value = getattr(chip, attr, None)
        if isinstance(value, str):
            return value
    return None


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def resume_point(storage: RunStorage, world_size: int) -> int:
    """The latest step whose checkpoint every rank committed and whose step records are durable."""
    common: set[int] | None = None
    for rank in range(world_size):
        steps = {e["step"] for e in CheckpointIndex(storage, rank).entries()}
        common = steps if common is None else common & steps
    recorded = StepLog(storage).count()
    usable = [s for s in (common or set()) if s <= recorded]
    if not usable:
        raise StoreError(f"{storage.url}: no complete checkpoint to resume from")
    return max(usable)


# The flat keyword options the Recorder took before `RunConfig` (deprecated).
_LEGACY_OPTIONS = ("checkpoint_every", "rank", "world_size", "run_id", "chip_ids", "resume", "chip_seconds_per_step", "copyout_dir", "step_commitments")
assert set(_LEGACY_OPTIONS) <= set(LEGACY_FIELDS)


class Recorder:
    """Context manager that keeps the transcript of one process (one chip) of a training run."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any | None,
        hyperparameters: dict[str, Any],
        dataset: DatasetCommitment,
        nonce: bytes,
        program: ProgramSource,
        chip: ChipLike | None = None,
        layout: ShardLayout | None = None,
        key: SigningKey | None = None,
        config: RunConfig | None = None,
        **options: Any,
    ) -> None:
        """`config` says how the run is recorded (checkpoint interval, chip busy time, rank and
        world size, run id, resume); without one the defaults of `RunConfig`, except that a
        chip's busy time is the measured wall time of each step. The flat keyword `options`
        of before (``checkpoint_every=``, ``rank=``, ...) still work, deprecated."""
        config = resolve_config("Recorder", config, options, _LEGACY_OPTIONS, {"chip_seconds_per_step": None})
        if config.threads is not None and config.threads != torch.get_num_threads():
            # The precommitment records this process's thread count: the one the run replays with.
            raise FormatError(f"config.threads is {config.threads}, but this process runs {torch.get_num_threads()} intra-op threads; "
                              f"call computewatch.formats.program.deterministic_cpu({config.threads}) first")
        if config.nonce is not None and config.nonce != bytes(nonce):
            raise FormatError("config.nonce differs from the nonce the Recorder was given (the one the seed came from)")
        if config.distributed.rank is None and config.distributed.world_size is None and _dist_ready():
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank = 0 if config.distributed.rank is None else config.distributed.rank
            world_size = 1 if config.distributed.world_size is None else config.distributed.world_size
        checkpoint_every = config.checkpoint.every
        chip_ids, run_id, resume = config.chip.ids, config.run_id, config.resume
        self.config = config
        if not 0 <= rank < world_size:
            raise FormatError(f"rank {rank} outside world size {world_size}")
        if chip_ids is not None and len(chip_ids) != world_size:
            raise FormatError(f"{len(chip_ids)} chip ids for a world size of {world_size}")
        self.storage = RunStorage(run_dir)
        self.model = model
        self.module = _unwrap(model)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.dataset = dataset
        self.rank = rank
        self.world_size = world_size
        self.chip = chip
        self.checkpoint_every = checkpoint_every
        self.chip_seconds_per_step = config.chip.seconds_per_step
        if layout is None and any(hasattr(p, "to_local") for p in self.module.parameters()):
            raise FormatError("the model's parameters are sharded (DTensor): pass the layout that shard_model returned")
        self.layout = layout or ShardLayout.replicated(list(self.module.named_parameters()), world_size, "single" if world_size == 1 else "ddp")
        self._resume = resume
        self._key = key
        self._chip_ids = list(chip_ids) if chip_ids is not None else None
        self._copyout_dir = config.chip.copyout_dir
        self._commit_steps = config.checkpoint.step_commitments
        self._committer: StepCommitter | None = None
        self._manifest: Manifest | None = None
        self._signing_key: SigningKey | None = None
        self._leaves: list[bytes] = []  # canonical JSON of every durable step record (rank 0)
        if not isinstance(program, ProgramSource):
            raise FormatError("Recorder needs program=ProgramSource(...): the training program a Verifier replays the run with")
        self.program = program
        self._program_files = program.read()
        if resume and run_id is None and self.storage.exists(MANIFEST_FILE):
            run_id = read_manifest(self.storage).run_id
        if run_id is None and world_size > 1 and _dist_ready():
            # Every rank must log the same run id: rank 0's.
            box = [uuid.uuid4().hex if rank == 0 else None]
            torch.distributed.broadcast_object_list(box, src=0)
            run_id = box[0]
        seed = derive_run_seed(dataset.root, nonce)
        self.precommitment = Precommitment(
            run_id=run_id or uuid.uuid4().hex,
            hyperparameters=hyperparameters,
            code_digest=code_digest_of(self._program_files),
            dataset=dataset.summary_json(),
            nonce=bytes(nonce),
            seed=seed,
            checkpoint_every=checkpoint_every,
            layout=self.layout,
            program_entry=program.entry,
            environment=current_environment(),
            program_template=program.template,  # a trusted template's files: precommitment v3 names it
        )
        self.precommitment.encode()  # fail now, not mid-run, on hyperparameters JSON cannot carry
        self.start_step = 0
        self.snapshots: list[Any] = []
        self._next = 0
        self._pending: list[tuple[int, tuple[int, ...], float, Any, torch.Tensor]] = []
        self._writer: BackgroundWriter | None = None
        self._store: ObjectStore | None = None
        self._last_t = 0.0
        self._entered = False
        self._resumed = False
        self.critical_s = 0.0  # time spent inside step(): the Recorder's cost on the critical path

    @property
    def run_id(self) -> str:
        return self.precommitment.run_id

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            raise ComputewatchError("the Recorder is not open; use it as a context manager")
        return self._store

    # ---- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> Recorder:
        # Looked at before the collective below: after it, rank 0 may already have written the manifest.
        existing = self.storage.exists(MANIFEST_FILE)
        if existing and not self._resume:
            raise StoreError(f"{self.storage.url} already holds a run; pass resume=True to continue it or use a new directory")
        if self.rank == 0:
            # Temp files of a killed writer; only now, before any rank of this run writes again.
            self.storage.clean_temp_files(ObjectStore.PREFIX)
        chip_ids = self._gather_chip_ids()
        self._store = ObjectStore(self.storage)
        self._writer = writer = BackgroundWriter(f"computewatch-writer-{self.rank}")
        try:
            if existing:
                self._resumed = True
                self._check_same_run()
                self.start_step = self._restore_latest()
            elif self.rank == 0:
                for rel, data in self._program_files.items():
                    self.storage.write_atomic(f"{PROGRAM_DIR}/{rel}", data)
                sample_hashes = self.store.put(b"".join(self.dataset.sample_hashes))
                key = self._key or prover_key(self.storage)
                if self._key is not None:
                    write_public_key(self.storage, key)  # keys/prover.pub verifies the manifest
                self._manifest, self._signing_key = Manifest(self.precommitment, tuple(chip_ids), sample_hashes), key
                write_manifest(self.storage, self._manifest, key)
            if _dist_ready():
                torch.distributed.barrier()  # no rank trains before the manifest and resume point are settled
            self._next = self.start_step
            if self.chip is not None:
                self._bind_chip()
            if self.start_step == 0:
                self._checkpoint(0)
            if self._commit_steps:
                self._committer = StepCommitter(self.rank, lambda: local_tensors(self.model), self.optimizer)
        except BaseException:
            self._writer = None
            writer.close_quietly()  # a failed start (e.g. a corrupted checkpoint) leaves no thread behind
            raise
        self._lr, self._rng = self._current_lr(), torch.get_rng_state()
        self._entered = True
        self._last_t = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        writer = self._writer
        if writer is None:
            return
        try:
            if exc_type is None and self._next % self.checkpoint_every != 0:
                self._checkpoint(self._next)  # the final weights are always checkpointed
            elif exc_type is None:
                self._flush_steps()
        finally:
            self._writer = None
            if self._committer is not None:
                self._committer.close()
                self._committer = None
            if exc_type is None:
                writer.close()
            else:
                writer.close_quietly()

    def _gather_chip_ids(self) -> list[str | None]:
        """Chip id per rank. Under torch.distributed this collective always runs, given ids or
        not: it is what keeps rank 0 from writing the manifest before every rank has looked."""
        mine = _chip_id(self.chip) if self.chip is not None else None
        out: list[Any] = [mine] if self.world_size == 1 else [None] * self.world_size
        if _dist_ready() and self.world_size > 1:
            torch.distributed.all_gather_object(out, mine)
        return self._chip_ids if self._chip_ids is not None else out

    def _check_same_run(self) -> None:
        manifest = read_manifest(self.storage)
        if manifest.precommitment.canonical != self.precommitment.canonical:
            # A run recorded in the legacy encoding resumes in it: its logged digest is over that encoding.
            self.precommitment = replace(self.precommitment, canonical=manifest.precommitment.canonical)
        if manifest.precommitment.digest() != self.precommitment.digest():
            raise StoreError(
                f"{self.storage.url} holds run {manifest.run_id} with a different precommitment "
                f"({manifest.precommitment.digest().hex()[:16]}... != {self.precommitment.digest().hex()[:16]}...); "
                "hyperparameters, data, seed, layout or code changed"
            )

    def _restore_latest(self) -> int:
        index = CheckpointIndex(self.storage, self.rank)
        indexed = [CheckpointIndex(self.storage, r).entries() for r in range(self.world_size)]
        if not all(indexed) and all(e["step"] == 0 for entries in indexed for e in entries) and StepLog(self.storage).count() == 0:
            # Killed before every rank had committed W0: nothing to restore or to lose; start
            # again from the caller's fresh model (W0 from the committed seed).
            step = 0
        else:
            step = resume_point(self.storage, self.world_size)
            restore(index.load(self.store, step), self.module, self.optimizer, self.scheduler)
        if _dist_ready():
            torch.distributed.barrier()  # every rank has read the resume point before anyone truncates
        index.truncate(step)
        if self.rank == 0:
            log = StepLog(self.storage)
            log.truncate(step)
            if self._commit_steps:
                self._leaves = [r.leaf() for r in log.read()]
                self._manifest = read_manifest(self.storage)
                try:
                    self._signing_key = self._key or prover_key(self.storage)
                except StoreError:
                    if self._manifest.steps is not None:
                        raise  # a signed step root must follow the truncation: pass key=
                    self._signing_key = None  # a v2 manifest signs no steps: nothing to keep current
                self._sign_steps()  # the signed step root follows the truncation
        self._repair_snapshot_file()
        return step

    def _repair_snapshot_file(self) -> None:
        # A torn last line (power lost mid-append) would make every later record unreadable;
        # its object and the chip's copy-out file are still stored.
        rel = snapshot_file(self.rank)
        data = self.storage.read(rel) if self.storage.exists(rel) else b""
        if data and not data.endswith(b"\n"):
            self.storage.write_atomic(rel, data[: data.rfind(b"\n") + 1])

    def _bind_chip(self) -> None:
        assert self.chip is not None
        if self._copyout_dir is not None:
            copyout = Path(self._copyout_dir)
        elif self.storage.local_path is not None:
            copyout = self.storage.local_path / "chip-copyout" / f"rank-{self.rank:05d}"
        else:
            copyout = Path(tempfile.mkdtemp(prefix="computewatch-copyout-"))
        copyout.mkdir(parents=True, exist_ok=True)
        self.chip.attach(local_tensors(self.model), copyout)
        # Precommitment and memory map go into the chip log before the first optimizer step.
        self.chip.log_precommitment(self.precommitment.digest(), self.run_id)
        self.chip.log_memory_map(self.layout.memory_map(self.rank), self.run_id)
        if self._resumed:
            self._recover_snapshots(copyout)

    def _recover_snapshots(self, copyout: Path) -> None:
        """Record the snapshots of this run that the chip logged and copied out but a killed
        process never recorded (their ingestion was still queued); ``stall_s`` is then null."""
        rel = snapshot_file(self.rank)
        lines = self.storage.read(rel).splitlines() if self.storage.exists(rel) else []
        try:
            recorded = {json.loads(line)["counter"] for line in lines}
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{self.storage.path(rel)} is malformed ({exc!r}); it was not changed") from None
        run = None
        for entry in getattr(self.chip, "log", ()):
            if entry.kind == "precommitment":
                run = entry.body.get("run_id")
            elif entry.kind == "snapshot" and run == self.run_id and entry.counter not in recorded:
                path = copyout / str(entry.body.get("copy_out"))
                if path.is_file():
                    body = entry.body
                    self._ingest_snapshot(
                        SimpleNamespace(path=path, regions=body["regions"], counter=entry.counter, step=body["step"],
                                        clock_ns=entry.clock_ns, shard_digest=body["shard_digest"], stall_s=None)
                    )

    # ---- per step -----------------------------------------------------------------------------
    def step(self, step: int, sample_ids: Sequence[int], loss: float | torch.Tensor | None = None) -> list[Any]:
        """Record optimizer step `step` (call right after it); returns the chip's snapshot records."""
        if not self._entered or self._writer is None:
            raise ComputewatchError("Recorder.step called outside the `with Recorder(...)` block")
        if step != self._next:
            raise FormatError(f"Recorder.step: expected step {self._next}, got {step} (steps must be recorded in order, once)")
        now = time.perf_counter()
        busy = self.chip_seconds_per_step if self.chip_seconds_per_step is not None else now - self._last_t
        if self.rank == 0:
            ids = tuple(int(i) for i in sample_ids)  # plain ints, also from a tensor of ids
            if not ids or min(ids) < 0 or max(ids) >= len(self.dataset):
                raise FormatError(f"Recorder.step {step}: sample ids must be 0..{len(self.dataset) - 1} (at least one)")
            self._pending.append((step, ids, self._lr, loss, self._rng))
        self._lr, self._rng = self._current_lr(), torch.get_rng_state()
        self._next = step + 1
        if self._committer is not None:
            self._committer.start(step)
        snaps = self.chip.step_boundary(self._next, busy) if self.chip is not None else []
        for snap in snaps:
            self.snapshots.append(snap)
            self._writer.submit(functools.partial(self._ingest_snapshot, snap))
        if self._next % self.checkpoint_every == 0:
            self._checkpoint(self._next)
        self._last_t = time.perf_counter()  # recorder and snapshot stalls are not the next step's busy time
        self.critical_s += self._last_t - now
        return snaps

    def _current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _flush_steps(self) -> None:
        # Every rank comes here at the same steps (checkpoints, clean exit): the commitments of
        # the other ranks travel to rank 0 in one collective per checkpoint, not per step.
        states = self._gather_commitments()
        pending, self._pending = self._pending, []
        if pending:
            assert self._writer is not None
            self._writer.submit(lambda: self._write_steps(pending, states))

    def _gather_commitments(self) -> dict[int, tuple[StateCommitment, ...]] | None:
        if self._committer is None:
            return None
        mine = [(step, c.to_json()) for step, c in self._committer.take()]
        everyone: list[Any] = [mine]
        if self.world_size > 1 and _dist_ready():
            everyone = [None] * self.world_size
            torch.distributed.all_gather_object(everyone, mine)
        if self.rank != 0:
            return None
        by_step: dict[int, list[StateCommitment]] = {}
        for rank_items in everyone:
            for step, doc in rank_items:
                by_step.setdefault(step, []).append(StateCommitment.from_json(doc))
        full = len(everyone)
        return {step: tuple(sorted(cs, key=lambda c: c.rank)) for step, cs in by_step.items() if len(cs) == full}

    def _sign_steps(self) -> None:
        """Re-sign the manifest over the durable step records (predicate v3, rank 0)."""
        if self._manifest is None or self._signing_key is None:
            return
        root = root_from_leaves(self._leaves).hex() if self._leaves else None
        self._manifest = replace(self._manifest, steps={"count": len(self._leaves), "records_root": root})
        write_manifest(self.storage, self._manifest, self._signing_key)

    def _write_steps(self, pending: list[tuple[int, tuple[int, ...], float, Any, torch.Tensor]], states: dict[int, tuple[StateCommitment, ...]] | None = None) -> None:
        hashes = self.dataset.sample_hashes
        # float() here, not in step(): a loss tensor on an accelerator would force a sync per step.
        records = [
            StepRecord(
                step,
                ids,
                batch_root([hashes[i] for i in ids]).hex(),
                lr,
                None if loss is None else float(loss),
                blake3_bytes(rng.numpy().tobytes()).hex(),
                (states or {}).get(step),
                self.precommitment.canonical,  # one encoding per run (a resumed legacy run keeps its own)
            )
            for step, ids, lr, loss, rng in pending
        ]
        StepLog(self.storage).write_segment(records)
        if self._commit_steps:
            self._leaves.extend(r.leaf() for r in records)
            self._sign_steps()

    def _checkpoint(self, step: int) -> None:
        assert self._writer is not None
        self._flush_steps()  # step records up to `step` are durable before its checkpoint is indexed
        ckpt = capture(step, self.module, self.optimizer, self.scheduler, rank=self.rank, world_size=self.world_size)
        self._writer.submit(lambda: self._write_checkpoint(ckpt))

    def _write_checkpoint(self, ckpt: Any) -> None:
        data = encode_checkpoint(ckpt)
        # Crash tests kill the process here, half the checkpoint written (computewatch._faults); the
        # half-write happens only while a test has handlers installed.
        hook = functools.partial(_faults.fault_point, "checkpoint.half-written", step=ckpt.step) if _faults.current() else None
        digest = self.store.put(data, _partial_hook=hook)
        CheckpointIndex(self.storage, self.rank).add(ckpt.step, digest, len(data))

    def _ingest_snapshot(self, snap: Any) -> None:
        data = Path(snap.path).read_bytes()
        digest = self.store.put(data)
        regions = [r.to_json() if hasattr(r, "to_json") else r for r in snap.regions]
        line = {
            "rank": self.rank,
            "chip_id": _chip_id(self.chip),
            "counter": snap.counter,
            "step": snap.step,
            "clock_ns": str(snap.clock_ns),  # decimal string, as in the chip log: chip time passes 2**53 ns in 104 days
            "shard_digest": snap.shard_digest,
            "regions": regions,
            "object": digest,
            "stall_s": snap.stall_s,
        }
        if self.precommitment.canonical == 2:  # one encoding per run, as the step records
            line["v"] = 2
        self.storage.append(snapshot_file(self.rank), encode_snapshot_record(line))

    @property
    def writer_busy_s(self) -> float:
        """Wall time the background writer has spent on jobs so far."""
        return self._writer.busy_s if self._writer is not None else 0.0

    def flush(self) -> None:
        """Block until every queued record, snapshot and checkpoint is durable."""
        if self._writer is not None:
            self._flush_steps()
            self._writer.flush()

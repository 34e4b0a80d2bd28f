"""The trusted cluster, the judge's side (paper §5.2, Appendix D steps 4-5): executors and their jobs.

An `ExecutorSession` is one warm executor (`computewatch.verifier.executor`) for one run,
started in the sandbox (`computewatch.verifier.sandbox`) with the run's staged inputs. The judge
sends typed jobs and reads typed replies (`protocol.py`) over a pipe, each job under a
wall-clock limit; it reads the tensors the executor wrote into its scratch folder itself, as
regular files only (never through a link the program planted), size-limited, parsed as
safetensors. Anything that goes wrong on the executor's side (it ends, overruns its time, hits a
resource limit, answers with something that is not a protocol message, writes malformed
tensors) is an `ExecutorFailure` with a fixed reason and the digest of whatever the process
wrote to stderr: the program's own words never reach a verdict.

`TrustedCluster` runs one examination per run, `workers` at a time on this machine, or as Ray
tasks (`ray_address`) that start their own sandbox on their node.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.digest import blake3_bytes
from computewatch.verifier import protocol
from computewatch.verifier.sandbox import Limits, SandboxError, confined_limits, executor_command, preexec, sandbox_problem

__all__ = ["WARM_HELPERS_FROM", "WARM_PER_RUN", "ClusterError", "ExecutorFailure", "ExecutorSession", "FailureReason", "TrustedCluster",
           "WarmPool", "read_regular", "segments_hint", "warm_executors"]

T = TypeVar("T")
R = TypeVar("R")


class ClusterError(ComputewatchError):
    """The Verifier's own machine cannot run the cluster (no sandbox and not told to go without)."""


class FailureReason(str, enum.Enum):  # noqa: UP042 (StrEnum would change how the members format)
    NOT_STARTED = "the training program could not be started under the contract"
    CRASHED = "the training program's process ended during the job"
    TIMED_OUT = "the job ran past its time limit"
    RESOURCE_LIMIT = "a resource limit (CPU time or file size) stopped the training program"
    MALFORMED_REPLY = "the executor answered with something other than the typed protocol message"
    MALFORMED_OUTPUT = "the executor's output is not the well-formed tensors the job asked for"


class ExecutorFailure(ComputewatchError):
    """The executor failed a job: always the Prover's evidence failing, never ours."""

    def __init__(self, reason: FailureReason, evidence: str, limit_s: float | None = None) -> None:
        self.reason, self.evidence, self.limit_s = reason, evidence, limit_s
        limit = f" of {limit_s:.0f} s" if reason is FailureReason.TIMED_OUT and limit_s else ""
        super().__init__(f"{reason.value}{limit} (evidence digest {evidence[:16]})")


_LIMIT_SIGNALS = {signal.SIGXCPU, signal.SIGXFSZ}


def read_regular(path: Path, max_bytes: int, *, dir_fd: int | None = None) -> bytes:
    """A regular file's bytes, refusing links, FIFOs, devices and files over `max_bytes`
    (OSError otherwise): the judge reading a folder the Prover or its program controls."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{Path(path).name} is not a regular file")
        if info.st_size > max_bytes:
            raise OSError(f"{Path(path).name} is larger than {max_bytes} bytes")
        chunks, left = [], info.st_size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_below(root: Path, rel: str, max_bytes: int) -> bytes:
    """`root/rel` opened one component at a time without following any link (the executor may
    still be running and could swap a folder for a link between a check and an open)."""
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts):
        raise OSError("not a plain relative path")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return read_regular(Path(parts[-1]), max_bytes, dir_fd=fd)
    finally:
        os.close(fd)


def _private_tmp(prefix: str) -> Path:
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


class _Process:
    """An executor process and its folders: the judge's private work folder (0700) holding the
    staged inputs (read-only inside), the scratch folder (the only writable place inside) and
    the process's stderr, which only ever becomes a digest."""

    def __init__(self, work: Path, scratch: Path) -> None:
        self.work, self.scratch = work, scratch
        self.inputs, self.err = work / "in", work / "stderr"
        self.popen: subprocess.Popen[bytes] | None = None
        self.reply_fd: int | None = None
        self.uid: int | None = None
        self.launched_at = 0.0  # time.monotonic() at launch
        self._lock = threading.Lock()  # a kill from another thread and a launch do not cross
        self._ended = False

    @classmethod
    def fresh(cls) -> _Process:
        work = Path(tempfile.mkdtemp(prefix="computewatch-judge-"))  # 0700: the judge's own
        (work / "in").mkdir(mode=0o755)
        os.chmod(work / "in", 0o755)
        return cls(work, _private_tmp("computewatch-scratch-"))

    def launch(self, sandbox: bool, limits: Limits | None) -> None:
        """Start the executor on these folders (limits None: a warm one, confined later)."""
        try:
            argv, env, uid = executor_command(self.inputs, self.scratch, sandbox=sandbox)
        except SandboxError as exc:
            raise ClusterError(f"no sandbox for the Prover's program: {exc}") from None
        if uid is not None:
            os.chown(self.scratch, uid, uid)
        os.chmod(self.scratch, 0o700)
        read, write = os.pipe()
        argv = [*argv, "--reply-fd", str(write)]
        with self._lock, open(self.err, "wb") as err:
            if self._ended:  # killed before it started: it never does
                os.close(read)
                os.close(write)
                raise ClusterError("the executor was ended before it started")
            try:
                self.popen = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, pass_fds=(write,),
                    env=env, cwd=self.scratch, preexec_fn=preexec(limits, uid), start_new_session=True,
                )
            except OSError as exc:
                os.close(read)
                raise ClusterError(f"cannot start the executor: {exc.strerror}") from None
            finally:
                os.close(write)
        self.reply_fd, self.uid, self.launched_at = read, uid, time.monotonic()

    def kill(self) -> None:
        """End the process and everything it started (its own session); one not started yet
        never starts."""
        with self._lock:
            self._ended = True
        if self.popen is not None and self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except OSError:
                self.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=30)

    def close(self) -> None:
        self.kill()
        if self.popen is not None and self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        if self.reply_fd is not None:
            os.close(self.reply_fd)
            self.reply_fd = None
        shutil.rmtree(self.scratch, ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)


WARM_PER_RUN = 4  # a run's further executors start on demand (verifier/_fanout.py)
# A run of fewer segments is replayed by its first executor alone unless the replay proves long
# (the break-even rule): a helper's first job pays first-time costs (the program's lazy imports,
# torch's first calls) that a short replay never earns back, and that its measured CPU time counts.
WARM_HELPERS_FROM = 4


def warm_executors(runs: int, workers: int, segments: Sequence[int | None] = ()) -> int:
    """Executors to start before the judge's own work for `runs` runs on `workers` local workers:
    every run examined at once gets the executors it may spread its segments over
    (`TrustedCluster.executors_per_run`), at most WARM_PER_RUN each; only one for a run whose
    `segments` (a hint per run: its checkpoints less one, None unknown) are below
    WARM_HELPERS_FROM."""
    if runs < 1 or workers < 1:
        return 0
    at_once = min(runs, workers)
    per_run = min(WARM_PER_RUN, max(1, workers // runs))
    hints = sorted((h if h is not None else WARM_HELPERS_FROM for h in segments), reverse=True) if segments else []
    if hints and per_run > 1:  # the runs examined at once: the longest ones, at the most
        return min(workers, sum(per_run if h >= WARM_HELPERS_FROM else 1 for h in hints[:at_once]))
    return min(workers, at_once * per_run)


def segments_hint(run_dir: str | os.PathLike[str]) -> int | None:
    """A run's checkpoints less one, read from its rank 0 checkpoint index without checking
    anything (None when that does not work): only how many executors to start early depends on
    it; the judge stages and checks the run itself."""
    try:
        with open(Path(run_dir) / "checkpoints" / "rank-00000.json", "rb") as fh:
            data = fh.read(1 << 22)
        count = len(json.loads(data)["checkpoints"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return max(0, count - 1)


class WarmPool:
    """Executors started ahead of their runs, so that their start-up (Python, torch and the
    modules a replay needs: seconds) overlaps the judge's own (its imports, staging, the chip-log
    audit, segment selection). Each is an empty sandbox with empty folders that has seen nothing
    of any run; a session takes one, confines it to its run's limits and serves that one run with
    it, so no process ever carries anything from one Prover's run to another's. Those left over
    are ended by `close`."""

    def __init__(self, size: int, *, sandbox: bool) -> None:
        self.sandbox = sandbox
        self._lock = threading.Lock()
        self._idle: list[_Process] = []
        try:
            for _ in range(max(0, size)):
                proc = _Process.fresh()
                self._idle.append(proc)
                proc.launch(sandbox, None)
        except ClusterError:
            self.close()
            raise

    def take(self, sandbox: bool) -> _Process | None:
        """A started executor of that kind (sandboxed or not), or None when none is left."""
        with self._lock:
            if sandbox != self.sandbox or not self._idle:
                return None
            return self._idle.pop(0)

    def session(self, *, sandbox: bool, limits: Limits, max_output: int) -> ExecutorSession | None:
        """A session on a started executor of that kind, or None when none is left (nothing is
        started here)."""
        proc = self.take(sandbox)
        return None if proc is None else ExecutorSession(sandbox=sandbox, limits=limits, max_output=max_output, process=proc)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for proc in idle:
            proc.close()

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ExecutorSession:
    """One warm executor for one run. Stage inputs with `put`, then `start`, `request`, `close`.

    With `warm`, the process comes from a `WarmPool` (started earlier, torch already imported,
    nothing of any run seen yet) when one is left, else it is started here; either way it serves
    this one run only and is ended with the session."""

    def __init__(self, *, sandbox: bool, limits: Limits, max_output: int, warm: WarmPool | None = None, process: _Process | None = None) -> None:
        self.sandbox, self.limits, self.max_output = sandbox, limits, max_output
        self._proc = process or (warm.take(sandbox) if warm is not None else None) or _Process.fresh()
        self.work, self.inputs, self.scratch, self._err = self._proc.work, self._proc.inputs, self._proc.scratch, self._proc.err
        self._buffer = b""
        self._jobs = 0
        self.startup_s = 0.0  # from the process's launch to its Ready (set by start)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self._proc.popen

    # ----------------------------------------------------------------------- staging
    def put(self, rel: str, data: bytes) -> str:
        """Stage `data` read-only for the executor at inputs/`rel`; returns `rel`."""
        target = self.inputs / rel
        for parent in reversed(target.relative_to(self.inputs).parents[:-1]):
            folder = self.inputs / parent
            if not folder.exists():
                folder.mkdir(mode=0o755)
                os.chmod(folder, 0o755)
        target.write_bytes(data)
        os.chmod(target, 0o644)
        return rel

    # ----------------------------------------------------------------------- lifecycle
    def start(self, hello: protocol.Hello, timeout: float) -> protocol.Ready:
        """Start the executor (or take over the warm one), confine it to this run's limits, say
        hello; its Ready."""
        if self.proc is None:
            self._proc.launch(self.sandbox, self.limits)
        start = time.monotonic()
        limits = confined_limits(self.limits, self._proc.uid)
        self._send(protocol.Confine("confine", limits.cpu_seconds, limits.address_space, limits.file_size, limits.processes), timeout)
        self._send(hello, timeout - (time.monotonic() - start))
        ready = self._receive(protocol.Ready, timeout - (time.monotonic() - start))
        self.startup_s = time.monotonic() - self._proc.launched_at
        return ready

    def request(self, job: Any, reply: type[T], timeout: float) -> T:
        start = time.monotonic()
        self._send(job, timeout)
        got = self._receive(reply, timeout - (time.monotonic() - start))
        if getattr(got, "job", None) != getattr(job, "job", None):
            raise self.fail(FailureReason.MALFORMED_REPLY)
        return got

    def next_job(self) -> int:
        self._jobs += 1
        return self._jobs

    def close(self) -> None:
        self._proc.close()

    def __enter__(self) -> ExecutorSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------- outputs
    def output(self, rel: str) -> bytes:
        """A file the executor wrote into its scratch folder (regular, size-limited)."""
        try:
            return _read_below(self.scratch, rel, self.max_output)
        except OSError:
            raise self.fail(FailureReason.MALFORMED_OUTPUT) from None

    def tensors(self, rel: str) -> dict[str, Any]:
        from safetensors.torch import load

        data = self.output(rel)
        try:
            return dict(load(data))
        except Exception:  # the library raises its own errors on a malformed buffer
            raise self.fail(FailureReason.MALFORMED_OUTPUT) from None

    # ----------------------------------------------------------------------- internals
    def _evidence(self) -> str:
        try:
            with open(self._err, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - (64 << 10)))
                return blake3_bytes(fh.read()).hex()
        except OSError:
            return blake3_bytes(b"").hex()

    def fail(self, reason: FailureReason, limit: float | None = None) -> ExecutorFailure:
        """Stop the executor; the failure to raise, with the digest of what it wrote to stderr."""
        self.close_process()
        return ExecutorFailure(reason, self._evidence(), limit)

    def close_process(self) -> None:
        self._proc.kill()

    def _send(self, message: Any, timeout: float) -> None:
        """Write a job line without ever blocking past `timeout` (a program that stops reading
        its stdin must not hang the judge)."""
        if self.proc is None or self.proc.stdin is None or self.proc.poll() is not None:
            raise self._ended()
        data = memoryview(protocol.encode(message))
        fd = self.proc.stdin.fileno()
        os.set_blocking(fd, False)
        deadline = time.monotonic() + timeout
        while data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.fail(FailureReason.TIMED_OUT, timeout)
            _, ready, _ = select.select([], [fd], [], min(left, 1.0))
            if not ready:
                continue
            try:
                data = data[os.write(fd, data) :]
            except BlockingIOError:
                continue
            except OSError:
                raise self._ended() from None

    def _ended(self) -> ExecutorFailure:
        try:
            code = self.proc.wait(timeout=10) if self.proc is not None else None
        except subprocess.TimeoutExpired:  # it closed the channel and kept running
            code = None
        sig = -code if code is not None and code < 0 else (code - 128 if code is not None and code > 128 else None)
        limited = sig is not None and sig in {int(s) for s in _LIMIT_SIGNALS}
        return self.fail(FailureReason.RESOURCE_LIMIT if limited else FailureReason.CRASHED)

    def _receive(self, kind: type[T], timeout: float) -> T:
        assert self._proc.reply_fd is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.fail(FailureReason.TIMED_OUT, timeout)
            ready, _, _ = select.select([self._proc.reply_fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(self._proc.reply_fd, 1 << 20)
            if not chunk:
                raise self._ended()
            self._buffer += chunk
            if len(self._buffer) > protocol.MAX_MESSAGE:
                raise self.fail(FailureReason.MALFORMED_REPLY)
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return protocol.decode(line, kind)
        except protocol.ProtocolError:
            raise self.fail(FailureReason.MALFORMED_REPLY) from None


class TrustedCluster:
    """Where executors run: in the sandbox (or, told so, without one), `workers` runs at a time,
    locally or on a Ray cluster."""

    def __init__(self, *, workers: int = 1, ray_address: str | None = None, sandbox: bool = True, warm: WarmPool | None = None) -> None:
        if workers < 1:
            raise ValueError("the trusted cluster needs at least one worker")
        self.workers, self.ray_address, self.sandbox = workers, ray_address, sandbox
        self.warm = warm if ray_address is None else None  # local processes: of no use to a Ray task elsewhere
        if sandbox:
            problem = sandbox_problem()
            if problem is not None:
                raise ClusterError(f"no sandbox for the Prover's program: {problem} (--unsafe-no-sandbox runs it without one)")
            parts = ["bubblewrap sandbox per run (new pid, ipc, uts, network and mount namespaces; "
                     + ("a fresh unprivileged uid" if os.geteuid() == 0 else "a user namespace")
                     + "; read-only system, staged inputs read-only, scratch the only writable place; cleared environment; "
                     "CPU, memory, file-size and process limits; wall-clock limit per job)"]
        else:
            parts = ["NO sandbox (--unsafe-no-sandbox): the Prover's program ran as a plain child process with a cleared "
                     "environment and resource limits, able to read this machine's files and reach its network"]
        parts.append("judge in the Verifier's process: every check decided outside the executor")
        if ray_address:
            parts.append(f"scheduled on the Ray cluster at {ray_address}")
        self.isolation = "; ".join(parts)

    def executors_per_run(self, runs: int) -> int:
        """Executors one run's replays are spread over: the workers left when every run has one
        (a Ray task: one; the Ray cluster spreads the runs)."""
        return 1 if self.ray_address else max(1, self.workers // max(1, runs))

    def map(self, fn: Callable[[T], R], items: Sequence[T], progress: Callable[[int, int], None] | None = None) -> list[R]:
        """fn over items (one per run), `workers` at a time; results in order."""
        if self.ray_address:
            return self._map_ray(fn, items, progress)
        out: list[R] = []
        if self.workers == 1 or len(items) <= 1:  # one run: its executors work in parallel (executors_per_run)
            for i, item in enumerate(items, 1):
                out.append(fn(item))
                if progress is not None:
                    progress(i, len(items))
            return out
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [pool.submit(fn, item) for item in items]
            for i, fut in enumerate(futures, 1):
                out.append(fut.result())
                if progress is not None:
                    progress(i, len(items))
        return out

    def _map_ray(self, fn: Callable[[T], R], items: Sequence[T], progress: Callable[[int, int], None] | None) -> list[R]:
        try:
            import ray
        except ImportError:
            raise ClusterError("--ray-address needs Ray: pip install 'computewatch[ray]'") from None
        if not ray.is_initialized():
            from computewatch.verifier.ray_connect import connect_ray

            connect_ray(ray, self.ray_address)  # an address that never answers is given up on
        remote = ray.remote(num_cpus=1)(fn)
        refs = [remote.remote(item) for item in items]
        out = []
        for i, ref in enumerate(refs, 1):
            out.append(ray.get(ref))
            if progress is not None:
                progress(i, len(items))
        return out

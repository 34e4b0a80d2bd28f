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
import os
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.digest import blake3_bytes
from computewatch.verifier import protocol
from computewatch.verifier.sandbox import Limits, SandboxError, executor_command, preexec, sandbox_problem

__all__ = ["ClusterError", "ExecutorFailure", "ExecutorSession", "FailureReason", "TrustedCluster", "read_regular"]

T = TypeVar("T")
R = TypeVar("R")


class ClusterError(ComputewatchError):
    """The Verifier's own machine cannot run the cluster (no sandbox and not told to go without)."""


class FailureReason(enum.StrEnum):
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


class ExecutorSession:
    """One warm executor for one run. Stage inputs with `put`, then `start`, `request`, `close`."""

    def __init__(self, *, sandbox: bool, limits: Limits, max_output: int) -> None:
        self.sandbox, self.limits, self.max_output = sandbox, limits, max_output
        self.work = Path(tempfile.mkdtemp(prefix="computewatch-judge-"))  # 0700: the judge's own
        self.inputs = self.work / "in"
        self.inputs.mkdir(mode=0o755)
        os.chmod(self.inputs, 0o755)
        self.scratch = _private_tmp("computewatch-scratch-")
        self.proc: subprocess.Popen[bytes] | None = None
        self._reply_fd: int | None = None
        self._buffer = b""
        self._err = self.work / "stderr"
        self._jobs = 0

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
        try:
            argv, env, uid = executor_command(self.inputs, self.scratch, sandbox=self.sandbox)
        except SandboxError as exc:
            raise ClusterError(f"no sandbox for the Prover's program: {exc}") from None
        if uid is not None:
            os.chown(self.scratch, uid, uid)
        os.chmod(self.scratch, 0o700)
        read, write = os.pipe()
        argv = [*argv, "--reply-fd", str(write)]
        with open(self._err, "wb") as err:
            try:
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, pass_fds=(write,),
                    env=env, cwd=self.scratch, preexec_fn=preexec(self.limits, uid), start_new_session=True,
                )
            except OSError as exc:
                raise ClusterError(f"cannot start the executor: {exc.strerror}") from None
            finally:
                os.close(write)
        self._reply_fd = read
        start = time.monotonic()
        self._send(hello, timeout)
        return self._receive(protocol.Ready, timeout - (time.monotonic() - start))

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
        self.close_process()
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if self._reply_fd is not None:
            os.close(self._reply_fd)
            self._reply_fd = None
        shutil.rmtree(self.scratch, ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)

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
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)

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
        assert self._reply_fd is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.fail(FailureReason.TIMED_OUT, timeout)
            ready, _, _ = select.select([self._reply_fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(self._reply_fd, 1 << 20)
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

    def __init__(self, *, workers: int = 1, ray_address: str | None = None, sandbox: bool = True) -> None:
        if workers < 1:
            raise ValueError("the trusted cluster needs at least one worker")
        self.workers, self.ray_address, self.sandbox = workers, ray_address, sandbox
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

    def map(self, fn: Callable[[T], R], items: Sequence[T], progress: Callable[[int, int], None] | None = None) -> list[R]:
        """fn over items (one per run), `workers` at a time; results in order."""
        if self.ray_address:
            return self._map_ray(fn, items, progress)
        out: list[R] = []
        if self.workers == 1 or len(items) <= 1:
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

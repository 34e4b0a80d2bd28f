"""The trusted cluster (paper §5.2, Appendix D steps 4-5): sandboxed jobs over the Prover's raw inputs.

Each job runs in a fresh process, `python -m computewatch.verifier.cluster`, that reads its
job (the Verifier's digests and expectations, the path of the Prover's run directory, the
pinned Prover keys) on stdin and writes only its result on stdout: pass/fail per check,
counts, distances and FLOPs, never weights or data. Where the machine allows it the process
runs in a network namespace of its own (`unshare --net`, loopback only, which is enough for
a distributed replay's gloo ranks), so nothing it reads can leave the machine; it stages the
inputs it needs into a private temporary folder, re-hashing them, and deletes that folder at
the end. `isolation` says which of these applied.

Jobs are independent, so they spread: a local process pool by default, or a Ray cluster
(`ray_address`) so that an agency can spread a large run's checks over many machines; a Ray
task runs the same sandboxed process on its node.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from computewatch.crypto.errors import ComputewatchError

__all__ = ["ClusterError", "Job", "TrustedCluster"]

_JOB_TIMEOUT_S = 3600


class ClusterError(ComputewatchError):
    """A cluster job could not run (crashed, timed out, or returned no result)."""


@dataclass(frozen=True)
class Job:
    kind: str  # "inventory" | "audit" | "segment" | "step" (one step from an answered state)
    spec: dict[str, Any]
    prover_keys: tuple[bytes, ...]  # PEM of the keys the Verifier pinned

    def to_json(self) -> bytes:
        return json.dumps({"kind": self.kind, "spec": self.spec, "prover_keys": [k.decode() for k in self.prover_keys]}).encode()


def _netns_available() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    try:
        return subprocess.run([unshare, "--net", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _run_sandboxed(job: bytes, isolate: bool, timeout: float = _JOB_TIMEOUT_S) -> dict[str, Any]:
    """Run one job in a fresh process (in its own network namespace when `isolate`)."""
    work = tempfile.mkdtemp(prefix="computewatch-cluster-")
    env = {**os.environ, "TMPDIR": work, "COMPUTEWATCH_CLUSTER_NETNS": "1" if isolate else "0"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "computewatch.verifier.cluster"]
    if isolate:
        cmd = [shutil.which("unshare") or "unshare", "--net", *cmd]
    try:
        proc = subprocess.run(cmd, input=job, capture_output=True, cwd=work, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"a trusted-cluster job ran past {timeout:.0f} s and was stopped") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the job's inputs and scratch space go with it
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise ClusterError(f"a trusted-cluster job exited with status {proc.returncode} and no result: {' | '.join(tail)}")
    return result


class TrustedCluster:
    """Runs jobs in sandboxed processes: `workers` at a time locally, or on a Ray cluster."""

    def __init__(self, *, workers: int = 1, ray_address: str | None = None, isolate: bool = True, in_process: bool = False) -> None:
        if workers < 1:
            raise ValueError("the trusted cluster needs at least one worker")
        self.workers = workers
        self.ray_address = ray_address
        self.in_process = in_process
        self._netns = isolate and not in_process and _netns_available()
        if in_process:
            # Tests of the check logic only: the same job code, without the sandbox.
            self.isolation = "in-process (NO isolation: the Verifier's own process read the raw inputs)"
            return
        parts = ["a separate process per job", "private temporary storage deleted after the job"]
        if self._netns:
            parts.insert(1, "its own network namespace (loopback only: no network)")
        elif isolate:
            parts.insert(1, "NO network namespace (unshare is unavailable here: the job could reach the network)")
        if ray_address:
            parts.append(f"scheduled on the Ray cluster at {ray_address}")
        self.isolation = ", ".join(parts)

    def run(self, jobs: Sequence[Job], progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
        """Results in the order of `jobs`; a job that fails to run raises ClusterError."""
        if self.in_process:
            out = []
            for i, job in enumerate(jobs, 1):
                out.append(execute(json.loads(job.to_json())))
                if progress is not None:
                    progress(i, len(jobs))
            return out
        if self.ray_address:
            return self._run_ray(jobs, progress)
        results: list[dict[str, Any] | None] = [None] * len(jobs)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = {pool.submit(_run_sandboxed, job.to_json(), self._netns): i for i, job in enumerate(jobs)}
            for done, fut in enumerate(as_completed(futures), 1):
                results[futures[fut]] = fut.result()
                if progress is not None:
                    progress(done, len(jobs))
        return [r for r in results if r is not None]

    def _run_ray(self, jobs: Sequence[Job], progress: Callable[[int, int], None] | None) -> list[dict[str, Any]]:
        try:
            import ray
        except ImportError:
            raise ClusterError("--ray-address needs Ray: pip install 'computewatch[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=None if self.ray_address == "local" else self.ray_address, include_dashboard=False, log_to_driver=False)
        remote = ray.remote(num_cpus=1)(_run_sandboxed)
        refs = [remote.remote(job.to_json(), self._netns) for job in jobs]
        results: list[dict[str, Any]] = []
        for i, ref in enumerate(refs, 1):
            results.append(ray.get(ref))
            if progress is not None:
                progress(i, len(jobs))
        return results


# ------------------------------------------------------------------------ inside the sandbox
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def _loopback_up() -> None:
    """A new network namespace starts with loopback down; gloo's ranks need it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | _IFF_UP))


def _probe(spec: dict[str, Any], keys: list[Any]) -> dict[str, Any]:
    """What a job can reach: loopback (needed by gloo) and, it should not, the outside world."""
    outside = spec.get("outside", ("192.0.2.1", 9))  # TEST-NET-1: no route in a network namespace
    try:
        socket.create_connection(tuple(outside), timeout=2).close()
        reached = True
    except OSError as exc:
        reached = "unreachable" not in str(exc).lower() and "no route" not in str(exc).lower() and getattr(exc, "errno", None) not in (101, 113)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        loopback = True
    return {"network_unreachable": not reached, "loopback": loopback, "tmpdir": tempfile.gettempdir()}


def execute(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job (a decoded `Job`) here; evidence that fails its format is a result, not a crash."""
    from computewatch.crypto.signing import VerifyKey
    from computewatch.verifier import _audit, _replay, step_replay

    keys = [VerifyKey.from_pem(k.encode()) for k in job["prover_keys"]]
    handlers = {"inventory": _audit.inventory, "audit": _audit.audit, "segment": _replay.replay_segment, "probe": _probe,
                "step": step_replay.step_job}
    try:
        return handlers[job["kind"]](job["spec"], keys)
    except ComputewatchError as exc:
        return {"error": str(exc), "format_error": True}


def _main() -> None:
    job = json.loads(sys.stdin.buffer.read())
    if os.environ.get("COMPUTEWATCH_CLUSTER_NETNS") == "1":
        _loopback_up()
    sys.stdout.write(json.dumps(execute(job), allow_nan=True) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    _main()

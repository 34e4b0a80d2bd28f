"""Shared pytest fixtures.

Databases: `postgres_server` (session) starts a private PostgreSQL server (tests/_postgres.py)
and stops it at the end; `postgres_url` is a fresh, empty database on it for one test (dropped
afterwards); `db_url` parametrizes a test over SQLite and PostgreSQL. Missing PostgreSQL
binaries fail the tests that need them, loudly, with the install hint (never a silent skip).

Registry: `registry_chips` (chips manufactured once per session, by one chipmaker) and
`registry` (a register on `db_url` with that chipmaker and two owners, acme and beta).

Demo: `demo_world` runs `computewatch demo --json` once per session, as a user runs it (a
subprocess, a relative --workdir, the default size), and is shared by tests/test_demo.py, the
dashboard's browser test and the command-line output tests; read it, never change it.

Parallel runs (pytest-xdist, `scripts/test` passes `-n N --dist loadfile`): each test file runs
in one worker, so a file's module-scoped fixtures are built once. (Not --dist loadgroup: with
pytest 9, xdist 3.8's groups have no effect and tests are spread one by one.) Session fixtures
are per worker (each worker has its own PostgreSQL server and temporary folders) except
`demo_world`, which the workers share through a file lock: the first to need it runs the demo.
Each worker runs torch with one intra-op thread (OMP_NUM_THREADS=1 for its subprocesses), so N
workers do not oversubscribe N cores; recorded runs pin their own thread count and replays pin
the recorded one, so exact-mode replay does not depend on it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from computewatch._threads import prefer_passive_threads

prefer_passive_threads()  # before torch loads: idle OpenMP threads sleep on the shared CI cores

import pytest  # noqa: E402
import typer.rich_utils  # noqa: E402
from _postgres import PostgresServer, PostgresUnavailable  # noqa: E402

WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1" ... in an xdist worker, else None

if WORKER is not None:
    # One intra-op thread per worker (and for the subprocesses it starts, unless they pin their own).
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


# typer freezes $TERMINAL_WIDTH when typer.rich_utils is first imported, so a test that sets it
# for one invocation would fix the help width of every later test (an order-dependent failure):
# help width follows $COLUMNS per invocation instead.
typer.rich_utils.MAX_WIDTH = None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL (postgresql+psycopg) of a fresh, empty database on the private server."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, then (second parameter) a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("postgres_url")


# ---------------------------------------------------------------------- registry
@dataclass
class RegistryWorld:
    """A register with one chipmaker (`maker`) and owners `acme` and `beta`, plus their keys."""

    reg: Any
    root: Path  # a scratch folder for this test
    keys: dict[str, Any]  # party name -> SigningKey
    chips: list[Path]  # unregistered chips of `maker` (read-only: copy one before booting it)

    def register(self, index: int, to: str | None = None) -> str:
        """Register chip `index` and, if `to` is given, ship it there; returns its serial."""
        serial = self.reg.register_chip(self.chips[index])["serial"]
        if to is not None:
            self.reg.ship(serial, to, self.keys["maker"], self.keys[to])
        return serial

    def fresh_chip(self, index: int) -> Path:
        """A private copy of chip `index` (whole state) that the test may boot, use and roll back."""
        return Path(shutil.copytree(self.chips[index], self.root / f"chip-{index}", symlinks=True))


def registry_key(name: str) -> Any:
    """A fixed Ed25519 key per party name (reproducible tests)."""
    import hashlib

    from computewatch.crypto.signing import SigningKey

    return SigningKey.from_seed(hashlib.sha256(b"computewatch test party " + name.encode()).digest())


@pytest.fixture(scope="session")
def registry_chips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """Twelve chips of one chipmaker, manufactured once (returns the chipmaker folder and the chips)."""
    from computewatch.chip import provision_chips

    root = tmp_path_factory.mktemp("registry-chips")
    chips = provision_chips(root, 12, snapshots_per_day=100.0, secret_seed=b"computewatch registry tests")
    return root / "chipmaker", chips


@pytest.fixture
def registry(db_url: str, registry_chips: tuple[Path, list[Path]], tmp_path: Path) -> Iterator[RegistryWorld]:
    from computewatch.crypto.signing import SigningKey
    from computewatch.registry import Registry

    maker_dir, chips = registry_chips
    reg = Registry.open(db_url)
    keys = {"maker": SigningKey.load(maker_dir / "chipmaker.key"), "acme": registry_key("acme"), "beta": registry_key("beta")}
    reg.add_chipmaker("maker", keys["maker"].public_key)
    reg.add_owner("acme", keys["acme"].public_key)
    reg.add_owner("beta", keys["beta"].public_key)
    scratch = tmp_path / "world"
    scratch.mkdir()
    try:
        yield RegistryWorld(reg, scratch, keys, chips)
    finally:
        reg.close()



# ---------------------------------------------------------------------- demo
# The default size: halving the steps saves nothing measurable (the cost is process start-up:
# 117.8 s at 20 steps against 117.5 s at 10, same machine, same load), so the tests run what a
# user runs. The chip-secret seed makes the snapshot schedules repeat.
DEMO_SEED = "computewatch demo tests"


def _run_demo(parent: Path) -> dict[str, Any]:
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "computewatch", "demo", "--workdir", "world", "--json", "--chip-secret-seed", DEMO_SEED],
        capture_output=True, text=True, timeout=900, env=env, cwd=parent,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"work": parent / "world", "doc": json.loads(proc.stdout), "stderr": proc.stderr}


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """{"work": world folder, "doc": the --json document, "stderr": the narrative}."""
    if WORKER is None:
        return _run_demo(tmp_path_factory.mktemp("demo"))
    # xdist: the workers' temporary folders share a parent that belongs to this run alone; the
    # first worker to get here runs the demo, the others wait for it and read its result.
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent
    done = shared / "demo-world.json"
    with FileLock(str(shared / "demo-world.lock")):
        if done.is_file():
            doc = json.loads(done.read_text())
            return {"work": Path(doc["work"]), "doc": doc["doc"], "stderr": doc["stderr"]}
        parent = shared / "demo"
        parent.mkdir()
        world = _run_demo(parent)
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps({**world, "work": str(world["work"])}))
        tmp.replace(done)
        return world


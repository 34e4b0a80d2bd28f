"""The service on a real uvicorn (`computewatch serve`, 127.0.0.1, a free port), on SQLite and
PostgreSQL: chips report over HTTP, signed requests over the wire, the served OpenAPI document,
and the crash test: the server is SIGKILLed while chips report; after a restart every
acknowledged entry is there, the chips resend what was not acknowledged, no log copy forks."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _service import VERIFIER_KEY, Server, report_chips  # noqa: F401  (fixture)
from conftest import registry_key
from sqlalchemy import select

from computewatch.chip import audit_log, verify_chip_certificate
from computewatch.crypto.signing import SigningKey
from computewatch.registry import Registry
from computewatch.registry import db as reg_db
from computewatch.service import HttpTransport, ServiceClient
from computewatch.service import schema as ss
from computewatch.service.openapi import render

DOCS = Path(__file__).resolve().parents[1] / "docs"


class RecordingTransport(HttpTransport):
    """Keeps every line whose ack came back (what the chip may forget)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.acked: list[bytes] = []

    def send(self, line: bytes) -> bytes | None:
        ack = super().send(line)
        if ack is not None:
            self.acked.append(line)
        return ack


def _setup(db_url: str, report: tuple[Path, list[Path]], root: Path, count: int) -> tuple[Registry, list[tuple[str, Path]], dict[str, SigningKey]]:
    maker_dir, chips = report
    reg = Registry.open(db_url)
    keys = {"rmaker": SigningKey.load(maker_dir / "chipmaker.key"), "acme": registry_key("acme"), "beta": registry_key("beta")}
    reg.add_chipmaker("rmaker", keys["rmaker"].public_key)
    reg.add_owner("acme", keys["acme"].public_key)
    reg.add_owner("beta", keys["beta"].public_key)
    out = []
    for i in range(count):
        state = Path(shutil.copytree(chips[i], root / f"chip-{i}", symlinks=True))
        serial = reg.register_chip(state)["serial"]
        reg.ship(serial, "acme", keys["rmaker"], keys["acme"])
        out.append((serial, state))
    return reg, out, keys


def _copy(reg: Registry, serial: str) -> bytes:
    t = ss.log_entries
    with reg_db.read(reg.engine) as conn:
        rows = conn.execute(select(t.c.counter, t.c.line).where(t.c.serial == serial).order_by(t.c.counter)).all()
    assert [r.counter for r in rows] == list(range(len(rows)))
    return b"".join(bytes(r.line) + b"\n" for r in rows)


def _drive(state: Path, transport: HttpTransport, steps: int, errors: list[BaseException], pause: float = 0.0) -> None:
    from computewatch.chip import Chip
    from computewatch.chip.exercise import small_shard

    try:
        chip = Chip.open(state, transport=transport)
        chip.boot()
        chip.attach(small_shard(), state.parent / f"{state.name}-storage")
        for s in range(steps):
            chip._tensors[0].add_(0.5)  # type: ignore[index]
            chip.step_boundary(s, 3600.0)
            if pause:
                time.sleep(pause)
        chip.close()
    except BaseException as exc:  # noqa: BLE001 (reported by the test thread)
        errors.append(exc)


def _report(chips: list[tuple[str, Path]], transports: list[RecordingTransport], steps: int, errors: list[BaseException],
            pause: float = 0.0) -> list[threading.Thread]:
    """Every chip reports from its own thread, all at once (started, not joined)."""
    threads = [threading.Thread(target=_drive, args=(state, t, steps, errors, pause)) for (_, state), t in zip(chips, transports, strict=True)]
    for th in threads:
        th.start()
    return threads


def _each_copy_is_the_log(reg: Registry, chips: list[tuple[str, Path]], transports: list[RecordingTransport],
                          threads: list[threading.Thread], errors: list[BaseException]) -> None:
    """Once the chips are done: each copy is the chip's own log, each entry acked exactly once, in order."""
    for th in threads:
        th.join(timeout=180)
    assert not errors, errors
    for (serial, state), t in zip(chips, transports, strict=True):
        log = (state / "log" / "chip.log").read_bytes()
        assert _copy(reg, serial) == log  # nothing lost, nothing forked
        assert t.acked == log.splitlines()


@pytest.fixture
def server_world(db_url: str, report_chips, tmp_path: Path) -> Iterator[tuple[Registry, list[tuple[str, Path]], dict[str, SigningKey], Server]]:  # noqa: F811
    reg, chips, keys = _setup(db_url, report_chips, tmp_path, 3)
    server = Server(db_url, tmp_path / "data")
    try:
        yield reg, chips, keys, server
    finally:
        server.stop()
        reg.close()


def test_real_server_chips_and_signed_requests(server_world) -> None:
    reg, chips, keys, server = server_world
    server.start()
    errors: list[BaseException] = []
    transports = [RecordingTransport(server.url, retry_s=5.0) for _ in chips]
    _each_copy_is_the_log(reg, chips, transports, _report(chips, transports, 5, errors), errors)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        # The served OpenAPI document is the checked-in one.
        assert render(http.get("/openapi.json").json()) == (DOCS / "openapi.json").read_text(encoding="utf-8")
        v = ServiceClient(http, party="verifier", key=VERIFIER_KEY, register=reg.register_id)
        acme = ServiceClient(http, party="acme", key=keys["acme"], register=reg.register_id)
        beta = ServiceClient(http, party="beta", key=keys["beta"], register=reg.register_id)
        assert {c["serial"] for c in v.get("/v1/chips").json()} == {s for s, _ in chips}
        assert beta.get("/v1/chips").json() == []
        serial = chips[0][0]
        assert beta.get(f"/v1/chips/{serial}").status_code == 403
        assert acme.get(f"/v1/chips/{serial}").status_code == 200
        nonce = "cd" * 16
        assert acme.get("/v1/me", nonce=nonce).status_code == 200
        assert acme.get("/v1/me", nonce=nonce).status_code == 403
        bad = ServiceClient(http, party="acme", key=keys["beta"], register=reg.register_id)
        assert bad.get("/v1/me").status_code == 401
        assert bad.write("/v1/sessions", "session", {}).status_code == 401
        assert acme.write("/v1/plans", "commit-plan", {"period": "x", "flops": 1e24}).status_code == 403
        # Oversized: declared, and streamed without a length (chunked).
        limit = http.get("/v1/service").json()["limits"]["max_body"]
        assert http.post("/v1/sessions", content=b"x" * (limit + 1)).status_code == 413

        def chunks() -> Iterator[bytes]:
            for _ in range(limit // 65536 + 2):
                yield b"y" * 65536

        assert http.post("/v1/sessions", content=chunks()).status_code == 413
        assert http.post("/v1/sessions", content=b"{]").status_code == 422
        env_line = (chips[0][1] / "log" / "chip.log").read_bytes().splitlines()[0]
        r = http.post(f"/v1/chips/{serial}/entries", content=env_line)
        assert r.status_code == 200 and r.headers["X-CW-Duplicate"] == "1"


def test_crash_while_chips_report(server_world) -> None:
    reg, chips, keys, server = server_world
    server.start()
    errors: list[BaseException] = []
    transports = [RecordingTransport(server.url, retry_s=90.0, timeout=10.0) for _ in chips]
    threads = _report(chips, transports, 14, errors, 0.02)
    deadline = time.monotonic() + 60
    while sum(len(t.acked) for t in transports) < 12 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()  # SIGKILL mid-stream: some entries are in flight
    acked_before = {serial: list(t.acked) for (serial, _), t in zip(chips, transports, strict=True)}
    assert sum(map(len, acked_before.values())) >= 12
    for serial, lines in acked_before.items():  # every acknowledged entry survived the kill
        stored = _copy(reg, serial).splitlines()
        assert stored[: len(lines)] == lines
    time.sleep(0.3)
    server.start()  # same port: the chips' transports reconnect and resend
    for th in threads:
        th.join(timeout=180)
    assert not errors, errors
    assert any(t.retries > 0 for t in transports), "no chip had to resend"
    for (serial, state), t in zip(chips, transports, strict=True):
        log = (state / "log" / "chip.log").read_bytes()
        copy = _copy(reg, serial)
        assert copy == log  # nothing lost, nothing forked: the copy is the chip's own log
        assert t.acked == log.splitlines()  # each entry acknowledged exactly once, in order
        cert = verify_chip_certificate(_cert(state), keys["rmaker"].public_key)
        report = audit_log(copy, cert, keys["rmaker"].public_key)
        assert report.ok, report.problems


def _cert(state: Path):  # type: ignore[no-untyped-def]
    from computewatch.crypto.dsse import Envelope

    return Envelope.from_json((state / "certificate.json").read_bytes())


def test_a_write_killed_mid_request_is_applied_once_on_resend(server_world, tmp_path: Path) -> None:
    """kill -9 inside the write's transaction (nothing applied: the resend applies it) and then,
    on that resend, just after its commit (the answer lost on the wire: the next resend gets
    the stored answer): the run is declared exactly once."""
    from computewatch import _faults
    from computewatch.service import signed_request

    reg, chips, keys, server = server_world
    env = signed_request("declare-run", {"run_id": "r-killed", "serials": [chips[0][0]]}, party="acme", key=keys["acme"],
                         register=reg.register_id)
    for point in ("service-write", "service-answered"):
        pause = tmp_path / point
        pause.mkdir()
        server.faults = (f"pause={point}:{pause}",)  # tests/_faults.py: the server stops there
        server.start()
        sent = threading.Thread(target=lambda: _post_quietly(server.url + "/v1/runs", env.to_json()))
        sent.start()
        deadline = time.monotonic() + 60
        while not (pause / "paused").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (pause / "paused").exists(), f"the server never reached {point}"
        server.kill()
        sent.join(timeout=30)
        declared = [x["run_id"] for x in reg.runs(owner="acme")].count("r-killed")
        assert declared == (0 if point == "service-write" else 1), point  # applied or not, never half
    server.faults = ()
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/v1/runs", content=env.to_json())
        assert r.status_code == 200 and r.headers.get("X-CW-Resent") == "1", r.text
        assert r.json()["run_id"] == "r-killed"
    assert [x["run_id"] for x in reg.runs(owner="acme")].count("r-killed") == 1
    assert _faults.current() == ()  # the handlers lived in the server process only


def _post_quietly(url: str, body: bytes) -> None:
    with contextlib.suppress(httpx.TransportError):  # the server was killed under it
        httpx.post(url, content=body, timeout=60)


def test_an_oversized_body_is_not_read_the_connection_closes(server_world) -> None:
    import socket

    _reg, _, _, server = server_world
    server.start()
    # Over the limit (declared), and an unsigned upload under it (refused before its body is read).
    for path, size in (("/v1/sessions", 10**10), ("/v1/inputs/big", 10**10), ("/v1/inputs/big", 500 << 20)):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode() + b"x" * 65536)
            answer = b""
            closed = False
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    chunk = s.recv(65536)
                except (ConnectionResetError, TimeoutError):
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 413") or answer.startswith(b"HTTP/1.1 401"), answer[:200]
            assert b'"status":' in answer and closed, "the server kept the connection open to read the rest"


class _LocalAcks:
    """A transport that acks at once and keeps every line (to make a chip's log without a server)."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def send(self, line: bytes) -> bytes:
        import json

        from computewatch.chip.transport import expected_ack

        self.lines.append(line)
        entry = json.loads(line)
        return expected_ack(entry["serial"], entry["counter"], line)


def test_two_processes_share_one_log_copy(db_url: str, report_chips, tmp_path: Path) -> None:  # noqa: F811
    """Two server processes' log copies (two `ChipLogs` over one database) take one chip's entries
    in turn: each catches up from the database, the primary key decides a race, duplicates are
    acked again, a fork is refused, and both serve the same tree head."""
    from computewatch.service import db as service_db
    from computewatch.service.commit import GroupCommitter
    from computewatch.service.errors import ServiceError
    from computewatch.service.logs import ChipLogs

    reg, chips, _ = _setup(db_url, report_chips, tmp_path, 2)
    service_db.upgrade(reg.engine)
    (serial, state), (other, other_state) = chips
    rec = _LocalAcks()
    _drive(state, rec, 4, [])  # type: ignore[arg-type]
    lines = rec.lines
    assert len(lines) >= 5
    a, b = ChipLogs(reg.engine, GroupCommitter(reg.engine)), ChipLogs(reg.engine, GroupCommitter(reg.engine))
    try:
        assert not a.append(serial, lines[0]).duplicate
        assert a.count(serial) == 1
        assert not b.append(serial, lines[1]).duplicate  # b loads entry 0 from the database
        assert not a.append(serial, lines[2]).duplicate  # a catches up with entry 1 (b stored it)
        assert b.append(serial, lines[1]).duplicate and a.append(serial, lines[2]).duplicate
        # b still believes the log holds 2 entries: offered entry 2 it loses to the key and acks the stored copy.
        assert b.append(serial, lines[2]).duplicate
        with pytest.raises(ServiceError) as exc:
            b.append(serial, lines[4])  # a gap is a gap in the database too
        assert exc.value.status == 409
        fork = _LocalAcks()
        _drive(other_state, fork, 1, [])  # type: ignore[arg-type]
        with pytest.raises(ServiceError) as exc:
            a.append(serial, fork.lines[0].replace(other.encode(), serial.encode()))
        assert exc.value.status in (401, 409, 422)
        assert not a.append(serial, lines[3]).duplicate
        for logs in (a, b):
            tree, size = logs.tree(serial)
            assert size == 4 and tree.root(4) == a.tree(serial)[0].root(4)
        assert _copy(reg, serial).splitlines() == lines[:4]
    finally:
        a.close()
        b.close()
        reg.engine.dispose()


def test_kill_mid_batch_under_concurrent_load(server_world, tmp_path: Path) -> None:
    """kill -9 while a group commit holds entries of two or more chips, written and not committed:
    every acknowledged entry is stored, none of the held batch is (the transaction is all or
    nothing), and after a restart the chips resend and every copy is the chip's own log."""
    reg, chips, _keys, server = server_world
    pause = tmp_path / "batch-pause"
    pause.mkdir()
    # tests/_faults.py: the server stops there. The writer waits 0.2 s before each batch, so the
    # chips' entries queue up: without it, a fast commit can take every entry alone on a loaded machine.
    server.faults = (f"pause=service-batch:{pause}", "hold-commit=0.2")
    server.start()
    errors: list[BaseException] = []
    transports = [RecordingTransport(server.url, retry_s=90.0, timeout=10.0) for _ in chips]
    threads = _report(chips, transports, 6, errors)
    deadline = time.monotonic() + 90
    while not (pause / "paused").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (pause / "paused").exists(), "no batch of two or more entries formed"
    server.kill()
    held = [label.rsplit("#", 1) for label in (pause / "batch").read_text().split()]
    assert len(held) >= 2
    acked_before = {serial: list(t.acked) for (serial, _), t in zip(chips, transports, strict=True)}
    for serial, lines in acked_before.items():
        stored = _copy(reg, serial).splitlines()  # counters 0..n-1: no gap, nothing half-applied
        assert stored[: len(lines)] == lines
        assert all(int(counter) >= len(stored) for s, counter in held if s == serial), "a held entry was committed"
    server.faults = ()
    server.start()
    _each_copy_is_the_log(reg, chips, transports, threads, errors)


def test_several_server_processes(postgres_url: str, report_chips, tmp_path: Path) -> None:  # noqa: F811
    """`serve --workers 2`: chips report through a new connection per entry (so entries of one chip
    land in either process); every copy is the chip's log, each entry acked once, and the tree
    head any process serves is the copy's; kill -9 of the server stops every process."""
    reg, chips, _ = _setup(postgres_url, report_chips, tmp_path, 3)
    server = Server(postgres_url, tmp_path / "data", extra=("--workers", "2", "--no-worker"))
    try:
        server.start()
        errors: list[BaseException] = []
        transports = [RecordingTransport(server.url, retry_s=30.0, timeout=10.0,
                                         client=httpx.Client(base_url=server.url, timeout=10.0, limits=httpx.Limits(max_keepalive_connections=0)))
                      for _ in chips]
        _each_copy_is_the_log(reg, chips, transports, _report(chips, transports, 4, errors), errors)
        for serial, state in chips:
            size = len((state / "log" / "chip.log").read_bytes().splitlines())
            for _ in range(4):
                with httpx.Client(base_url=server.url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as http:
                    head = http.get(f"/v1/chips/{serial}/tree-head").json()
                assert head["size"] == size
        assert server.proc is not None
        children = [int(p) for p in Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()]
        assert len(children) >= 2
        server.kill()
        deadline = time.monotonic() + 10
        while any(map(_alive, children)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_alive, children)), "a worker process outlived the killed server"
    finally:
        server.stop()
        reg.close()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

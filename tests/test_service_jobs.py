"""Verify jobs: a Prover hands its run to the trusted cluster through the service; the worker
runs `computewatch verify` and records the verdict, its report and its figures; progress is
polled; a broken job records why; a job a crash left running is queued again."""

from __future__ import annotations

import json

from collections.abc import Iterator
from pathlib import Path

import pytest
from _service import (  # noqa: F401  (fixtures)
    World,
    honest_run_dir,
    make_world,
    register_run,
    report_chips,
    wait_job,
)
from sqlalchemy import insert

from computewatch.registry import db as reg_db
from computewatch.service import schema as ss


@pytest.fixture
def world(registry_chips, report_chips, tmp_path: Path) -> Iterator[World]:  # noqa: F811
    yield from make_world(f"sqlite:///{tmp_path / 'register.db'}", registry_chips, report_chips, tmp_path, worker=True, job_poll_s=0.1)


def test_a_verify_job_records_its_verdict_report_and_figures(world: World, honest_run_dir: Path) -> None:  # noqa: F811
    run, serial = register_run(world, honest_run_dir)
    lab, acme, v = world.as_party("lab"), world.as_party("acme"), world.as_party("verifier")
    r = lab.write("/v1/jobs", "verify", {"runs": [run], "chips": [f"{run}/chips/chip-0000"], "mode": "exact", "segments": 1})
    assert r.status_code == 200, r.text
    job = r.json()["job"]
    doc = wait_job(lab, job)
    assert doc["status"] == "done", doc
    assert doc["verdict"] == "compliant" and doc["progress"]["fraction"] == 1.0
    verdict = lab.get(f"/v1/jobs/{job}/verdict").json()
    assert verdict["verdict"] == "compliant" and verdict["chips"][0]["serial"] == serial
    report = lab.get(f"/v1/jobs/{job}/report")
    assert report.status_code == 200 and "compliant" in report.text.lower()
    names = world.app.state.service.jobs.figure_names(job)
    assert names
    png = lab.get(f"/v1/jobs/{job}/figures/{names[0]}.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert lab.get(f"/v1/jobs/{job}/figures/nope.png").status_code == 404
    assert acme.get(f"/v1/jobs/{job}/verdict").status_code == 403  # another owner's verdict
    assert str(world.data.resolve()) not in json.dumps(verdict) + json.dumps(doc)  # no server paths in answers
    assert v.get(f"/v1/jobs/{job}/verdict").status_code == 200


def test_a_broken_job_fails_with_its_reason_and_interrupted_jobs_rerun(world: World, honest_run_dir: Path) -> None:  # noqa: F811
    run, _ = register_run(world, honest_run_dir)
    lab = world.as_party("lab")
    (world.data / "inputs" / "lab" / "empty-chip").mkdir()
    r = lab.write("/v1/jobs", "verify", {"runs": [run], "chips": ["inputs/lab/empty-chip"]})
    assert r.status_code == 200, r.text
    doc = wait_job(lab, r.json()["job"])
    assert doc["status"] == "failed" and doc["error"]
    assert str(world.data.resolve()) not in doc["error"] and "/tmp" not in doc["error"], doc["error"]
    # A job a crashed server left `running` is queued again by the next worker.
    svc = world.app.state.service
    with reg_db.write(svc.engine) as conn:
        res = conn.execute(insert(ss.jobs).values(
            owner="lab", status="running", request='{"chips":["inputs/lab/empty-chip"],"mode":"exact","runs":["inputs/lab/run"],"segments":1}',
            stage="replay", done=1, total=3, fraction=0.3, created_at="2026-01-01T00:00:00Z"))
        stuck = int(res.inserted_primary_key[0])
    assert svc.jobs.requeue_interrupted() == 1
    assert wait_job(lab, stuck)["status"] == "failed"


def test_a_job_on_the_services_own_log_copy(world: World, honest_run_dir: Path) -> None:  # noqa: F811
    run, _ = register_run(world, honest_run_dir)
    serial, state = world.report_chip(0, to="lab")
    world.run_chip(state, 3)
    lab = world.as_party("lab")
    r = lab.write("/v1/jobs", "verify", {"runs": [run], "chips": [{"serial": serial}]})
    assert r.status_code == 200, r.text
    doc = wait_job(lab, r.json()["job"])
    assert doc["status"] == "done", doc
    verdict = lab.get(f"/v1/jobs/{doc['id']}/verdict").json()
    # The copy audits clean; its snapshots belong to no submitted run, so the run does not explain them.
    assert [c["serial"] for c in verdict["chips"]] == [serial] and verdict["chips"][0]["ok"] is True
    assert verdict["verdict"] != "compliant"


def test_group_commit_isolates_a_bad_row(tmp_path: Path) -> None:
    import threading

    from sqlalchemy.exc import IntegrityError

    from computewatch.registry import Registry
    from computewatch.service import db as service_db
    from computewatch.service.commit import GroupCommitter

    reg = Registry.open(f"sqlite:///{tmp_path / 'r.db'}")
    service_db.upgrade(reg.engine)
    gc = GroupCommitter(reg.engine)
    row = {"line": b"x", "entry_sha256": "0" * 64, "received_at": "2026-01-01T00:00:00Z"}
    gc.store(lambda c: c.execute(insert(ss.log_entries).values(serial="A", counter=0, **row)))
    errors: list[BaseException] = []

    def put(serial: str, counter: int) -> None:
        try:
            gc.store(lambda c: c.execute(insert(ss.log_entries).values(serial=serial, counter=counter, **row)))
        except IntegrityError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put, args=("B", i)) for i in range(20)] + [threading.Thread(target=put, args=("A", 0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.close()
    assert len(errors) == 1  # only the duplicate failed
    with reg_db.read(reg.engine) as conn:
        from sqlalchemy import func, select

        assert conn.execute(select(func.count()).select_from(ss.log_entries)).scalar_one() == 21
    reg.close()


def test_group_commit_awaited_by_a_coroutine(db_url: str) -> None:
    """The event loop's path: a row is committed before its coroutine resumes; a failing row's
    error reaches `settled` (where the chip's lock is released) and the coroutine; a waiter
    cancelled meanwhile still has its row settled (its lock released). On PostgreSQL the rows
    are written by the loop's own task (no writer thread), several coroutines' rows as one
    batch whose fault point is reached before any of it is stored, a duplicate failing only
    its own request."""
    import asyncio
    import threading

    from sqlalchemy import func, select, text
    from sqlalchemy.exc import IntegrityError

    from computewatch._faults import installed
    from computewatch.registry import Registry
    from computewatch.service import db as service_db
    from computewatch.service.commit import GroupCommitter

    reg = Registry.open(db_url)
    service_db.upgrade(reg.engine)
    gc = GroupCommitter(reg.engine)
    row = {"line": b"x", "entry_sha256": "0" * 64, "received_at": "2026-01-01T00:00:00Z"}
    seen: list[tuple[str, BaseException | None]] = []

    def stored() -> int:
        with reg_db.read(reg.engine) as conn:
            return int(conn.execute(select(func.count()).select_from(ss.log_entries)).scalar_one())

    async def main() -> None:
        await gc.insert_async(ss.log_entries, {"serial": "A", "counter": 0, **row}, "A#0", lambda e: seen.append(("A", e)))
        assert stored() == 1  # durable when the coroutine resumes
        with pytest.raises(IntegrityError):
            await gc.insert_async(ss.log_entries, {"serial": "A", "counter": 0, **row}, "A#0", lambda e: seen.append(("dup", e)))
        settled = threading.Event()
        task = asyncio.create_task(gc.insert_async(ss.log_entries, {"serial": "B", "counter": 0, **row}, "B#0", lambda e: settled.set()))
        await asyncio.sleep(0)
        task.cancel()
        assert await asyncio.to_thread(settled.wait, 30)
        # Several coroutines at once: one batch; a duplicate in it fails alone.
        held: list[tuple[list[str], int]] = []

        def pause(point: str, info: object) -> None:
            if point == "registry.transaction" and isinstance(info, dict) and info.get("name") == "service-batch":
                held.append((list(info["labels"]), stored()))

        with installed(pause):
            results = await asyncio.gather(*(gc.insert_async(ss.log_entries, {"serial": "C", "counter": k, **row}, f"C#{k}")
                                             for k in range(4)),
                                           gc.insert_async(ss.log_entries, {"serial": "A", "counter": 0, **row}, "A#0"),
                                           return_exceptions=True)
        assert results[:4] == [None] * 4 and isinstance(results[4], IntegrityError)
        if reg.engine.dialect.name == "postgresql":  # the loop's writer takes what its loop queued meanwhile: one batch
            assert held and held[0] == (["C#0", "C#1", "C#2", "C#3", "A#0"], 2)  # nothing of it stored at the point
            # Its connection lost (a restarted server): the batch fails, the retry reconnects.
            pid = gc._loop_writers[asyncio.get_running_loop()]._conn.info.backend_pid
            with reg_db.write(reg.engine) as conn:
                conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            await gc.insert_async(ss.log_entries, {"serial": "D", "counter": 0, **row}, "D#0")
            writer = gc._loop_writers[asyncio.get_running_loop()]
            assert writer._conn.info.backend_pid != pid
            gc.close()  # the loop's writer commits what is queued, then stops and disconnects
            await asyncio.wait_for(writer._task, 30)
            assert writer._conn is None
            with pytest.raises(RuntimeError, match="shutting down"):
                await gc.insert_async(ss.log_entries, {"serial": "E", "counter": 0, **row}, "E#0")

    asyncio.run(main())
    loop_path = reg.engine.dialect.name == "postgresql"
    assert (gc._batches == 0) == loop_path  # PostgreSQL: the loop's writer committed every batch, the thread none
    gc.close()
    assert seen[0] == ("A", None) and seen[1][0] == "dup" and isinstance(seen[1][1], IntegrityError)
    assert stored() == (7 if loop_path else 6)
    reg.close()

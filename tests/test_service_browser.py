"""The dashboard in headless Chromium (Debian's `chromium`, driven by Playwright's Python API
through its executable path): pages load, tables list what the database holds, a verdict page
shows its plots, an owner sees only its own chips. Screenshots of the main pages are kept in
artifacts/screenshots/ (git-ignored; CI keeps them as artefacts). A missing browser fails the
test with the install hint, never skips it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _service import (  # noqa: F401  (fixtures)
    Server,
    World,
    find_chromium,
    honest_run_dir,
    make_world,
    register_run,
    report_chips,
    wait_job,
)

SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"


@pytest.fixture
def populated(registry_chips, report_chips, honest_run_dir: Path, tmp_path: Path) -> Iterator[tuple[World, Server, int]]:  # noqa: F811
    """A register with chips that reported, custody, a plan, an inspection and a refusal, an
    explanation queue, and a finished verify job; then a real server over the same database."""
    db_url = f"sqlite:///{tmp_path / 'register.db'}"
    gen = make_world(db_url, registry_chips, report_chips, tmp_path, worker=True, job_poll_s=0.1)
    world = next(gen)
    try:
        for i, owner in ((0, "acme"), (1, "acme"), (2, "beta")):
            _, state = world.report_chip(i, to=owner)
            world.run_chip(state, 3)
        run, _ = register_run(world, honest_run_dir)
        lab = world.as_party("lab")
        job = lab.write("/v1/jobs", "verify", {"runs": [run], "chips": [f"{run}/chips/chip-0000"]}).json()["job"]
        assert wait_job(lab, job)["status"] == "done"
        insp = world.as_party("insp")
        serials = [world.reg.register_chip(world.onchip[i])["serial"] for i in range(2)]
        for s in serials:
            world.reg.ship(s, "acme", world.keys["maker"], world.keys["acme"])
        plan = insp.write("/v1/plans", "commit-plan", {"period": "2026-Q2", "flops": 1e24, "owners": ["acme"]}).json()["plan"]["plan"]
        chip_dir = world.data / "presented" / "c0"
        shutil.copytree(world.onchip[0], chip_dir, symlinks=True)
        from computewatch.chip import Chip
        from computewatch.chip.exercise import run_steps, small_shard

        chip = Chip.open(chip_dir)
        chip.boot()
        chip.attach(small_shard(), world.root / "st")
        run_steps(chip, 6, 3600.0)
        chip.close()
        assert insp.write("/v1/inspections", "record-inspection", {"serial": serials[0], "chip_dir": "presented/c0", "plan": plan}).status_code == 200
        assert insp.write("/v1/refusals", "refuse", {"serial": serials[1], "reason": "no access", "plan": plan}).status_code == 200
        server = Server(db_url, world.data, extra=("--no-worker",)).start()
        try:
            yield world, server, job
        finally:
            server.stop()
    finally:
        gen.close()


def _rows(page: Any, table: str) -> int:
    return int(page.locator(f"#{table} tbody tr").count())


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_dashboard_in_chromium(populated: tuple[World, Server, int]) -> None:
    from playwright.sync_api import sync_playwright

    world, server, job = populated
    reg = world.reg
    executable = find_chromium()
    token = world.as_party("verifier").session()
    owner_token = world.as_party("beta").session()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            failed: list[str] = []
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            # Signing in: anonymous pages lead to the form; the token opens the overview.
            page.goto(server.url + "/chips")
            assert page.url.endswith("/login")
            page.fill("#token", "not-a-token")
            page.click("button[type=submit]")
            assert "unknown session token" in page.content()
            failed.clear()
            page.fill("#token", token)
            page.click("button[type=submit]")
            page.wait_for_url(server.url + "/")
            chips = reg.items(kind="chip")
            assert page.inner_text("#n-chips") == str(len(chips))
            _shot(page, "overview")
            page.goto(server.url + "/chips")
            assert _rows(page, "chips") == len(chips)
            assert {c["serial"] for c in chips} == set(page.locator("#chips tbody tr td:first-child").all_inner_texts())
            _shot(page, "chips")
            serial = chips[0]["serial"]
            page.click(f"text={serial}")
            assert _rows(page, "custody") == len(reg.chip(serial)["custody"])
            assert page.inner_text("#holder") == reg.chip(serial)["holder"]
            _shot(page, "chip")
            page.goto(server.url + "/owners")
            assert _rows(page, "owners") == len(reg.parties())
            _shot(page, "owners")
            page.goto(server.url + "/plans")
            assert _rows(page, "plans") == len(reg.plans()) == 1
            assert _rows(page, "inspections") == len(reg.inspections()) == 2
            assert page.locator("#inspections td.refused").count() == 1
            _shot(page, "inspections")
            page.goto(server.url + "/queue")
            assert _rows(page, "queue") == len(reg.explanation_queue(status=None)) > 0
            _shot(page, "queue")
            page.goto(server.url + "/jobs")
            assert _rows(page, "jobs") == 1
            _shot(page, "jobs")
            page.goto(f"{server.url}/jobs/{job}")
            assert page.inner_text("#verdict") == "compliant"
            plots = page.locator("img.plot")
            assert plots.count() == len(world.app.state.service.jobs.figure_names(job)) > 0
            page.wait_for_load_state("networkidle")
            widths = page.eval_on_selector_all("img.plot", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            assert all(w > 100 for w in widths), widths
            _shot(page, "verdict")
            page.goto(server.url + "/regime")
            in_service = [c for c in chips if c["status"] in ("active", "damaged") and not c["exempt"]]
            assert page.inner_text("#stockpile") == str(len(in_service))
            assert _rows(page, "eq1") == 4 and _rows(page, "achieved") == 1
            _shot(page, "regime")
            assert not failed, failed
            # An owner's session sees its own chips only, and not another owner's chip page.
            context = browser.new_context()
            context.add_cookies([{"name": "cw_session", "value": owner_token, "url": server.url}])
            owner = context.new_page()
            owner.goto(server.url + "/chips")
            mine = set(owner.locator("#chips tbody tr td:first-child").all_inner_texts())
            assert mine == set(reg.chips_of("beta")) and len(mine) == 1
            other = next(c["serial"] for c in chips if c["holder"] == "acme")
            response = owner.goto(f"{server.url}/chips/{other}")
            assert response is not None and response.status == 403
            assert "not held" in owner.inner_text("#error")
            assert owner.goto(server.url + "/regime").status == 403
            _shot(owner, "owner-chips")
            context.close()
            # A long job shows its progress, and the page follows it (polling) until the verdict.
            svc = world.app.state.service
            from sqlalchemy import insert, update

            from computewatch.registry import db as reg_db
            from computewatch.service import schema as ss

            with reg_db.write(svc.engine) as conn:
                slow = int(conn.execute(insert(ss.jobs).values(
                    owner="lab", status="running", request="{}", stage="replay", done=1, total=4, fraction=0.25,
                    created_at="2026-01-01T00:00:00Z")).inserted_primary_key[0])
            page.goto(f"{server.url}/jobs/{slow}")
            assert page.inner_text("#status") == "running" and "replay 1/4" in page.inner_text("#stage")
            assert page.eval_on_selector("#bar", "b => b.style.width") == "25%"
            svc.jobs.progress(slow, "replay", 3, 4)
            page.locator("#stage", has_text="replay 3/4").wait_for(timeout=15000)
            _shot(page, "job-progress")
            svc.jobs.record(slow, svc.jobs.verdict(job))
            with reg_db.write(svc.engine) as conn:
                conn.execute(update(ss.jobs).where(ss.jobs.c.id == slow).values(status="done", verdict="compliant", fraction=1.0))
            page.wait_for_selector("#verdict", timeout=15000)
            assert page.inner_text("#verdict") == "compliant"
        finally:
            browser.close()

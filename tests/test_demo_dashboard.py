"""The demo world in the dashboard, as docs/demo.md tells a newcomer to open it: `computewatch
serve` over the demo's register, `computewatch session` for the Verifier's key, the token pasted
into the sign-in form of headless Chromium (Debian's `chromium`, via Playwright), and the overview
showing Prover B's violation first. Pages also accept the token as a Bearer header. A screenshot
of the overview is kept in artifacts/screenshots/demo-overview.png."""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _service import Server, find_chromium, report_chips  # noqa: F401  (fixture)

SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"


class _Ran:
    def __init__(self, result: Any) -> None:
        self.returncode, self.stdout, self.stderr = result.exit_code, result.stdout, result.stderr


def _cli(*args: str) -> _Ran:
    """`computewatch ARGS` in this process (the session command is an HTTP client: no state kept)."""
    from typer.testing import CliRunner

    from computewatch.cli import app

    return _Ran(CliRunner().invoke(app, list(args), env={"COLUMNS": "80"}))


@pytest.fixture(scope="module")
def served(demo_world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """The service over a copy of the demo's register (the shared world stays untouched)."""
    work: Path = demo_world["work"]
    folder = tmp_path_factory.mktemp("demo-service")
    src, dst = sqlite3.connect(work / "registry.db"), sqlite3.connect(folder / "registry.db")
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    shutil.copy(work / "keys" / "verifier.pub", folder / "verifier.pub")  # Server pins data.parent/verifier.pub
    server = Server(f"sqlite:///{folder / 'registry.db'}", folder / "data", extra=("--no-worker",)).start()
    try:
        yield server, work
    finally:
        server.stop()


def test_session_command_and_bearer_pages(served: tuple[Server, Path]) -> None:
    server, work = served
    made = _cli("session", "--url", server.url, "--key", str(work / "keys" / "verifier.key"))
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert len(token) >= 40 and "\n" not in token and "/login" in made.stderr
    # A page with the token as a Bearer header, as docs/service.md says; without it, the sign-in form.
    page = httpx.get(server.url + "/", headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 200 and "prover-b" in page.text and "violation" in page.text
    assert httpx.get(server.url + "/").status_code == 303
    assert httpx.get(server.url + "/", headers={"Authorization": "Bearer not-a-token"}).status_code == 303
    # A key the service does not know is refused (1); a service that is not there is unusable input (2).
    refused = _cli("session", "--url", server.url, "--key", str(work / "keys" / "prover-a.key"), "--party", "verifier", "--json")
    assert refused.returncode == 1 and '"error"' in refused.stdout and refused.stderr.startswith("error:")
    absent = _cli("session", "--url", "http://127.0.0.1:9", "--key", str(work / "keys" / "verifier.key"))
    assert absent.returncode == 2 and "cannot be reached" in absent.stderr


def test_the_overview_shows_prover_bs_violation_in_chromium(served: tuple[Server, Path]) -> None:
    import json

    from playwright.sync_api import sync_playwright

    server, work = served
    made = _cli("session", "--url", server.url, "--key", str(work / "keys" / "verifier.key"), "--json")
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    assert doc["party"] == "verifier" and doc["role"] == "verifier" and doc["login"] == server.url + "/login"
    verdict_b = json.loads((work / "verifier" / "verdict-prover-b.json").read_text())
    unexplained = len(verdict_b["unexplained_snapshots"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(doc["login"])
            page.fill("#token", doc["token"])
            page.click("button[type=submit]")
            page.wait_for_url(server.url + "/")
            findings = page.inner_text("#findings")
            assert "unexplained snapshots" in findings and "prover-b" in findings
            first = page.locator("#provers tbody tr").first.inner_text()
            assert "prover-b" in first and "violation" in first and str(unexplained) in first
            assert page.inner_text("#n-unexplained") == str(unexplained)
            assert "None" not in page.inner_text("main")
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "demo-overview.png"), full_page=True)
            # The same page opened with the Bearer header alone (no cookie).
            context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {doc['token']}"})
            bearer = context.new_page()
            response = bearer.goto(server.url + "/queue")
            assert response is not None and response.status == 200
            assert bearer.locator("#queue tbody tr", has_text="unexplained").count() == unexplained
            context.close()
        finally:
            browser.close()


def test_overview_counts_a_verify_jobs_violation_and_owners_see_only_their_own(
    registry_chips: Any, report_chips: Any, tmp_path: Path,  # noqa: F811
) -> None:
    """Without a server: a violation verdict of a verify job makes its Prover's standing a
    violation on the overview; an owner's page shows its own standing only; every page also
    opens with a Bearer token."""
    from _service import make_world

    from sqlalchemy import insert

    from computewatch.registry import db as reg_db
    from computewatch.service import schema as ss

    gen = make_world(f"sqlite:///{tmp_path / 'register.db'}", registry_chips, report_chips, tmp_path)
    world = next(gen)
    try:
        with reg_db.write(world.app.state.service.engine) as conn:
            for owner, verdict in (("acme", "violation"), ("beta", "compliant")):
                conn.execute(insert(ss.jobs).values(owner=owner, status="done", request="{}", stage="done", done=1, total=1,
                                                    fraction=1.0, verdict=verdict, created_at="2026-01-01T00:00:00Z"))
        verifier = world.as_party("verifier").session()
        page = world.client.get("/", headers={"Authorization": f"Bearer {verifier}"}, follow_redirects=False)
        assert page.status_code == 200
        text = " ".join(page.text.split())
        assert "violation verdict" in text and "verify job" in text
        rows = re.findall(r"<tr><td>(\w+)</td><td class=\"s-([\w-]+)\">", page.text)
        assert ("acme", "violation") in rows and ("beta", "no-queued-snapshots") in rows
        owner = world.as_party("beta").session()
        mine = world.client.get("/", headers={"Authorization": f"Bearer {owner}"}, follow_redirects=False)
        assert mine.status_code == 200 and "acme" not in mine.text and "No open findings" in mine.text
        for path in ("/chips", "/owners", "/plans", "/queue", "/jobs"):
            assert world.client.get(path, headers={"Authorization": f"Bearer {verifier}"}, follow_redirects=False).status_code == 200
        assert world.client.get("/queue", follow_redirects=False).status_code == 303
    finally:
        gen.close()

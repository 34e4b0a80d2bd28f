"""Step challenges through the service (issue 19): the Verifier posts a challenge, the owner who
holds the run fetches it and uploads its response folder, a Verifier's verify job judges it."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _service import (  # noqa: F401  (fixtures)
    World,
    honest_run_dir,
    make_world,
    register_run,
    report_chips,
    wait_job,
)

from computewatch.crypto.signing import VerifyKey
from computewatch.prover.respond import respond
from computewatch.service.statements import read_headers
from computewatch.verifier._audit import inventory
from computewatch.verifier._run import staged_run
from computewatch.verifier.challenges import make_challenge

SECRET = bytes(range(32))


@pytest.fixture
def world(registry_chips, report_chips, tmp_path: Path) -> Iterator[World]:  # noqa: F811
    yield from make_world(f"sqlite:///{tmp_path / 'register.db'}", registry_chips, report_chips, tmp_path, worker=True, job_poll_s=0.1)


def _tar(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buf.getvalue()


def _upload(world: World, party: str, path: str, archive: bytes) -> Any:
    headers = read_headers("POST", path, party=party, key=world.keys[party], register=world.register, body=archive)
    return world.client.post(path, content=archive, headers={**headers, "content-type": "application/x-tar"})


def test_the_challenge_exchange_through_the_service(world: World, honest_run_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    run, _serial = register_run(world, honest_run_dir)
    lab, acme, v = world.as_party("lab"), world.as_party("acme"), world.as_party("verifier")
    with staged_run(str(world.data / run), [VerifyKey.load(honest_run_dir / "keys" / "prover.pub")], checkpoints="all") as staged:
        inv = inventory(staged)
    challenge = make_challenge(inv["step_commitments"], inv["run_id"], inv["precommitment_digest"], SECRET, 2, top_q=0)

    # Issuing is the Verifier's; the challenge is addressed to a registered owner.
    assert lab.write("/v1/challenges", "step-challenge", {"owner": "lab", "challenge": challenge}).status_code == 403
    assert v.write("/v1/challenges", "step-challenge", {"owner": "nobody", "challenge": challenge}).status_code == 422
    assert v.write("/v1/challenges", "step-challenge", {"owner": "lab", "challenge": {"v": 1}}).status_code == 422
    r = v.write("/v1/challenges", "step-challenge", {"owner": "lab", "challenge": challenge})
    assert r.status_code == 200, r.text
    cid = r.json()["challenge"]

    # Only the owner it is addressed to (and the Verifier) sees it.
    got = lab.get(f"/v1/challenges/{cid}").json()
    assert got["challenge"] == challenge and got["response"] is None
    assert acme.get(f"/v1/challenges/{cid}").status_code == 404
    assert world.client.get(f"/v1/challenges/{cid}").status_code == 401

    # The owner answers once, with a response to exactly this challenge.
    respond(world.data / run, got["challenge"], tmp_path / "response")
    archive = _tar(tmp_path / "response")
    assert _upload(world, "acme", f"/v1/challenges/{cid}/response", archive).status_code == 403
    r = _upload(world, "lab", f"/v1/challenges/{cid}/response", archive)
    assert r.status_code == 200, r.text
    assert r.json()["answers"] == len(challenge["steps"]) and r.json()["path"] == f"responses/lab/challenge-{cid}"
    assert _upload(world, "lab", f"/v1/challenges/{cid}/response", archive).status_code == 409
    other = v.write("/v1/challenges", "step-challenge", {"owner": "lab", "challenge": dict(challenge, deadline_s=60)}).json()["challenge"]
    r = _upload(world, "lab", f"/v1/challenges/{other}/response", archive)
    assert r.status_code == 422 and "another challenge" in r.json()["error"]

    # A verify job of the Verifier judges the answers with the secret; an owner cannot hand them in.
    body = {"runs": [run], "chips": [f"{run}/chips/chip-0000"], "segments": 1, "responses": [cid], "challenge_secret": SECRET.hex()}
    assert lab.write("/v1/jobs", "verify", body).status_code == 403
    assert v.write("/v1/jobs", "verify", dict(body, responses=[other])).status_code == 409  # not answered yet
    r = v.write("/v1/jobs", "verify", body)
    assert r.status_code == 200, r.text
    doc = wait_job(v, r.json()["job"])
    assert doc["status"] == "done" and "challenge_secret" not in doc["request"], doc
    verdict = v.get(f"/v1/jobs/{doc['id']}/verdict").json()
    spot = verdict["spot_checks"]
    assert spot["drawn"] == spot["passed"] == len(challenge["steps"]) and spot["failed"] == [], spot
    assert next(c for c in verdict["checks"] if c["name"] == "steps")["passed"] is True

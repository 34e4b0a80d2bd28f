"""The service's view of location and exposure: `/v1/exposure` for the Verifier and inspectors,
a chip's location checks for those who may read the chip, and the `/exposure` dashboard page
(the bound per period as an inline SVG chart, every chip's latest location check)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _service import World, make_world, report_chips  # noqa: F401  (fixture)

from computewatch.adversary.location import HOME, LANDMARK_SITE, DelayingRelay, relay_delay_s
from computewatch.crypto.signing import SigningKey
from computewatch.landmark import LandmarkServer
from computewatch.landmark.locate import locate_chip
from computewatch.service.api_exposure import exposure_svg


@pytest.fixture
def world(registry_chips, report_chips, tmp_path: Path) -> Iterator[World]:  # noqa: F811
    yield from make_world(f"sqlite:///{tmp_path / 'svc.db'}", registry_chips, report_chips, tmp_path)


def test_exposure_and_locations_over_http_and_on_the_dashboard(world: World) -> None:
    reg = world.reg
    key = SigningKey.from_seed(b"M" * 32)
    reg.add_landmark("ams", key.public_key, *LANDMARK_SITE)
    reg.set_facility_site("acme", "home", *HOME)
    chip = Path(shutil.copytree(world.onchip[0], world.root / "c0"))
    serial = reg.register_chip(chip)["serial"]
    reg.ship(serial, "acme", world.keys["maker"], world.keys["acme"], facility="home")
    with LandmarkServer(key, rounds=3) as lm:
        relay = DelayingRelay(lm.url, relay_delay_s(2000.0))
        try:
            found = reg.locate(serial, locate_chip(chip, [relay.url]))
        finally:
            relay.close()
    assert not found["inside"]
    insp, acme, beta = (world.as_party(n) for n in ("insp", "acme", "beta"))
    r = insp.get("/v1/exposure?p=0.95")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["p"] == 0.95 and doc["overall"]["unaccounted"] == 1 and {o["name"] for o in doc["owners"]} == {"acme", "beta"}
    assert acme.get("/v1/exposure").status_code == 403 and insp.get("/v1/exposure?p=1").status_code == 422
    got = acme.get(f"/v1/chips/{serial}/locations")
    assert got.status_code == 200 and [x["inside"] for x in got.json()] == [False]
    assert beta.get(f"/v1/chips/{serial}/locations").status_code == 403
    # The dashboard page: the verifier's session cookie; an owner may not see it.
    reg.commit_plan("2026-Q1", ["acme"], flops=1e24)
    assert world.client.get("/exposure", follow_redirects=False).status_code == 303  # sign in first
    owner_token, token = acme.session(), world.as_party("verifier").session()
    world.client.cookies.set("cw_session", token)
    page = world.client.get("/exposure")
    assert page.status_code == 200 and "<svg" in page.text and "2026-Q1" in page.text
    assert serial in page.text and "radius" in page.text  # the finding of the latest location check
    world.client.cookies.set("cw_session", owner_token)
    assert world.client.get("/exposure").status_code == 403
    world.client.cookies.clear()


def test_the_chart_scales_bars_by_the_logarithm() -> None:
    svg = exposure_svg([("a", 1e20), ("b", 1e24), ("<c>", 0.0)])
    widths = [float(x.split('"')[0]) for x in svg.split('<rect x="150" y="')[1:] for x in [x.split('width="')[1]]]
    assert widths[0] < widths[1] and widths[2] == 0 and "&lt;c&gt;" in svg and "<c>" not in svg
    assert exposure_svg([]) == ""

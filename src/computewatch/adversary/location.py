"""Location attacks: an owner tries to keep a chip abroad while the register believes it sits in
its declared facility (docs/registry.md "Location"; the US Chip Security Act's location checks).

The world: acme's facility `home` is declared in Amsterdam; landmark `ams` (registered, on the
same campus, about 100 m away: loopback round trips take microseconds, which bound the distance
to about a kilometre) serves on 127.0.0.1. Every network hop is on loopback; the distance a real deployment
would add is injected as delay by a relay (`DelayingRelay`), since delay can be added but never
removed. Each trial submits the evidence to `Registry.locate` and reads its problems as
`location.<check>`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from computewatch.adversary.suite import Context, Trial, get_attack, primary_check, register, result_from_trials
from computewatch.adversary.world import ChipWorld, chip_world, party_key

__all__ = ["ABROAD_KM", "HOME", "LANDMARK_SITE", "DelayingRelay", "relay_delay_s"]

HOME = (52.3676, 4.9041)  # the declared facility
LANDMARK_SITE = (52.3676, 4.9056)  # landmark `ams`, about 100 m from it
ABROAD_KM = 2000.0  # where the chip really is, as the relay's added delay
_FIBRE_KM_PER_S = 200_000.0  # one-way speed of light in fibre


def relay_delay_s(km: float) -> float:
    """One-way delay that `km` of fibre adds (the relay waits this long in each direction)."""
    return km / _FIBRE_KM_PER_S


class DelayingRelay:
    """A TCP relay on loopback that forwards both ways, holding every chunk `delay_s` first: the
    owner's box at home in front of a chip that is really far away."""

    def __init__(self, upstream: str, delay_s: float) -> None:
        from computewatch.landmark.wire import parse_url

        self._up = parse_url(upstream)
        self.delay_s = delay_s
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._up)
            for a, b in ((client, upstream), (upstream, client)):
                a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                time.sleep(self.delay_s)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


@dataclass
class LocationWorld:
    chips: ChipWorld
    landmark: Any  # LandmarkServer of the registered landmark `ams`

    def home_chip(self, ctx: Context) -> tuple[str, Path]:
        """A new chip of acme, shipped to facility `home` (declared at HOME)."""
        reg, keys = self.chips.reg, self.chips.keys
        chip = self.chips.new_chip()
        serial = reg.register_chip(chip)["serial"]
        reg.ship(serial, "acme", keys["maker"], keys["acme"], facility="home")
        return serial, chip

    def close(self) -> None:
        self.landmark.close()


def _world(ctx: Context) -> LocationWorld:
    def make() -> LocationWorld:
        from computewatch.landmark import LandmarkServer

        chips = chip_world(ctx)
        key = party_key("landmark ams")
        chips.reg.add_landmark("ams", key.public_key, *LANDMARK_SITE)
        chips.reg.set_facility_site("acme", "home", *HOME)
        return LocationWorld(chips, LandmarkServer(key, rounds=5).start())

    return ctx.shared("world:location", make)


def _trial(world: LocationWorld, serial: str, evidence: bytes, expected: str | None) -> Trial:
    result = world.chips.reg.locate(serial, evidence)
    checks = list(dict.fromkeys(f"location.{p['check']}" for p in result["problems"]))
    by = primary_check(checks, expected)
    detail = next((p["problem"] for p in result["problems"] if f"location.{p['check']}" == by), "")
    return Trial(not result["inside"], by, tuple(checks), detail[:300])


def _attack(name: str, cheat: Callable[[Context, LocationWorld, str, Path], bytes]) -> Callable[[Context, int, int], Any]:
    """A runner: per trial, a chip at home; `cheat` returns the evidence the owner submits."""

    def run(ctx: Context, trials: int, seed: int) -> Any:
        attack = get_attack(name)
        world = _world(ctx)
        out = []
        for _ in range(trials):
            serial, chip = world.home_chip(ctx)
            out.append(_trial(world, serial, cheat(ctx, world, serial, chip), attack.expected))
        return result_from_trials(attack, out)

    return run


def _locate(chip: Path, url: str, answer: Any = None) -> bytes:
    from computewatch.landmark.locate import locate_chip

    return locate_chip(chip, [url], answer=answer)


def _relay_abroad(ctx: Context, world: LocationWorld, serial: str, chip: Path) -> bytes:
    relay = DelayingRelay(world.landmark.url, relay_delay_s(ABROAD_KM))
    try:
        return _locate(chip, relay.url)
    finally:
        relay.close()


def _replayed(ctx: Context, world: LocationWorld, serial: str, chip: Path) -> bytes:
    evidence = _locate(chip, world.landmark.url)  # measured while the chip was at home ...
    first = world.chips.reg.locate(serial, evidence)
    if not first["inside"]:  # pragma: no cover - the honest measurement must pass
        raise AssertionError(f"honest location evidence refused: {first['problems']}")
    return evidence  # ... and handed in again after the chip left


def _device_key(chip: Path) -> Any:
    from computewatch.chip.state import load_identity

    return load_identity(chip).device_key


def _precomputed(ctx: Context, world: LocationWorld, serial: str, chip: Path) -> bytes:
    """The relay answers each nonce at once, with a signature the far chip made in advance over a
    nonce it could not know (here: an earlier one), hoping to hide the distance."""
    from computewatch.formats.location import answer_input

    key = _device_key(chip)
    stale = bytes(32)
    return _locate(chip, world.landmark.url, answer=lambda lm, nonce: key.sign(answer_input(lm, serial, stale)))


def _own_landmark(ctx: Context, world: LocationWorld, serial: str, chip: Path) -> bytes:
    """The owner runs a landmark of its own beside the chip abroad (its key is not registered)."""
    from computewatch.crypto.signing import SigningKey
    from computewatch.landmark import LandmarkServer

    with LandmarkServer(SigningKey.generate(), rounds=3) as rogue:
        return _locate(chip, rogue.url)


def _other_chip(ctx: Context, world: LocationWorld, serial: str, chip: Path) -> bytes:
    """The chip is abroad; another chip of the owner, at home, answers the landmark in its name."""
    from computewatch.formats.location import answer_input

    stand_in = _device_key(world.chips.new_chip())
    return _locate(chip, world.landmark.url, answer=lambda lm, nonce: stand_in.sign(answer_input(lm, serial, nonce)))


_FAMILY = "location"
_REF = "§6 (supply chain); docs/registry.md 'Location'"

for _name, _expected, _cheat, _summary in (
    ("location-relay-abroad", "location.radius", _relay_abroad,
     f"The chip is {ABROAD_KM:g} km abroad behind a relay at home: the relay forwards the landmark's nonces and the "
     "chip's answers (a delaying proxy on loopback adds the real distance's fibre delay)."),
    ("location-replayed", "location.replay", _replayed,
     "Hands in location evidence measured while the chip was at home again, after the chip left."),
    ("location-precomputed", "location.chip-signature", _precomputed,
     "The relay answers each nonce at once with a signature made in advance, to hide the round trip to the chip."),
    ("location-unregistered-landmark", "location.landmark", _own_landmark,
     "Measures the chip abroad with a landmark of the owner's own, whose key the register never registered."),
    ("location-other-chip", "location.chip-signature", _other_chip,
     "Another of the owner's chips, at home, answers the landmark's nonces in the name of the chip that is abroad."),
):
    register(_name, paper_ref=_REF, family=_FAMILY, kind="caught", expected=_expected, summary=_summary,
             default_trials=1, max_trials=5)(_attack(_name, _cheat))

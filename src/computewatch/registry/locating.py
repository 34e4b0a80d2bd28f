"""Deciding where a chip can be from location evidence (landmarks' signed round trips).

`check` is pure: given the evidence, the chip as registered, the registered landmarks, the
declared facility's coordinates and the nonces the register has already accepted, it checks
every signature and derives each landmark's distance bound:

* the chip certificate in the evidence verifies under the pinned chipmaker root and names the
  registered device key (`certificate`);
* each record is signed by a registered landmark (`landmark`), is for the requested chip
  (`serial`), every round's answer verifies under the registered device key over that round's
  nonce (`chip-signature`: a chip answering for another chip, or an answer made up before the
  nonce existed), its nonces are new to the register and to the evidence (`replay`) and its time
  is recent (`stale`);
* from each valid record, the shortest round trip bounds the chip's distance from the landmark
  (vacuum: sound; fibre: the usual, tighter figure); the declared facility must lie inside every
  vacuum disc (`disc`), and the distance the discs prove between the chip and the facility,
  min over landmarks of (bound + landmark-to-facility distance), must be at most the radius
  (`radius`): a relay at home in front of a chip abroad adds the real distance's delay, and delay
  cannot be removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from computewatch.crypto.dsse import Envelope, verify_envelope
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.signing import VerifyKey
from computewatch.formats.identity import verify_chip_certificate
from computewatch.formats.location import LocationRecord, answer_input, parse_evidence, read_record
from computewatch.landmark.geo import FIBRE_KM_PER_MS, VACUUM_KM_PER_MS, bound_km, distance_km

__all__ = ["DEFAULT_MAX_AGE", "DEFAULT_RADIUS_KM", "Landmark", "LocatedChip", "check"]

DEFAULT_RADIUS_KM = 500.0
DEFAULT_MAX_AGE = timedelta(days=1)
_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Landmark:
    name: str
    key: VerifyKey
    site: tuple[float, float]


@dataclass(frozen=True)
class LocatedChip:
    serial: str
    device_key: bytes
    certificate: bytes
    root: VerifyKey
    facility: str | None
    site: tuple[float, float] | None


def _problem(check: str, problem: str, landmark: str | None = None) -> dict[str, Any]:
    return {"check": check, "landmark": landmark, "problem": problem}


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _check_record(
    env: Envelope, chip: LocatedChip, landmarks: dict[str, Landmark], seen: set[tuple[str, str]],
    now: datetime, max_age: timedelta, problems: list[dict[str, Any]],
) -> tuple[Landmark, LocationRecord] | None:
    try:
        rec = read_record(env)
    except ComputewatchError as exc:
        problems.append(_problem("format", f"a landmark record is malformed: {exc}"))
        return None
    lm = landmarks.get(rec.landmark)
    if lm is None or not any(k == lm.key.keyid for k, _ in env.signatures):
        problems.append(_problem("landmark", f"record signed by key {rec.landmark[:16]}..., which is no registered landmark"))
        return None
    try:
        verify_envelope(env, [lm.key])
    except ComputewatchError as exc:
        problems.append(_problem("landmark", f"the record does not verify under landmark {lm.name}'s key: {exc}", lm.name))
        return None
    bad = len(problems)
    if rec.serial != chip.serial or rec.device_key != chip.device_key:
        problems.append(_problem("serial", f"landmark {lm.name} measured chip {rec.serial} with another device key, "
                                           f"not the registered {chip.serial}", lm.name))
    key = VerifyKey.from_raw(chip.device_key)
    for i, r in enumerate(rec.rounds):
        try:
            key.verify(r.signature, answer_input(rec.landmark, chip.serial, r.nonce))
        except ComputewatchError:
            problems.append(_problem("chip-signature", f"round {i} at landmark {lm.name}: the answer is not {chip.serial}'s "
                                                       "device-key signature over that round's nonce", lm.name))
            break
    for r in rec.rounds:
        pair = (rec.landmark, r.nonce.hex())
        if pair in seen:
            problems.append(_problem("replay", f"landmark {lm.name}'s nonce {r.nonce.hex()[:16]}... was used before: "
                                               "a replayed measurement", lm.name))
            break
        seen.add(pair)
    when = _parse_time(rec.time)
    if when is None or when.tzinfo is None:
        problems.append(_problem("format", f"landmark {lm.name}'s record time {rec.time!r} is not ISO-8601 UTC", lm.name))
    elif when > now + _SKEW or now - when > max_age:
        problems.append(_problem("stale", f"landmark {lm.name} measured at {rec.time}, not within "
                                          f"{max_age.total_seconds() / 3600:g} h before now", lm.name))
    return (lm, rec) if len(problems) == bad else None


def check(
    evidence: bytes,
    chip: LocatedChip,
    landmarks: dict[str, Landmark],
    seen_nonces: set[tuple[str, str]],
    *,
    radius_km: float = DEFAULT_RADIUS_KM,
    now: datetime,
    max_age: timedelta = DEFAULT_MAX_AGE,
) -> dict[str, Any]:
    """The result {"serial", "facility", "inside", "bounds_km", "proven_within_km", "radius_km",
    "speed_km_per_ms", "finding", "problems", "nonces"} (`nonces`: the (landmark, nonce) pairs of
    the valid records, for the register to remember). Raises ComputewatchError on evidence that is
    not an evidence file at all."""
    serial, cert_env, records = parse_evidence(evidence)
    problems: list[dict[str, Any]] = []
    if serial != chip.serial:
        problems.append(_problem("serial", f"the evidence is for chip {serial}, not {chip.serial}"))
    try:
        cert = verify_chip_certificate(cert_env, chip.root)
        if cert.serial != chip.serial or cert.device_key.raw != chip.device_key:
            problems.append(_problem("certificate", f"the evidence carries the certificate of {cert.serial} with another "
                                                    f"device key, not the registered {chip.serial}'s"))
    except ComputewatchError as exc:
        problems.append(_problem("certificate", f"the chip certificate does not verify under the pinned chipmaker root: {exc}"))
    seen = set(seen_nonces)
    before = set(seen)
    valid = [v for env in records if (v := _check_record(env, chip, landmarks, seen, now, max_age, problems))]
    bounds: dict[str, dict[str, Any]] = {}
    proven: dict[str, float | None] = {"fibre": None, "vacuum": None}
    for lm, rec in valid:
        b = bound_km(rec.rtt_ns)
        entry: dict[str, Any] = {"rtt_ms": round(b.rtt_ms, 6), "fibre": round(b.fibre_km, 3), "vacuum": round(b.vacuum_km, 3),
                 "landmark_site": list(lm.site), "record_sha256": rec.digest, "time": rec.time}
        if chip.site is not None:
            d = distance_km(lm.site, chip.site)
            entry["facility_km"] = round(d, 3)
            if d > b.vacuum_km:
                problems.append(_problem("disc", f"the declared facility is {d:.1f} km from landmark {lm.name}, outside the "
                                                 f"{b.vacuum_km:.1f} km its {b.rtt_ms:.3f} ms round trip allows even in "
                                                 "vacuum: the chip is not there", lm.name))
            for speed, km in (("fibre", b.fibre_km), ("vacuum", b.vacuum_km)):
                cur = proven[speed]
                proven[speed] = km + d if cur is None else min(cur, km + d)
        if lm.name in bounds:  # several records of one landmark: keep the tightest
            entry = min(entry, bounds[lm.name], key=lambda e: e["vacuum"])
        bounds[lm.name] = entry
    if not records or not valid:
        problems.append(_problem("records", "no valid landmark record: nothing bounds where the chip is"))
    elif chip.site is None:
        problems.append(_problem("facility", f"chip {chip.serial} has no declared facility with coordinates to check"))
    elif proven["vacuum"] is not None and proven["vacuum"] > radius_km:
        problems.append(_problem("radius", f"the round trips place the chip within {proven['vacuum']:.1f} km of its declared "
                                           f"facility at best (vacuum bound), more than the {radius_km:g} km allowed: "
                                           "it may be elsewhere, e.g. behind a relay"))
    return {
        "serial": chip.serial,
        "facility": chip.facility,
        "inside": not problems,
        "bounds_km": bounds,
        "proven_within_km": {k: None if v is None else round(v, 3) for k, v in proven.items()},
        "radius_km": radius_km,
        "speed_km_per_ms": {"fibre": FIBRE_KM_PER_MS, "vacuum": round(VACUUM_KM_PER_MS, 3)},
        "finding": problems[0]["problem"] if problems else None,
        "problems": problems,
        # Every nonce of a record a registered landmark signed is used up, whatever the outcome.
        "nonces": sorted(seen - before),
    }

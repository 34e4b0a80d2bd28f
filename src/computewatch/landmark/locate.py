"""`computewatch chip locate`: the chip proves presence to landmarks and logs their records."""

from __future__ import annotations

import os
from collections.abc import Sequence

from computewatch.crypto.dsse import Envelope
from computewatch.formats.location import make_evidence
from computewatch.landmark.client import Answer, measure

__all__ = ["locate_chip"]


def locate_chip(chip_dir: str | os.PathLike[str], urls: Sequence[str], *, answer: Answer | None = None) -> bytes:
    """Power the chip on, answer each landmark's nonces with its device key, log each landmark's
    signed record in the chip's log, stop cleanly; returns the evidence file's bytes.

    `answer` replaces the chip's own signing (the attack suite's relays and impostors use it)."""
    from computewatch.chip import Chip  # the chip model loads torch: only locating pays for it
    from computewatch.landmark.client import LandmarkError
    from computewatch.landmark.wire import parse_url

    for url in urls:  # before the chip is powered on: a bad URL leaves no trace in its log
        try:
            parse_url(url)
        except ValueError as exc:
            raise LandmarkError(str(exc)) from None
    chip = Chip.open(chip_dir)
    chip.boot()
    try:
        device_key = chip.certificate_device_key
        records: list[Envelope] = []
        for url in urls:
            record = measure(url, chip.serial, device_key, answer or chip.answer_location)
            chip.log_location(record)
            records.append(record)
        return make_evidence(chip.serial, chip.certificate, records)
    finally:
        chip.close()

"""Test vectors for the chip's formats, generated end to end from fixed keys and seeds.

`generate(work_dir)` manufactures a chip from fixed secrets, runs it on a simulated clock over
fixed tensors, and returns every artefact as {file name: bytes}. Every signature is Ed25519
(deterministic), every encoding canonical, so the bytes are reproducible by any implementation
that follows docs/formats.md. Regenerate with `python -m computewatch.chip.vectors DIR` (log
version 2, tests/vectors/computewatch/chip/) and `python -m computewatch.chip.vectors DIR 1` (the
same run in log version 1, tests/vectors/computewatch/chip-log-v1/: chip.log and evidence.json).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from computewatch.chip.chip import Chip
from computewatch.chip.chipmaker import Chipmaker
from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.signing import SigningKey
from computewatch.formats.firmware import FirmwarePolicy
from computewatch.formats.schedule import arrivals, commitment, epoch_seed, schedule_key

__all__ = ["VECTOR_INPUTS", "generate"]

VECTOR_INPUTS: dict[str, Any] = {
    "chipmaker_seed": "01" * 32,
    "device_key_seed": "02" * 32,
    "device_secret": "03" * 32,
    "serial": "CW-VECTOR-0001",
    "nonce": "0405060708090a0b0c0d0e0f10111213",
    "snapshots_per_day": 48.0,
    "steps": 24,
    "busy_seconds_per_step": 3600.0,
}


def _tensors() -> list[torch.Tensor]:
    return [
        torch.arange(12, dtype=torch.float32).reshape(3, 4) / 8,
        torch.arange(5, dtype=torch.int64),
        torch.linspace(-1, 1, 6).to(torch.bfloat16),
    ]


def generate(work_dir: str | Path, log_version: int = 2) -> dict[str, bytes]:
    v = VECTOR_INPUTS
    work = Path(work_dir)
    maker = Chipmaker(SigningKey.from_seed(bytes.fromhex(v["chipmaker_seed"])))
    state = maker.manufacture(
        work / "chip",
        serial=str(v["serial"]),
        device_secret=bytes.fromhex(v["device_secret"]),
        device_key=SigningKey.from_seed(bytes.fromhex(v["device_key_seed"])),
    )
    image = maker.sign_firmware(FirmwarePolicy(snapshots_per_day=float(v["snapshots_per_day"]), checkpoint_every=8))
    chip = Chip.open(state, log_version=log_version)
    chip.install_firmware(image)
    chip.boot()
    weights = _tensors()
    chip.attach(weights, work / "storage")
    chip.log_precommitment(bytes(range(32)), "vector-run")
    chip.log_memory_map({"region.00000": "layer.weight", "region.00001": "step", "region.00002": "layer.bias"}, "vector-run")
    copy_outs: dict[str, bytes] = {}
    for step in range(int(v["steps"])):
        weights[0].add_(1.0)
        for rec in chip.step_boundary(step, float(v["busy_seconds_per_step"])):
            copy_outs.setdefault("snapshot.safetensors", rec.path.read_bytes())
    evidence = chip.attest(bytes.fromhex(str(v["nonce"])))
    chip.close()
    key = schedule_key(bytes.fromhex(v["device_secret"]))
    schedule = []
    for epoch in range(3):
        seed = epoch_seed(key, epoch)
        times = arrivals(seed, float(v["snapshots_per_day"]), 0, 86_400 * 10**9)
        schedule.append(
            {
                "epoch": epoch,
                "seed": seed.hex(),
                "commitment": commitment(seed).hex(),
                "rate_per_day": repr(float(v["snapshots_per_day"])),
                "first_arrivals_ns_from_0": [str(t) for t in times[:8]],
                "arrivals_in_first_day": len(times),
            }
        )
    if log_version == 1:
        return {"chip.log": chip.log_path.read_bytes(), "evidence.json": evidence}
    return {
        "inputs.json": canonical_json(v) + b"\n",
        "certificate.json": (state / "certificate.json").read_bytes(),
        "firmware.json": image.to_json(),
        "chip.log": chip.log_path.read_bytes(),
        "evidence.json": evidence,
        "schedule.json": canonical_json(schedule) + b"\n",
        **copy_outs,
    }


def main(argv: list[str]) -> None:
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    version = int(argv[2]) if len(argv) > 2 else 2
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in generate(tmp, version).items():
            (out / name).write_bytes(data)


if __name__ == "__main__":
    main(sys.argv)

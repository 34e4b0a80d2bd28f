"""Attacks on registration by signed lot (docs/formats.md "Lot certificate", docs/registry.md "Lots").

Each one tries to get a chip into the register through a lot it is not part of, or a lot that
the chipmaker did not sign as presented. Caught means the register refused it and registered
nothing of it (`registry.lot-refused`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from computewatch.adversary.suite import Context, Trial, get_attack, register, result_from_trials

__all__: list[str] = []

_CHECK = "registry.lot-refused"
_FAMILY = "lots"
_REF = "§6 (supply chain), docs/registry.md 'Lots'"


def _world(ctx: Context, name: str, seed: int) -> dict[str, Any]:
    from computewatch.crypto.signing import SigningKey
    from computewatch.formats.identity import issue_chip_certificate
    from computewatch.registry import Registry

    def cert(maker: SigningKey, serial: str, k: int) -> bytes:
        device = SigningKey.from_seed(k.to_bytes(4, "big") + bytes([seed % 256]) * 28).public_key
        return issue_chip_certificate(maker, serial, device, "computewatch-sim-h100", 989 * 10**12).to_json()

    maker = SigningKey.from_seed(b"\x41" * 32)
    other = SigningKey.from_seed(b"\x42" * 32)
    reg = Registry.open(f"sqlite:///{ctx.scratch(f'{name}-{seed}') / 'registry.db'}")
    reg.add_chipmaker("maker", maker.public_key)
    reg.add_chipmaker("other-maker", other.public_key)
    certs = [cert(maker, f"CW-LOT-{seed}-{i}", i) for i in range(4)]
    return {"reg": reg, "maker": maker, "other": other, "certs": certs, "cert": cert}


def _trial(attempt: Callable[[], Any], reg: Any) -> Trial:
    before = len(reg.items())
    try:
        attempt()
    except Exception as exc:  # noqa: BLE001 - any refusal counts; the count below proves nothing landed
        caught = len(reg.items()) == before
        return Trial(caught, _CHECK if caught else None, (_CHECK,) if caught else (), str(exc)[:200])
    return Trial(False, None, (), "the register accepted it")


def _run(name: str, make: Callable[[dict[str, Any], int], Callable[[], Any]]) -> Callable[[Context, int, int], Any]:
    def runner(ctx: Context, trials: int, seed: int) -> Any:
        attack = get_attack(name)
        out = []
        for t in range(trials):
            w = _world(ctx, name, seed + t)
            try:
                out.append(_trial(make(w, seed + t), w["reg"]))
            finally:
                w["reg"].close()
        return result_from_trials(attack, out)

    return runner


def _chip_not_in_lot(w: dict[str, Any], seed: int) -> Callable[[], Any]:
    from computewatch.formats.lot import issue_lot

    reg, maker = w["reg"], w["maker"]
    env, proofs = issue_lot(maker, f"LOT-{seed}", "maker", w["certs"])
    stranger = w["cert"](maker, f"CW-STRANGER-{seed}", 99)  # genuine certificate, never in this lot
    return lambda: reg.register_lot_chip(env.to_json(), stranger, proofs[0])


def _forged_manifest(w: dict[str, Any], seed: int) -> Callable[[], Any]:
    import base64

    from computewatch.formats.lot import issue_lot

    reg, maker, certs = w["reg"], w["maker"], w["certs"]
    extra = w["cert"](maker, f"CW-EXTRA-{seed}", 98)
    env, _ = issue_lot(maker, f"LOT-{seed}", "maker", certs)
    doc = json.loads(env.to_json())
    forged, _ = issue_lot(maker, f"LOT-{seed}", "maker", [*certs, extra])  # the tree the cheat wants
    # Keep the genuine signature, swap in the payload that covers the extra chip.
    doc["payload"] = json.loads(forged.to_json())["payload"]
    assert base64.b64decode(doc["payload"]) != env.payload
    return lambda: reg.register_lot(json.dumps(doc).encode(), [*certs, extra], workers=0)


def _foreign_chipmaker(w: dict[str, Any], seed: int) -> Callable[[], Any]:
    from computewatch.formats.lot import issue_lot

    reg, other, certs = w["reg"], w["other"], w["certs"]
    # A registered chipmaker vouches for another chipmaker's chips.
    env, _ = issue_lot(other, f"LOT-{seed}", "other-maker", certs)
    return lambda: reg.register_lot(env.to_json(), certs, workers=0)


def _altered_certificate(w: dict[str, Any], seed: int) -> Callable[[], Any]:
    from computewatch.formats.lot import issue_lot

    reg, maker, certs = w["reg"], w["maker"], w["certs"]
    env, _ = issue_lot(maker, f"LOT-{seed}", "maker", certs)
    # After signing, chip 1's certificate is replaced by one claiming 100x the peak FLOP/s (a
    # validly signed certificate, but not the one the lot covers).
    from computewatch.formats.lot import certificate_claims
    from computewatch.formats.identity import issue_chip_certificate
    from computewatch.crypto.signing import VerifyKey

    c = certificate_claims(certs[1])
    boosted = issue_chip_certificate(maker, c.serial, VerifyKey.from_raw(c.device_key), c.model, c.peak_flops * 100)
    altered = [certs[0], boosted.to_json(), *certs[2:]]
    return lambda: reg.register_lot(env.to_json(), altered, workers=0)


def _duplicate_serial(w: dict[str, Any], seed: int) -> Callable[[], Any]:
    from computewatch.formats.lot import issue_lot

    reg, maker, certs = w["reg"], w["maker"], w["certs"]
    first, _ = issue_lot(maker, f"LOT-{seed}-A", "maker", certs[:2])
    reg.register_lot(first.to_json(), certs[:2], workers=0)
    # A second lot re-uses serial 1 (with another device key: a second chip under one serial).
    twin = w["cert"](maker, f"CW-LOT-{seed}-1", 77)
    second_certs = [certs[2], twin, certs[3]]
    second, _ = issue_lot(maker, f"LOT-{seed}-B", "maker", second_certs)
    return lambda: reg.register_lot(second.to_json(), second_certs, workers=0)


for _name, _summary, _make in (
    ("lot-chip-not-in-lot", "Presents a genuine certificate that is not in the lot with another chip's inclusion proof.",
     _chip_not_in_lot),
    ("lot-manifest-forged", "Keeps a lot manifest's signature and swaps in a payload whose tree adds a chip.",
     _forged_manifest),
    ("lot-foreign-chipmaker", "A registered chipmaker signs a lot of chips another chipmaker certified.",
     _foreign_chipmaker),
    ("lot-certificate-altered", "Replaces a certificate after the lot was signed (re-signed with 100x the peak FLOP/s).",
     _altered_certificate),
    ("lot-duplicate-serial", "A second lot carries a serial already registered from the first (a second chip, one serial).",
     _duplicate_serial),
):
    register(_name, paper_ref=_REF, family=_FAMILY, kind="caught", expected=_CHECK, summary=_summary,
             default_trials=1, max_trials=20)(_run(_name, _make))

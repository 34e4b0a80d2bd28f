"""Attacks on the Verifier's service (docs/service.md): a hostile owner uses the HTTP API to
read what is not its own or to write outside its namespace. Each trial builds a small service
(a fresh SQLite register, two owners) and tries; caught means the service refused.
"""

from __future__ import annotations

import io
import tarfile
from typing import Any

from computewatch.adversary.suite import Context, Trial, get_attack, register, result_from_trials

__all__: list[str] = []


def _service(ctx: Context, name: str) -> Any:
    """A service over a fresh register with the owners `acme` and `beta` (keys by seed)."""
    from fastapi.testclient import TestClient

    from computewatch.crypto.signing import SigningKey
    from computewatch.service import create_app

    root = ctx.scratch(name)
    app = create_app(f"sqlite:///{root / 'register.db'}", root / "data", worker=False)
    keys = {n: SigningKey.from_seed(n.encode().ljust(32, b"\0")) for n in ("acme", "beta")}
    for n, k in keys.items():
        app.state.service.reg.add_owner(n, k.public_key)
    return app, TestClient(app), keys


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@register(
    "service-job-names-another-owners-inputs",
    paper_ref="docs/service.md (verify jobs; trust boundaries)",
    family="service",
    kind="caught",
    expected="service.ownership",
    summary="An owner names another owner's uploaded run (and chip folder) in its own verify job, to read that "
    "owner's serials, entries and keys through the verdict.",
    default_trials=1,
    max_trials=3,
)
def _job_names_other_inputs(ctx: Context, trials: int, seed: int) -> Any:
    from computewatch.service import ServiceClient

    attack = get_attack("service-job-names-another-owners-inputs")
    out = []
    for t in range(trials):
        app, client, keys = _service(ctx, f"job-{seed}-{t}")
        with client:
            reg = app.state.service.reg.register_id
            beta = ServiceClient(client, party="beta", key=keys["beta"], register=reg)
            acme = ServiceClient(client, party="acme", key=keys["acme"], register=reg)
            beta.upload("run", _tar({"manifest.dsse.json": b"{}"})).raise_for_status()
            victim = "inputs/beta/run"
            tries = ({"runs": [victim], "chips": [victim]}, {"runs": ["inputs/acme/../beta/run"], "chips": [victim]})
            answers = [acme.write("/v1/jobs", "verify", body) for body in tries]
        refused = all(r.status_code == 403 and "own inputs" in r.json().get("error", "") for r in answers)
        out.append(Trial(refused, "service.ownership" if refused else None, ("service.ownership",) if refused else (),
                         answers[0].json().get("error", "")))
    return result_from_trials(attack, out)


@register(
    "service-party-name-leaves-its-folder",
    paper_ref="docs/service.md (raw inputs; trust boundaries)",
    family="service",
    kind="caught",
    expected="registry.party-name",
    summary="A party registers under the name '..' (or '.') so that its uploads land outside inputs/ or in another "
    "party's folder.",
    default_trials=1,
    max_trials=3,
)
def _party_name_dots(ctx: Context, trials: int, seed: int) -> Any:
    from computewatch.crypto.signing import SigningKey
    from computewatch.registry.errors import RegistryError

    attack = get_attack("service-party-name-leaves-its-folder")
    out = []
    for t in range(trials):
        app, client, _ = _service(ctx, f"name-{seed}-{t}")
        refused = []
        for name in ("..", ".", "../acme"):
            try:
                app.state.service.reg.add_owner(name, SigningKey.generate().public_key)
            except RegistryError as exc:
                refused.append(str(exc))
        client.close()
        caught = len(refused) == 3
        out.append(Trial(caught, "registry.party-name" if caught else None, ("registry.party-name",) if caught else (),
                         refused[0] if refused else ""))
    return result_from_trials(attack, out)


def _signed_request_trials(ctx: Context, name: str, seed: int, trials: int, attempt: Any) -> Any:
    """Trials of the attack `name`, each on a fresh service with acme's keys: `attempt(client,
    reg, key)` returns (answer, status, reason) for the genuine request (200, "") and each hostile
    one. Caught when the genuine request passes and every hostile one is refused with its status
    and a reason naming the check."""
    attack = get_attack(name)
    out = []
    for t in range(trials):
        app, client, keys = _service(ctx, f"{name}-{seed}-{t}")
        with client:
            answers = attempt(client, app.state.service.reg.register_id, keys["acme"])
        caught = all(r.status_code == status and reason in r.text for r, status, reason in answers)
        by = attack.expected or ""
        out.append(Trial(caught, by if caught else None, (by,) if caught else (),
                         "; ".join(f"{r.status_code} {r.text[:120]}" for r, _, _ in answers)))
    return result_from_trials(attack, out)


@register(
    "service-request-target-altered",
    paper_ref="docs/service.md (signed reads, RFC 9421)",
    family="service",
    kind="caught",
    expected="service.request-signature",
    summary="Someone holding a party's signed read (a proxy, a log) sends its headers with another path or query: "
    "another chip, another page, or the same path spelled with percent-escapes.",
    default_trials=1,
    max_trials=3,
)
def _target_altered(ctx: Context, trials: int, seed: int) -> Any:
    from computewatch.service.statements import read_headers


    def attempt(client: Any, reg: str, key: Any) -> list[Any]:
        genuine = client.get("/v1/chips?limit=10", headers=read_headers("GET", "/v1/chips?limit=10", party="acme", key=key, register=reg))
        out = [(genuine, 200, "")]
        for signed, sent in (("/v1/chips?limit=10", "/v1/chips?limit=11"), ("/v1/chips?limit=10", "/v1/chips"),
                             ("/v1/me", "/v1/runs"), ("/v1/chips", "/v1/%63hips")):
            headers = read_headers("GET", signed, party="acme", key=key, register=reg)
            out.append((client.get(sent, headers=headers), 401, "bad signature"))
        return out

    return _signed_request_trials(ctx, "service-request-target-altered", seed, trials, attempt)


@register(
    "service-signed-read-replayed",
    paper_ref="docs/service.md (replay protection)",
    family="service",
    kind="caught",
    expected="service.nonce",
    summary="A party's signed read, captured on the way, is sent again unchanged (same signature, nonce and target).",
    default_trials=1,
    max_trials=3,
)
def _read_replayed(ctx: Context, trials: int, seed: int) -> Any:
    from computewatch.service.statements import read_headers


    def attempt(client: Any, reg: str, key: Any) -> list[Any]:
        headers = read_headers("GET", "/v1/me", party="acme", key=key, register=reg)
        return [(client.get("/v1/me", headers=headers), 200, ""), (client.get("/v1/me", headers=headers), 403, "replayed")]

    return _signed_request_trials(ctx, "service-signed-read-replayed", seed, trials, attempt)


@register(
    "service-upload-body-swapped",
    paper_ref="docs/service.md (uploads, Content-Digest)",
    family="service",
    kind="caught",
    expected="service.content-digest",
    summary="A party's signed upload has its body swapped for another archive, keeping the signature, or with the "
    "Content-Digest field rewritten to match the new body.",
    default_trials=1,
    max_trials=3,
)
def _body_swapped(ctx: Context, trials: int, seed: int) -> Any:
    from computewatch.service.httpsig import content_digest
    from computewatch.service.statements import read_headers

    genuine, forged = _tar({"manifest.dsse.json": b"{}"}), _tar({"manifest.dsse.json": b"[]"})

    def attempt(client: Any, reg: str, key: Any) -> list[Any]:
        out = []
        for rewrite, reason in ((False, "does not match the body"), (True, "bad signature")):
            headers = read_headers("POST", "/v1/inputs/run", party="acme", key=key, register=reg, body=genuine)
            if rewrite:
                headers["Content-Digest"] = content_digest(forged)
            out.append((client.post("/v1/inputs/run", content=forged, headers=headers), 401, reason))
        headers = read_headers("POST", "/v1/inputs/run", party="acme", key=key, register=reg, body=genuine)
        return [*out, (client.post("/v1/inputs/run", content=genuine, headers=headers), 200, "")]

    return _signed_request_trials(ctx, "service-upload-body-swapped", seed, trials, attempt)


def batch_chip_world(root: Any, steps: int = 6) -> tuple[Any, Any, str, list[list[bytes]]]:
    """A service with one registered on-chip chip (log v2, a checkpoint every 4 entries) that ran
    `steps` steps and stopped cleanly: (app, TestClient, serial, the chip's log split into
    batches, each ending in a signed checkpoint). For the batch attack and its tests."""
    from fastapi.testclient import TestClient

    from computewatch.chip import Chip, provision_chips
    from computewatch.chip.exercise import run_steps, small_shard
    from computewatch.crypto.signing import SigningKey
    from computewatch.formats.chip_entry import parse_entry_line, split_log
    from computewatch.service import create_app

    state = provision_chips(root / "chips", 1, snapshots_per_day=50.0, checkpoint_every=4, secret_seed=b"batch attack")[0]
    chip = Chip.open(state)
    chip.boot()
    chip.attach(small_shard(), root / "storage")
    run_steps(chip, steps, 3600.0)
    chip.close()
    lines, _ = split_log(chip.log_path.read_bytes())
    batches: list[list[bytes]] = [[]]
    for line in lines:
        batches[-1].append(line)
        if parse_entry_line(line)["kind"] == "checkpoint":
            batches.append([])
    batches = [b for b in batches if b]
    app = create_app(f"sqlite:///{root / 'register.db'}", root / "data", worker=False)
    reg = app.state.service.reg
    maker, owner = SigningKey.load(root / "chips" / "chipmaker" / "chipmaker.key"), SigningKey.from_seed(b"acme".ljust(32, b"\0"))
    reg.add_chipmaker("maker", maker.public_key)
    reg.add_owner("acme", owner.public_key)
    serial = reg.register_chip(state)["serial"]
    reg.ship(serial, "acme", maker, owner)
    return app, TestClient(app), serial, batches


def post_batch(client: Any, serial: str, lines: list[bytes]) -> Any:
    """POST the lines as one batch (each ending in a newline) to the chip's batch route."""
    from computewatch.service.bodies import BATCH_TYPE

    return client.post(f"/v1/chips/{serial}/batches", content=b"".join(x + b"\n" for x in lines), headers={"content-type": BATCH_TYPE})


def forged_batches(batch: list[bytes]) -> list[tuple[str, list[bytes]]]:
    """Ways to slip an entry the chip never wrote into a batch that ends in the chip's genuine
    checkpoint: an entry's body altered (the chain after it re-linked, so every `prev` but the
    checkpoint's matches), an entry dropped (the same), an unsigned entry appended after the
    checkpoint, and the checkpoint cut off (the batch's entries then have no signature at all)."""
    import hashlib
    import json

    from computewatch.crypto.canonical import canonical_json_v2

    def relink(entries: list[dict[str, Any]], start_prev: str) -> list[bytes]:
        out, prev = [], start_prev
        for e in entries:
            e = {**e, "prev": prev}
            line = canonical_json_v2(e)
            out.append(line)
            prev = hashlib.sha256(line).hexdigest()
        return out

    entries = [json.loads(line) for line in batch]
    head, cp = entries[:-1], batch[-1]
    altered = [dict(e) for e in head]
    altered[-1]["clock_ns"] = str(int(altered[-1]["clock_ns"]) + 1)  # plausible: only the chain to the checkpoint tells
    dropped = [dict(e) for e in head[:-2] + head[-1:]]
    for k, e in enumerate(dropped):
        e["counter"] = head[0]["counter"] + k
    extra = {**head[-1], "kind": "tamper", "body": {"reason": "none"}, "counter": entries[-1]["counter"] + 1,
             "prev": hashlib.sha256(cp).hexdigest()}
    return [
        ("altered entry", [*relink(altered, head[0]["prev"]), cp]),
        ("dropped entry", [*relink(dropped, head[0]["prev"]), cp]),
        ("unsigned entry after the checkpoint", [*batch, canonical_json_v2(extra)]),
        ("checkpoint cut off", list(batch[:-1])),
    ]


@register(
    "service-batch-forged-entry",
    paper_ref="docs/service.md (batches); paper §4 (b)",
    family="service",
    kind="caught",
    expected="service.batch",
    summary="An owner uploads a chip log v2 batch that ends in the chip's genuine signed checkpoint but holds an entry "
    "the chip never wrote (altered, dropped, appended after the checkpoint, or the checkpoint cut off), hoping "
    "the unsigned entries are acknowledged on the strength of the one signature.",
    default_trials=1,
    max_trials=3,
)
def _batch_forged_entry(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("service-batch-forged-entry")
    out = []
    for t in range(trials):
        app, client, serial, batches = batch_chip_world(ctx.scratch(f"batch-{seed}-{t}"))
        with client:
            post_batch(client, serial, batches[0]).raise_for_status()  # the genuine first batch (boot): forgeries go into the second
            answers = [(what, post_batch(client, serial, lines)) for what, lines in forged_batches(batches[1])]
            stored = app.state.service.logs.count(serial)
        slipped = [f"{what}: HTTP {r.status_code}" for what, r in answers if r.status_code < 400]
        refused = not slipped and stored == len(batches[0])
        out.append(Trial(refused, "service.batch" if refused else None, ("service.batch",) if refused else (),
                         "; ".join(slipped) or f"all {len(answers)} forged batches refused, nothing stored"))
    return result_from_trials(attack, out)

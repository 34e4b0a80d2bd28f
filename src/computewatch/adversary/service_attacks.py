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

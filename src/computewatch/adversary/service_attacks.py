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

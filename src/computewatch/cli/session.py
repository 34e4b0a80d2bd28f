"""`computewatch session`: a dashboard session token for a party of the service (docs/service.md).

It asks the service for its register id (`GET /v1/service`), signs a `session` request with the
party's key (`POST /v1/sessions`) and prints the token: paste it into the dashboard's sign-in
form, or send it as `Authorization: Bearer <token>` to the API and the pages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from computewatch.cli._common import EXIT_FINDING, FLAG, err, fail, guard, print_json

__all__ = ["session"]


def session(
    url: Annotated[str, typer.Option("--url", help="The service, e.g. http://127.0.0.1:8080.")],
    key: Annotated[Path, typer.Option("--key", help="The party's private key (PEM), as registered (or a --verifier-pub's key).")],
    party: Annotated[str | None, typer.Option("--party", help="The party's name (default: the key file's name without .key).")] = None,
    as_json: Annotated[bool, typer.Option("--json", metavar=FLAG, help="Print {token, expires, party, role, login} as JSON (also on failure).")] = False,
) -> None:
    """Sign in to the service's dashboard: prints a session token (valid 12 h by default).
    Creates a session on the service. Exit 1 when the service refuses the key, 2 on unusable
    input or an unreachable service."""
    if not url.startswith(("http://", "https://")):
        fail(f"--url {url}: give the service's address, starting http:// or https://", as_json=as_json)
    name = party or key.name.removesuffix(".key")
    with guard(as_json=as_json):
        from computewatch.crypto.signing import SigningKey

        signer = SigningKey.load(key)
    try:
        import httpx

        from computewatch.service.client import ServiceClient
    except ModuleNotFoundError as exc:
        fail(f"a session needs the service extras ({exc.name} is missing): pip install 'computewatch[service]'", as_json=as_json)
    base = url.rstrip("/")
    try:
        with httpx.Client(base_url=base, timeout=30.0) as http:
            info = http.get("/v1/service")
            if info.status_code != 200 or "register" not in _json(info):
                fail(f"--url {url} is not a computewatch service (GET /v1/service answered HTTP {info.status_code})", as_json=as_json)
            client = ServiceClient(http, party=name, key=signer, register=str(_json(info)["register"]))
            answer = client.write("/v1/sessions", "session", {})
    except httpx.HTTPError as exc:
        fail(f"--url {url}: the service cannot be reached ({type(exc).__name__}: {exc})", as_json=as_json)
    doc = _json(answer)
    if answer.status_code != 200:
        reason = doc.get("error") or f"HTTP {answer.status_code}"
        fail(f"the service refused a session for {name!r}: {reason}", EXIT_FINDING, as_json=as_json)
    doc["login"] = f"{base}/login"
    if as_json:
        print_json(doc)
        return
    typer.echo(doc["token"])
    err.print(f"session of {escape(name)} ({escape(str(doc.get('role')))}) until {doc.get('expires')}: paste the token at "
              f"{escape(doc['login'])}, or send it as 'Authorization: Bearer <token>'", highlight=False)


def _json(response: object) -> dict:
    try:
        doc = response.json()  # type: ignore[attr-defined]
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}

"""`computewatch serve`: the Verifier's HTTP service and dashboard (docs/service.md)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from computewatch.cli._common import FLAG, Command, check_output_dir, check_register, err, fail, guard

__all__ = ["Command", "serve"]


def serve(
    db: Annotated[Optional[str], typer.Option("--db", envvar="COMPUTEWATCH_DB", help="Register database: a SQLite file or a postgresql:// URL (default: computewatch.db in the working directory).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port (0: any free port).")] = 8080,
    data: Annotated[Path, typer.Option("--data", help="The service's folder: its checkpoint key, Provers' raw inputs, verdicts.")] = Path("computewatch-service"),
    verifier_pub: Annotated[Optional[list[Path]], typer.Option("--verifier-pub", help="Public key (PEM) of the Verifier role, named after the file's stem; repeatable.")] = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", metavar=FLAG, help="Do not run verify jobs in this process.")] = False,
    verify_workers: Annotated[int, typer.Option("--verify-workers", min=1, max=256, help="Trusted-cluster jobs a verify job runs at once.")] = 1,
    log_level: Annotated[Literal["critical", "error", "warning", "info", "debug"], typer.Option("--log-level", help="Log level of the service and uvicorn (logs go to stderr).")] = "info",
) -> None:
    """Serve the register over HTTP: chips report entries, Provers and inspectors send signed
    statements, the dashboard shows the regime. Stops on Ctrl-C."""
    from computewatch.crypto.signing import VerifyKey

    check_output_dir(data, "--data")
    verifiers: dict[str, VerifyKey] = {}
    for path in verifier_pub or []:
        with guard():
            verifiers[path.stem] = VerifyKey.load(path)
    # Before anything is created or migrated: the address can be listened on, the register exists.
    _check_listen(host, port)
    with guard():
        check_register(db)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvicorn

        from computewatch.service import create_app
    except ModuleNotFoundError as exc:
        fail(f"the service needs its extras ({exc.name} is missing): pip install 'computewatch[service]'")
    with guard():
        app = create_app(db or "computewatch.db", data, verifiers=verifiers, worker=not no_worker, verify_workers=verify_workers)
    err.print(f"computewatch service on http://{host}:{port} (register {app.state.service.reg.register_id}, data {data})")
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def _check_listen(host: str, port: int) -> None:
    """A host that does not resolve, or a port in use, is one clear line before anything is made."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        fail(f"--host {host}: not an address of this machine ({getattr(exc, 'strerror', None) or exc})")
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a port in TIME_WAIT is free
        try:
            s.bind(address)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")

"""`computewatch serve`: the Verifier's HTTP service and dashboard (docs/service.md)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from computewatch.cli._common import FLAG, Command, check_output_dir, check_register, err, fail, guard

__all__ = ["Command", "serve"]


def serve(
    db: Annotated[str | None, typer.Option("--db", envvar="COMPUTEWATCH_DB", help="Register database: a SQLite file or a postgresql:// URL (default: computewatch.db in the working directory).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port (0: any free port).")] = 8080,
    data: Annotated[Path, typer.Option("--data", help="The service's folder: its checkpoint key, Provers' raw inputs, verdicts.")] = Path("computewatch-service"),
    verifier_pub: Annotated[list[Path] | None, typer.Option("--verifier-pub", help="Public key (PEM) of the Verifier role, named after the file's stem; repeatable.")] = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", metavar=FLAG, help="Do not run verify jobs in this process.")] = False,
    verify_workers: Annotated[int, typer.Option("--verify-workers", min=1, max=256, help="Trusted-cluster jobs a verify job runs at once.")] = 1,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Server processes sharing the port (more than 1: best on PostgreSQL; verify jobs run in the parent).")] = 1,
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
    if workers > 1:
        _serve_workers(db or "computewatch.db", data, verifier_pub or [], verifiers, host, port, workers, not no_worker, verify_workers, log_level)
        return
    with guard():
        app = create_app(db or "computewatch.db", data, verifiers=verifiers, worker=not no_worker, verify_workers=verify_workers)
    from computewatch.service.serving import freeze_heap

    freeze_heap()  # as each `--workers N` process does: no full collection walks the start-up heap
    err.print(f"computewatch service on http://{host}:{port} (register {app.state.service.reg.register_id}, data {data})")
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def _serve_workers(db: str, data: Path, pubs: list[Path], verifiers: dict[str, Any], host: str, port: int, workers: int, run_jobs: bool,
                   verify_workers: int, log_level: str) -> None:
    """`workers` uvicorn processes on one port; this process migrates first and runs verify jobs."""
    import os

    import uvicorn

    from computewatch.service.app import build_service
    from computewatch.service.config import ServiceConfig
    from computewatch.service.serving import CONFIG_ENV, config_for_workers

    with guard():
        os.environ[CONFIG_ENV] = config_for_workers(db, data, pubs, verify_workers)
        svc = build_service(ServiceConfig(db_url=db, data_dir=data, worker=run_jobs, verify_workers=verify_workers,
                                          verifiers=verifiers))
    err.print(f"computewatch service on http://{host}:{port} (register {svc.reg.register_id}, data {data}, {workers} processes)")
    if svc.worker is not None:
        svc.worker.start()
    try:
        uvicorn.run("computewatch.service.serving:app_from_env", factory=True, workers=workers, host=host, port=port,
                    log_level=log_level)
    finally:
        if svc.worker is not None:
            svc.worker.stop()
        svc.logs.close()
        svc.reg.close()


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

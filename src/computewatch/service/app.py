"""`create_app(db_url, data_dir, ...)`: the ASGI application (FastAPI) over the register's database."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from computewatch.crypto.signing import VerifyKey
from computewatch.registry import Registry
from computewatch.service import db as service_db
from computewatch.service.auth import Authenticator
from computewatch.service.checkpoint import NoteSigner, load_service_key
from computewatch.service.commit import GroupCommitter
from computewatch.service.config import ServiceConfig
from computewatch.service.errors import ServiceError
from computewatch.service.jobs import JobStore, Worker
from computewatch.service.logs import ChipLogs
from computewatch.service.state import Service

__all__ = ["API_VERSION", "build_service", "create_app"]

log = logging.getLogger("computewatch.service")

API_VERSION = "1.0.0"
_DESCRIPTION = (
    "The Verifier's service (computewatch): chips report signed log entries, Provers submit hashed transcripts, "
    "explanations and verify jobs, inspectors commit plans and record findings. Writes are signed DSSE statements; "
    "reads are signed or use a session token. See docs/service.md."
)


def build_service(config: ServiceConfig) -> Service:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    reg = Registry.open(config.db_url, clock=config.clock)
    service_db.upgrade(reg.engine)
    engine = reg.engine
    logs = ChipLogs(engine, GroupCommitter(engine))
    jobs = JobStore(engine, config.data_dir)
    clash = sorted(name for name in config.verifiers if name in {p["name"] for p in reg.parties()})
    if clash:
        reg.close()
        from computewatch.registry.errors import RegistryError

        raise RegistryError(f"Verifier key name(s) {', '.join(clash)} are also register parties: a Verifier key must not "
                            "take over a party's identity; rename the key file(s)")
    signer = NoteSigner(load_service_key(config.data_dir), reg.register_id)
    svc = Service(config, reg, Authenticator(engine, reg.register_id, config), logs, jobs, signer)
    if config.worker:
        svc.worker = Worker(jobs, reg, logs, config)
    return svc


def _error(status: int, reason: str, request: Request | None = None) -> JSONResponse:
    # A refused request with a body (too large, unsigned upload, ...) is answered without
    # reading the rest of its body: the connection is closed instead of draining what the
    # client still sends.
    close = status in (400, 413) or (request is not None and request.method in ("POST", "PUT", "PATCH"))
    return JSONResponse({"error": reason, "status": status}, status_code=status, headers={"Connection": "close"} if close else None)


def create_app(
    db_url: str,
    data_dir: str | Path,
    *,
    verifiers: Mapping[str, VerifyKey] | None = None,
    **options: Any,
) -> FastAPI:
    """The app over the register at `db_url` (migrated on start), keeping its files in `data_dir`.
    `verifiers`: name -> public key of the Verifier role; `options`: other `ServiceConfig` fields."""
    config = ServiceConfig(db_url=db_url, data_dir=Path(data_dir), verifiers=dict(verifiers or {}), **options)
    svc = build_service(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        # Requests wait in threads for their group commit; let enough of them wait at once.
        anyio.to_thread.current_default_thread_limiter().total_tokens = max(40, config.request_threads)
        if svc.worker is not None:
            svc.worker.start()
        try:
            yield
        finally:
            if svc.worker is not None:
                svc.worker.stop()
            svc.logs.close()

    from computewatch.service.fastpath import ServiceApp

    # Chip entries are answered before the framework's middleware and routing (the route stays documented).
    app = ServiceApp(title="computewatch service", version=API_VERSION, description=_DESCRIPTION, lifespan=lifespan)
    app.state.service = svc
    _publish_models(app)  # the OpenAPI document is built on first use, after every router is in

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if exc.status >= 500:
            log.error("%s %s: %s", request.method, request.url.path[:200], exc.reason)
        else:
            log.info("%s %s refused %d: %s", request.method, request.url.path[:200], exc.status, exc.reason)
        if request.url.path.startswith("/v1/") or request.url.path == "/healthz":
            return _error(exc.status, exc.reason, request)
        from computewatch.service.dashboard import error_page

        return error_page(request, exc)  # type: ignore[return-value]

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {404: f"no such resource: {request.method} {request.url.path[:200]}",
                  405: f"method {request.method} is not allowed on {request.url.path[:200]}"}.get(exc.status_code, str(exc.detail))
        return _error(exc.status_code, reason, request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path[:200])
        return _error(500, "internal error (the server's log says more)")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.get("/healthz", tags=["public"], summary="Liveness: the database answers")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "register": svc.reg.register_id}

    from computewatch.service import (
        api_challenges,
        api_chips,
        api_exposure,
        api_reads,
        api_uploads,
        api_writes,
        dashboard,
    )

    app.include_router(api_chips.router)
    app.include_router(api_writes.router)
    app.include_router(api_uploads.router)
    app.include_router(api_challenges.router)
    app.include_router(api_reads.router)
    app.include_router(dashboard.router)
    app.include_router(api_exposure.router)
    return app


def _publish_models(app: FastAPI) -> None:
    """The declared request-body models join the OpenAPI document's components."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = plain()
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            from pydantic import BaseModel

            from computewatch.service.models import ACTION_MODELS, HashedTranscriptHead

            models: list[type[BaseModel]] = [*ACTION_MODELS.values(), HashedTranscriptHead]
            for model in models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, sub in schema.pop("$defs", {}).items():
                    schemas.setdefault(name, sub)
                schemas[model.__name__] = schema
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

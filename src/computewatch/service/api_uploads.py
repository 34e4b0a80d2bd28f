"""Raw inputs over HTTP: a Prover uploads a run directory (or a chip state folder) as a tar
archive; it is unpacked under `<data>/inputs/<party>/<name>/` and named in verify jobs.

The upload is signed with the signed-request headers, the signature covering SHA-256 of the
body (docs/service.md). Unpacking refuses absolute names, `..`, links that leave the folder,
devices and other special files (Python's `tarfile` "data" filter), more than `max_members`
members or `max_unpacked` bytes; a refused archive leaves nothing behind."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from computewatch.service.auth import Principal, raw_target
from computewatch.service.errors import ServiceError
from computewatch.service.state import Service

__all__ = ["receive_archive", "router", "signed_upload", "unpack"]

router = APIRouter(tags=["writes"])
log = logging.getLogger("computewatch.service")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_DOC = {"requestBody": {"required": True, "description": "A tar archive (optionally gzip-compressed) of one folder's contents; "
                        "signed per RFC 9421 (Signature-Input, Signature) covering its Content-Digest (RFC 9530, sha-256).",
                        "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}}


def unpack(archive: Path, dest: Path, *, max_members: int, max_unpacked: int) -> int:
    """Unpack `archive` into the new folder `dest` (atomically: a temp folder renamed); returns the member count."""
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    try:
        try:
            with tarfile.open(archive, mode="r:*") as tar:
                members = []
                total = 0
                for m in tar:
                    if m.name.startswith("/") or ".." in PurePosixPath(m.name).parts:
                        raise ServiceError(422, f"archive member {m.name[:200]!r} leaves the folder (absolute or '..')")
                    if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                        raise ServiceError(422, f"archive member {m.name[:200]!r} is a device, FIFO or other special file")
                    members.append(m)
                    total += max(0, m.size)
                    if len(members) > max_members:
                        raise ServiceError(413, f"archive holds more than {max_members} members")
                    if total > max_unpacked:
                        raise ServiceError(413, f"archive unpacks to more than {max_unpacked} bytes")
                tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ServiceError(422, f"not a usable tar archive: {exc}") from None
        os.rename(tmp, dest)
        return len(members)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@router.post("/v1/inputs/{name}", summary="Upload raw inputs (a tar archive of a run directory or chip folder)", openapi_extra=_DOC)
async def upload(name: str, request: Request) -> dict[str, Any]:
    if not _NAME.fullmatch(name):
        raise ServiceError(422, "input name: letters, digits, '.', '_', '-' (at most 100), not starting with a dot or dash")
    svc, who, claimed = await signed_upload(request)
    if not who.is_verifier and who.role != "owner":
        raise ServiceError(403, f"role {who.role!r} may not upload inputs (owners and the Verifier may)")
    inputs = svc.config.data_dir / "inputs"
    folder = inputs / who.name  # a safe name (auth checked it): never '.', '..' or a separator
    dest = folder / name
    if dest.exists():
        raise ServiceError(409, f"input {name!r} of {who.name!r} already exists: choose another name")
    folder.mkdir(parents=True, exist_ok=True)
    count, size = await receive_archive(svc, request, claimed, dest, f"input {name!r} of {who.name!r}")
    log.info("upload inputs/%s/%s: %d members, %d bytes", who.name, name, count, size)
    return {"path": f"inputs/{who.name}/{name}", "members": count, "sha256": claimed, "bytes": size}


async def signed_upload(request: Request) -> tuple[Service, Principal, str]:
    """Who is uploading, settled from the signed headers before a byte of the body is read (an
    anonymous or forged upload is refused without touching the disk), and the claimed SHA-256."""
    svc: Service = request.app.state.service
    limit = svc.config.max_upload
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or len(declared) > 20):
        raise ServiceError(400, "Content-Length is not a number")
    if declared is not None and int(declared) > limit:
        raise ServiceError(413, f"upload of {declared} bytes exceeds the limit of {limit} bytes")
    # The signed target is the raw request target as sent (RFC 9421 "@path"/"@query"), never the
    # percent-decoded one.
    who, claimed = await run_in_threadpool(svc.auth.verify_upload, request.method, raw_target(request.scope), request.headers)
    return svc, who, claimed


async def receive_archive(svc: Service, request: Request, claimed: str, dest: Path, what: str) -> tuple[int, int]:
    """Stream the signed upload's body (its SHA-256 must be the signed `claimed`) and unpack it
    into the new folder `dest`; returns (members, bytes)."""
    limit = svc.config.max_upload
    scratch = svc.config.data_dir / "inputs"
    scratch.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".upload-", dir=scratch)
    tmp = Path(tmp_name)
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ServiceError(413, f"upload exceeds the limit of {limit} bytes")
                digest.update(chunk)
                fh.write(chunk)
        if digest.hexdigest() != claimed:
            raise ServiceError(401, "Content-Digest does not match the body received")
        if dest.exists():
            raise ServiceError(409, f"{what} already exists")
        count = await run_in_threadpool(unpack, tmp, dest, max_members=svc.config.max_members, max_unpacked=svc.config.max_unpacked)
    finally:
        tmp.unlink(missing_ok=True)
    return count, size

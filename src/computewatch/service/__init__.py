"""computewatch.service: the Verifier's HTTP service (ASGI) and dashboard over the registry database.

Chips in report-to-server mode send their log entries here (`HttpTransport`); Provers upload
hashed transcripts, answer the explanation queue and hand raw inputs to verify jobs; inspectors
commit and reveal inspection seeds and record findings; analysts read the dashboard.
Every write is a signed statement checked against the keys the register holds; every read is
scoped to the reader's role. Documentation: docs/service.md. Names are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from computewatch._lazy import lazy_exports

if TYPE_CHECKING:  # the names as the type checker sees them; at run time _WHERE loads them on first use
    from computewatch.service.app import create_app
    from computewatch.service.client import HttpTransport, ServiceClient
    from computewatch.service.config import ServiceConfig
    from computewatch.service.statements import read_headers, signed_request

_WHERE = {
    "HttpTransport": "client",
    "ServiceClient": "client",
    "ServiceConfig": "config",
    "create_app": "app",
    "read_headers": "statements",
    "signed_request": "statements",
}
__all__ = [
    "HttpTransport",
    "ServiceClient",
    "ServiceConfig",
    "create_app",
    "read_headers",
    "signed_request",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

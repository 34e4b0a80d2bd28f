"""computewatch.service: the Verifier's HTTP service (ASGI) and dashboard over the registry database.

Chips in report-to-server mode send their log entries here (`HttpTransport`); Provers upload
hashed transcripts, answer the explanation queue and hand raw inputs to verify jobs; inspectors
commit and reveal inspection seeds and record findings; analysts read the dashboard.
Every write is a signed statement checked against the keys the register holds; every read is
scoped to the reader's role. Documentation: docs/service.md. Names are imported lazily.
"""

from __future__ import annotations

from computewatch._lazy import lazy_exports

_WHERE = {
    "HttpTransport": "client",
    "ServiceClient": "client",
    "ServiceConfig": "config",
    "create_app": "app",
    "read_headers": "statements",
    "signed_request": "statements",
}
__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

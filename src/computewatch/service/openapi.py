"""The service's OpenAPI document, as checked in at docs/openapi.json.

    python -m computewatch.service.openapi docs/openapi.json      # regenerate
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["document", "render"]


def document(app: Any | None = None) -> dict[str, Any]:
    """The OpenAPI document of `app` (default: an app over a throw-away SQLite register)."""
    if app is not None:
        return app.openapi()
    from computewatch.service.app import create_app

    with tempfile.TemporaryDirectory(prefix="computewatch-openapi-") as tmp:
        app = create_app(f"sqlite:///{tmp}/register.db", Path(tmp) / "data", worker=False)
        try:
            return app.openapi()
        finally:
            app.state.service.reg.close()


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render(document())
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

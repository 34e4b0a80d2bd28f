"""Where a benchmark's figures go: printed as JSON and kept in benchmarks/results/NAME.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def publish(name: str, doc: Any) -> None:
    """Print `doc` as indented JSON and write the same text to benchmarks/results/`name`.json."""
    text = json.dumps(doc, indent=2)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(text + "\n")

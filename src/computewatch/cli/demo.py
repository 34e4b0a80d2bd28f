"""`computewatch demo`: the main job, end to end on embedded defaults (local files, CPU)."""

from __future__ import annotations

__all__ = ["demo"]


def demo() -> None:
    """Run the end-to-end demonstration."""
    from rich.console import Console

    Console().print("computewatch demo: being assembled")

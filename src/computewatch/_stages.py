"""Progress reported as `(stage, done, total)` (the Verifier's, the service's) shown one task per
stage: `stages(open_task)` gives that callback and the stack that closes the last task."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

__all__ = ["stages"]

Update = Callable[[int], None]


def stages(open_task: Callable[[str, int], contextlib.AbstractContextManager[Update]]) -> tuple[Callable[[str, int, int], None], contextlib.ExitStack]:
    """`open_task(stage, total)` opens one progress task; a new stage closes the previous one."""
    stack = contextlib.ExitStack()
    current: dict[str, Any] = {}

    def report(stage: str, done: int, total: int) -> None:
        if current.get("stage") != stage:
            stack.close()
            current["stage"] = stage
            current["update"] = stack.enter_context(open_task(stage, max(total, 1)))
        current["update"](done)

    return report, stack

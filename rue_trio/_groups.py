"""Exception groups from hidden nurseries, reduced to what a caller should see."""

from __future__ import annotations

import trio

__all__ = ["single_failure"]


def single_failure(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The only exception in ``group`` that is not a cancellation, if there is exactly one.

    A context manager that hides a nursery raises that one exception as itself, never a
    bare ``ExceptionGroup`` for a single failure (docs/topics/design.md, "Errors are
    local"); with none or several, the caller re-raises the group.
    """
    failures: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        elif not isinstance(exc, trio.Cancelled):
            failures.append(exc)
    return failures[0] if len(failures) == 1 else None

"""Progress reporting and cooperative cancellation for long jobs.

A job reports ``(fraction in [0, 1], message)`` through a :data:`ProgressCallback`
and checks a :class:`CancelToken` between batches; a cancelled job raises
:class:`~RegC2PLib.errors.CancelledError` before writing anything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .errors import CancelledError

ProgressCallback = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    """A progress callback that ignores everything."""


class CancelToken:
    """Thread-safe flag a GUI or signal handler sets to stop a job between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError("cancelled by the user; no output was written")


class ProgressRange:
    """Maps the progress of one step onto the ``[start, end]`` part of the whole job."""

    def __init__(self, callback: ProgressCallback, start: float, end: float) -> None:
        self.callback, self.start, self.end = callback, start, end

    def __call__(self, fraction: float, message: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        self.callback(self.start + (self.end - self.start) * fraction, message)

"""Progress reporting and cooperative cancellation for long jobs.

A job reports ``(fraction in [0, 1], message)`` through a :data:`ProgressCallback`
and checks a :class:`CancelToken` between batches; a cancelled job raises
:class:`~RegC2PLib.errors.CancelledError` before writing anything.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

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
        if self.cancelled:
            raise CancelledError("cancelled by the user; no output was written")


class StopFile(CancelToken):
    """A :class:`CancelToken` that is also cancelled once ``path`` exists or its folder is gone.

    A GUI that runs the job in another process creates the file to stop it cleanly
    between batches; a job whose working folder was removed stops as well.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)

    @property
    def cancelled(self) -> bool:
        return super().cancelled or self.path.exists() or not self.path.parent.is_dir()


class ProgressRange:
    """Maps the progress of one step onto the ``[start, end]`` part of the whole job."""

    def __init__(self, callback: ProgressCallback, start: float, end: float) -> None:
        self.callback, self.start, self.end = callback, start, end

    def __call__(self, fraction: float, message: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        self.callback(self.start + (self.end - self.start) * fraction, message)

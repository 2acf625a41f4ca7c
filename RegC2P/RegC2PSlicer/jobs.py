"""One poller for every background job of the RegC2P modules: progress, completion, and clean ends.

A job is anything with ``poll() -> JobState`` and ``cancel()`` (a translation or a training
run). :class:`JobPoller` polls the jobs it watches from one repeating timer and calls
their ``on_progress(state)`` / ``on_finished(state)`` callbacks, so neither panel nor
logic writes its own timer loop. It also ends jobs that must not outlive their context:

* when the scene closes, jobs marked ``scene_bound`` (a translation writes into the scene
  it was started from) are cancelled;
* when the application quits, every job is cancelled, so no worker process is left
  running (a training run keeps its last periodic checkpoint and can be continued).

:func:`job_poller` is the one instance inside Slicer (a ``qt.QTimer``, hooked to
``slicer.app`` and ``slicer.mrmlScene``); tests build their own with a stand-in timer.
Nothing here imports ``qt`` at module level.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .background import JobState, PolledJob

StateCallback = Callable[[JobState], None]
POLL_INTERVAL_MS = 200


class Timer(Protocol):
    """What the poller needs of a timer: ``start()``, ``stop()``; it calls the poller's ``tick`` on timeout."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class _Watch:
    job: PolledJob
    on_progress: StateCallback | None
    on_finished: StateCallback | None
    scene_bound: bool


class JobPoller:
    """Polls watched jobs every ``interval_ms`` while there are any (see the module docstring).

    ``make_timer(interval_ms, tick)`` returns the :class:`Timer` that calls ``tick``.
    """

    def __init__(self, make_timer: Callable[[int, Callable[[], None]], Timer], interval_ms: int = POLL_INTERVAL_MS) -> None:
        self._watches: list[_Watch] = []
        self._timer = make_timer(interval_ms, self.tick)

    @property
    def jobs(self) -> list[PolledJob]:
        """The jobs still running, oldest first."""
        return [watch.job for watch in self._watches]

    def watch(
        self,
        job: PolledJob,
        on_progress: StateCallback | None = None,
        on_finished: StateCallback | None = None,
        scene_bound: bool = False,
    ) -> PolledJob:
        """Poll ``job`` until it ends; ``scene_bound``: cancel it when the scene closes. Returns ``job``."""
        self._watches.append(_Watch(job, on_progress, on_finished, scene_bound))
        self._timer.start()
        return job

    def tick(self) -> None:
        """Poll every watched job once; report progress, and the outcome of those that ended."""
        for watch in list(self._watches):
            state = watch.job.poll()
            if watch.on_progress is not None:
                watch.on_progress(state)
            if state.finished:
                self._end(watch, state)
        if not self._watches:
            self._timer.stop()

    def cancel(self, job: PolledJob) -> None:
        """Cancel one watched job now; its ``on_finished`` gets the cancelled state."""
        for watch in list(self._watches):
            if watch.job is job:
                job.cancel()
                self._end(watch, job.poll())

    def cancel_all(self, scene_bound_only: bool = False) -> None:
        """Cancel the watched jobs (only the scene-bound ones if asked), newest first."""
        for watch in reversed(list(self._watches)):
            if watch.scene_bound or not scene_bound_only:
                self.cancel(watch.job)

    def on_scene_close(self, *args: Any) -> None:
        """Scene observer: the scene is closing, so jobs that would write into it are cancelled."""
        self.cancel_all(scene_bound_only=True)

    def on_quit(self, *args: Any) -> None:
        """The application is quitting: no worker may outlive it."""
        self.cancel_all()

    def _end(self, watch: _Watch, state: JobState) -> None:
        if watch in self._watches:
            self._watches.remove(watch)
            if watch.on_finished is not None:
                watch.on_finished(state)
        if not self._watches:
            self._timer.stop()


def progress_reporter(progress: Callable[[float, str], None] | None) -> StateCallback | None:
    """An ``on_progress`` callback that passes (fraction, message) to a ``progress(fraction, message)`` callback."""
    if progress is None:
        return None
    return lambda state: progress(state.fraction, state.message)


def process_events_until(done: Callable[[], bool], timeout_s: float) -> bool:
    """Let Slicer process events (timers, callbacks) until ``done()`` or ``timeout_s`` seconds; returns ``done()``.

    For self-tests and scripts that wait on a job watched by :func:`job_poller`.
    """
    import slicer

    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        slicer.app.processEvents()
        time.sleep(0.05)
    return done()


_SHARED: JobPoller | None = None


def job_poller() -> JobPoller:
    """The poller every RegC2P panel and logic shares inside Slicer (made and hooked up on first use)."""
    global _SHARED
    if _SHARED is None:
        import qt
        import slicer

        def make_timer(interval_ms: int, tick: Callable[[], None]) -> Timer:
            timer = qt.QTimer()
            timer.setInterval(interval_ms)
            timer.connect("timeout()", tick)
            return timer

        _SHARED = JobPoller(make_timer)
        slicer.mrmlScene.AddObserver(slicer.mrmlScene.StartCloseEvent, _SHARED.on_scene_close)
        slicer.app.connect("aboutToQuit()", _SHARED.on_quit)
    return _SHARED

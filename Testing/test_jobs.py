"""The one background-job poller of the RegC2P modules, against real workers and a real MRML scene.

It reports progress and the outcome, stops its timer when nothing runs, cancels the
translations (not the training runs) when the scene closes, and every job when the
application quits; inside Slicer it hooks itself to ``slicer.app`` and ``slicer.mrmlScene``
(shown here with stand-ins for ``slicer.app`` and ``qt``).
"""

from __future__ import annotations

import sys
import time
import types

import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from RegC2PSlicer import jobs  # noqa: E402
from RegC2PSlicer.background import JobState  # noqa: E402
from RegC2PSlicer.processing import BackgroundTranslation, RunSettings  # noqa: E402
from RegC2PSlicer.volumes import add_volume_node  # noqa: E402


class FakeTimer:
    """Stands in for qt.QTimer: the test calls ``tick`` itself."""

    def __init__(self, interval_ms, tick) -> None:
        self.interval_ms, self.tick, self.active = interval_ms, tick, False

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    # the qt.QTimer calls jobs.job_poller makes
    def setInterval(self, interval_ms) -> None:
        self.interval_ms = interval_ms

    def connect(self, signal, slot) -> None:
        assert signal == "timeout()"
        self.tick = slot


class TrainingLike:
    """A job that runs until cancelled (like a training run, which no scene owns)."""

    def __init__(self) -> None:
        self.state = JobState("running", 0.1, "training")

    def poll(self) -> JobState:
        return self.state

    def cancel(self) -> None:
        self.state = JobState("cancelled", self.state.fraction, "cancelled")


def _worker_alive(job: BackgroundTranslation) -> bool:
    return job._worker is not None and job._worker._process.poll() is None


@pytest.fixture
def translation(headless, make_ct, small_model_file):
    ct_node = add_volume_node(headless, make_ct((6, 32, 32)), "CT")
    job = BackgroundTranslation(ct_node, None, RunSettings(model=str(small_model_file)))
    job.start()
    yield job
    job.cancel()


def test_poller_reports_progress_and_outcome_then_stops_its_timer(translation):
    poller = jobs.JobPoller(FakeTimer)
    progress, finished = [], []
    poller.watch(translation, jobs.progress_reporter(lambda f, m: progress.append(f)), finished.append, scene_bound=True)
    assert poller._timer.active and poller.jobs == [translation]
    deadline = time.monotonic() + 120
    while not finished and time.monotonic() < deadline:
        poller.tick()
        time.sleep(0.05)
    assert [state.state for state in finished] == ["succeeded"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert not poller._timer.active and poller.jobs == []


def test_closing_the_scene_cancels_translations_but_not_training(headless, translation):
    poller = jobs.JobPoller(FakeTimer)
    headless.AddObserver(headless.StartCloseEvent, poller.on_scene_close)
    training, finished = TrainingLike(), []
    poller.watch(training, on_finished=finished.append)
    poller.watch(translation, on_finished=finished.append, scene_bound=True)
    assert _worker_alive(translation)
    headless.Clear(False)
    assert [state.state for state in finished] == ["cancelled"] and not _worker_alive(translation)
    assert poller.jobs == [training] and training.state.state == "running"


def test_quitting_slicer_cancels_every_job(headless, translation, monkeypatch):
    connected = {}
    app = types.SimpleNamespace(connect=lambda signal, slot: connected.setdefault(signal, slot))
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace(QTimer=lambda: FakeTimer(0, None)))
    monkeypatch.setattr(jobs, "_SHARED", None)
    poller = jobs.job_poller()
    assert jobs.job_poller() is poller and poller._timer.interval_ms == jobs.POLL_INTERVAL_MS
    training, finished = TrainingLike(), []
    poller.watch(training, on_finished=finished.append)
    poller.watch(translation, on_finished=finished.append, scene_bound=True)
    connected["aboutToQuit()"]()
    assert sorted(state.state for state in finished) == ["cancelled", "cancelled"]
    assert not _worker_alive(translation) and poller.jobs == [] and not poller._timer.active

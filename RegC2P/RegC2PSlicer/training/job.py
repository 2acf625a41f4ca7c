"""One training run folder, trained blocking in this process or in a background worker process.

:class:`TrainingJob` trains into a run folder (layout in :mod:`RegC2PLib.training.runner`)
made from scene pairs or a dataset folder (:mod:`.dataset`), or opens an existing one:

* :meth:`TrainingJob.run` — blocking, in this process (scripts, tests);
* :meth:`TrainingJob.start` — in a separate ``python -m RegC2PLib train --resume
  --progress jsonl`` process (``PythonSlicer`` inside Slicer), so Slicer never freezes
  (with ``processes`` > 1 it adds ``--processes N``: torchrun runs N processes, one per GPU);
  a timer calls :meth:`~TrainingJob.poll`; :meth:`~TrainingJob.request_stop` /
  :meth:`~TrainingJob.stop` create ``RUN/STOP`` (the worker stops after its current
  step and keeps its last checkpoint), :meth:`~TrainingJob.cancel` kills the worker.
  :meth:`~TrainingJob.start` (or :meth:`~TrainingJob.run`) again continues the run.

The run folder is opened (``run.json`` with the model and training configs) when the
job is made, so the worker resumes exactly that configuration.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from RegC2PLib.commands.options import option_arguments
from RegC2PLib.errors import InputError
from RegC2PLib.progress import ProgressCallback, no_progress
from RegC2PLib.training.config import RESUME_OVERRIDES, TrainConfig
from RegC2PLib.training.loop import StopRequest, TrainingStopped
from RegC2PLib.training.run_folder import read_run_record
from RegC2PLib.training.runner import MODEL_FILE, RunOptions, open_run, train
from RegC2PLib.training.sources import DataSource

from ..background import JobState, WorkerProcess, wait_for
from .dataset import PairLike, as_pairs, check_dataset, check_study_count, write_pairs
from .settings import TrainingSettings

# The job that last trained each run folder (by resolved path): two trainers on one folder would
# overwrite each other's checkpoints.
_TRAINING: weakref.WeakValueDictionary[str, TrainingJob] = weakref.WeakValueDictionary()


class TrainingJob:
    """One training run folder (``out``), trained blocking or in the background; see the module docstring.

    Make one with :meth:`from_nodes`, :meth:`from_folder` or :meth:`open` (an existing
    run). ``state`` (a :class:`JobState`) says where the background worker stands.
    """

    def __init__(
        self, out: str | Path, temporary_data: Path | None = None, python: str | None = None, processes: int = 1
    ) -> None:
        if processes < 1:
            raise InputError(f"processes must be at least 1 (got {processes})")
        self.out = Path(out)
        self.python = python
        self.processes = processes  # > 1: torchrun runs the worker as that many processes
        self.state = JobState("ready", 0.0, "ready")
        self.overrides: dict[str, Any] = {}
        self._worker: WorkerProcess | None = None
        self._stop_requested = False
        self._temporary_data = temporary_data
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(temporary_data), True) if temporary_data else None

    # ----------------------------------------------------------------- making a job

    @classmethod
    def from_nodes(
        cls,
        pairs: Iterable[PairLike],
        out: str | Path,
        settings: TrainingSettings | None = None,
        dataset_folder: str | Path | None = None,
        python: str | None = None,
    ) -> TrainingJob:
        """Check and write the scene pairs (to ``dataset_folder``, else a temporary folder) and open the run folder.

        A temporary dataset folder is removed when the run has finished (or with
        :meth:`close`); give ``dataset_folder`` to keep the converted pairs (e.g. to
        continue the run in a later Slicer session or evaluate it).
        """
        settings = settings or TrainingSettings()
        pairs = as_pairs(pairs)
        check_study_count(len(pairs), settings, "the selection")
        _check_new_run_folder(Path(out), settings)
        temporary = None
        if dataset_folder is None:
            temporary = Path(tempfile.mkdtemp(prefix="RegC2P-pairs-"))
            dataset_folder = temporary
        try:
            data = write_pairs(pairs, dataset_folder)
            job = cls(out, temporary, python, settings.processes)
            job._open(data, settings, f"RegC2PTraining: {len(pairs)} CT/PET pairs from the scene")
        except BaseException:
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)
            raise
        return job

    @classmethod
    def from_folder(
        cls,
        data: str | Path | Sequence[DataSource],
        out: str | Path,
        settings: TrainingSettings | None = None,
        python: str | None = None,
    ) -> TrainingJob:
        """Check the dataset folder (``docs/datasets.md``), or each of several weighted
        :class:`~RegC2PLib.training.sources.DataSource`, and open a new run folder ``out`` on them."""
        settings = settings or TrainingSettings()
        sources = [DataSource(Path(data))] if isinstance(data, (str, Path)) else list(data)
        if not sources:
            raise InputError("give at least one dataset folder")
        for source in sources:
            check_dataset(source.path, settings)
        _check_new_run_folder(Path(out), settings)
        job = cls(out, None, python, settings.processes)
        folders = ", ".join(str(s.path) for s in sources)
        job._open(sources, settings, f"RegC2PTraining: dataset folder{'s' if len(sources) > 1 else ''} {folders}")
        return job

    @classmethod
    def open(
        cls, out: str | Path, overrides: Mapping[str, Any] | None = None, python: str | None = None, processes: int = 1
    ) -> TrainingJob:
        """An existing run folder, to continue (with any number of ``processes``); ``overrides``
        may change the fields in :data:`~RegC2PLib.training.config.RESUME_OVERRIDES`."""
        out = Path(out)
        if not (out / "run.json").is_file():
            raise InputError(f"{out} is not a RegC2P run folder (no run.json); start a new run instead")
        job = cls(out, None, python, processes)
        job.set_overrides(overrides or {})
        for data in job.data_folders:
            if not data.is_dir():
                raise InputError(
                    f"the run's dataset folder {data} no longer exists (converted scene pairs in a temporary folder are "
                    "removed with their job); continue with that job's start(), or start a new run with a dataset folder to keep"
                )
        return job

    def set_overrides(self, overrides: Mapping[str, Any]) -> None:
        """Change fields in :data:`~RegC2PLib.training.config.RESUME_OVERRIDES` for the next :meth:`start` or :meth:`run`."""
        unknown = sorted(set(overrides) - set(RESUME_OVERRIDES))
        if unknown:
            raise InputError(f"a run can only change {', '.join(RESUME_OVERRIDES)} when continued, not {', '.join(unknown)}")
        self.overrides.update(overrides)

    def _open(self, data: Path | Sequence[DataSource], settings: TrainingSettings, command: str) -> None:
        open_run(RunOptions(self.out, data, settings.model, settings.train, command=command), settings.processes)

    # ----------------------------------------------------------------- results

    @property
    def model_path(self) -> Path | None:
        """The trained model file once the run has finished, else None."""
        path = self.out / MODEL_FILE
        return path if path.is_file() else None

    @property
    def data_folders(self) -> tuple[Path, ...]:
        """The dataset folders the run trains on (from ``run.json``, validated: a damaged one is a one-line error)."""
        return tuple(s.path for s in read_run_record(self.out).sources)

    @property
    def data_folder(self) -> Path:
        """The (first) dataset folder the run trains on."""
        return self.data_folders[0]

    # ----------------------------------------------------------------- blocking

    def run(
        self,
        progress: ProgressCallback | None = None,
        stop: StopRequest | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> Path:
        """Train (or continue) in this process until done; returns the model file.

        ``progress(fraction, message)``; ``stop`` (default: ``RUN/STOP`` appears) ends
        the run after the current step with :class:`~RegC2PLib.training.loop.TrainingStopped`,
        keeping the last checkpoint. ``notify(text)`` gets the data summary. Several
        ``processes`` train in a background worker (:meth:`start`) that this waits for.
        """
        if self.processes > 1:
            return self._run_in_background(progress or no_progress, stop)
        self._claim_run_folder()
        options = RunOptions(self.out, resume=True, resume_overrides=self.overrides)
        try:
            model = train(options, progress or no_progress, stop, notify or (lambda message: None))
        except TrainingStopped as exc:
            self.state = JobState("stopped", 0.0, str(exc))
            raise
        self.state = JobState("succeeded", 1.0, f"done: {model}")
        self.close()
        return model

    def _run_in_background(self, progress: ProgressCallback, stop: StopRequest | None) -> Path:
        self.start()
        while not self.poll().finished:
            if stop is not None and stop():
                self.request_stop()
            progress(self.state.fraction, self.state.message)
            time.sleep(0.2)
        if self.state.state == "stopped":
            raise TrainingStopped(self.state.message)
        if self.state.state != "succeeded" or self.model_path is None:
            raise InputError(self.state.error or self.state.message)
        return self.model_path

    def _claim_run_folder(self) -> None:
        """Refuse to train while this job, or another job of this process on the same run folder, trains."""
        key = str(self.out.resolve())
        other = _TRAINING.get(key)
        if other is not None and other.running:
            raise InputError(f"run {self.out} is already training in the background; stop or cancel that job first")
        _TRAINING[key] = self

    # ----------------------------------------------------------------- background

    @property
    def running(self) -> bool:
        return self._worker is not None and self.state.state == "running"

    def start(self) -> None:
        """Start (or continue) the run in a background process; returns at once."""
        self._claim_run_folder()
        arguments = ["train", "--out", str(self.out), "--resume", "--progress", "jsonl"]
        arguments += option_arguments(TrainConfig, self.overrides)
        if self.processes > 1:
            arguments += ["--processes", str(self.processes)]
        self._stop_requested = False
        (self.out / "STOP").unlink(missing_ok=True)
        self._worker = WorkerProcess(arguments, self.out, "training", self.python)
        self._worker.start()
        self.state = JobState("running", 0.0, "starting")

    def poll(self) -> JobState:
        """Progress so far (``state``, ``fraction``, ``message``); the outcome once the worker has ended."""
        worker = self._worker
        if worker is None or self.state.finished:
            return self.state
        returncode = worker.poll()
        if returncode is None:
            if self._stop_requested and not (self.out / "STOP").exists():
                (self.out / "STOP").touch()  # the worker removes a STOP it finds when it starts
            self.state = JobState("running", worker.fraction, worker.message, seconds_left=worker.seconds_left)
            return self.state
        details = worker.stderr
        (self.out / "STOP").unlink(missing_ok=True)
        if returncode == 0 and self.model_path is not None:
            self.state = JobState("succeeded", 1.0, f"done: {self.model_path}", details=details)
            self.close()
        elif returncode == 130:
            stopped = next((line for line in reversed(details.splitlines()) if line.startswith("regc2p: stopped")), "")
            message = stopped.removeprefix("regc2p: ").replace("continue with --resume", "start again to continue")
            self.state = JobState("stopped", worker.fraction, message or "stopped; start again to continue", details=details)
        else:
            self.state = JobState("failed", worker.fraction, "failed", error=worker.error_line(returncode), details=details)
        return self.state

    def request_stop(self) -> None:
        """Ask the worker to stop after its current step (creates ``RUN/STOP``); returns at once."""
        if not self.running:
            return
        self._stop_requested = True
        (self.out / "STOP").touch()

    def stop(self, timeout: float | None = 600.0) -> JobState:
        """Stop cleanly and wait (last checkpoint kept; start again to continue); kills after ``timeout`` s."""
        self.request_stop()
        return self.wait(timeout)

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> JobState:
        """Poll until the worker ends (scripts, tests); cancels after ``timeout`` s."""
        return wait_for(self, timeout, interval)

    def cancel(self) -> None:
        """Kill the worker now; the run keeps its last periodic checkpoint (start again to continue)."""
        if not self.running or self._worker is None:
            return
        self._worker.terminate()
        (self.out / "STOP").unlink(missing_ok=True)
        self.state = JobState("cancelled", self.state.fraction, "cancelled; start again to continue from the last checkpoint")

    def close(self) -> None:
        """Kill a running worker and remove the temporary dataset folder (the run folder stays)."""
        self.cancel()
        if self._cleanup is not None:
            self._cleanup()


def _check_new_run_folder(out: Path, settings: TrainingSettings) -> None:
    """Refuse an occupied run folder before converting any volume (the runner checks again)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(
            f"run folder {out} already exists and is not empty; continue it with TrainingJob.open or choose a new folder"
        )
    if settings.train.stage == "2":
        raise InputError("stage 2 needs a run whose stage 1 is trained: open that run folder and continue with stage 2")

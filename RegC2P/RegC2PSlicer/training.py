"""Training RegC2P from Slicer: CT/PET volume nodes in the scene, or a dataset folder.

Scene path: each (CT node, PET node[, aligned PET node]) pair is checked and written
with its exact geometry into a dataset folder (``pair_01/ct.nrrd``, ``pet.nrrd``,
``pet_aligned.nrrd``, plus ``pairs.json`` naming the nodes) — a temporary folder unless
one is given. Folder path: a dataset folder as in ``docs/datasets.md``. Either way
:class:`TrainingJob` then trains into a run folder (layout in
:mod:`RegC2PLib.training.runner`):

* :meth:`TrainingJob.run` — blocking, in this process (scripts, tests);
* :meth:`TrainingJob.start` — in a separate ``python -m RegC2PLib train --resume
  --progress jsonl`` process (``PythonSlicer`` inside Slicer), so Slicer never freezes;
  a timer calls :meth:`~TrainingJob.poll`; :meth:`~TrainingJob.request_stop` /
  :meth:`~TrainingJob.stop` create ``RUN/STOP`` (the worker stops after its current
  step and keeps its last checkpoint), :meth:`~TrainingJob.cancel` kills the worker.
  :meth:`~TrainingJob.start` (or :meth:`~TrainingJob.run`) again continues the run.

The run folder is opened (``run.json`` with the model and training configs) when the
job is made, so the worker resumes exactly that configuration. Volume nodes are only read.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import SimpleITK as sitk
import slicer

from RegC2PLib.config import ModelConfig, preset
from RegC2PLib.data.studies import check_overlap, check_pet_suv, discover_studies
from RegC2PLib.errors import InputError
from RegC2PLib.model_file import read_config
from RegC2PLib.progress import ProgressCallback, no_progress
from RegC2PLib.training.config import RESUME_OVERRIDES, TrainConfig
from RegC2PLib.training.data_access import is_slice_layout
from RegC2PLib.training.loop import StopRequest, TrainingStopped
from RegC2PLib.training.runner import MODEL_FILE, RunOptions, open_run, train
from RegC2PLib.volume_io import check_ct

from .background import JobState, WorkerProcess, wait_for
from .volumes import check_scalar_volume, image_from_volume_node

# The split gives validation and test one study each only from three studies on
# (RegC2PLib.data.split.split_studies); with fewer, every study trains and nothing validates.
MIN_STUDIES_WITH_VALIDATION = 3
ROLE_FILES = {"ct": "ct.nrrd", "pet": "pet.nrrd", "pet_aligned": "pet_aligned.nrrd"}
PAIRS_FILE = "pairs.json"
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class TrainingSettings:
    """How to train: network sizes (``model``), schedule and losses (``train``).

    ``require_validation``: refuse fewer than 3 studies (the split then has no
    validation or test study, so no best checkpoint is chosen); ``False`` trains on all.
    """

    model: ModelConfig = field(default_factory=lambda: preset("small"))
    train: TrainConfig = field(default_factory=TrainConfig)
    require_validation: bool = True

    @classmethod
    def from_preset(cls, name: str = "small", image_size: int | None = None, **train: Any) -> TrainingSettings:
        """Settings from a network preset, an optional slice size M (pixels) and TrainConfig fields."""
        try:
            model = preset(name)
            if image_size:
                model = model.with_changes(image_size=int(image_size))
            return cls(model, TrainConfig(**train))
        except (TypeError, ValueError) as exc:
            raise InputError(f"invalid training settings: {exc}") from exc

    @classmethod
    def fine_tuning(cls, model_path: str | Path, **train: Any) -> TrainingSettings:
        """Settings that start G (and F) from a trained model file, with its network sizes."""
        model = read_config(model_path)
        try:
            return cls(model, TrainConfig(init_from=str(Path(model_path).resolve()), **train))
        except (TypeError, ValueError) as exc:
            raise InputError(f"invalid training settings: {exc}") from exc


@dataclass(frozen=True)
class TrainingPair:
    """One study from the scene: CT (HU), PET (SUVbw, may be misaligned), optional aligned PET (SUVbw).

    ``name`` is the study folder name (default ``pair_01``, ``pair_02``, ...).
    """

    ct: slicer.vtkMRMLScalarVolumeNode
    pet: slicer.vtkMRMLScalarVolumeNode
    pet_aligned: slicer.vtkMRMLScalarVolumeNode | None = None
    name: str | None = None

    def nodes(self) -> dict[str, slicer.vtkMRMLScalarVolumeNode]:
        """{role: node} for the roles present."""
        found = {"ct": self.ct, "pet": self.pet, "pet_aligned": self.pet_aligned}
        return {role: node for role, node in found.items() if node is not None or role != "pet_aligned"}


# typing.Union: this alias is evaluated at import, and Slicer 5.8's Python 3.9 has no `X | Y` for types.
PairLike = Union[TrainingPair, Sequence[Any]]


def as_pairs(pairs: Iterable[PairLike]) -> list[TrainingPair]:
    """Pairs from :class:`TrainingPair` objects or ``(ct, pet[, pet_aligned])`` tuples, named and checked.

    Refuses (one line, naming the pair) anything but scalar volumes, a node used twice,
    a PET under another transform than its CT, and duplicate or unusable names.
    """
    result: list[TrainingPair] = []
    items = list(pairs)
    width = max(2, len(str(len(items))))
    for number, item in enumerate(items, 1):
        if not isinstance(item, TrainingPair):
            if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or not 2 <= len(item) <= 3:
                raise InputError(f"pair {number} is not (CT, PET) or (CT, PET, aligned PET) volume nodes")
            item = TrainingPair(*item)
        name = item.name or f"pair_{number:0{width}d}"
        if not _STUDY_NAME.match(name):
            raise InputError(f"pair {number}: study name {name!r} must be letters, digits, '_', '-' or '.'")
        result.append(TrainingPair(item.ct, item.pet, item.pet_aligned, name))
    if not result:
        raise InputError("no CT/PET pairs given; select at least one CT volume and its PET")
    names = [pair.name for pair in result]
    if len(set(names)) != len(names):
        raise InputError(f"two pairs have the same study name ({', '.join(sorted({n for n in names if names.count(n) > 1}))})")
    seen: dict[str, str] = {}
    for pair in result:
        for role, node in pair.nodes().items():
            what = {"ct": "CT", "pet": "PET", "pet_aligned": "aligned PET"}[role]
            try:
                check_scalar_volume(node, what)
            except InputError as exc:
                raise InputError(f"{pair.name}: {exc}") from None
            if node.GetID() in seen:
                raise InputError(
                    f"{pair.name}: volume {node.GetName()!r} is already used in {seen[node.GetID()]}; "
                    "each volume belongs to one pair"
                )
            seen[node.GetID()] = pair.name
            if role != "ct" and _transform_id(node) != _transform_id(pair.ct):
                raise InputError(
                    f"{pair.name}: {what} {node.GetName()!r} is under another transform than CT {pair.ct.GetName()!r}; "
                    "harden the transforms first (Data module: right-click, Harden transform)"
                )
    return result


def _transform_id(node: slicer.vtkMRMLScalarVolumeNode) -> str | None:
    parent = node.GetParentTransformNode()
    return parent.GetID() if parent is not None else None


def check_pet(image: sitk.Image, what: str = "PET") -> None:
    """Refuse a PET that is not a 3D scalar volume or whose values are not plausible SUVs."""
    check_pet_suv(image, what)


def write_pairs(pairs: Iterable[PairLike], folder: str | Path) -> Path:
    """Write the pairs as a dataset folder (one study folder each) with the nodes' exact geometry.

    ``folder`` must be new or empty. Each study gets ``ct.nrrd`` (CT voxel type kept),
    ``pet.nrrd`` and optionally ``pet_aligned.nrrd`` (voxel type kept), in LPS with the
    nodes' spacing (mm), origin and directions; ``pairs.json`` records which nodes
    made which study. Everything is checked before anything is written.
    """
    checked = as_pairs(pairs)
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"dataset folder {folder} already exists and is not empty; choose a new or empty folder")
    for pair in checked:  # cheap checks of every pair first, so nothing is half written
        _check_pair_images(pair)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    record = []
    try:
        for pair in checked:
            study = folder / pair.name
            study.mkdir()
            entry: dict[str, str] = {"study": pair.name}
            for role, node in pair.nodes().items():
                image = image_from_volume_node(node)
                sitk.WriteImage(image, str(study / ROLE_FILES[role]), False)
                entry[role] = node.GetName()
                entry[f"{role}_id"] = node.GetID()
            record.append(entry)
        (folder / PAIRS_FILE).write_text(json.dumps({"pairs": record}, indent=1) + "\n")
    except BaseException:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            for child in folder.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise
    return folder


def _check_pair_images(pair: TrainingPair) -> None:
    try:
        ct = image_from_volume_node(pair.ct)
        check_ct(ct)
        for role, node in pair.nodes().items():
            if role == "ct":
                continue
            what = "PET" if role == "pet" else "aligned PET"
            image = image_from_volume_node(node)
            check_pet(image, what)
            check_overlap(ct, image, what)
    except InputError as exc:
        raise InputError(f"{pair.name}: {exc}") from None


def check_study_count(count: int, settings: TrainingSettings, where: str) -> None:
    """Refuse too few studies for a train/validation/test split (when ``require_validation``)."""
    if count < 1:
        raise InputError(f"{where} holds no usable study; each study needs a CT and a PET")
    if settings.require_validation and count < MIN_STUDIES_WITH_VALIDATION:
        raise InputError(
            f"{where} holds {count} stud{'y' if count == 1 else 'ies'}; training with validation needs at least "
            f"{MIN_STUDIES_WITH_VALIDATION} (train, validation and test by study): add pairs, or set "
            "require_validation=False to train on all of them without validation"
        )


def check_dataset(data: str | Path, settings: TrainingSettings) -> Path:
    """The dataset folder, after checking it holds enough usable studies (or is a slice layout)."""
    data = Path(data)
    if not data.is_dir():
        raise InputError(f"dataset folder {data} does not exist")
    if is_slice_layout(data):
        return data
    studies, skipped = discover_studies(data)
    if not studies and skipped:
        raise InputError(f"dataset folder {data} holds no usable study ({skipped[0].name}: {skipped[0].reason})")
    check_study_count(len(studies), settings, f"dataset folder {data}")
    return data


class TrainingJob:
    """One training run folder (``out``), trained blocking or in the background; see the module docstring.

    Make one with :meth:`from_nodes`, :meth:`from_folder` or :meth:`open` (an existing
    run). ``state`` (a :class:`JobState`) says where the background worker stands.
    """

    def __init__(self, out: str | Path, temporary_data: Path | None = None, python: str | None = None) -> None:
        self.out = Path(out)
        self.python = python
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
            job = cls(out, temporary, python)
            job._open(data, settings, f"RegC2PTraining: {len(pairs)} CT/PET pairs from the scene")
        except BaseException:
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)
            raise
        return job

    @classmethod
    def from_folder(
        cls, data: str | Path, out: str | Path, settings: TrainingSettings | None = None, python: str | None = None
    ) -> TrainingJob:
        """Check the dataset folder (``docs/datasets.md``) and open a new run folder ``out`` on it."""
        settings = settings or TrainingSettings()
        data = check_dataset(data, settings)
        _check_new_run_folder(Path(out), settings)
        job = cls(out, None, python)
        job._open(data, settings, f"RegC2PTraining: dataset folder {data}")
        return job

    @classmethod
    def open(cls, out: str | Path, overrides: Mapping[str, Any] | None = None, python: str | None = None) -> TrainingJob:
        """An existing run folder, to continue; ``overrides`` may change stage, epochs, refiner_epochs, max_steps, keep."""
        out = Path(out)
        if not (out / "run.json").is_file():
            raise InputError(f"{out} is not a RegC2P run folder (no run.json); start a new run instead")
        job = cls(out, None, python)
        job.set_overrides(overrides or {})
        data = job.data_folder
        if not data.is_dir():
            raise InputError(
                f"the run's dataset folder {data} no longer exists (converted scene pairs in a temporary folder are removed "
                "with their job); continue with that job's start(), or start a new run with a dataset folder to keep"
            )
        return job

    def set_overrides(self, overrides: Mapping[str, Any]) -> None:
        """Change stage, epochs, refiner_epochs, max_steps or keep for the next :meth:`start` or :meth:`run`."""
        unknown = sorted(set(overrides) - set(RESUME_OVERRIDES))
        if unknown:
            raise InputError(f"a run can only change {', '.join(RESUME_OVERRIDES)} when continued, not {', '.join(unknown)}")
        self.overrides.update(overrides)

    def _open(self, data: Path, settings: TrainingSettings, command: str) -> None:
        open_run(RunOptions(data, self.out, settings.model, settings.train, command=command))

    # ----------------------------------------------------------------- results

    @property
    def model_path(self) -> Path | None:
        """The trained model file once the run has finished, else None."""
        path = self.out / MODEL_FILE
        return path if path.is_file() else None

    @property
    def data_folder(self) -> Path:
        """The dataset folder the run trains on (from ``run.json``)."""
        return Path(json.loads((self.out / "run.json").read_text())["data"])

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
        keeping the last checkpoint. ``notify(text)`` gets the data summary.
        """
        if self.running:
            raise InputError(f"run {self.out} is already training in the background")
        # On resume the configs come from run.json; the two given here are not used.
        options = RunOptions(None, self.out, preset("small"), TrainConfig(), resume=True, resume_overrides=self.overrides)
        try:
            model = train(options, progress or no_progress, stop, notify or (lambda message: None))
        except TrainingStopped as exc:
            self.state = JobState("stopped", 0.0, str(exc))
            raise
        self.state = JobState("succeeded", 1.0, f"done: {model}")
        self.close()
        return model

    # ----------------------------------------------------------------- background

    @property
    def running(self) -> bool:
        return self._worker is not None and self.state.state == "running"

    def start(self) -> None:
        """Start (or continue) the run in a background process; returns at once."""
        if self.running:
            raise InputError(f"run {self.out} is already training")
        arguments = ["train", "--out", str(self.out), "--resume", "--progress", "jsonl"]
        for name, value in self.overrides.items():
            arguments += [f"--{name.replace('_', '-')}", str(value)]
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


__all__ = [
    "MIN_STUDIES_WITH_VALIDATION",
    "TrainingJob",
    "TrainingPair",
    "TrainingSettings",
    "as_pairs",
    "check_dataset",
    "check_pet",
    "check_study_count",
    "write_pairs",
]

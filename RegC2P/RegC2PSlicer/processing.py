"""Running a translation from the scene: blocking in-process, or as a background process.

* :func:`process` — blocking, in this process (console, scripts, tests): CT node ->
  :func:`RegC2PLib.inference.translate_volume` -> output node, fused display.
* :class:`BackgroundTranslation` — for the panel: the CT is written to a temporary
  file and ``python -m RegC2PLib translate --progress jsonl`` runs in a separate
  process (``PythonSlicer`` inside Slicer), so Slicer stays responsive. The panel calls
  :meth:`~BackgroundTranslation.poll` from a timer; progress arrives as JSON lines on
  the process's stdout; :meth:`~BackgroundTranslation.cancel` ends the worker tree.

Either way the CT node is only read and the scene is changed only when the PET is
ready: the user keeps working meanwhile, and Cancel or a failure leaves every node and
view as it is then. What writing the result changes is recorded just before it
(:class:`~RegC2PSlicer.scene_state.SceneSnapshot`) and put back only if writing fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk
import slicer

from RegC2PLib.commands.options import as_arguments
from RegC2PLib.errors import InputError, RegC2PError, one_line
from RegC2PLib.inference import TranslationOptions, translate_volume
from RegC2PLib.inference.translate import PRECISION_KEY
from RegC2PLib.model_file import LoadedModel, file_sha256, load_model, read_config
from RegC2PLib.progress import CancelToken, ProgressCallback, no_progress
from RegC2PLib.volume_io import check_ct

from .background import MODULE_DIR, JobState, WorkerProcess, python_executable, wait_for
from .models import resolve_model_path
from .output import PetDisplay, check_output_node, show_pet, store_pet
from .scene_state import SceneSnapshot
from .volumes import check_scalar_volume, image_from_volume_node

# Created in the job's folder to stop the worker cleanly (``regc2p translate --stop-file``).
STOP_FILE = "STOP"

__all__ = ["MODULE_DIR", "BackgroundTranslation", "JobState", "PetDisplay", "RunSettings", "process", "python_executable"]


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs besides the CT and output nodes.

    ``model``: a model file path, or ``None`` for the default model (bundled, else the
    user's first). ``translation``: the library's translation options (refinement,
    window/stride — ``None`` means the model's —, device, batch size, precision), checked
    against the model before any work. ``display``: how the PET is shown; ``show``
    False leaves the slice views and the PET's display alone.
    """

    model: str | os.PathLike[str] | None = None
    translation: TranslationOptions = field(default_factory=TranslationOptions)
    display: PetDisplay = field(default_factory=PetDisplay)
    show: bool = True

    def cli_arguments(self) -> list[str]:
        """The ``regc2p translate`` options for :attr:`translation`."""
        return as_arguments(self.translation)


def _provenance(model_path: Path | None, sha256: str, settings: RunSettings, pet: sitk.Image) -> dict[str, str]:
    """What made the PET: the model, the refinement and the precision the networks ran in."""
    options = settings.translation
    return {
        "Model": model_path.name if model_path else "(in memory)",
        "ModelSHA256": sha256,
        "Precision": pet.GetMetaData(PRECISION_KEY) if pet.HasMetaDataKey(PRECISION_KEY) else "unknown",
        "Refine": options.refine,
        "Window": str(options.window or "model default"),
        "Stride": str(options.stride or "model default"),
    }


def _finish(ct_node, output_node, pet: sitk.Image, settings: RunSettings, provenance: dict[str, str]):
    """Write the PET into the scene: the only step that changes it. What is about to change is
    recorded just before and put back if writing fails, so nothing else in the scene is touched."""
    snapshot = SceneSnapshot.capture(ct_node.GetScene(), (output_node,))
    try:
        node = store_pet(ct_node, pet, output_node, provenance)
        if settings.show:
            show_pet(ct_node, node, settings.display)
        return node
    except BaseException:
        snapshot.restore()
        raise


def process(
    ct_node: slicer.vtkMRMLScalarVolumeNode,
    output_node: slicer.vtkMRMLScalarVolumeNode | None = None,
    settings: RunSettings | None = None,
    loaded_model: LoadedModel | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> slicer.vtkMRMLScalarVolumeNode:
    """Translate the CT node (HU) into a synthetic PET (SUV) on its grid; blocking.

    Returns the output node (``output_node``, or a new node named after the CT). The scene
    is changed only once the PET is computed; an error or a cancellation before leaves it
    as it is, an error while writing puts back what the write changed.
    """
    settings = settings or RunSettings()
    progress = progress or no_progress
    check_scalar_volume(ct_node)
    check_output_node(ct_node, output_node)
    settings.display.check()
    if loaded_model is None:
        model_path = resolve_model_path(settings.model)
        progress(0.0, f"loading model {model_path.name}")
        loaded_model = load_model(model_path)
    ct = image_from_volume_node(ct_node)
    pet = translate_volume(ct, loaded_model, settings.translation, progress, cancel)
    if cancel is not None:
        cancel.raise_if_cancelled()
    provenance = _provenance(loaded_model.path, loaded_model.sha256, settings, pet)
    return _finish(ct_node, output_node, pet, settings, provenance)


@dataclass
class BackgroundTranslation:
    """One translation in a separate process, polled by the panel (see module docstring)."""

    ct_node: slicer.vtkMRMLScalarVolumeNode
    output_node: slicer.vtkMRMLScalarVolumeNode | None = None
    settings: RunSettings = field(default_factory=RunSettings)
    python: str | None = None
    result_node: slicer.vtkMRMLScalarVolumeNode | None = None
    _state: JobState = field(default_factory=JobState)
    _worker: WorkerProcess | None = None
    _workdir: Path | None = None
    _model_path: Path | None = None
    _model_sha256: str = ""

    def start(self) -> None:
        """Check the inputs, write the CT to a temporary file and start the worker process."""
        check_scalar_volume(self.ct_node)
        check_output_node(self.ct_node, self.output_node)
        self.settings.display.check()
        self._model_path = resolve_model_path(self.settings.model)
        config = read_config(self._model_path)  # a one-line error now for a missing or foreign file
        self.settings.translation.validate(config)
        ct = image_from_volume_node(self.ct_node)
        check_ct(ct)
        self._model_sha256 = file_sha256(self._model_path)
        self._workdir = Path(tempfile.mkdtemp(prefix="RegC2P-"))
        try:
            ct_file = self._workdir / "ct.nrrd"
            sitk.WriteImage(ct, str(ct_file), False)
            del ct
            arguments = ["translate", "--ct", str(ct_file), "--model", str(self._model_path)]
            arguments += ["--out", str(self._workdir / "pet.nrrd"), "--stop-file", str(self._workdir / STOP_FILE)]
            arguments += ["--progress", "jsonl", *self.settings.cli_arguments()]
            self._worker = WorkerProcess(arguments, self._workdir, "translation", self.python)
            self._worker.start()
        except BaseException:
            self._cleanup()
            raise

    def poll(self) -> JobState:
        """Progress so far; when the worker has ended, load its result (or report its error)."""
        if self._state.finished or self._worker is None:
            return self._state
        returncode = self._worker.poll()
        worker = self._worker
        self._state = JobState("running", worker.fraction, worker.message, seconds_left=worker.seconds_left)
        if returncode is not None:
            self._complete(worker, returncode)
        return self._state

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> JobState:
        """Poll until the job ends (for scripts and tests); cancels on timeout."""
        return wait_for(self, timeout, interval)

    def cancel(self) -> None:
        """End the worker tree; the scene is not touched (nothing was written into it yet)."""
        if self._state.finished:
            return
        if self._worker is not None:
            (self._workdir / STOP_FILE).touch()  # stops a worker the kill below cannot reach, between batches
            self._worker.terminate()
        self._state = JobState("cancelled", self._state.fraction, "cancelled; nothing was written into the scene")
        self._cleanup()

    def _complete(self, worker: WorkerProcess, returncode: int) -> None:
        details = worker.stderr
        try:
            if returncode != 0:
                raise RegC2PError(worker.error_line(returncode))
            scene = self.ct_node.GetScene()
            if scene is None or scene.GetNodeByID(self.ct_node.GetID()) is not self.ct_node:
                raise InputError("the CT was removed from the scene while it was being translated")
            output = self.output_node
            if output is not None and scene.GetNodeByID(output.GetID()) is not output:
                output = None  # deleted meanwhile: make a new one
            pet = sitk.ReadImage(str(self._workdir / "pet.nrrd"))
            provenance = _provenance(self._model_path, self._model_sha256, self.settings, pet)
            self.result_node = _finish(self.ct_node, output, pet, self.settings, provenance)
            self._state = JobState("succeeded", 1.0, f"done: {self.result_node.GetName()}", details=details)
        except Exception as exc:
            self._state = JobState("failed", self._state.fraction, "failed", error=one_line(exc), details=details)
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

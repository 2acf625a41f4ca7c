"""Running a translation from the scene: blocking in-process, or as a background process.

* :func:`process` — blocking, in this process (console, scripts, tests): CT node ->
  :func:`RegC2PLib.inference.translate_volume` -> output node, fused display.
* :class:`BackgroundTranslation` — for the panel: the CT is written to a temporary
  file and ``python -m RegC2PLib translate --progress jsonl`` runs in a separate
  process (``PythonSlicer`` inside Slicer), so Slicer stays responsive. The panel calls
  :meth:`~BackgroundTranslation.poll` from a timer; progress arrives as JSON lines on
  the process's stdout. The scene is only touched when the process has succeeded;
  :meth:`~BackgroundTranslation.cancel` kills the process and restores the scene.

Either way the CT node is only read, and on cancel or error the scene is restored
exactly (:class:`~RegC2PSlicer.scene_state.SceneSnapshot`).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk
import slicer
from RegC2PLib.errors import InputError, RegC2PError
from RegC2PLib.inference import REFINE_MODES, TranslationOptions, translate_volume
from RegC2PLib.model_file import LoadedModel, file_sha256, load_model, read_config
from RegC2PLib.progress import CancelToken, ProgressCallback, no_progress
from RegC2PLib.volume_io import check_ct

from .models import resolve_model_path
from .output import (
    DEFAULT_OPACITY,
    DEFAULT_PET_COLOR,
    DEFAULT_SUV_WINDOW,
    check_output_node,
    pet_color_node_id,
    show_pet,
    store_pet,
)
from .scene_state import SceneSnapshot
from .volumes import check_scalar_volume, image_from_volume_node

# Folder that holds RegC2PLib and RegC2PSlicer (the module folder); goes on the worker's path.
MODULE_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs besides the CT and output nodes.

    ``model``: a model file path, or ``None`` for the default model (bundled, else the
    user's first). ``window``/``stride`` ``None`` (or 0 from the panel) mean the model's
    values. ``suv_window`` is the display window in SUV; ``opacity`` the fusion opacity.
    """

    model: str | os.PathLike[str] | None = None
    refine: str = "overlap"
    window: int | None = None
    stride: int | None = None
    device: str = "auto"
    batch_size: int = 8
    opacity: float = DEFAULT_OPACITY
    color: str = DEFAULT_PET_COLOR
    suv_window: tuple[float, float] = DEFAULT_SUV_WINDOW
    show: bool = True

    def options(self) -> TranslationOptions:
        return TranslationOptions(self.refine, self.window or None, self.stride or None, self.device, self.batch_size)

    def check(self) -> None:
        """Refuse bad display settings and refinement modes before any long work."""
        if self.refine not in REFINE_MODES:
            raise InputError(f"unknown refinement {self.refine!r}; choose one of {', '.join(REFINE_MODES)}")
        pet_color_node_id(self.color)
        low, high = self.suv_window
        if not low < high:
            raise InputError(f"SUV window {low:g}..{high:g} is empty; the lower value must be below the upper one")
        if not 0.0 <= self.opacity <= 1.0:
            raise InputError(f"fusion opacity {self.opacity:g} is outside 0..1")

    def cli_arguments(self) -> list[str]:
        """The ``regc2p translate`` options for these settings (without --ct/--model/--out)."""
        options = self.options()
        args = ["--refine", options.refine, "--device", options.device, "--batch-size", str(options.batch_size)]
        if options.window is not None:
            args += ["--window", str(options.window)]
        if options.stride is not None:
            args += ["--stride", str(options.stride)]
        return args


def _provenance(model_path: Path | None, sha256: str, settings: RunSettings) -> dict[str, str]:
    options = settings.options()
    return {
        "Model": model_path.name if model_path else "(in memory)",
        "ModelSHA256": sha256,
        "Refine": options.refine,
        "Window": str(options.window or "model default"),
        "Stride": str(options.stride or "model default"),
    }


def _finish(ct_node, output_node, pet: sitk.Image, settings: RunSettings, provenance: dict[str, str]):
    node = store_pet(ct_node, pet, output_node, provenance)
    if settings.show:
        show_pet(ct_node, node, settings.opacity, settings.color, settings.suv_window)
    return node


def process(
    ct_node: slicer.vtkMRMLScalarVolumeNode,
    output_node: slicer.vtkMRMLScalarVolumeNode | None = None,
    settings: RunSettings | None = None,
    loaded_model: LoadedModel | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> slicer.vtkMRMLScalarVolumeNode:
    """Translate the CT node (HU) into a synthetic PET (SUV) on its grid; blocking.

    Returns the output node (``output_node``, or a new node named after the CT). On any
    error or cancellation the scene is restored and the exception re-raised.
    """
    settings = settings or RunSettings()
    progress = progress or no_progress
    check_scalar_volume(ct_node)
    check_output_node(ct_node, output_node)
    settings.check()
    if loaded_model is None:
        model_path = resolve_model_path(settings.model)
        progress(0.0, f"loading model {model_path.name}")
        loaded_model = load_model(model_path)
    snapshot = SceneSnapshot.capture(ct_node.GetScene(), (output_node,))
    try:
        ct = image_from_volume_node(ct_node)
        pet = translate_volume(ct, loaded_model, settings.options(), progress, cancel)
        if cancel is not None:
            cancel.raise_if_cancelled()
        return _finish(ct_node, output_node, pet, settings, _provenance(loaded_model.path, loaded_model.sha256, settings))
    except BaseException:
        snapshot.restore()
        raise


@dataclass
class JobState:
    """What the panel shows: ``state`` is running, succeeded, failed or cancelled.

    ``fraction`` in [0, 1]; ``message`` the latest progress text; ``error`` a one-line
    reason (failed); ``details`` the worker's full error output for the log.
    """

    state: str = "running"
    fraction: float = 0.0
    message: str = "starting"
    error: str | None = None
    details: str = ""
    seconds_left: float | None = None

    @property
    def finished(self) -> bool:
        return self.state != "running"


def python_executable() -> str:
    """``PythonSlicer`` inside Slicer (Slicer's own Python), else this interpreter."""
    if hasattr(slicer, "app"):
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


@dataclass
class BackgroundTranslation:
    """One translation in a separate process, polled by the panel (see module docstring)."""

    ct_node: slicer.vtkMRMLScalarVolumeNode
    output_node: slicer.vtkMRMLScalarVolumeNode | None = None
    settings: RunSettings = field(default_factory=RunSettings)
    python: str | None = None
    result_node: slicer.vtkMRMLScalarVolumeNode | None = None
    _state: JobState = field(default_factory=JobState)
    _process: subprocess.Popen | None = None
    _workdir: Path | None = None
    _lines: queue.Queue = field(default_factory=queue.Queue)
    _stderr: list[str] = field(default_factory=list)
    _readers: list[threading.Thread] = field(default_factory=list)
    _snapshot: SceneSnapshot | None = None
    _started: float = 0.0
    _model_path: Path | None = None
    _model_sha256: str = ""

    def start(self) -> None:
        """Check the inputs, write the CT to a temporary file and start the worker process."""
        check_scalar_volume(self.ct_node)
        check_output_node(self.ct_node, self.output_node)
        self.settings.check()
        self._model_path = resolve_model_path(self.settings.model)
        config = read_config(self._model_path)  # a one-line error now for a missing or foreign file
        self.settings.options().window_and_stride(config)
        ct = image_from_volume_node(self.ct_node)
        check_ct(ct)
        self._model_sha256 = file_sha256(self._model_path)
        self._snapshot = SceneSnapshot.capture(self.ct_node.GetScene(), (self.output_node,))
        self._workdir = Path(tempfile.mkdtemp(prefix="RegC2P-"))
        try:
            ct_file = self._workdir / "ct.nrrd"
            sitk.WriteImage(ct, str(ct_file), False)
            del ct
            command = [
                self.python or python_executable(),
                "-m",
                "RegC2PLib",
                "translate",
                "--ct",
                str(ct_file),
                "--model",
                str(self._model_path),
                "--out",
                str(self._workdir / "pet.nrrd"),
                "--progress",
                "jsonl",
                *self.settings.cli_arguments(),
            ]
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join([str(MODULE_DIR), *filter(None, [env.get("PYTHONPATH")])])
            env["PYTHONUNBUFFERED"] = "1"
            self._process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                encoding="utf-8",
                errors="replace",
                env=env,
                cwd=str(self._workdir),
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
            )
        except BaseException:
            self._cleanup()
            raise
        self._started = time.monotonic()
        for stream, sink in ((self._process.stdout, self._lines.put), (self._process.stderr, self._stderr.append)):
            reader = threading.Thread(target=_pump, args=(stream, sink), daemon=True)
            reader.start()
            self._readers.append(reader)

    def poll(self) -> JobState:
        """Progress so far; when the worker has ended, load its result (or report its error)."""
        if self._state.finished or self._process is None:
            return self._state
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            self._progress_line(line)
        if self._process.poll() is None:
            return self._state
        for reader in self._readers:
            reader.join(timeout=5)
        while not self._lines.empty():
            self._progress_line(self._lines.get_nowait())
        self._complete(self._process.returncode)
        return self._state

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> JobState:
        """Poll until the job ends (for scripts and tests); cancels on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll().finished:
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                break
            time.sleep(interval)
        return self._state

    def cancel(self) -> None:
        """Stop the worker and put the scene back exactly as it was before :meth:`start`."""
        if self._state.finished:
            return
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._snapshot is not None:
            self._snapshot.restore()
        self._state = JobState("cancelled", self._state.fraction, "cancelled; the scene is unchanged")
        self._cleanup()

    def _progress_line(self, line: str) -> None:
        try:
            record = json.loads(line)
            fraction, message = float(record["fraction"]), str(record["message"])
        except (ValueError, KeyError, TypeError):
            return  # not a progress record (e.g. a library's warning)
        elapsed = time.monotonic() - self._started
        left = elapsed * (1 - fraction) / fraction if fraction > 0.02 else None
        self._state = JobState("running", min(max(fraction, 0.0), 1.0), message, seconds_left=left)

    def _complete(self, returncode: int) -> None:
        details = "".join(self._stderr).strip()
        try:
            if returncode != 0:
                raise RegC2PError(_error_line(details, returncode))
            scene = self.ct_node.GetScene()
            if scene is None or scene.GetNodeByID(self.ct_node.GetID()) is not self.ct_node:
                raise InputError("the CT was removed from the scene while it was being translated")
            output = self.output_node
            if output is not None and scene.GetNodeByID(output.GetID()) is not output:
                output = None  # deleted meanwhile: make a new one
            pet = sitk.ReadImage(str(self._workdir / "pet.nrrd"))
            provenance = _provenance(self._model_path, self._model_sha256, self.settings)
            self.result_node = _finish(self.ct_node, output, pet, self.settings, provenance)
            self._state = JobState("succeeded", 1.0, f"done: {self.result_node.GetName()}", details=details)
        except Exception as exc:
            if self._snapshot is not None:
                self._snapshot.restore()
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self._state = JobState("failed", self._state.fraction, "failed", error=reason, details=details)
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def _pump(stream, sink) -> None:
    for line in stream:
        sink(line)
    stream.close()


def _error_line(stderr: str, returncode: int) -> str:
    """The worker's one-line ``regc2p: error: ...`` reason, or a description of the crash."""
    prefix = "regc2p: error: "
    for line in reversed(stderr.splitlines()):
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    if returncode < 0:
        return f"the translation process was killed (signal {-returncode}); if memory ran out, use a smaller batch size"
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    reason = f"the translation process failed (exit status {returncode})"
    return f"{reason}: {last}" if last else reason

"""Model files the module offers (bundled default, user's model folder), importing one, and devices.

Importing this module does not import torch: only :func:`import_model` does (to check the file), and
the compute devices are found by a worker process (:class:`DeviceProbe`).

* Bundled: ``RegC2P/Resources/Models/*.safetensors`` shipped with the extension
  (``default.safetensors`` first when present).
* User's folder: ``$REGC2P_MODEL_DIR`` if set, else ``RegC2P/Models`` beside Slicer's
  user settings file inside Slicer, else ``~/.regc2p/models``.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from RegC2PLib.atomic import atomic_path
from RegC2PLib.choices import MODEL_SUFFIX
from RegC2PLib.errors import InputError, ModelFileError

from .background import JobState, WorkerProcess

SUFFIX = MODEL_SUFFIX
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent.parent / "Resources" / "Models"
DEFAULT_MODEL_NAME = "default" + SUFFIX
DEVICE_LABELS = {"auto": "auto (best available)", "cpu": "CPU", "cuda": "CUDA (NVIDIA GPU)", "mps": "MPS (Apple GPU)"}


@dataclass(frozen=True)
class ModelChoice:
    """A model file the panel can offer; ``bundled`` is true for files shipped with the extension."""

    path: Path
    bundled: bool


@dataclass(frozen=True)
class ImportedModel:
    """Result of :func:`import_model`: where the copy lives and its SHA-256 (hex)."""

    path: Path
    sha256: str
    already_present: bool


def model_info(path: str | os.PathLike[str]) -> dict[str, str]:
    """The free-text metadata a model file carries (``regc2p_info``: training command, data,
    ``card``: its model card in short), read from the safetensors header alone.

    Read by hand because the panel shows it before torch and safetensors are installed: a
    safetensors file starts with the header's length (8 bytes, little-endian) and the
    header, JSON with the metadata under ``__metadata__``. Unreadable files give ``{}``
    (loading the model reports why)."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100_000_000:
                return {}
            header = json.loads(f.read(length))
        info = json.loads(header.get("__metadata__", {}).get("regc2p_info", "{}"))
    except (OSError, ValueError, struct.error, AttributeError):
        return {}
    return {str(k): str(v) for k, v in info.items()} if isinstance(info, dict) else {}


def user_model_folder() -> Path:
    """The folder the user's imported model files live in (not created here)."""
    if os.environ.get("REGC2P_MODEL_DIR"):
        return Path(os.environ["REGC2P_MODEL_DIR"]).expanduser()
    try:
        import slicer

        settings_file = slicer.app.slicerUserSettingsFilePath
    except (ImportError, AttributeError):
        return Path.home() / ".regc2p" / "models"
    return Path(settings_file).parent / "RegC2P" / "Models"


def bundled_models(folder: Path = BUNDLED_MODEL_DIR) -> list[Path]:
    """Model files shipped with the extension, the default first; empty when none ships."""
    if not folder.is_dir():
        return []
    return sorted(_model_files(folder), key=lambda p: p.name != DEFAULT_MODEL_NAME)


def _model_files(folder: Path) -> list[Path]:
    """``*.safetensors`` files in ``folder`` by name, without hidden (e.g. half-copied) ones."""
    return sorted(p for p in folder.glob("*" + SUFFIX) if p.is_file() and not p.name.startswith("."))


def available_models(user_folder: Path | None = None, bundled_folder: Path = BUNDLED_MODEL_DIR) -> list[ModelChoice]:
    """Bundled models, then the user's models (by name)."""
    user_folder = user_model_folder() if user_folder is None else user_folder
    choices = [ModelChoice(p, True) for p in bundled_models(bundled_folder)]
    if user_folder.is_dir():
        choices += [ModelChoice(p, False) for p in _model_files(user_folder)]
    return choices


def default_model(user_folder: Path | None = None, bundled_folder: Path = BUNDLED_MODEL_DIR) -> Path | None:
    """The bundled default if one ships, else the user's first model, else ``None``."""
    choices = available_models(user_folder, bundled_folder)
    return choices[0].path if choices else None


def resolve_model_path(
    model: str | os.PathLike[str] | None, user_folder: Path | None = None, bundled_folder: Path = BUNDLED_MODEL_DIR
) -> Path:
    """A model argument as a file path: ``None`` (or an empty path) means the default model.

    A path that does not exist — saved in a scene by an older installation of the
    extension or on another computer — is looked up by its file name among the bundled
    models, then the user's; failing that it is returned as given (loading it then says
    it is missing).
    """
    if model is None or str(model) in ("", "."):
        found = default_model(user_folder, bundled_folder)
        if found is None:
            raise ModelFileError(
                "no model file: none ships with this extension and none is imported; "
                "use 'Import model…' or give the path of a RegC2P .safetensors model"
            )
        return found
    path = Path(model).expanduser()
    if not path.exists():
        for folder in (bundled_folder, user_model_folder() if user_folder is None else user_folder):
            if (folder / path.name).is_file():
                return folder / path.name
    return path


def import_model(source: str | os.PathLike[str], folder: Path | None = None) -> ImportedModel:
    """Check that ``source`` loads as a RegC2P model, then copy it into the user's model folder.

    The copy keeps the file name and is written atomically; a file of the same name with
    the same SHA-256 is left as is, one with different content is refused.
    """
    from RegC2PLib.model_file import file_sha256, load_model

    source = Path(source).expanduser()
    folder = user_model_folder() if folder is None else folder
    model = load_model(source)  # raises ModelFileError with the reason for a bad file
    sha256 = model.sha256
    if not source.name.endswith(SUFFIX):
        raise ModelFileError(f"{source.name} is a RegC2P model but not named *{SUFFIX}; rename it before importing")
    target = folder / source.name
    if target.exists():
        if file_sha256(target) == sha256:
            return ImportedModel(target, sha256, already_present=True)
        raise InputError(f"a different model named {target.name} is already in {folder}; rename the file to import it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    except OSError as exc:
        raise InputError(f"cannot copy {source.name} into {folder}: {exc.strerror or exc}") from exc
    if file_sha256(target) != sha256:
        target.unlink(missing_ok=True)
        raise ModelFileError(f"the copy of {source.name} differs from the original (disk error?); try again")
    return ImportedModel(target, sha256, already_present=False)


@dataclass(frozen=True)
class DeviceChoice:
    """A compute device for the panel: usable, or not with a one-line reason."""

    name: str
    label: str
    reason: str | None

    @property
    def usable(self) -> bool:
        return self.reason is None


class DeviceProbe:
    """Which compute devices this computer offers, asked of ``regc2p devices`` in a worker process.

    Asking torch in Slicer's own process would import torch into the GUI (seconds, and a
    CUDA context on GPU machines) as soon as the panel opens. Use it as a background job:
    :meth:`start`, then :meth:`poll` until finished; :attr:`choices` then lists ``auto``,
    ``cpu``, ``cuda`` and ``mps``, each usable or with the reason it is not.
    """

    def __init__(self, python: str | None = None) -> None:
        self._worker = WorkerProcess(["devices", "--json"], Path(tempfile.gettempdir()), "device check", python)
        self._state = JobState("running", 0.0, "checking the compute devices")
        self.choices: list[DeviceChoice] | None = None

    def start(self) -> None:
        self._worker.start()

    def poll(self) -> JobState:
        """The job state; once it has succeeded, :attr:`choices` is set."""
        returncode = None if self._state.finished else self._worker.poll()
        if returncode is None:
            return self._state
        found = [record["devices"] for record in self._worker.records if isinstance(record.get("devices"), dict)]
        if returncode == 0 and found:
            self.choices = device_choices(found[-1])
            self._state = JobState("succeeded", 1.0, "devices found")
        else:
            error = self._worker.error_line(returncode)
            self._state = JobState("failed", 0.0, "failed", error=error, details=self._worker.stderr)
        return self._state

    def cancel(self) -> None:
        self._worker.terminate()
        if not self._state.finished:
            self._state = JobState("cancelled", 0.0, "cancelled")


def device_choices(reasons: dict[str, str | None]) -> list[DeviceChoice]:
    """``auto``, ``cpu``, ``cuda``, ``mps`` from ``regc2p devices``' answer ({name: None or the reason it is unusable})."""
    return [DeviceChoice("auto", DEVICE_LABELS["auto"], None)] + [
        DeviceChoice(name, DEVICE_LABELS[name], reasons.get(name, "unknown device")) for name in ("cpu", "cuda", "mps")
    ]

"""Model files: one ``.safetensors`` file holding G, optionally F, and their config.

Layout: tensors ``generator.<param>`` and ``refiner.<param>``; header metadata
``regc2p_config`` (the :class:`ModelConfig` as JSON), ``regc2p_version`` and
``regc2p_tensors_sha256`` — a digest of the config JSON and of every tensor's name, dtype,
shape and bytes, so a file whose weights or config were edited after writing is refused
(a config edit that keeps every tensor shape, e.g. the SUV range, would otherwise go
unseen). Loading never unpickles (safetensors holds raw tensors only) and checks every tensor against the config; a
wrong, truncated or tampered file is refused with a one-line reason. R and D are
training-only and live in training checkpoints, not here.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from . import __version__
from .atomic import atomic_path
from .choices import MODEL_SUFFIX
from .config import ModelConfig
from .errors import ModelFileError, one_line
from .networks import Generator, Refiner

SUFFIX = MODEL_SUFFIX
_NETWORKS = ("generator", "refiner")
# The trained default model shipped with the extension (source tree and installed module alike).
BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "Resources" / "Models" / f"default{SUFFIX}"


def bundled_model_path() -> Path | None:
    """The shipped default model file, or ``None`` when this installation has none."""
    return BUNDLED_MODEL if BUNDLED_MODEL.is_file() else None


@dataclass
class LoadedModel:
    """A model ready for inference: networks in eval mode plus where they came from."""

    config: ModelConfig
    generator: Generator
    refiner: Refiner | None
    sha256: str = ""
    path: Path | None = None
    info: dict[str, str] = field(default_factory=dict)

    def to(self, device: torch.device) -> LoadedModel:
        self.generator.to(device)
        if self.refiner is not None:
            self.refiner.to(device)
        return self


def new_model(config: ModelConfig, seed: int = 0, with_refiner: bool = True) -> LoadedModel:
    """Freshly initialised (untrained) networks for ``config``; same seed, same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Generator(config.generator)
        refiner = Refiner(config.refiner) if with_refiner else None
    model = LoadedModel(config, generator.eval(), refiner.eval() if refiner is not None else None)
    return model


def require_bundled_model() -> Path:
    """The shipped default model file; a one-line error when there is none."""
    path = bundled_model_path()
    if path is None:
        raise ModelFileError(f"no --model given and no bundled default model at {BUNDLED_MODEL}; give --model FILE")
    return path


def tensors_digest(tensors: Mapping[str, torch.Tensor], config_json: str) -> str:
    """SHA-256 over ``config_json`` and every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    digest.update(f"config|{len(config_json)}|{config_json}|".encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _networks(model: LoadedModel) -> dict[str, nn.Module]:
    nets: dict[str, nn.Module] = {"generator": model.generator}
    if model.refiner is not None:
        nets["refiner"] = model.refiner
    return nets


def save_model(path: str | os.PathLike[str], model: LoadedModel, info: Mapping[str, str] | None = None) -> str:
    """Write ``model`` atomically to ``path``; returns the file's SHA-256.

    ``info`` adds free-text metadata (e.g. the training command), kept under
    ``regc2p_info`` as JSON.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ModelFileError(f"folder {path.parent} does not exist; create it first")
    tensors = {
        f"{name}.{key}": value.detach().cpu().contiguous()
        for name, net in _networks(model).items()
        for key, value in net.state_dict().items()
    }
    config_json = model.config.to_json()
    metadata = {
        "regc2p_config": config_json,
        "regc2p_version": __version__,
        "regc2p_tensors_sha256": tensors_digest(tensors, config_json),
        "regc2p_info": json.dumps(dict(info or model.info), sort_keys=True),
    }
    with atomic_path(path, SUFFIX) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    model.path, model.sha256 = path, file_sha256(path)
    return model.sha256


def read_config(path: str | os.PathLike[str], fine_tuning: bool = False) -> ModelConfig:
    """The config stored in a model file, without loading its weights (``fine_tuning``: see :func:`load_model`)."""
    return _open(Path(path), fine_tuning)[0]


def _open(path: Path, fine_tuning: bool = False) -> tuple[ModelConfig, dict[str, str]]:
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist; give the path of a RegC2P .safetensors model")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path.name} is not a readable safetensors model file ({one_line(exc)})") from exc
    if "regc2p_config" not in metadata:
        raise ModelFileError(f"{path.name} is a safetensors file but not a RegC2P model (no regc2p_config metadata)")
    return ModelConfig.from_json(metadata["regc2p_config"], fine_tuning), metadata


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu", fine_tuning: bool = False) -> LoadedModel:
    """Load and verify a model file; raises :class:`ModelFileError` with the reason.

    ``fine_tuning``: the networks are only a starting point for training, so a file of an
    older format (whose grid meant something else) is accepted for its weights.
    """
    path = Path(path)
    config, metadata = _open(path, fine_tuning)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path.name} is truncated or corrupt ({one_line(exc)}); copy the model file again") from exc
    has_refiner = any(k.startswith("refiner.") for k in tensors)
    model = new_model(config, with_refiner=has_refiner)
    # Architecture first (the more useful message for a file of another preset), then integrity.
    for name, net in _networks(model).items():
        _load_state(net, name, tensors, path.name)
    unexpected = sorted(k for k in tensors if k.split(".", 1)[0] not in _NETWORKS)
    if unexpected:
        raise ModelFileError(f"{path.name} holds tensors this architecture does not have (e.g. {unexpected[0]})")
    stored = metadata.get("regc2p_tensors_sha256")
    if stored != tensors_digest(tensors, metadata["regc2p_config"]):
        raise ModelFileError(f"{path.name} failed its integrity check: its weights or config were modified after it was written")
    model.sha256, model.path = file_sha256(path), path
    model.info = json.loads(metadata.get("regc2p_info", "{}"))
    return model.to(torch.device(device))


def _load_state(net: nn.Module, name: str, tensors: Mapping[str, torch.Tensor], filename: str) -> None:
    expected = net.state_dict()
    prefix = f"{name}."
    found = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    for key, value in expected.items():
        if key not in found:
            raise ModelFileError(f"{filename} does not match its config: {prefix}{key} is missing")
        if found[key].shape != value.shape or found[key].dtype != value.dtype:
            raise ModelFileError(
                f"{filename} does not match its config: {prefix}{key} has shape {tuple(found[key].shape)} "
                f"{found[key].dtype}, expected {tuple(value.shape)} {value.dtype}"
            )
    extra = sorted(set(found) - set(expected))
    if extra:
        raise ModelFileError(f"{filename} does not match its config: unexpected tensor {prefix}{extra[0]}")
    net.load_state_dict(found)

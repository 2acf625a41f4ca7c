"""Model files: one ``.safetensors`` file holding G, optionally F, and their config.

Layout: tensors ``generator.<param>`` and ``refiner.<param>``; header metadata
``regc2p_config`` (the :class:`ModelConfig` as JSON), ``regc2p_version``,
``regc2p_info`` (free text, a JSON object of strings) and ``regc2p_tensors_sha256`` —
an **integrity check**: a SHA-256 of the config JSON and of every tensor's name, dtype,
shape and bytes, which catches a file damaged or edited by a tool that does not
recompute it (a config edit that keeps every tensor shape, e.g. the SUV range, would
otherwise go unseen). It proves nothing about where a file came from: anyone can
recompute it. Authenticity needs a SHA-256 of the whole file from a trusted source —
:data:`BUNDLED_MODEL_SHA256` for the shipped model (checked on every load), ``sha256=``
(``--sha256``) for any other.

Loading never unpickles (safetensors holds raw tensors only), validates every config
value (:class:`ModelConfig`), compares every tensor's name and shape with the config
before building the networks (so a config cannot make it allocate more than the file
holds), refuses NaN or infinite weights and checks the integrity digest; a wrong,
truncated or tampered file is refused with a one-line reason. R and D are training-only
and live in training checkpoints, not here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
from .errors import ModelFileError, OutputError, one_line
from .networks import Generator, Refiner

SUFFIX = MODEL_SUFFIX
_NETWORKS = ("generator", "refiner")
# The trained default model shipped with the extension (source tree and installed module alike)
# and the SHA-256 of that file (the README publishes the same digest): a shipped model that
# differs was modified or damaged after release and is refused.
BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "Resources" / "Models" / f"default{SUFFIX}"
BUNDLED_MODEL_SHA256 = "e7aa4eec6e281c78a98e9e4ae7c8086fee3e8fa941c681f200121c55b739b207"
MAX_INFO_CHARS = 65536  # regc2p_info: the training command and a few paths
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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


def integrity_digest(tensors: Mapping[str, torch.Tensor], config_json: str) -> str:
    """The integrity check stored in a model file: SHA-256 over ``config_json`` and every
    tensor's name, dtype, shape and bytes, in name order (not an authenticity proof)."""
    digest = hashlib.sha256()
    digest.update(f"config|{len(config_json)}|{config_json}|".encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # reshape(-1): row-major bytes whatever the layout (inference keeps weights channels_last on CPUs)
        digest.update(t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
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
        f"{name}.{key}": value.detach().cpu().clone(memory_format=torch.contiguous_format)
        for name, net in _networks(model).items()
        for key, value in net.state_dict().items()
    }
    config_json = model.config.to_json()
    metadata = {
        "regc2p_config": config_json,
        "regc2p_version": __version__,
        "regc2p_tensors_sha256": integrity_digest(tensors, config_json),
        "regc2p_info": json.dumps(dict(info or model.info), sort_keys=True),
    }
    with atomic_path(path, check=lambda tmp: _verify_written(tmp, metadata["regc2p_tensors_sha256"])) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    model.path, model.sha256 = path, file_sha256(path)
    return model.sha256


def _verify_written(path: Path, digest: str) -> None:
    """Read a just-written model file back: its tensors must give the digest that was stored."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise OutputError(f"cannot write {path.name}: it reads back incomplete ({one_line(exc)}); check the free space") from exc
    if integrity_digest(tensors, metadata.get("regc2p_config", "")) != digest:
        raise OutputError(f"cannot write {path.name}: it reads back with other bytes than were written; check the disk")


def read_config(path: str | os.PathLike[str], fine_tuning: bool = False) -> ModelConfig:
    """The config stored in a model file, without loading its weights (``fine_tuning``: see :func:`load_model`)."""
    return _open(Path(path), fine_tuning)[0]


def _open(path: Path, fine_tuning: bool = False) -> tuple[ModelConfig, dict[str, str]]:
    """The validated config and metadata of a model file."""
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist; give the path of a RegC2P .safetensors model")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path.name} is not a readable safetensors model file ({one_line(exc)})") from exc
    if "regc2p_config" not in metadata:
        raise ModelFileError(f"{path.name} is a safetensors file but not a RegC2P model (no regc2p_config metadata)")
    _info(metadata, path.name)
    return ModelConfig.from_json(metadata["regc2p_config"], fine_tuning), metadata


def _info(metadata: Mapping[str, str], filename: str) -> dict[str, str]:
    """The ``regc2p_info`` metadata: a JSON object of strings (not covered by the integrity digest, so validated)."""
    text = metadata.get("regc2p_info", "{}")
    try:
        info = json.loads(text) if len(text) <= MAX_INFO_CHARS else None
    except json.JSONDecodeError:
        info = None
    if not isinstance(info, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in info.items()):
        raise ModelFileError(f"{filename} has malformed regc2p_info metadata (not a JSON object of strings); it was edited")
    return info


def check_sha256(path: Path, expected: str) -> str:
    """The file's SHA-256, refused (:class:`ModelFileError`) unless it is ``expected`` (64 hex digits)."""
    expected = expected.strip().lower()
    if not _SHA256.match(expected):
        raise ModelFileError(f"the expected SHA-256 {expected[:20]!r} is not 64 hexadecimal digits; copy it again")
    actual = file_sha256(path)
    if actual != expected:
        raise ModelFileError(
            f"{path.name} has SHA-256 {actual[:16]}…, not the expected {expected[:16]}…; "
            "it is not the file you meant (modified, damaged or another model) — get it again from its source"
        )
    return actual


def load_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", fine_tuning: bool = False, sha256: str | None = None
) -> LoadedModel:
    """Load and verify a model file; raises :class:`ModelFileError` with the reason.

    ``fine_tuning``: the networks are only a starting point for training, so a file of an
    older format (whose grid meant something else) is accepted for its weights.
    ``sha256``: the file's expected SHA-256 from a trusted source. The shipped model is
    always checked against :data:`BUNDLED_MODEL_SHA256`.
    """
    path = Path(path)
    config, metadata = _open(path, fine_tuning)
    if sha256 is None and path.resolve() == BUNDLED_MODEL.resolve():
        sha256 = BUNDLED_MODEL_SHA256
    digest = check_sha256(path, sha256) if sha256 is not None else None
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 (not a dict)
            # Architecture first (the more useful message for a file of another preset), before anything is allocated.
            _check_architecture(config, shapes, path.name)
            tensors = {key: f.get_tensor(key) for key in shapes}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path.name} is truncated or corrupt ({one_line(exc)}); copy the model file again") from exc
    model = new_model(config, with_refiner=any(k.startswith("refiner.") for k in tensors))
    for name, net in _networks(model).items():
        _load_state(net, name, tensors, path.name)
    if metadata.get("regc2p_tensors_sha256") != integrity_digest(tensors, metadata["regc2p_config"]):
        raise ModelFileError(f"{path.name} failed its integrity check: its weights or config were modified after it was written")
    model.sha256, model.path = digest or file_sha256(path), path
    model.info = _info(metadata, path.name)
    return model.to(torch.device(device))


def _check_architecture(config: ModelConfig, shapes: Mapping[str, tuple[int, ...]], filename: str) -> None:
    """Every tensor the config's networks have, with its shape, and nothing else — checked on
    networks built on the meta device, which allocates nothing."""
    with torch.device("meta"):
        nets: dict[str, nn.Module] = {"generator": Generator(config.generator)}
        if any(k.startswith("refiner.") for k in shapes):
            nets["refiner"] = Refiner(config.refiner)
    unexpected = sorted(k for k in shapes if k.split(".", 1)[0] not in _NETWORKS)
    if unexpected:
        raise ModelFileError(f"{filename} holds tensors this architecture does not have (e.g. {unexpected[0]})")
    for name, net in nets.items():
        expected = {f"{name}.{k}": tuple(v.shape) for k, v in net.state_dict().items()}
        for key, shape in expected.items():
            if key not in shapes:
                raise ModelFileError(f"{filename} does not match its config: {key} is missing")
            if shapes[key] != shape:
                raise ModelFileError(f"{filename} does not match its config: {key} has shape {shapes[key]}, expected {shape}")
        extra = sorted(k for k in shapes if k.startswith(f"{name}.") and k not in expected)
        if extra:
            raise ModelFileError(f"{filename} does not match its config: unexpected tensor {extra[0]}")


def _load_state(net: nn.Module, name: str, tensors: Mapping[str, torch.Tensor], filename: str) -> None:
    """Load checked tensors (names and shapes: :func:`_check_architecture`): dtype, finite values."""
    expected = net.state_dict()
    prefix = f"{name}."
    found = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    for key, value in expected.items():
        if found[key].dtype != value.dtype:
            raise ModelFileError(f"{filename} does not match its config: {prefix}{key} is {found[key].dtype}, not {value.dtype}")
        if found[key].is_floating_point() and not torch.isfinite(found[key]).all():
            raise ModelFileError(f"{filename} holds NaN or infinite weights in {prefix}{key}; it is damaged or was edited")
    net.load_state_dict(found)

"""Model configuration: one object that decides every width, depth and scale.

A :class:`ModelConfig` travels inside every model file, so a file always rebuilds
exactly the networks it holds, sees tissue at the physical scale it was trained at and
normalises intensities the way it was trained. Two presets exist:

* ``paper`` — the published sizes (RegGAN's generator, registration network and
  discriminator at 256×256; about 97 GFLOP per slice for G), 1.95 mm pixels.
* ``small`` — for CPUs, tests and the demo: 128×128 slices of 3.9 mm pixels, 16 base
  channels, six residual blocks (1.1 GFLOP per 128×128 slice for G, 0.7 GFLOP per slice
  for F; ``paper``: 97.5 and 10.9 GFLOP per 256×256 slice, measured with torch's
  FlopCounterMode).

Physical scale: every slice is resampled in-plane to ``pixel_mm`` millimetres per pixel
before the networks see it (as nnU-Net resamples every case to one spacing), so a thigh
is the same number of pixels in a 13 cm crop and in a 50 cm whole-body CT. The model
grid is ``image_size`` pixels square (both presets cover about 50 cm), centred on the
body; a body wider than that gets a larger grid (the networks are fully convolutional);
see :mod:`.slice_grid`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from . import values
from .errors import ModelFileError

FORMAT_VERSION = 2  # 2: physical scale (pixel_mm); format 1 stretched each slice's field of view onto the grid
# Bounds on every size in a configuration: far above the presets (paper: 64 channels,
# 9 blocks), low enough that no configuration can ask for absurd weights. The slice size
# is bounded only loosely: what limits it in practice is memory, estimated before each job.
MAX_CHANNELS = 1024
MAX_BLOCKS = 64
MAX_LEVELS = 8
MAX_IMAGE_SIZE = 2**17
MAX_WINDOW = 256
HU_RANGE = (-4096.0, 32767.0)  # stored CT values, int16-coded, rescaled to HU
MAX_SUV = 100.0  # no tissue exceeds this; a larger scale would waste the network's range


def _channels(name: str, widths: object, max_levels: int = MAX_LEVELS) -> None:
    if not isinstance(widths, tuple) or not 1 <= len(widths) <= max_levels:
        raise ValueError(f"{name} must be a list of 1 to {max_levels} channel counts (got {widths!r})")
    for width in widths:
        values.whole(name, width, 1, MAX_CHANNELS)


@dataclass(frozen=True)
class GeneratorConfig:
    """CycleGAN-style ResNet generator G (docs/method.md §2)."""

    base_channels: int = 64
    n_downsampling: int = 2
    n_residual_blocks: int = 9

    def __post_init__(self) -> None:
        values.whole("generator.base_channels", self.base_channels, 1, MAX_CHANNELS)
        values.whole("generator.n_downsampling", self.n_downsampling, 0, 5)
        values.whole("generator.n_residual_blocks", self.n_residual_blocks, 0, MAX_BLOCKS)
        values.whole("generator width", self.base_channels * 2**self.n_downsampling, 1, MAX_CHANNELS)


@dataclass(frozen=True)
class RegistrationConfig:
    """Residual U-Net R predicting a 2-channel displacement field in pixels."""

    down_channels: tuple[int, ...] = (32, 64, 64, 64, 64, 64, 64)
    up_channels: tuple[int, ...] = (64, 64, 64, 64, 64, 64, 32)
    bottleneck_channels: int = 128
    n_bottleneck_blocks: int = 3

    def __post_init__(self) -> None:
        _channels("registration.down_channels", self.down_channels)
        _channels("registration.up_channels", self.up_channels)
        if len(self.down_channels) != len(self.up_channels):
            raise ValueError("registration down_channels and up_channels must have the same length")
        values.whole("registration.bottleneck_channels", self.bottleneck_channels, 1, MAX_CHANNELS)
        values.whole("registration.n_bottleneck_blocks", self.n_bottleneck_blocks, 0, MAX_BLOCKS)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """PatchGAN discriminator D: ``n_layers`` stride-2 convolutions, then two stride-1."""

    base_channels: int = 64
    n_layers: int = 3

    def __post_init__(self) -> None:
        values.whole("discriminator.n_layers", self.n_layers, 1, 6)
        values.whole("discriminator.base_channels", self.base_channels, 1, MAX_CHANNELS)
        values.whole("discriminator width", self.base_channels * 2**self.n_layers, 1, MAX_CHANNELS)


@dataclass(frozen=True)
class RefinerConfig:
    """Light 3D U-Net F on windows of consecutive slices.

    Pooling is in-plane only (1, 2, 2), so any window length works; the network is
    residual (output = input + correction) and starts as the identity.
    ``window`` and ``stride`` are the defaults the refiner was trained/validated with.
    """

    channels: tuple[int, ...] = (16, 32, 64)
    window: int = 8
    stride: int = 4

    def __post_init__(self) -> None:
        _channels("refiner.channels", self.channels, 5)
        values.whole("refiner.window", self.window, 1, MAX_WINDOW)
        values.whole("refiner.stride", self.stride, 1, self.window)


@dataclass(frozen=True)
class IntensityConfig:
    """Linear maps from physical units to the network scale [-1, 1].

    CT: HU in ``[ct_hu_min, ct_hu_max]`` -> [-1, 1], clipped (metal and dense bone
    saturate at +1). PET: SUV in ``[0, pet_suv_max]`` -> [-1, 1], clipped.
    The paper's group stores CT as (HU + 1024) / 2047, i.e. the default range here.
    """

    ct_hu_min: float = -1024.0
    ct_hu_max: float = 1023.0
    pet_suv_max: float = 20.0

    def __post_init__(self) -> None:
        low = values.finite("intensity.ct_hu_min", self.ct_hu_min, *HU_RANGE)
        values.finite("intensity.ct_hu_max", self.ct_hu_max, low, HU_RANGE[1], low_open=True)
        values.finite("intensity.pet_suv_max", self.pet_suv_max, 0.0, MAX_SUV, low_open=True)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the networks and pre/post-process volumes.

    ``image_size`` M: the side of the model grid in pixels (training slices are M×M);
    ``pixel_mm``: the in-plane size of one grid pixel in mm.
    """

    image_size: int = 256
    pixel_mm: float = 1.95
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_changes(self, **changes: Any) -> ModelConfig:
        """A copy with some top-level fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def preset_name(self) -> str:
        """The name of the preset this configuration is, else ``custom``."""
        return next((name for name, cfg in PRESETS.items() if cfg == self), "custom")

    @property
    def size_multiple(self) -> int:
        """Grid sides must be divisible by this (G's down-sampling and F's in-plane pooling)."""
        return math.lcm(2**self.generator.n_downsampling, 2 ** (len(self.refiner.channels) - 1))

    def same_networks(self, other: ModelConfig) -> bool:
        """Whether ``other`` has G and F of the same shapes (its weights fit these networks)."""
        return self.generator == other.generator and self.refiner.channels == other.refiner.channels

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], fine_tuning: bool = False) -> ModelConfig:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys are errors.

        Format 1 (before physical scale) is refused, except with ``fine_tuning``, where only
        its network sizes matter: it then reads as a format-2 config with the grid of the
        same-sized preset (or ``LEGACY_FIELD_OF_VIEW_MM`` / ``image_size``).
        """
        legacy = isinstance(data, dict) and data.get("format_version") == 1
        if legacy and not fine_tuning:
            raise ModelFileError(
                "the model was made by an older RegC2P (format 1), which stretched each slice's field of view onto its "
                "grid, so its physical scale is unknown; fine-tune it into a current model (regc2p train --init-from FILE)"
            )
        try:
            return _from_dict(cls, _upgrade_format_1(data) if legacy else data)
        except (TypeError, ValueError, KeyError) as exc:
            raise ModelFileError(
                f"model configuration is invalid ({exc}); re-export the model with this version of RegC2P"
            ) from exc

    @classmethod
    def from_json(cls, text: str, fine_tuning: bool = False) -> ModelConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"model configuration is not valid JSON ({exc.msg})") from exc
        return cls.from_dict(data, fine_tuning)

    def __post_init__(self) -> None:
        for name, part, kind in (
            ("generator", self.generator, GeneratorConfig),
            ("registration", self.registration, RegistrationConfig),
            ("discriminator", self.discriminator, DiscriminatorConfig),
            ("refiner", self.refiner, RefinerConfig),
            ("intensity", self.intensity, IntensityConfig),
        ):
            if not isinstance(part, kind):
                raise ValueError(f"{name} must be a {kind.__name__}")
        values.whole("image_size", self.image_size, 32, MAX_IMAGE_SIZE)
        stride = 2**self.generator.n_downsampling
        if self.image_size % stride or self.image_size < 32:
            raise ValueError(f"image_size {self.image_size} must be >= 32 and divisible by {stride}")
        if self.image_size < 2 ** (len(self.registration.down_channels) + 1):
            raise ValueError(
                f"image_size {self.image_size} is too small for a registration network with "
                f"{len(self.registration.down_channels)} poolings; use at least {2 ** (len(self.registration.down_channels) + 1)}"
            )
        values.finite("pixel_mm", self.pixel_mm, 0.1, 20.0)
        if isinstance(self.format_version, bool) or self.format_version != FORMAT_VERSION:
            raise ValueError(f"format version {self.format_version} is not supported (expected {FORMAT_VERSION})")


def model_differences(a: ModelConfig, b: ModelConfig, names: tuple[str, ...] = ()) -> list[str]:
    """``"<field> <a's value>, not <b's>"`` for each top-level field (of ``names``, default all) where ``a`` and ``b`` differ."""
    fields = names or tuple(f.name for f in dataclasses.fields(a))
    return [f"{name} {getattr(a, name)}, not {getattr(b, name)}" for name in fields if getattr(a, name) != getattr(b, name)]


# Format-1 models were trained on whole-body phantoms 520 mm wide, fitted to their grid.
LEGACY_FIELD_OF_VIEW_MM = 520.0


def _upgrade_format_1(data: dict[str, Any]) -> dict[str, Any]:
    upgraded = {k: v for k, v in data.items() if k != "preset"}
    same_size = [cfg for cfg in PRESETS.values() if cfg.image_size == upgraded.get("image_size")]
    size = upgraded.get("image_size") or 1
    upgraded["pixel_mm"] = same_size[0].pixel_mm if same_size else LEGACY_FIELD_OF_VIEW_MM / float(size)
    upgraded["format_version"] = FORMAT_VERSION
    return upgraded


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} must be an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown, missing = set(data) - set(fields), set(fields) - set(data)
    if unknown or missing:
        raise KeyError(f"{cls.__name__}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = (
            fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else fields[name].default
        )
        if dataclasses.is_dataclass(default):
            kwargs[name] = _from_dict(type(default), value)
        elif isinstance(default, tuple):
            if not isinstance(value, list):
                raise TypeError(f"{cls.__name__}.{name} must be a list (got {value!r})")
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(),
    "small": ModelConfig(
        image_size=128,
        pixel_mm=3.9,
        generator=GeneratorConfig(base_channels=16, n_downsampling=2, n_residual_blocks=6),
        registration=RegistrationConfig(
            down_channels=(16, 32, 32, 32, 32),
            up_channels=(32, 32, 32, 32, 16),
            bottleneck_channels=64,
            n_bottleneck_blocks=2,
        ),
        discriminator=DiscriminatorConfig(base_channels=32, n_layers=3),
        refiner=RefinerConfig(channels=(8, 16, 32), window=8, stride=4),
    ),
}


def preset(name: str) -> ModelConfig:
    """The named preset (``paper`` or ``small``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None

"""How to train from Slicer: the model and training configs, and whether validation is required."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from RegC2PLib.config import ModelConfig, preset
from RegC2PLib.errors import InputError
from RegC2PLib.training.config import TrainConfig


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
        from RegC2PLib.model_file import read_config

        model = read_config(model_path, fine_tuning=True)
        try:
            return cls(model, TrainConfig(init_from=str(Path(model_path).resolve()), **train))
        except (TypeError, ValueError) as exc:
            raise InputError(f"invalid training settings: {exc}") from exc

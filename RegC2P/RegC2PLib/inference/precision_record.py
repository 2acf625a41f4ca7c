"""A model file's precision record: whether bfloat16 kept its PET close enough to float32.

bfloat16 rounds every convolution's inputs to 8 significant bits, so how far its PET
moves from the float32 PET depends on the weights: it is measured per model file
(:func:`RegC2PLib.precision_check.check_bfloat16`, run by ``benchmarks/precision.py``) on
real and phantom studies and written beside the model (``default.safetensors`` ->
``default.precision.json``). ``--precision auto`` uses bfloat16 only when the record
names this very file (its SHA-256), was measured on the same kind of device (``cpu`` or
``cuda``: their bfloat16 kernels round differently) and says every figure was within
:data:`TOLERANCE`; a missing, stale (other SHA-256) or unreadable record means float32.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..model_file import LoadedModel

RECORD_FORMAT = "regc2p-precision-record"
RECORD_VERSION = 1


@dataclass(frozen=True)
class Tolerance:
    """What bfloat16 may change vs float32 to become the default: per study, the mean and the
    99.9th percentile of |ΔSUV| inside the body; per dataset, the relative change of each
    paper metric (MAE, SSIM, PSNR against the real PET)."""

    mean_abs_suv: float = 0.02
    p999_abs_suv: float = 0.2
    paper_relative: float = 0.005

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


TOLERANCE = Tolerance()


def record_path(model_path: Path) -> Path:
    """Where the precision record of the model file ``model_path`` lives."""
    return model_path.with_name(f"{model_path.stem}.precision.json")


def read_record(model: LoadedModel) -> dict[str, Any] | None:
    """The precision record of ``model``'s file when there is one that names this file's
    SHA-256; None otherwise (no file, another model's record, unreadable)."""
    if model.path is None or not model.sha256:
        return None
    try:
        record = json.loads(record_path(model.path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or record.get("version") != RECORD_VERSION:
        return None
    return record if record.get("model_sha256") == model.sha256 else None


def bfloat16_adopted(model: LoadedModel, device: torch.device) -> bool:
    """Whether ``model``'s record, measured on a ``device.type`` device, says bfloat16 stayed
    within the tolerance on every study."""
    record = read_record(model)
    if record is None:
        return False
    measured, result = record.get("measured"), record.get("bfloat16")
    if not isinstance(measured, dict) or not isinstance(result, dict):
        return False
    return measured.get("device") == device.type and result.get("adopted") is True

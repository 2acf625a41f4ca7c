"""Validation during training: whole validation volumes on the model grid.

Each validation study is translated slice by slice by the task's G, refined with the
model's window and stride when F is being trained, set to 0 outside the body as inference
does, and scored against its reference
(the aligned PET when the study has one, else the PET) with the paper-scale metrics and
the SUV figures (lesion SUVmax error where the study has a lesion map); a run of several
dataset folders also gets the main figures of each folder (``mae@NAME``, ...). The score
that picks the best checkpoint is the paper-scale MAE over all validation studies.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import ModelConfig
from ..evaluation import score_volume, summarize
from ..inference.windows import WindowPlan, refine_windows
from ..intensity import network_to_pet
from .data_access import GridVolume
from .loop import Validator
from .tasks import Task

BATCH_SLICES = 16
PER_SOURCE = ("mae", "ssim", "suv_mae_body", "suv_bias_body", "lesion_suvmax_error")


def make_validator(volumes: list[GridVolume], model: ModelConfig, device: torch.device, refine: bool) -> Validator | None:
    """A validation function for the loop, or ``None`` when there is no validation study."""
    if not volumes:
        return None

    @torch.no_grad()
    def validate(task: Task) -> dict[str, float]:
        generator = task.generator
        scores = []
        for volume in volumes:
            ct = torch.from_numpy(np.asarray(volume.ct, dtype=np.float32))
            stacked = torch.empty_like(ct)
            for first in range(0, len(ct), BATCH_SLICES):
                with task.autocast():
                    out = generator(ct[first : first + BATCH_SLICES, None].to(device))
                stacked[first : first + BATCH_SLICES] = out[:, 0].float().cpu()
            if refine:
                plan = WindowPlan(len(ct), model.refiner.window, model.refiner.stride)
                with task.autocast():
                    stacked = refine_windows(stacked, task.modules["refiner"], plan, device)
            intensity = model.intensity
            reference = network_to_pet(np.asarray(volume.reference, dtype=np.float32), intensity)
            predicted = network_to_pet(stacked.numpy(), intensity)
            predicted[~volume.body] = 0.0  # as inference does
            scores.append(score_volume(volume.name, predicted, reference, volume.body, intensity, volume.lesions))
        summary = summarize(scores)
        sources = sorted({v.source for v in volumes})
        if len(sources) > 1:  # a mixed run also reports each dataset folder: "mae@real", ...
            for source in sources:
                part = summarize([s for s, v in zip(scores, volumes) if v.source == source])
                summary.update({f"{key}@{source}": part[key] for key in PER_SOURCE})
        return {**summary, "score": summary["mae"]}

    return validate

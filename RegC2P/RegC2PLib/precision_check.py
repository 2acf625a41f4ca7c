"""Measure whether bfloat16 keeps a model's PET within the tolerance of float32, and record it.

For each study: the CT translated in float32 and in bfloat16 (every other option the same);
|ΔSUV| inside the body over the scored slices (:func:`~RegC2PLib.evaluation.scored_region`):
mean, 99.9th percentile and max; both PETs scored against the study's PET. Per dataset, the
paper metrics (MAE, SSIM, PSNR, pooled the paper's way) of the two PETs and their relative
change. bfloat16 is adopted when every study and every dataset is within
:data:`~RegC2PLib.inference.precision_record.TOLERANCE`; the record is what
``--precision auto`` reads (:mod:`RegC2PLib.inference.precision_record`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from .atomic import write_json
from .data.studies import Study, load_study
from .errors import InputError
from .evaluation import score_loaded, scored_region, summarize
from .inference import TranslationOptions, translate_volume
from .inference.acceleration import native_bfloat16
from .inference.device import device_name, resolve_device
from .inference.precision_record import RECORD_FORMAT, RECORD_VERSION, TOLERANCE, record_path
from .model_file import LoadedModel
from .progress import ProgressCallback, no_progress
from .volume_io import array_view

PAPER_KEYS = ("mae", "ssim", "psnr")


def _timed_translation(ct: sitk.Image, model: LoadedModel, options: TranslationOptions) -> tuple[sitk.Image, float]:
    """The PET of ``ct`` (SUV) and the seconds it took."""
    start = time.perf_counter()
    pet = translate_volume(ct, model, options)
    return pet, time.perf_counter() - start


def _relative(value: float, reference: float) -> float:
    """|value − reference| / |reference|; 0 when both are equal (also 0 and 0), inf otherwise for a 0 reference."""
    if value == reference:
        return 0.0
    return abs(value - reference) / abs(reference) if reference else math.inf


def check_bfloat16(
    model: LoadedModel,
    datasets: Mapping[str, Sequence[Study]],
    options: TranslationOptions,
    progress: ProgressCallback = no_progress,
) -> dict[str, Any]:
    """The precision record of ``model`` measured on ``datasets`` (name -> studies with a PET)."""
    device = resolve_device(options.device)
    if not native_bfloat16(device):
        raise InputError(f"{device.type} has no native bfloat16 here, so bfloat16 cannot be checked on it; use such a device")
    if model.path is None or not model.sha256:
        raise InputError("the precision record belongs beside a model file; load the model from its file")
    total = sum(len(studies) for studies in datasets.values())
    if total == 0:
        raise InputError("no studies to check bfloat16 on; give dataset folders with CT and PET studies")
    f32 = dataclasses.replace(options, precision="float32")
    b16 = dataclasses.replace(options, precision="bfloat16")
    reasons: list[str] = []
    results: dict[str, Any] = {}
    done = 0
    for name, studies in datasets.items():
        rows, scores32, scores16 = [], [], []
        for study in studies:
            progress(done / total, f"{name}: {study.name}")
            loaded = load_study(study)
            keep, body = scored_region(loaded)
            if not body.any():
                raise InputError(f"{name}/{study.name}: no body inside the PET's field of view to compare; leave it out")
            pet32, s32 = _timed_translation(loaded.ct, model, f32)
            pet16, s16 = _timed_translation(loaded.ct, model, b16)
            delta = np.abs(array_view(pet16)[keep] - array_view(pet32)[keep])
            inside = delta[body]
            row = {
                "study": study.name,
                "mean_abs_suv_body": float(inside.mean()),
                "p999_abs_suv_body": float(np.percentile(inside, 99.9)),
                "max_abs_suv_body": float(inside.max()),
                "seconds_float32": s32,
                "seconds_bfloat16": s16,
            }
            rows.append(row)
            if row["mean_abs_suv_body"] > TOLERANCE.mean_abs_suv:
                reasons.append(f"{name}/{study.name}: mean |ΔSUV| {row['mean_abs_suv_body']:.4f} > {TOLERANCE.mean_abs_suv}")
            if row["p999_abs_suv_body"] > TOLERANCE.p999_abs_suv:
                reasons.append(f"{name}/{study.name}: p99.9 |ΔSUV| {row['p999_abs_suv_body']:.3f} > {TOLERANCE.p999_abs_suv}")
            scores32.append(score_loaded(study.name, loaded, pet32, model.config.intensity))
            scores16.append(score_loaded(study.name, loaded, pet16, model.config.intensity))
            done += 1
        pooled32, pooled16 = summarize(scores32), summarize(scores16)
        relative = {k: _relative(pooled16[k], pooled32[k]) for k in PAPER_KEYS}
        reasons += [
            f"{name}: paper {k.upper()} changed by {100 * r:.2f} % > {100 * TOLERANCE.paper_relative:.1f} %"
            for k, r in relative.items()
            if not r <= TOLERANCE.paper_relative  # NaN fails too
        ]
        results[name] = {
            "studies": rows,
            "paper_float32": {k: pooled32[k] for k in PAPER_KEYS},
            "paper_bfloat16": {k: pooled16[k] for k in PAPER_KEYS},
            "paper_relative": relative,
            "suv_mae_body_float32": pooled32["suv_mae_body"],
            "suv_mae_body_bfloat16": pooled16["suv_mae_body"],
        }
    progress(1.0, "checked")
    all_rows = [row for result in results.values() for row in result["studies"]]
    return {
        "format": RECORD_FORMAT,
        "version": RECORD_VERSION,
        "model": model.path.name,
        "model_sha256": model.sha256,
        "measured": {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "device": device.type,
            "processor": device_name(device),
            "torch": torch.__version__,
        },
        "options": dataclasses.asdict(f32) | {"precision": None},
        "tolerance": TOLERANCE.as_dict(),
        "bfloat16": {
            "adopted": not reasons,
            "reasons": reasons,
            "worst": {
                "mean_abs_suv_body": max(r["mean_abs_suv_body"] for r in all_rows),
                "p999_abs_suv_body": max(r["p999_abs_suv_body"] for r in all_rows),
                "paper_relative": max(max(r["paper_relative"].values()) for r in results.values()),
            },
            "datasets": results,
        },
    }


def write_record(model: LoadedModel, record: dict[str, Any]) -> None:
    """Write ``record`` beside ``model``'s file (atomically)."""
    assert model.path is not None
    write_json(record_path(model.path), record)

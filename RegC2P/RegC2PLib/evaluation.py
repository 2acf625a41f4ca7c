"""Scoring synthetic PET volumes against a reference, and the paper-style table.

One study gives a :class:`VolumeScores`; :func:`summarize` pools studies the way the
paper does (paper-scale figures are means over all slices of all studies; SUV figures
are means over studies, lesion figures over all lesions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .body import body_mask
from .config import IntensityConfig
from .data.studies import MIN_COVERAGE, LoadedStudy, Study, load_study
from .inference import TranslationOptions, translate_volume
from .intensity import pet_to_network
from .metrics import PaperMetrics, SuvMetrics, paper_metrics, suv_metrics
from .model_file import LoadedModel
from .progress import ProgressCallback, no_progress
from .volume_io import array_view

# Table 1 of the paper (test split of 1,000 studies, 256×256 slices).
PAPER_TABLE = {
    "RegGAN": (336.66, 0.9241, 28.40),
    "DDPET-3D": (351.00, 0.9227, 28.27),
    "CPDM": (402.85, 0.9046, 27.16),
    "RegC2P non-overlap": (306.09, 0.9317, 29.32),
    "RegC2P overlap": (302.43, 0.9330, 29.42),
}


@dataclass(frozen=True)
class VolumeScores:
    study: str
    paper: PaperMetrics
    suv: SuvMetrics


def score_volume(
    study: str,
    pred_suv: np.ndarray,
    ref_suv: np.ndarray,
    body: np.ndarray,
    intensity: IntensityConfig,
    lesions: np.ndarray | None = None,
) -> VolumeScores:
    """Scores of a predicted PET (z, y, x) in SUV against the reference on the same grid.

    Paper scale: both volumes mapped to the network scale with the model's SUV range;
    SUV figures inside ``body`` (the CT's :func:`~RegC2PLib.body.body_mask`).
    """
    paper = paper_metrics(pet_to_network(pred_suv, intensity), pet_to_network(ref_suv, intensity))
    return VolumeScores(study, paper, suv_metrics(pred_suv, ref_suv, body, lesions))


def summarize(scores: Sequence[VolumeScores]) -> dict[str, float]:
    """Pool studies: slice-weighted paper metrics, study-mean SUV figures, lesion-weighted lesion figures."""
    if not scores:
        raise ValueError("no studies to summarize")
    slices = np.array([s.paper.n_slices for s in scores], dtype=float)
    finite = np.array([s.paper.n_slices - s.paper.n_exact_slices for s in scores], dtype=float)
    lesions = np.array([s.suv.n_lesions for s in scores], dtype=float)

    def weighted(values: list[float], weights: np.ndarray) -> float:
        ok = weights > 0
        return float(np.average(np.array(values)[ok], weights=weights[ok])) if ok.any() else math.nan

    return {
        "mae": weighted([s.paper.mae for s in scores], slices),
        "ssim": weighted([s.paper.ssim for s in scores], slices),
        "psnr": weighted([s.paper.psnr for s in scores], finite),
        "suv_mae_body": float(np.nanmean([s.suv.mae_body for s in scores])),
        "suv_bias_body": float(np.nanmean([s.suv.bias_body for s in scores])),
        "interslice": float(np.nanmean([s.suv.interslice for s in scores])),
        "lesion_suvmax_error": weighted([s.suv.lesion_suvmax_error for s in scores], lesions),
        "lesion_suvmax_bias": weighted([s.suv.lesion_suvmax_bias for s in scores], lesions),
        "lesion_suvmean_error": weighted([s.suv.lesion_suvmean_error for s in scores], lesions),
        "n_studies": len(scores),
        "n_slices": int(slices.sum()),
        "n_lesions": int(lesions.sum()),
    }


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A Markdown table in the paper's format plus the physical figures."""
    lines = [
        "| model | MAE ↓ | SSIM ↑ | PSNR ↑ | SUV MAE body ↓ | SUV bias body | lesion SUVmax err ↓ | "
        "lesion SUVmean err ↓ | inter-slice ↓ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['mae']:.2f} | {r['ssim']:.4f} | {r['psnr']:.2f} | {r['suv_mae_body']:.3f} | "
            f"{r['suv_bias_body']:+.3f} | {r['lesion_suvmax_error']:.2f} | {r['lesion_suvmean_error']:.2f} | "
            f"{r['interslice']:.4f} |"
        )
    return "\n".join(lines)


def evaluate_study(
    study: Study, model: LoadedModel, options: TranslationOptions, progress: ProgressCallback = no_progress
) -> VolumeScores:
    """Translate one study's CT and score it against its aligned PET (else its PET) (see :func:`score_study`)."""
    return score_study(study, lambda ct: translate_volume(ct, model, options, progress), model.config.intensity)


def score_study(study: Study, predict: Callable[[sitk.Image], sitk.Image], intensity: IntensityConfig) -> VolumeScores:
    """Score ``predict(CT)`` (a PET in SUV on the CT's grid, for any predictor: a model, a
    baseline) against the study's aligned PET (else its PET) (see :func:`score_loaded`)."""
    loaded = load_study(study)
    return score_loaded(study.name, loaded, predict(loaded.ct), intensity)


def scored_region(loaded: LoadedStudy) -> tuple[np.ndarray, np.ndarray]:
    """Where a study is scored: the CT slices at least half inside the PET field of view
    (a boolean per slice) and the CT's body mask on those slices (z, y, x)."""
    keep = loaded.coverage >= MIN_COVERAGE
    return keep, body_mask(array_view(loaded.ct), loaded.ct.GetSpacing()[::-1])[keep]


def reference_pet(loaded: LoadedStudy) -> sitk.Image:
    """What a prediction is scored against: the study's aligned PET when it has one (phantoms),
    else its PET as acquired (SUV, on the CT's grid)."""
    return loaded.pet_aligned if loaded.pet_aligned is not None else loaded.pet


def score_loaded(name: str, loaded: LoadedStudy, pred: sitk.Image, intensity: IntensityConfig) -> VolumeScores:
    """Score ``pred`` (a PET in SUV on the CT's grid) against :func:`reference_pet`, over
    :func:`scored_region`."""
    keep, body = scored_region(loaded)
    reference = reference_pet(loaded)
    lesions = array_view(loaded.lesions)[keep] if loaded.lesions is not None else None
    return score_volume(name, array_view(pred)[keep], array_view(reference)[keep], body, intensity, lesions)

"""The floor every learned model must beat: a lookup table from HU to mean SUV.

Fitted on the training studies of a split: every body voxel of every CT (HU) with its PET
value on the CT grid (SUV) falls in a bin of :data:`BIN_HU` HU; the table holds each bin's
mean SUV (empty bins take their neighbours' values). A prediction reads the table at each
body voxel of a CT and is 0 outside the body, as RegC2P's own output. It knows tissue
density and nothing else (no anatomy, no context), which is what a learned model must
improve on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from RegC2PLib.body import body_mask
from RegC2PLib.data.studies import MIN_COVERAGE, Study, load_study
from RegC2PLib.volume_io import array_view, image_like

BIN_HU = 10.0
LOW_HU, HIGH_HU = -1000.0, 2000.0  # HU outside are clipped into the end bins


@dataclass(frozen=True)
class HuLookup:
    """Mean SUV per HU bin (``suv[i]`` for HU in ``[LOW_HU + i·BIN_HU, LOW_HU + (i+1)·BIN_HU)``)."""

    suv: np.ndarray

    @classmethod
    def fit(cls, studies: Iterable[Study]) -> HuLookup:
        """Fit on the body voxels of ``studies`` inside their PET field of view."""
        n = int((HIGH_HU - LOW_HU) / BIN_HU)
        total, count = np.zeros(n), np.zeros(n)
        for study in studies:
            loaded = load_study(study)
            keep = loaded.coverage >= MIN_COVERAGE
            hu = np.asarray(array_view(loaded.ct))[keep]
            body = body_mask(hu, loaded.ct.GetSpacing()[::-1])
            bins = _bins(hu[body])
            total += np.bincount(bins, weights=np.asarray(array_view(loaded.pet))[keep][body], minlength=n)
            count += np.bincount(bins, minlength=n)
        seen = count > 0
        if not seen.any():
            raise ValueError("no body voxels to fit the lookup table on")
        centres = np.arange(n)
        suv = np.interp(centres, centres[seen], total[seen] / count[seen])  # empty bins: from their neighbours
        return cls(suv.astype(np.float32))

    def predict(self, ct: sitk.Image) -> sitk.Image:
        """The SUV the table gives each body voxel of ``ct`` (HU), 0 outside the body; on the CT's grid."""
        hu = array_view(ct)
        body = body_mask(hu, ct.GetSpacing()[::-1])
        out = np.zeros(hu.shape, np.float32)
        out[body] = self.suv[_bins(np.asarray(hu)[body])]
        return image_like(out, ct)


def _bins(hu: np.ndarray) -> np.ndarray:
    index = np.floor((np.asarray(hu, np.float64) - LOW_HU) / BIN_HU).astype(np.int64)
    return np.clip(index, 0, int((HIGH_HU - LOW_HU) / BIN_HU) - 1)

"""Training samples read from the cache (:mod:`.cache`): 2D slice pairs for G/R/D and
stacks of consecutive slices for the refiner F.

Both datasets index their samples across studies the same way (cumulative sample counts
per study, one binary search per lookup: :meth:`_StudyDataset.locate`) and memory-map each
study's arrays lazily, per worker process.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import ModelConfig
from ..errors import InputError
from ..progress import ProgressCallback
from .cache import CachedStudy, prepare_studies
from .studies import Skipped, Study, skipped_summary

VOLUMES = ("ct", "pet", "pet_aligned")
OPEN_STUDIES = 32  # memory-mapped studies kept open per process


class _OpenStudies:
    """Per-process LRU of memory-mapped study arrays (not pickled to workers)."""

    def __init__(self) -> None:
        self._open: OrderedDict[Path, dict[str, np.ndarray]] = OrderedDict()

    def get(self, study: CachedStudy) -> dict[str, np.ndarray]:
        arrays = self._open.get(study.folder)
        if arrays is None:
            arrays = study.open_arrays(VOLUMES)
            self._open[study.folder] = arrays
            while len(self._open) > OPEN_STUDIES:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(study.folder)
        return arrays


class _StudyDataset(Dataset):
    """Common part: prepare the cache, keep the skipped list, open studies lazily."""

    def __init__(
        self,
        studies: Sequence[Study | CachedStudy],
        config: ModelConfig,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        raw = [s for s in studies if isinstance(s, Study)]
        ready = [s for s in studies if isinstance(s, CachedStudy)]
        built, self.skipped = prepare_studies(raw, config, cache_dir, progress)
        self.studies: list[CachedStudy] = ready + built
        self.config = config
        self._arrays = _OpenStudies()
        self._ends = np.zeros(0, np.int64)

    def _index(self, counts: Sequence[int]) -> None:
        """Set the number of samples of each study in :attr:`studies` (in order)."""
        self._ends = np.cumsum(np.asarray(counts, np.int64))

    def locate(self, index: int) -> tuple[CachedStudy, int]:
        """(study, index of the sample within that study) of sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        i = int(np.searchsorted(self._ends, index, side="right"))
        return self.studies[i], index - (int(self._ends[i - 1]) if i else 0)

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._arrays = _OpenStudies()

    def _sample(self, array: np.ndarray, slices: slice) -> torch.Tensor:
        """Float32 (n, M, M) of ``slices`` of a cached (z, H, W) array: the central M×M of a larger canvas."""
        size = self.config.image_size
        top, left = (array.shape[1] - size) // 2, (array.shape[2] - size) // 2
        return torch.from_numpy(np.asarray(array[slices, top : top + size, left : left + size], dtype=np.float32))

    def _require(self, what: str) -> None:
        if len(self) == 0:
            if not self.skipped:
                raise InputError(f"no {what} to train on: no studies were given; check the dataset folder and split")
            first = self.skipped[0]
            more = f" and {len(self.skipped) - 1} more skipped" if len(self.skipped) > 1 else ""
            raise InputError(f"no {what} to train on: {first.name} skipped ({first.reason}){more}; fix the studies listed")

    def _unused_notes(self) -> list[str]:
        notes = []
        for s in self.studies:
            unused = s.n_slices - s.n_valid
            if unused:
                notes.append(f"  {s.name}: {unused} of {s.n_slices} slices outside the PET field of view, not used")
        return notes

    def summary(self) -> str:
        """What is used and what is not: studies, samples, skipped studies with reasons, unused slices."""
        lines = [f"{len(self.studies)} studies, {len(self)} samples"]
        if self.skipped:
            lines.append(skipped_summary(self.skipped))
        lines += self._unused_notes()
        return "\n".join(lines)


class SliceDataset(_StudyDataset):
    """Axial slice pairs. Item: ``ct``, ``pet`` and, when the study has one, ``pet_aligned``
    (each float32 (1, M, M) in [-1, 1]: the central M×M of the study's canvas), ``study``
    (name) and ``slice`` (CT slice index).

    Only slices inside the PET field of view are used; studies without an aligned PET
    give items without ``pet_aligned`` (keep such studies apart when batching).
    """

    def __init__(
        self,
        studies: Sequence[Study | CachedStudy],
        config: ModelConfig,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        super().__init__(studies, config, cache_dir, progress)
        self._index([s.n_valid for s in self.studies])
        self._require("slices")

    def lesion_samples(self) -> np.ndarray:
        """Indices of the samples whose slice shows a lesion (only studies with a lesion map count)."""
        found, start = [], 0
        for study, end in zip(self.studies, self._ends):
            lesions = study.open_arrays(("lesions",)).get("lesions")
            if lesions is not None:
                found.append(start + np.flatnonzero(lesions[study.valid[0] : study.valid[1]].any(axis=(1, 2))))
            start = int(end)
        return np.concatenate(found) if found else np.empty(0, np.int64)

    def __getitem__(self, index: int) -> dict[str, object]:
        study, offset = self.locate(index)
        k = study.valid[0] + offset
        arrays = self._arrays.get(study)
        item: dict[str, object] = {v: self._sample(a, slice(k, k + 1)) for v, a in arrays.items()}
        item["study"] = study.name
        item["slice"] = k
        return item


class WindowDataset(_StudyDataset):
    """Stacks of ``window`` consecutive slices for the refiner. Item: ``ct``, ``pet``
    and, when present, ``pet_aligned`` (each float32 (window, M, M) in [-1, 1]),
    ``study`` and ``start`` (first CT slice index). Windows start every ``stride`` slices
    inside the PET field of view; a study with fewer usable slices than ``window`` is
    skipped with that reason."""

    def __init__(
        self,
        studies: Sequence[Study | CachedStudy],
        config: ModelConfig,
        window: int | None = None,
        stride: int = 1,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        super().__init__(studies, config, cache_dir, progress)
        self.window = int(window or config.refiner.window)
        if self.window < 1 or stride < 1:
            raise InputError(f"window {self.window} and stride {stride} must be at least 1")
        self.stride = int(stride)
        kept = []
        for s in self.studies:
            if s.n_valid < self.window:
                self.skipped.append(
                    Skipped(s.name, f"only {s.n_valid} usable slices, fewer than the refiner window of {self.window}")
                )
            else:
                kept.append(s)
        self.studies = kept
        self._index([(s.n_valid - self.window) // self.stride + 1 for s in self.studies])
        self._require("slice windows")

    def __getitem__(self, index: int) -> dict[str, object]:
        study, offset = self.locate(index)
        start = study.valid[0] + offset * self.stride
        arrays = self._arrays.get(study)
        item: dict[str, object] = {v: self._sample(a, slice(start, start + self.window)) for v, a in arrays.items()}
        item["study"] = study.name
        item["start"] = start
        return item

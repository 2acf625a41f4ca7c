"""What a training run reads: its split, training samples and validation volumes.

Two dataset kinds (``docs/datasets.md``): a study folder (one sub-folder per study) —
split by study into ``RUN/split.json`` on the first run and read back on resume — and
the RegGAN/CPDM slice layout (``train|val|test/A|B/*.npy``), whose split is its folders
and which holds no whole volumes, so it trains stage 1 only. Preprocessed studies are
cached in ``RUN/cache`` (memory-mapped float16 at model size).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..body import body_mask
from ..config import ModelConfig
from ..data.cache import prepare_studies
from ..data.datasets import SliceDataset, WindowDataset
from ..data.npy_layout import NpySliceDataset
from ..data.split import read_manifest, select, split_studies, write_manifest
from ..data.studies import discover_studies, skipped_summary
from ..errors import InputError
from ..intensity import network_to_ct

TRAINING_KEYS = ("ct", "pet")


@dataclass(frozen=True)
class GridVolume:
    """A validation study on the model grid: ``ct`` and ``reference`` (z, H, W) in [-1, 1].

    ``reference`` is the aligned PET when the study has one, else the (misaligned) PET;
    ``body`` the body mask (z, H, W) where the SUV figures are measured; ``lesions`` its
    lesion label map (z, H, W) uint8, when the study has one.
    """

    name: str
    ct: np.ndarray
    reference: np.ndarray
    body: np.ndarray
    lesions: np.ndarray | None = None


@dataclass
class RunData:
    slices: Dataset
    windows: Dataset | None  # None for the slice layout (no volumes)
    val_volumes: list[GridVolume]
    split_digest: str
    summary: str


class _TrainingItems(Dataset):
    """Only the tensors training uses (``ct``, ``pet``), so items of studies with and
    without an aligned PET batch together."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.dataset[index]
        return {key: item[key] for key in TRAINING_KEYS}


def is_slice_layout(root: Path) -> bool:
    return (root / "train" / "A").is_dir() and (root / "train" / "B").is_dir()


def oversample_lesions(n: int, lesion: np.ndarray, fraction: float) -> np.ndarray:
    """Sample indices of one epoch: every sample once, then the lesion samples again, in
    turn, until they make up ``fraction`` of the list (nnU-Net's foreground oversampling,
    as a fixed list so that epochs and resumes stay reproducible)."""
    extra = math.ceil((fraction * n - len(lesion)) / (1.0 - fraction)) if len(lesion) else 0
    return np.concatenate([np.arange(n), np.resize(lesion, max(extra, 0))]).astype(np.int64)


def prepare_data(
    root: Path, run: Path, model: ModelConfig, seed: int, need_windows: bool, lesion_fraction: float = 0.0
) -> RunData:
    """Training samples and validation volumes for a run folder ``run``.

    ``lesion_fraction`` > 0 repeats the slices that show a lesion until they are that
    share of each stage-1 epoch; it needs studies with a lesion map.
    """
    if is_slice_layout(root):
        if lesion_fraction:
            raise InputError("--lesion-fraction needs studies with a lesions map; a RegGAN/CPDM slice folder has none")
        return _slice_layout(root, model)
    studies, skipped = discover_studies(root)
    manifest = run / "split.json"
    if manifest.exists():
        split = read_manifest(manifest)
    else:
        split = split_studies([s.name for s in studies], seed=seed)
        write_manifest(manifest, split)
    cache = run / "cache"
    slices = SliceDataset(select(studies, split, "train"), model, cache)
    windows = WindowDataset(slices.studies, model, stride=1, cache_dir=cache) if need_windows else None
    training: Dataset = slices
    oversampled = ""
    if lesion_fraction:
        lesion = slices.lesion_samples()
        if not len(lesion):
            raise InputError("--lesion-fraction needs training studies with a lesions map showing lesions; none has one")
        indices = oversample_lesions(len(slices), lesion, lesion_fraction)
        training = Subset(slices, indices.tolist())
        share = f"{lesion_fraction:.0%} of {len(indices)} samples per epoch"
        oversampled = f"lesion slices: {len(lesion)} of {len(slices)}, repeated to {share}"
    val_cached, val_skipped = prepare_studies(select(studies, split, "val"), model, cache)
    volumes = []
    for study in val_cached:
        first, stop = study.valid
        arrays = study.open_arrays(("ct", "pet", "pet_aligned", "body", "lesions"))
        reference = arrays.get("pet_aligned", arrays["pet"])
        lesions = arrays["lesions"][first:stop] if "lesions" in arrays else None
        body = arrays["body"][first:stop] > 0
        volumes.append(GridVolume(study.name, arrays["ct"][first:stop], reference[first:stop], body, lesions))
    summary = "\n".join(
        part
        for part in (
            f"train: {slices.summary()}",
            oversampled,
            f"val: {len(volumes)} studies",
            skipped_summary(skipped + val_skipped + (windows.skipped if windows is not None else [])),
        )
        if part
    )
    return RunData(
        _TrainingItems(training), _TrainingItems(windows) if windows is not None else None, volumes, _digest(manifest), summary
    )


def _slice_layout(root: Path, model: ModelConfig) -> RunData:
    slices = NpySliceDataset(root, "train", model)
    volumes = []
    if (root / "val" / "A").is_dir():
        val = NpySliceDataset(root, "val", model)
        by_study: dict[str, list[tuple[int, torch.Tensor, torch.Tensor]]] = defaultdict(list)
        for i in range(len(val)):
            item = val[i]
            by_study[item["study"]].append((item["slice"], item["ct"][0], item["pet"][0]))
        for name, items in sorted(by_study.items()):
            items.sort(key=lambda t: t[0])
            ct = torch.stack([t[1] for t in items]).numpy()
            body = body_mask(network_to_ct(ct, model.intensity), (1.0, model.pixel_mm, model.pixel_mm))
            volumes.append(GridVolume(name, ct, torch.stack([t[2] for t in items]).numpy(), body))
    summary = f"train: {slices.summary()}\nval: {len(volumes)} studies"
    return RunData(_TrainingItems(slices), None, volumes, hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16], summary)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]

"""What a training run reads: its dataset folders, their splits, training samples and validation volumes.

Two dataset kinds (``docs/datasets.md``): a study folder (one sub-folder per study) —
split by study into the run folder on the first run and read back on resume (or a given
manifest) — and the RegGAN/CPDM slice layout (``train|val|test/A|B/*.npy``), whose split
is its folders and which holds no whole volumes, so it trains stage 1 only. A run may mix
several study folders with weights (:mod:`.sources`); each is split on its own, and the
epochs draw from them by weight (:mod:`.sampling`). Preprocessed studies are cached in
``RUN/cache`` (memory-mapped float16 at model size).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from ..body import body_mask
from ..config import ModelConfig
from ..data.cache import prepare_studies
from ..data.datasets import SliceDataset, WindowDataset
from ..data.npy_layout import NpySliceDataset
from ..data.split import Split, read_manifest, select, split_studies, write_manifest
from ..data.studies import discover_studies, skipped_summary
from ..errors import InputError
from ..intensity import network_to_ct
from .sampling import EpochSampler
from .sources import DataSource, manifest_path

TRAINING_KEYS = ("ct", "pet")


@dataclass(frozen=True)
class GridVolume:
    """A validation study on the model grid: ``ct`` and ``reference`` (z, H, W) in [-1, 1].

    ``reference`` is the aligned PET when the study has one, else the (misaligned) PET;
    ``body`` the body mask (z, H, W) where the SUV figures are measured; ``lesions`` its
    lesion label map (z, H, W) uint8, when the study has one; ``source`` the name of its
    dataset folder.
    """

    name: str
    ct: np.ndarray
    reference: np.ndarray
    body: np.ndarray
    lesions: np.ndarray | None = None
    source: str = ""


@dataclass
class RunData:
    """Stage 1 draws ``slices`` in the order of ``slice_sampler``, stage 2 ``windows`` (None
    for the slice layout, which has no volumes) in the order of ``window_sampler``."""

    slices: Dataset
    slice_sampler: EpochSampler
    windows: Dataset | None
    window_sampler: EpochSampler | None
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


def prepare_data(
    sources: Sequence[DataSource], run: Path, model: ModelConfig, seed: int, need_windows: bool, lesion_fraction: float = 0.0
) -> RunData:
    """Training samples and validation volumes of ``sources`` for the run folder ``run``.

    ``lesion_fraction`` > 0 repeats the slices that show a lesion until they are that
    share of each stage-1 epoch; it needs studies with a lesion map.
    """
    layouts = [s for s in sources if is_slice_layout(s.path)]
    if layouts:
        if len(sources) > 1:
            raise InputError(f"{layouts[0].path} is a RegGAN/CPDM slice folder, which trains alone; give it as the only --data")
        if lesion_fraction:
            raise InputError("--lesion-fraction needs studies with a lesions map; a RegGAN/CPDM slice folder has none")
        return _slice_layout(sources[0], model, seed)
    cache = run / "cache"
    slices, windows, volumes, manifests, notes = [], [], [], [], []
    for source in sources:
        studies, skipped = discover_studies(source.path)
        manifest = manifest_path(run, source, len(sources))
        split = _split(manifest, [s.name for s in studies], seed)
        manifests.append(manifest)
        train = SliceDataset(select(studies, split, "train"), model, cache)
        slices.append(train)
        if need_windows:
            windows.append(WindowDataset(train.studies, model, stride=1, cache_dir=cache))
        val_cached, val_skipped = prepare_studies(select(studies, split, "val"), model, cache)
        volumes += [_grid_volume(study, source.name) for study in val_cached]
        label = f"{source.name} ({source.path}, weight {source.weight:g})" if len(sources) > 1 else source.name
        notes += [f"{label} train: {train.summary()}", f"{label} val: {len(val_cached)} studies"]
        notes.append(skipped_summary(skipped + val_skipped + (windows[-1].skipped if need_windows else [])))
    weights = [s.weight for s in sources]
    lesion = None
    if lesion_fraction:
        offsets = np.concatenate([[0], np.cumsum([len(d) for d in slices])[:-1]])
        lesion = np.concatenate([offset + d.lesion_samples() for offset, d in zip(offsets, slices)])
        if not len(lesion):
            raise InputError("--lesion-fraction needs training studies with a lesions map showing lesions; none has one")
        notes.append(
            f"lesion slices: {len(lesion)} of {sum(len(d) for d in slices)}, repeated to {lesion_fraction:.0%} of each epoch"
        )
    slice_sampler = EpochSampler([len(d) for d in slices], weights, seed, "stage1", lesion, lesion_fraction)
    window_sampler = EpochSampler([len(d) for d in windows], weights, seed, "stage2") if need_windows else None
    return RunData(
        _TrainingItems(ConcatDataset(slices)),
        slice_sampler,
        _TrainingItems(ConcatDataset(windows)) if need_windows else None,
        window_sampler,
        volumes,
        _digest(manifests),
        "\n".join(note for note in notes if note),
    )


def _split(manifest: Path, names: list[str], seed: int) -> Split:
    """The run's split of a folder: its manifest once written (or copied from ``--split``), else a new seeded one."""
    if manifest.exists():
        return read_manifest(manifest)
    split = split_studies(names, seed=seed)
    write_manifest(manifest, split)
    return split


def _grid_volume(study, source: str) -> GridVolume:  # type: ignore[no-untyped-def]
    first, stop = study.valid
    arrays = study.open_arrays(("ct", "pet", "pet_aligned", "body", "lesions"))
    reference = arrays.get("pet_aligned", arrays["pet"])
    lesions = arrays["lesions"][first:stop] if "lesions" in arrays else None
    body = arrays["body"][first:stop] > 0
    return GridVolume(study.name, arrays["ct"][first:stop], reference[first:stop], body, lesions, source)


def _slice_layout(source: DataSource, model: ModelConfig, seed: int) -> RunData:
    root = source.path
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
            volumes.append(GridVolume(name, ct, torch.stack([t[2] for t in items]).numpy(), body, source=source.name))
    summary = f"train: {slices.summary()}\nval: {len(volumes)} studies"
    sampler = EpochSampler([len(slices)], [1.0], seed, "stage1")
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return RunData(_TrainingItems(slices), sampler, None, None, volumes, digest, summary)


def _digest(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]

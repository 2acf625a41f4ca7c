"""The training cache: each study preprocessed once at model size and memory-mapped.

A study's CT, PET and (when present) aligned PET on the CT grid are mapped to [-1, 1]
(:mod:`..intensity`) and onto the model grid by :class:`..slice_grid.SliceGrid` — the
mapping inference uses: the model's pixel size, a canvas of at least ``M×M`` centred on
the body (:func:`..body.body_mask`), padding -1 — and stored as float16 ``.npy`` files;
the body mask and a lesion map are stored as uint8 on the same grid (nearest neighbour). The datasets
(:mod:`.datasets`) memory-map them, so RAM stays bounded by the handful of studies a
worker has open, whatever the dataset size.

The cache key covers the model size, the intensity configuration and every source
file's path, size and modification time, so a changed input or configuration never
reuses a stale cache. A cache entry is complete or absent: it is written in a temporary
folder renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..atomic import temporary_folder, write_errors
from ..body import body_mask, in_plane_box
from ..config import IntensityConfig, ModelConfig
from ..errors import InputError
from ..intensity import ct_to_network, pet_to_network
from ..progress import ProgressCallback, no_progress
from ..slice_grid import SliceGrid
from .studies import MIN_COVERAGE, Skipped, Study, load_study

CACHE_VERSION = 4  # 4: physical pixel size, body-centred canvas, body mask


def default_cache_dir() -> Path:
    """``$REGC2P_CACHE``, else ``$XDG_CACHE_HOME/regc2p/studies``, else ``~/.cache/regc2p/studies``."""
    if os.environ.get("REGC2P_CACHE"):
        return Path(os.environ["REGC2P_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "regc2p" / "studies"


@dataclass(frozen=True)
class CachedStudy:
    """A study preprocessed for a model: ``folder`` holds ct/pet[/pet_aligned].npy of shape
    (n_slices, H, W) (the study's canvas, H and W at least M), float16 in [-1, 1], the body
    mask body.npy and, when the study has one, the lesion map lesions.npy (uint8); slices
    ``valid[0]..valid[1]-1`` lie in the PET field of view; ``slice_mm`` is the slice spacing."""

    name: str
    folder: Path
    n_slices: int
    valid: tuple[int, int]
    has_aligned: bool
    slice_mm: float

    @property
    def n_valid(self) -> int:
        return self.valid[1] - self.valid[0]

    def open_arrays(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The named cached volumes this study has (``ct``, ``lesions``, ...), memory-mapped, all slices."""
        return {v: np.load(self.folder / f"{v}.npy", mmap_mode="r") for v in names if (self.folder / f"{v}.npy").exists()}


def cache_key(study: Study, config: ModelConfig) -> str:
    """Hex digest over the model size, intensity config and the source files' path/size/mtime."""
    sources = []
    for path in study.sources():
        st = path.stat()
        sources.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
    payload = {
        "version": CACHE_VERSION,
        "image_size": config.image_size,
        "pixel_mm": config.pixel_mm,
        "size_multiple": config.size_multiple,
        "intensity": asdict(config.intensity),
        "suv_factor": study.suv_factor,
        "min_coverage": MIN_COVERAGE,
        "sources": sources,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """Longest run of True in a 1D mask as (start, stop); (0, 0) when none."""
    best, start = (0, 0), None
    for i, value in enumerate([*mask.tolist(), False]):
        if value and start is None:
            start = i
        elif not value and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def _chunks(volume: sitk.Image, chunk: int = 32):  # type: ignore[no-untyped-def]
    """(start, float32 tensor of up to ``chunk`` slices) over a volume's (z, y, x) voxels."""
    array = sitk.GetArrayViewFromImage(volume)
    for start in range(0, array.shape[0], chunk):
        yield start, torch.from_numpy(np.array(array[start : start + chunk], dtype=np.float32))


def intensities_to_model(volume: sitk.Image, grid: SliceGrid, to_network, intensity: IntensityConfig) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A CT or PET volume on the model grid: ``to_network`` (HU or SUV -> [-1, 1]), then
    :meth:`SliceGrid.to_model` (padding -1); float16 (z, H, W)."""
    out = np.empty((volume.GetSize()[2], *grid.canvas), np.float16)
    for start, block in _chunks(volume):
        out[start : start + len(block)] = grid.to_model(to_network(block, intensity), fill=-1.0).numpy()
    return out


def labels_to_model(volume: sitk.Image, grid: SliceGrid) -> np.ndarray:
    """A label map on the model grid by nearest neighbour (background 0); uint8 (z, H, W)."""
    out = np.empty((volume.GetSize()[2], *grid.canvas), np.uint8)
    for start, block in _chunks(volume):
        out[start : start + len(block)] = grid.to_model(block, fill=0.0, labels=True).numpy()
    return out


def prepare_study(study: Study, config: ModelConfig, cache_dir: str | os.PathLike[str] | None = None) -> CachedStudy:
    """The cached form of ``study`` for ``config``, building it when absent or stale."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(study, config)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", study.name)
    folder = cache_dir / f"{safe}-{key}"
    meta_path = folder / "meta.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("key") == key and all((folder / f"{v}.npy").exists() for v in meta["volumes"]):
                valid = (int(meta["valid"][0]), int(meta["valid"][1]))
                aligned = "pet_aligned" in meta["volumes"]
                return CachedStudy(study.name, folder, int(meta["n_slices"]), valid, aligned, float(meta["slice_mm"]))
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            pass  # unreadable entry: rebuild it below
    loaded = load_study(study)
    ct = loaded.ct
    size = ct.GetSize()
    spacing = ct.GetSpacing()
    body = body_mask(sitk.GetArrayViewFromImage(ct), spacing[::-1])
    grid = SliceGrid.for_model((size[1], size[0]), (spacing[1], spacing[0]), config, in_plane_box(body))
    valid = _longest_run(loaded.coverage >= MIN_COVERAGE)
    if valid[1] == valid[0]:
        raise InputError(
            f"study {study.name}: no CT slice is at least {MIN_COVERAGE:.0%} inside the PET field of view; check the geometry"
        )
    arrays = {
        "ct": intensities_to_model(ct, grid, ct_to_network, config.intensity),
        "pet": intensities_to_model(loaded.pet, grid, pet_to_network, config.intensity),
    }
    if loaded.pet_aligned is not None:
        arrays["pet_aligned"] = intensities_to_model(loaded.pet_aligned, grid, pet_to_network, config.intensity)
    body_image = sitk.GetImageFromArray(body.astype(np.uint8))
    del body
    arrays["body"] = labels_to_model(body_image, grid)
    if loaded.lesions is not None:
        arrays["lesions"] = labels_to_model(loaded.lesions, grid)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # A killed run's partial entry is removed by the next one; a full disk is a one-line error.
    with temporary_folder(cache_dir) as tmp, write_errors(f"the cache of study {study.name}", cache_dir):
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        meta = {"key": key, "n_slices": int(size[2]), "valid": list(valid), "slice_mm": spacing[2], "volumes": sorted(arrays)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    return CachedStudy(study.name, folder, int(size[2]), valid, "pet_aligned" in arrays, float(spacing[2]))


def prepare_studies(
    studies: Sequence[Study],
    config: ModelConfig,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[list[CachedStudy], list[Skipped]]:
    """Cache every study; a study that cannot be read is skipped with its reason."""
    progress = progress or no_progress
    cached: list[CachedStudy] = []
    skipped: list[Skipped] = []
    for i, study in enumerate(studies):
        progress(i / max(len(studies), 1), f"preparing {study.name}")
        try:
            cached.append(prepare_study(study, config, cache_dir))
        except InputError as exc:
            skipped.append(Skipped(study.name, str(exc).removeprefix(f"study {study.name}: ")))
    progress(1.0, f"prepared {len(cached)} studies")
    return cached, skipped

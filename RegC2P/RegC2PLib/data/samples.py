"""Training samples: 2D slice pairs for G/R/D and stacks of consecutive slices for the refiner F.

Each study is preprocessed once into a cache folder: CT, PET and (when present) the
aligned PET on the CT grid, mapped to [-1, 1] (:mod:`..intensity`) and then onto the
model's ``M×M`` grid by :class:`..slice_grid.SliceGrid` (the mapping inference uses;
padding -1), stored as float16 ``.npy`` files that the datasets memory-map. RAM stays
bounded by the handful of studies a worker has open, whatever the dataset size.

The cache key covers the model size, the intensity configuration and every source
file's path, size and modification time, so a changed input or configuration never
reuses a stale cache. A cache entry is complete or absent: its ``meta.json`` is
written last, atomically.

``python -m RegC2PLib.data.samples --bench DIR`` measures the loader alone (slices/s).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import DataLoader, Dataset

from ..atomic import temporary_folder, write_errors
from ..config import ModelConfig, preset
from ..errors import InputError
from ..intensity import ct_to_network, pet_to_network
from ..progress import ProgressCallback, no_progress
from ..slice_grid import SliceGrid
from .studies import Skipped, Study, discover_studies, load_study, skipped_summary

CACHE_VERSION = 2  # 2: lesion maps cached too
VOLUMES = ("ct", "pet", "pet_aligned")
MIN_COVERAGE = 0.5  # a CT slice is used when at least half of it lies in the PET field of view
OPEN_STUDIES = 32  # memory-mapped studies kept open per process


def default_cache_dir() -> Path:
    """``$REGC2P_CACHE``, else ``$XDG_CACHE_HOME/regc2p/studies``, else ``~/.cache/regc2p/studies``."""
    if os.environ.get("REGC2P_CACHE"):
        return Path(os.environ["REGC2P_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "regc2p" / "studies"


@dataclass(frozen=True)
class CachedStudy:
    """A study preprocessed at model size: ``folder`` holds ct/pet[/pet_aligned].npy of
    shape (n_slices, M, M), float16 in [-1, 1], and the lesion map lesions.npy (uint8)
    when the study has one; slices ``valid[0]..valid[1]-1`` lie in the PET field of view."""

    name: str
    folder: Path
    n_slices: int
    valid: tuple[int, int]
    has_aligned: bool

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


def _to_model(volume: sitk.Image, grid: SliceGrid, to_network, intensity, chunk: int = 32) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Intensities onto the model grid (float16, network scale); ``to_network`` None: a label
    map (uint8, nearest neighbour, background 0)."""
    array = sitk.GetArrayViewFromImage(volume)
    labels = to_network is None
    out = np.empty((array.shape[0], grid.size, grid.size), np.uint8 if labels else np.float16)
    for start in range(0, array.shape[0], chunk):
        block = torch.from_numpy(np.array(array[start : start + chunk], dtype=np.float32))
        if labels:
            out[start : start + chunk] = grid.to_model(block, fill=0.0, labels=True).numpy()
        else:
            out[start : start + chunk] = grid.to_model(to_network(block, intensity), fill=-1.0).numpy()
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
                return CachedStudy(
                    study.name, folder, int(meta["n_slices"]), tuple(meta["valid"]), "pet_aligned" in meta["volumes"]
                )  # type: ignore[arg-type]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable entry: rebuild it below
    loaded = load_study(study)
    ct = loaded.ct
    size = ct.GetSize()
    spacing = ct.GetSpacing()
    grid = SliceGrid.fit((size[1], size[0]), (spacing[1], spacing[0]), config.image_size)
    valid = _longest_run(loaded.coverage >= MIN_COVERAGE)
    if valid[1] == valid[0]:
        raise InputError(
            f"study {study.name}: no CT slice is at least {MIN_COVERAGE:.0%} inside the PET field of view; check the geometry"
        )
    arrays = {
        "ct": _to_model(ct, grid, ct_to_network, config.intensity),
        "pet": _to_model(loaded.pet, grid, pet_to_network, config.intensity),
    }
    if loaded.pet_aligned is not None:
        arrays["pet_aligned"] = _to_model(loaded.pet_aligned, grid, pet_to_network, config.intensity)
    if loaded.lesions is not None:
        arrays["lesions"] = _to_model(loaded.lesions, grid, None, config.intensity)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # A killed run's partial entry is removed by the next one; a full disk is a one-line error.
    with temporary_folder(cache_dir) as tmp, write_errors(f"the cache of study {study.name}", cache_dir):
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        meta = {
            "key": key,
            "study": study.name,
            "source": str(study.folder),
            "n_slices": int(size[2]),
            "valid": list(valid),
            "volumes": sorted(arrays),
            "slice_grid": asdict(grid),
            "image_size": config.image_size,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    return CachedStudy(study.name, folder, int(size[2]), valid, "pet_aligned" in arrays)


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

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._arrays = _OpenStudies()

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

    def __len__(self) -> int:
        raise NotImplementedError


class SliceDataset(_StudyDataset):
    """Axial slice pairs. Item: ``ct``, ``pet`` and, when the study has one, ``pet_aligned``
    (each float32 (1, M, M) in [-1, 1]), ``study`` (name) and ``slice`` (CT slice index).

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
        self._ends = np.cumsum([s.n_valid for s in self.studies])
        self._require("slices")

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def lesion_samples(self) -> np.ndarray:
        """Indices of the samples whose slice shows a lesion (only studies with a lesion map count)."""
        found, start = [], 0
        for study, end in zip(self.studies, self._ends, strict=True):
            lesions = study.open_arrays(("lesions",)).get("lesions")
            if lesions is not None:
                found.append(start + np.flatnonzero(lesions[study.valid[0] : study.valid[1]].any(axis=(1, 2))))
            start = int(end)
        return np.concatenate(found) if found else np.empty(0, np.int64)

    def locate(self, index: int) -> tuple[CachedStudy, int]:
        """(study, CT slice index) of sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        i = int(np.searchsorted(self._ends, index, side="right"))
        study = self.studies[i]
        start = int(self._ends[i - 1]) if i else 0
        return study, study.valid[0] + index - start

    def __getitem__(self, index: int) -> dict[str, object]:
        study, k = self.locate(index)
        arrays = self._arrays.get(study)
        item: dict[str, object] = {v: torch.from_numpy(np.asarray(a[k], dtype=np.float32))[None] for v, a in arrays.items()}
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
        self._counts = [(s.n_valid - self.window) // self.stride + 1 for s in self.studies]
        self._ends = np.cumsum(self._counts)
        self._require("slice windows")

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, index: int) -> dict[str, object]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        i = int(np.searchsorted(self._ends, index, side="right"))
        study = self.studies[i]
        start = study.valid[0] + (index - (int(self._ends[i - 1]) if i else 0)) * self.stride
        arrays = self._arrays.get(study)
        item: dict[str, object] = {
            v: torch.from_numpy(np.asarray(a[start : start + self.window], dtype=np.float32)) for v, a in arrays.items()
        }
        item["study"] = study.name
        item["start"] = start
        return item


_NPY_NAME = re.compile(r"^(?P<study>.+?)[_-](?P<slice>\d+)$")


class NpySliceDataset(Dataset):
    """RegGAN/CPDM slice layout: ``root/<subset>/A/*.npy`` (CT) and ``.../B/*.npy`` (PET),
    one 2D slice per file in [-1, 1], pairs matched by file name. Item as in
    :class:`SliceDataset` (``ct``, ``pet`` float32 (1, M, M); slices of another size are
    fitted with :class:`SliceGrid`, square pixels assumed). ``study``/``slice`` come from
    names like ``<study>_<index>.npy`` (else the file name and 0). Unpaired files are
    listed in ``skipped``."""

    def __init__(self, root: str | os.PathLike[str], subset: str, config: ModelConfig) -> None:
        base = Path(root) / subset
        folders = {side: base / side for side in ("A", "B")}
        for folder in folders.values():
            if not folder.is_dir():
                raise InputError(f"{folder} does not exist; the RegGAN/CPDM layout needs {base}/A (CT) and {base}/B (PET)")
        a = {p.name: p for p in folders["A"].glob("*.npy")}
        b = {p.name: p for p in folders["B"].glob("*.npy")}
        self.skipped = [Skipped(f"A/{n}", "no PET slice of the same name in B/") for n in sorted(set(a) - set(b))]
        self.skipped += [Skipped(f"B/{n}", "no CT slice of the same name in A/") for n in sorted(set(b) - set(a))]
        names = sorted(set(a) & set(b))
        if not names:
            raise InputError(f"{base} has no CT/PET slice pairs (.npy files of the same name in A/ and B/)")
        self.pairs = [(a[n], b[n]) for n in names]
        self.size = config.image_size

    def __len__(self) -> int:
        return len(self.pairs)

    def summary(self) -> str:
        lines = [f"{len(self)} slice pairs"]
        if self.skipped:
            lines.append(f"{len(self.skipped)} unpaired files not used:")
            lines += [f"  {s.name}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)

    def _load(self, path: Path) -> torch.Tensor:
        try:
            array = np.load(path)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {path}: {exc}; remove or replace the file") from exc
        array = np.squeeze(np.asarray(array, dtype=np.float32))
        if array.ndim != 2:
            raise InputError(f"{path} holds an array of shape {array.shape}; one 2D slice per file is expected")
        if not np.isfinite(array).all():
            raise InputError(f"{path} holds NaN or infinite values; replace the file with a finite slice")
        low, high = float(array.min()), float(array.max())
        if low < -1.001 or high > 1.001:
            raise InputError(f"{path} has values {low:g}..{high:g}; the RegGAN/CPDM layout stores slices scaled to [-1, 1]")
        tensor = torch.from_numpy(array)[None]
        if array.shape != (self.size, self.size):
            tensor = SliceGrid.fit(array.shape, (1.0, 1.0), self.size).to_model(tensor, fill=-1.0)
        return tensor

    def __getitem__(self, index: int) -> dict[str, object]:
        ct_path, pet_path = self.pairs[index]
        ct, pet = self._load(ct_path), self._load(pet_path)
        match = _NPY_NAME.match(ct_path.stem)
        study, k = (match["study"], int(match["slice"])) if match else (ct_path.stem, 0)
        return {"ct": ct, "pet": pet, "study": study, "slice": k}


def loader_speed(dataset: Dataset, batch_size: int = 16, workers: int = 2, max_batches: int = 200) -> float:
    """Slices per second delivered by a shuffled DataLoader over ``dataset`` (loader only).

    For window datasets a sample counts as its number of slices.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=False)
    count, start = 0, None
    for i, batch in enumerate(loader):
        if i == 0:
            start = time.perf_counter()  # exclude worker start-up
            continue
        count += int(batch["ct"].shape[0] * batch["ct"].shape[1])
        if i >= max_batches:
            break
    if start is None or count == 0:
        raise InputError("the dataset is too small to measure the loader; use more studies or a smaller batch")
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m RegC2PLib.data.samples", description="Measure the training-sample loader.")
    parser.add_argument("--bench", metavar="DIR", required=True, help="dataset folder (one sub-folder per study)")
    parser.add_argument("--preset", default="small", help="model preset deciding the slice size (default small)")
    parser.add_argument("--cache", metavar="DIR", help="cache folder (default: a fresh temporary folder)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)
    config = preset(args.preset)
    try:
        studies, skipped = discover_studies(args.bench)
        with tempfile.TemporaryDirectory() as scratch:
            cache = Path(args.cache) if args.cache else Path(scratch)
            start = time.perf_counter()
            slices = SliceDataset(studies, config, cache)
            prepared = time.perf_counter() - start
            n = max(len(slices.studies), 1)
            print(f"cache built in {prepared:.1f} s for {len(slices.studies)} studies ({prepared / n:.2f} s/study)")
            print(slices.summary())
            if skipped:
                print(skipped_summary(skipped))
            speed = loader_speed(slices, args.batch, args.workers)
            size = f"{config.image_size}x{config.image_size}"
            print(f"SliceDataset  {size}: {speed:.0f} slices/s ({args.workers} workers, batch {args.batch})")
            windows = WindowDataset(slices.studies, config)
            speed = loader_speed(windows, max(1, args.batch // config.refiner.window), args.workers)
            print(f"WindowDataset {config.refiner.window}x{config.image_size}x{config.image_size}: {speed:.0f} slices/s")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

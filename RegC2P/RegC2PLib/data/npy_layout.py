"""The RegGAN/CPDM slice layout: ``root/<subset>/A/*.npy`` (CT) and ``.../B/*.npy`` (PET)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import ModelConfig
from ..errors import InputError
from ..slice_grid import SliceGrid
from .studies import Skipped

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
            # No spacing in this layout: a slice is taken to span the model grid (M pixels of pixel_mm).
            spacing = (self.size / array.shape[0], self.size / array.shape[1])
            tensor = SliceGrid.fit(array.shape, spacing, 1.0, self.size).to_model(tensor, fill=-1.0)
        return tensor

    def __getitem__(self, index: int) -> dict[str, object]:
        ct_path, pet_path = self.pairs[index]
        ct, pet = self._load(ct_path), self._load(pet_path)
        match = _NPY_NAME.match(ct_path.stem)
        study, k = (match["study"], int(match["slice"])) if match else (ct_path.stem, 0)
        return {"ct": ct, "pet": pet, "study": study, "slice": k}

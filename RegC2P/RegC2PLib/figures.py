"""Fused PET/CT figures (PNG): CT in grey, PET in a heat colour map over it.

Used by ``regc2p demo`` and the quality benchmark: one column per PET (synthetic
PETs of each method, the reference), rows with axial slices at chosen levels and one
coronal slice, drawn with the physical aspect ratio.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes

CT_WINDOW_HU = (-160.0, 240.0)  # soft-tissue window (W 400, L 40)
SUV_WINDOW = (0.0, 10.0)
PET_MIN_SHOWN = 0.3  # SUV below this is transparent, as in a fused viewer


def _overlay(ax: Axes, ct: np.ndarray, pet: np.ndarray | None, aspect: float, title: str) -> None:
    ax.imshow(ct, cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], aspect=aspect, interpolation="bilinear")
    if pet is not None:
        shown = np.ma.masked_less(pet, PET_MIN_SHOWN)
        ax.imshow(shown, cmap="hot", vmin=SUV_WINDOW[0], vmax=SUV_WINDOW[1], alpha=0.7, aspect=aspect, interpolation="bilinear")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def fused_figure(
    ct: np.ndarray,
    pets: Mapping[str, np.ndarray],
    spacing_zyx: Sequence[float],
    axial_levels: Sequence[int],
    out: Path,
    coronal_row: int | None = None,
    title: str = "",
) -> None:
    """Write a grid of fused views of (z, y, x) LPS-ordered volumes: CT alone, then each PET over it.

    ``axial_levels`` are slice indices (z); the coronal view is row ``coronal_row`` (y;
    default: the middle), shown head up. Axial slices are shown as stored (LPS arrays:
    the patient's right on the left of the image, anterior up). Needs matplotlib, which is
    imported here only and drawn through its object API (no pyplot), so a host
    application's plotting backend (e.g. Slicer's) is never changed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sz, sy, sx = (float(s) for s in spacing_zyx)
    rows = len(axial_levels) + 1
    cols = len(pets) + 1
    fig = Figure(figsize=(2.6 * cols, 2.6 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    y = ct.shape[1] // 2 if coronal_row is None else coronal_row
    for r, z in enumerate(axial_levels):
        _overlay(axes[r][0], ct[z], None, sy / sx, f"CT z={z}")
        for c, (name, pet) in enumerate(pets.items(), start=1):
            _overlay(axes[r][c], ct[z], pet[z], sy / sx, name)
    order = slice(None, None, -1)  # LPS arrays: z index grows towards the head; head up
    _overlay(axes[-1][0], ct[order, y, :], None, sz / sx, "CT coronal")
    for c, (name, pet) in enumerate(pets.items(), start=1):
        _overlay(axes[-1][c], ct[order, y, :], pet[order, y, :], sz / sx, f"{name} coronal")
    top = 1.0
    if title:
        fig.suptitle(title, fontsize=10)
        top -= 0.35 / fig.get_figheight()  # room for the title above the first row's titles
    fig.tight_layout(rect=(0.0, 0.0, 1.0, top))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")

"""Loss and validation curves from the metrics log, as one PNG.

matplotlib is optional: Slicer does not bundle it, so a training worker inside Slicer
may run without it (:func:`can_plot`); it is imported only when drawing, through its
object API (no pyplot), so the host application's plotting backend is never changed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_path

_LOSSES = {"stage1": ("loss_g", "l_corr", "l_smooth", "l_adv", "loss_d"), "stage2": ("loss_f", "l1_unrefined")}
_VAL = ("mae", "ssim", "psnr", "suv_mae_body")


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    if len(values) < width or width < 2:
        return values
    return np.convolve(values, np.ones(width) / width, mode="valid")


NO_MATPLOTLIB = "matplotlib is not installed, so no curves.png is drawn (metrics.jsonl holds every value)"


def can_plot() -> bool:
    """Whether matplotlib can be imported here (Slicer does not bundle it)."""
    return importlib.util.find_spec("matplotlib") is not None


def plot_curves(log_path: Path, out_path: Path) -> None:
    """Training losses per stage (moving average) and validation metrics per epoch (needs matplotlib)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    stages = [s for s in _LOSSES if any(r["stage"] == s for r in records)]
    fig = Figure(figsize=(11, 3.6 * max(1, len(stages))))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(stages), 2, squeeze=False)
    for row, stage in zip(axes, stages):
        train = [r for r in records if r["stage"] == stage and r["kind"] == "train"]
        val = [r for r in records if r["stage"] == stage and r["kind"] == "val"]
        steps = np.array([r["step"] for r in train])
        width = max(1, len(train) // 50)
        for key in _LOSSES[stage]:
            values = np.array([r[key] for r in train if key in r], dtype=float)
            if values.size:
                row[0].plot(
                    steps[width - 1 :] if width > 1 and len(values) >= width else steps, _smooth(values, width), label=key
                )
        row[0].set(title=f"{stage} training losses", xlabel="step", yscale="log")
        row[0].legend(fontsize=8)
        for key in _VAL:
            if val and key in val[0]:
                row[1].plot([r["step"] for r in val], [r[key] for r in val], marker="o", label=key)
        row[1].set(title=f"{stage} validation (MAE: paper scale; SUV MAE in body)", xlabel="step", yscale="log")
        if val:
            row[1].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")

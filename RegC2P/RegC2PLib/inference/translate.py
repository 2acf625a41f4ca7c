"""Volume translation: CT (HU) in, synthetic PET (SUV) out on exactly the CT's grid.

Steps: view the voxels in axial LPS order (an axis permutation/flip, no copy) so slices
are axial and in the training orientation; in-plane map each batch of slices onto the
model grid (:class:`SliceGrid`); normalise HU to [-1, 1]; G over batches of slices;
stack into a (z, M, M) volume; refine with windows of ``s`` slices at stride ``k``
(overlap, non-overlap or none); map back, denormalise to SUV, written through the same
view into the CT's own voxel order.

Memory stays bounded: one batch of slices (or windows) of activations at a time,
float32 buffers throughout (never a float64 copy of the volume), the model-grid stack
(z·M·M float32) and the output volume.

Speed (benchmarks/speed.py, docs/benchmark-speed.md): G runs ``batch_size`` slices per
pass and F ``batch_size // 2`` windows per pass — one window at a time would send the
``small`` refiner's 3×3×3 convolutions to PyTorch's slow non-oneDNN path. bfloat16 is
opt-in (``precision``, see :mod:`.acceleration`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from .. import values
from ..choices import PRECISIONS, REFINE_MODES
from ..config import MAX_WINDOW, ModelConfig
from ..errors import InputError, ModelFileError
from ..intensity import ct_to_network, network_to_pet
from ..memory import require_memory, translation_bytes
from ..model_file import LoadedModel
from ..progress import CancelToken, ProgressCallback, Stage, no_progress
from ..slice_grid import SliceGrid
from ..volume_checks import count_non_finite
from ..volume_io import AxialOrder, array_view, check_ct, image_like
from .acceleration import compute_precision, resolve_precision
from .device import resolve_device
from .windows import WindowPlan, refine_windows

MAX_BATCH = 4096  # slices per G pass
# Share of the progress bar each step gets (translation dominates the run time).
_TRANSLATE, _REFINE = 0.75, 0.95


@dataclass(frozen=True)
class TranslationOptions:
    """How to run a translation.

    ``refine``: ``overlap`` (stride < window, overlapping outputs averaged),
    ``non-overlap`` (stride = window) or ``none`` (stacked G outputs only).
    ``window``/``stride`` default to the model's trained values; ``batch_size`` is the
    number of slices per G pass (F runs ``max(1, batch_size // 2)`` windows per pass).
    ``precision``: ``float32`` (default) or ``bfloat16`` (autocast: faster, but outside the
    project's tolerance of float32 — about 100 paper MAE units on a phantom; previews only,
    see :mod:`.acceleration`).
    """

    refine: str = "overlap"
    window: int | None = None
    stride: int | None = None
    device: str = "auto"
    batch_size: int = 8
    precision: str = "float32"

    def __post_init__(self) -> None:
        try:
            values.one_of("refinement", self.refine, REFINE_MODES)
            values.one_of("precision", self.precision, PRECISIONS)
            values.whole("batch size", self.batch_size, 1, MAX_BATCH)
            for name in ("window", "stride"):
                if getattr(self, name) is not None:
                    values.whole(name, getattr(self, name), 1, MAX_WINDOW)
        except ValueError as exc:
            raise InputError(str(exc)) from exc

    @property
    def windows_per_batch(self) -> int:
        """Refiner windows per forward pass."""
        return max(1, self.batch_size // 2)

    def window_and_stride(self, config: ModelConfig) -> tuple[int, int]:
        """Validated (s, k) for a model of ``config``; raises :class:`InputError` on a bad combination."""
        window = self.window if self.window is not None else config.refiner.window
        if self.refine == "non-overlap":
            if self.stride is not None and self.stride != window:
                raise InputError(f"non-overlap refinement uses stride = window ({window}); drop --stride or use --refine overlap")
            return window, window
        stride = self.stride if self.stride is not None else min(config.refiner.stride, max(window - 1, 1))
        if self.refine == "overlap" and not 1 <= stride < window:
            raise InputError(f"overlap refinement needs 1 <= stride < window (got stride {stride}, window {window})")
        return window, stride


def translate_volume(
    ct: sitk.Image,
    model: LoadedModel,
    options: TranslationOptions = TranslationOptions(),
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> sitk.Image:
    """Translate a CT (HU) into a synthetic PET (float32 SUV) on exactly the CT's grid."""
    progress = progress or no_progress
    check_ct(ct)
    window, stride = options.window_and_stride(model.config)
    if options.refine != "none" and model.refiner is None:
        raise InputError("this model file has no refiner; use refine 'none' or a model trained with stage 2")
    device = resolve_device(options.device)
    dtype = resolve_precision(options.precision, device)
    model.to(device)
    cancel = cancel or CancelToken()

    # Axial slices through a permuted/flipped view: a CT stored in another orientation
    # is never copied, and the result is written straight into the CT's own voxel order.
    order = AxialOrder.of(ct)
    hu = order.view(array_view(ct))
    m = model.config.image_size
    require_memory(
        translation_bytes(
            model.config,
            hu.shape[0],
            hu.size,
            options.batch_size,
            window if options.refine != "none" else None,
            options.windows_per_batch,
        ),
        f"translating this {'x'.join(map(str, ct.GetSize()))} CT on {m}x{m} model slices",
        "lower the batch size, or use a model with smaller slices",
    )
    grid = SliceGrid.fit(hu.shape[1:], order.spacing[1:], model.config.image_size)
    cfg = model.config.intensity

    with torch.inference_mode(), compute_precision(device, dtype):
        stack = _translate_slices(hu, grid, model, device, options.batch_size, Stage(progress, 0.0, _TRANSLATE), cancel)
        if options.refine != "none":
            assert model.refiner is not None
            plan = WindowPlan(stack.shape[0], window, stride)
            stack = refine_windows(
                stack, model.refiner, plan, device, options.windows_per_batch, Stage(progress, _TRANSLATE, _REFINE), cancel
            )
        stored = np.empty(array_view(ct).shape, dtype=np.float32)
        suv = order.view(stored)
        for first in range(0, hu.shape[0], options.batch_size):
            cancel.raise_if_cancelled()
            block = stack[first : first + options.batch_size]
            suv[first : first + len(block)] = network_to_pet(grid.from_model(block), cfg).numpy()
        del stack, suv

    bad, _ = count_non_finite(stored)
    if bad:  # finite CT and weights are checked on input: this is the last line of defence
        raise ModelFileError(f"the model produced {bad} NaN or infinite PET voxels for this CT; nothing was written")
    pet = image_like(stored, ct)  # exactly the CT's grid
    progress(1.0, "done")
    return pet


def _translate_slices(
    hu: np.ndarray,
    grid: SliceGrid,
    model: LoadedModel,
    device: torch.device,
    batch_size: int,
    progress: ProgressCallback,
    cancel: CancelToken,
) -> torch.Tensor:
    """G over batches of slices: (z, y, x) HU -> (z, M, M) float32 on the CPU, in [-1, 1]."""
    n = hu.shape[0]
    size = model.config.image_size
    stack = torch.empty((n, size, size), dtype=torch.float32)
    for first in range(0, n, batch_size):
        cancel.raise_if_cancelled()
        # np.array copies: a float32 CT would otherwise give a read-only view of the image buffer
        block = torch.from_numpy(np.array(hu[first : first + batch_size], dtype=np.float32))
        x = grid.to_model(ct_to_network(block, model.config.intensity), fill=-1.0)
        stack[first : first + len(block)] = model.generator(x[:, None].to(device))[:, 0].float().cpu()
        done = min(first + batch_size, n)
        progress(done / n, f"translated {done}/{n} slices")
    return stack

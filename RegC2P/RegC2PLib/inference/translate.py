"""Volume translation: CT (HU) in, synthetic PET (SUV) out on exactly the CT's grid.

Steps: view the voxels in axial LPS order (an axis permutation/flip, no copy) so slices
are axial and in the training orientation; find the body (:func:`~RegC2PLib.body.body_mask`);
in-plane map each batch of slices onto the model grid at the model's physical pixel
size, centred on the body (:class:`SliceGrid`); normalise HU to [-1, 1]; G over batches
of the slices from the body's first to its last (air-only slices at either end are not
computed: their PET is 0); stack into a (z, H, W) volume; refine with windows of ``s``
slices at stride ``k`` (overlap, non-overlap or none); map back, denormalise to SUV, set 0
outside the body (unless ``body_mask`` is off: then every slice is translated), written
through the same view into the CT's own voxel order.

Memory stays bounded: one batch of slices (or windows) of activations at a time,
float32 buffers throughout (never a float64 copy of the volume), the model-grid stack
(z·H·W float32), the body mask (one byte per voxel) and the output volume.

Speed (benchmarks/speed.py, docs/benchmark-speed.md): G runs ``batch_size`` slices per
pass — by default the size measured fastest on this machine (:mod:`.batching`) — and F
several windows per pass: one window at a time would send the ``small`` refiner's
3×3×3 convolutions to PyTorch's slow non-oneDNN path; on CPUs both run channels_last.
bfloat16 is used where the device has it natively and the model's precision record
says it keeps the PET within tolerance (``precision`` ``auto``, see :mod:`.acceleration`).
"""

from __future__ import annotations

import time

import numpy as np
import SimpleITK as sitk
import torch

from ..body import axial_extent, body_mask, in_plane_box
from ..errors import InputError, ModelFileError
from ..intensity import ct_to_network, network_to_pet
from ..memory import require_memory, translation_bytes
from ..model_file import LoadedModel
from ..progress import CancelToken, ProgressCallback, ProgressRange, no_progress
from ..slice_grid import SliceGrid
from ..volume_checks import count_non_finite
from ..volume_io import AxialOrder, array_view, check_ct, image_like
from .acceleration import compute_precision, place, resolve_precision
from .batching import BatchSizer, largest_batch
from .device import resolve_device
from .options import TranslationOptions
from .windows import WindowPlan, refine_windows

# Share of the progress bar each step gets (translation dominates the run time).
_TRANSLATE, _REFINE = 0.75, 0.95
PRECISION_KEY = "regc2p_precision"  # image metadata: the precision the networks ran in
_WRITE_BLOCK = 16  # model-grid slices mapped back to the CT per step (bounds the temporaries)


def translate_volume(
    ct: sitk.Image,
    model: LoadedModel,
    options: TranslationOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> sitk.Image:
    """Translate a CT (HU) into a synthetic PET (float32 SUV) on exactly the CT's grid."""
    options = options or TranslationOptions()
    progress = progress or no_progress
    check_ct(ct)
    window, stride = options.validate(model.config)
    if options.refine != "none" and model.refiner is None:
        raise InputError("this model file has no refiner; use refine 'none' or a model trained with stage 2")
    device = resolve_device(options.device)
    dtype = resolve_precision(options.precision, device, model)
    flat, volume = place(model, device)
    cancel = cancel or CancelToken()

    # Axial slices through a permuted/flipped view: a CT stored in another orientation
    # is never copied, and the result is written straight into the CT's own voxel order.
    order = AxialOrder.of(ct)
    hu = order.view(array_view(ct))
    # The grid is centred on the body, and only the slices from the body's first to its last
    # are translated (the PET is 0 outside the body); without the body mask, everything is.
    body = body_mask(hu, order.spacing) if options.body_mask else None
    box = in_plane_box(body) if body is not None else None
    z0, z1 = axial_extent(body) if body is not None else (0, hu.shape[0])
    grid = SliceGrid.for_model(hu.shape[1:], order.spacing[1:], model.config, box)
    refine_window = window if options.refine != "none" else None

    def needed(batch: int) -> float:
        window_or_none = refine_window if z1 > z0 else None  # a CT without body runs no network
        return translation_bytes(model.config, grid.canvas, z1 - z0, hu.size, batch, window_or_none, options.windows_per_batch)

    largest = largest_batch(options.batch_size, device, needed)
    require_memory(
        needed(largest),
        f"translating this {'x'.join(map(str, ct.GetSize()))} CT on {'x'.join(map(str, grid.canvas))} model slices",
        "lower the batch size, or use a model with smaller slices",
    )
    sizer = BatchSizer(options.batch_size, device, (grid.canvas, model.config.generator, dtype), largest)
    cfg = model.config.intensity

    stored = np.zeros(array_view(ct).shape, dtype=np.float32)
    with torch.inference_mode(), compute_precision(device, dtype):
        if z1 > z0:
            part = ProgressRange(progress, 0.0, _TRANSLATE)
            stack = _translate_slices(hu[z0:z1], grid, model, device, flat, sizer, part, cancel)
            if refine_window is not None:
                assert model.refiner is not None
                plan = WindowPlan(stack.shape[0], window, stride)
                part = ProgressRange(progress, _TRANSLATE, _REFINE)
                stack = refine_windows(stack, model.refiner, plan, device, options.windows_per_batch, part, cancel, volume)
            suv = order.view(stored)
            for first in range(0, z1 - z0, _WRITE_BLOCK):
                cancel.raise_if_cancelled()
                block = stack[first : first + _WRITE_BLOCK]
                suv[z0 + first : z0 + first + len(block)] = network_to_pet(grid.from_model(block), cfg).numpy()
            if body is not None:
                suv[~body] = 0.0
            del stack, suv
        del body

    bad, _ = count_non_finite(stored)
    if bad:  # finite CT and weights are checked on input: this is the last line of defence
        raise ModelFileError(f"the model produced {bad} NaN or infinite PET voxels for this CT; nothing was written")
    pet = image_like(stored, ct)  # exactly the CT's grid
    precision = str(dtype).removeprefix("torch.")
    pet.SetMetaData(PRECISION_KEY, precision)  # kept by NRRD/MHA files: the Slicer glue records it
    progress(1.0, f"done ({device.type}, {precision})")
    return pet


def _translate_slices(
    hu: np.ndarray,
    grid: SliceGrid,
    model: LoadedModel,
    device: torch.device,
    layout: torch.memory_format,
    sizer: BatchSizer,
    progress: ProgressCallback,
    cancel: CancelToken,
) -> torch.Tensor:
    """G over batches of slices (``sizer`` says how many per pass) in memory format ``layout``:
    (z, y, x) HU -> (z, H, W) float32 on the CPU, in [-1, 1]."""
    n = hu.shape[0]
    stack = torch.empty((n, *grid.canvas), dtype=torch.float32)
    first = 0
    while first < n:
        cancel.raise_if_cancelled()
        started = time.perf_counter()
        # np.array copies: a float32 CT would otherwise give a read-only view of the image buffer
        block = torch.from_numpy(np.array(hu[first : first + sizer.next_size()], dtype=np.float32))
        x = grid.to_model(ct_to_network(block, model.config.intensity), fill=-1.0)
        stack[first : first + len(block)] = model.generator(x[:, None].to(device, memory_format=layout))[:, 0].float().cpu()
        sizer.record(len(block), time.perf_counter() - started)  # .cpu() waits for the device
        first += len(block)
        progress(first / n, f"translated {first}/{n} slices")
    return stack

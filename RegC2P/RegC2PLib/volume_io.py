"""Reading, checking and atomically writing volumes with SimpleITK.

Volumes stay ``SimpleITK.Image`` objects (LPS physical space, spacing/origin/direction
kept) until the moment a voxel array is needed; arrays are ``(z, y, x)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_path
from .data.dicom_series import read_ct_series
from .errors import InputError

# Extensions SimpleITK writes; used to keep the suffix of a temporary file so the
# right ImageIO is chosen, and to give a clear error for anything else.
WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".tif", ".tiff")


def read_image(path: str | os.PathLike[str]) -> sitk.Image:
    """Read a volume file (any SimpleITK format), or the CT series of a DICOM folder tree
    (:func:`RegC2PLib.data.dicom_series.read_ct_series`: series chosen and geometry checked)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; give the path of a volume file or a DICOM series folder")
    try:
        if path.is_dir():
            return read_ct_series(path).image
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise InputError(f"cannot read {path}: {first}") from exc


def check_volume(image: sitk.Image, what: str) -> None:
    """Refuse anything but a 3D single-component volume with at least one voxel."""
    if image.GetDimension() != 3:
        raise InputError(f"the {what} is {image.GetDimension()}D; a 3D volume is required")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"the {what} has {image.GetNumberOfComponentsPerPixel()} components per voxel (colour or vector image); "
            "a scalar (grayscale) volume is required"
        )
    if min(image.GetSize()) < 1:
        raise InputError(f"the {what} is empty (size {image.GetSize()})")


def check_ct(image: sitk.Image) -> None:
    """Refuse a volume that is not a CT in Hounsfield units.

    A CT of the body contains air (about -1000 HU, outside the body or in the lungs)
    and spans hundreds of HU; a normalised image (e.g. all within 0..1), a label map or
    a CT stored without its rescale intercept does not.
    """
    check_volume(image, "CT")
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    low, high = stats.GetMinimum(), stats.GetMaximum()
    if high - low < 100 or low > -100 or low < -10000 or high > 65535:
        raise InputError(
            f"CT values {low:g}..{high:g} are not plausible Hounsfield units (air should be near -1000 HU); "
            "convert the CT to HU (apply the rescale slope/intercept) and try again"
        )


def to_axial(image: sitk.Image) -> sitk.Image:
    """``image`` reoriented to LPS (a lossless permutation/flip of axes), so index k runs
    along the body axis and slices are axial in the orientation models are trained in.
    Returns ``image`` itself when it is already LPS (no copy)."""
    orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    return image if orientation == "LPS" else sitk.DICOMOrient(image, "LPS")


@dataclass(frozen=True)
class AxialOrder:
    """The permutation and flips that put an image's stored ``(z, y, x)`` voxel array in
    axial LPS order — the array :func:`to_axial` would give, as a view instead of a copy.

    ``axes[t]`` is the stored array axis that becomes axial axis ``t`` (0: toward S,
    1: toward P, 2: toward L); ``flips[t]`` reverses it; ``spacing`` is in mm, axial order.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    spacing: tuple[float, float, float]

    @classmethod
    def of(cls, image: sitk.Image) -> AxialOrder:
        # Each letter says where an image axis (i, j, k) points, as DICOMOrient reads it.
        letters = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
        axes, flips, spacing = [], [], []
        for pair in ("SI", "PA", "LR"):
            m = next(m for m, letter in enumerate(letters) if letter in pair)
            axes.append(2 - m)  # image axis m is array axis 2 - m
            flips.append(letters[m] != pair[0])
            spacing.append(image.GetSpacing()[m])
        return cls(tuple(axes), tuple(flips), tuple(spacing))  # type: ignore[arg-type]

    def view(self, array: np.ndarray) -> np.ndarray:
        """Axial view of a stored-order ``array`` (writeable if ``array`` is)."""
        steps = tuple(slice(None, None, -1) if flip else slice(None) for flip in self.flips)
        return np.transpose(array, self.axes)[steps]


class _ImageView(np.ndarray):
    """A NumPy view that keeps the SimpleITK image owning its buffer alive."""

    image: sitk.Image


def array_view(image: sitk.Image) -> np.ndarray:
    """Read-only ``(z, y, x)`` view of the voxels (no copy).

    SimpleITK's own view does not keep the image alive, so ``GetArrayViewFromImage(f())``
    would read freed memory once the temporary image is collected; this view holds a
    reference to ``image`` (and slices of it hold the view).
    """
    view = sitk.GetArrayViewFromImage(image).view(_ImageView)
    view.image = image
    return view


def image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Wrap a ``(z, y, x)`` array in an image with ``reference``'s geometry."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def resample_onto(image: sitk.Image, reference: sitk.Image, default_value: float = 0.0, linear: bool = True) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid by physical coordinates (float32)."""
    interpolator = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default_value, sitk.sitkFloat32)


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Refuse an output path whose folder does not exist or whose format is unknown."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} does not exist; create it first")
    if not path.name.lower().endswith(WRITABLE_SUFFIXES):
        raise InputError(f"cannot write {path.name}: use one of {', '.join(WRITABLE_SUFFIXES)}")
    return path


def write_image(image: sitk.Image, path: str | os.PathLike[str], compress: bool = True) -> None:
    """Write atomically (temporary file in the same folder, then rename over ``path``)."""
    path = check_output_path(path)
    suffix = next(s for s in WRITABLE_SUFFIXES if path.name.lower().endswith(s))
    with atomic_path(path, suffix) as tmp:
        sitk.WriteImage(image, str(tmp), compress)

"""Reading, checking and atomically writing volumes with SimpleITK.

Volumes stay ``SimpleITK.Image`` objects (LPS physical space, spacing/origin/direction
kept) until the moment a voxel array is needed; arrays are ``(z, y, x)``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_path, check_output_file
from .data.dicom_series import read_ct_series
from .errors import InputError, OutputError
from .volume_checks import check_file_complete, check_finite, check_grid, file_problem

# Extensions SimpleITK writes; used to keep the suffix of a temporary file so the
# right ImageIO is chosen, and to give a clear error for anything else.
WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".tif", ".tiff")
_SLICE_READABLE = (".nii.gz", ".nii", ".mha", ".mhd")  # ITK reads one slice of these without the rest


def read_image(path: str | os.PathLike[str]) -> sitk.Image:
    """Read a volume file (any SimpleITK format), or the CT series of a DICOM folder tree
    (:func:`RegC2PLib.data.dicom_series.read_ct_series`: series chosen and geometry checked)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; give the path of a volume file or a DICOM series folder")
    try:
        if path.is_dir():
            return read_ct_series(path).image
        return _read_file(path)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise InputError(f"cannot read {path}: {first}") from exc


@contextmanager
def native_messages(lines: list[str] | None = None) -> Iterator[list[str]]:
    """Collect what ITK's C/C++ code prints on stderr during the block — MetaIO and the NIfTI
    library report problems there, besides or instead of raising — so that the command line
    keeps its one-line errors. The lines are in the yielded list (or ``lines``) after the block."""
    lines = [] if lines is None else lines
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr (a GUI process): nothing to capture
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line.strip() for line in sink.read().decode(errors="replace").splitlines() if line.strip())


def _itk_reason(exc: RuntimeError, printed: list[str]) -> str:
    """One line for an ITK failure: what its C++ code printed, else the exception's last line."""
    if printed:
        return "; ".join(printed[:2])
    text = str(exc).strip()
    return text.splitlines()[-1] if text else "unknown reason"


def _read_file(path: Path) -> sitk.Image:
    """A volume file, refused when it is truncated or corrupt (:func:`check_file_complete`)."""
    check_file_complete(path)
    printed: list[str] = []
    try:
        with native_messages(printed):
            return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot read {path}: {_itk_reason(exc, printed)}") from exc


def check_volume(image: sitk.Image, what: str) -> None:
    """Refuse anything but a 3D single-component volume with at least one voxel, on a
    usable grid (:func:`check_grid`) and with finite values (:func:`check_finite`)."""
    if image.GetDimension() != 3:
        raise InputError(f"the {what} is {image.GetDimension()}D; a 3D volume is required")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"the {what} has {image.GetNumberOfComponentsPerPixel()} components per voxel (colour or vector image); "
            "a scalar (grayscale) volume is required"
        )
    if min(image.GetSize()) < 1:
        raise InputError(f"the {what} is empty (size {image.GetSize()})")
    check_grid(image, what)
    check_finite(image, what)


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
    """Refuse, before any work, an output path that cannot be written (:func:`check_output_file`)
    or whose format is unknown."""
    path = check_output_file(path)
    if not path.name.lower().endswith(WRITABLE_SUFFIXES):
        raise InputError(f"cannot write {path.name}: use one of {', '.join(WRITABLE_SUFFIXES)}")
    return path


def write_image(image: sitk.Image, path: str | os.PathLike[str], compress: bool = True) -> None:
    """Write atomically and verified: the file is written under its own name in a temporary
    folder, read back (complete data, header, last slice equal to ``image``'s) and only
    then renamed into place, its data file first for ``.mhd``/``.nhdr``. A full disk or
    any short write is an :class:`OutputError` and leaves the previous file."""
    path = check_output_path(path)
    printed: list[str] = []
    with atomic_path(path, check=lambda tmp: _verify_written(image, tmp, printed)) as tmp:
        try:
            with native_messages(printed):
                sitk.WriteImage(image, str(tmp), compress)
        except RuntimeError as exc:
            raise OutputError(
                f"cannot write {path}: {_itk_reason(exc, printed)}; check the free space and permissions of {path.parent}"
            ) from exc


def _verify_written(image: sitk.Image, written: Path, printed: list[str]) -> None:
    """Refuse a written file that is incomplete or reads back other than ``image`` (size, last slice)."""
    # The NIfTI writer reports a short write (a full disk) only by printing "** ERROR: NWAD".
    problem = file_problem(written)
    if problem is None:
        try:
            problem = _read_back_problem(image, written)
        except RuntimeError as exc:
            problem = f"is unreadable ({_itk_reason(exc, [])})"
    if problem:
        said = f"; the writer said: {'; '.join(printed[:2])}" if printed else ""
        raise OutputError(
            f"cannot write {written.name}: the file on disk {problem}{said}; check the free space and permissions "
            "of the output folder"
        )


def _read_back_problem(image: sitk.Image, written: Path) -> str | None:
    """How the written file's header or last slice differs from ``image``, or None. The slice
    is compared where ITK reads it alone (NIfTI, MetaImage); NRRD and TIFF readers would load
    the whole volume again, so there the header is compared and the data checked by
    :func:`file_problem` (a compressed NRRD's stream to its end)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(written))
    with native_messages():
        reader.ReadImageInformation()
        size = image.GetSize()
        if reader.GetSize() != size or reader.GetNumberOfComponents() != image.GetNumberOfComponentsPerPixel():
            return f"is of {reader.GetSize()} voxels instead of {size}"
        if not written.name.lower().endswith(_SLICE_READABLE):
            return None
        last = size[-1] - 1
        reader.SetExtractIndex([0] * (len(size) - 1) + [last])
        reader.SetExtractSize([*size[:-1], 1])
        back = sitk.GetArrayFromImage(reader.Execute())
    expected = sitk.GetArrayViewFromImage(image)[last : last + 1]
    if back.shape != expected.shape or not np.array_equal(back, expected, equal_nan=back.dtype.kind == "f"):
        return "reads back other values in its last slice"
    return None

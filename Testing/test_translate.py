"""translate_volume: geometry kept exactly, orientation handled, options validated."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from RegC2PLib.errors import CancelledError, DeviceError, InputError
from RegC2PLib.inference import TranslationOptions, translate_volume
from RegC2PLib.model_file import LoadedModel
from RegC2PLib.progress import CancelToken
from RegC2PLib.volume_io import read_image, write_image

NONE = TranslationOptions(refine="none", device="cpu")
OVERLAP = TranslationOptions(refine="overlap", device="cpu")


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def _check_pet(pet: sitk.Image, ct: sitk.Image, model: LoadedModel, assert_same_geometry) -> np.ndarray:
    assert_same_geometry(pet, ct)
    assert pet.GetPixelID() == sitk.sitkFloat32
    assert pet.GetNumberOfComponentsPerPixel() == 1
    values = _array(pet)
    assert np.isfinite(values).all()
    assert values.min() >= 0.0 and values.max() <= model.config.intensity.pet_suv_max
    return values


@pytest.mark.parametrize("direction_name", ["LPS", "OBLIQUE", "RAS", "SAGITTAL"])
def test_geometry_preserved(direction_name, make_ct, directions, small_model, assert_same_geometry) -> None:
    ct = make_ct((6, 40, 48), spacing=(0.7, 0.9, 3.0), direction=directions[direction_name], origin=(12.5, -30.25, 87.0))
    pet = translate_volume(ct, small_model, NONE)
    values = _check_pet(pet, ct, small_model, assert_same_geometry)
    assert values.std() > 0


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_geometry_through_files(suffix, tmp_path: Path, make_ct, directions, small_model, assert_same_geometry) -> None:
    """CT file -> read -> translate -> write -> read back: the PET lies exactly on the CT."""
    ct = make_ct((5, 40, 48), spacing=(0.7, 0.9, 3.0), direction=directions["OBLIQUE"], origin=(12.5, -30.25, 87.0))
    ct_path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(ct, str(ct_path))
    ct_read = read_image(ct_path)
    pet = translate_volume(ct_read, small_model, NONE)
    pet_path = tmp_path / f"pet{suffix}"
    write_image(pet, pet_path)
    back = read_image(pet_path)
    # NIfTI stores its geometry in float32; NRRD and MHA keep doubles.
    tol = 1e-5 if suffix == ".nii.gz" else 0.0
    assert_same_geometry(back, ct_read, tol)
    assert_same_geometry(back, ct, 1e-5)
    np.testing.assert_array_equal(_array(back), _array(pet))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ct_path.name, pet_path.name])  # no temp files left


def test_flipped_storage_gives_flipped_result(make_ct, ct_array, directions, small_model) -> None:
    """The same patient stored LPS and RAS: the network sees identical axial slices,
    so the RAS result is the LPS result with x and y flipped."""
    shape = (4, 40, 48)
    spacing = (0.8, 0.9, 2.0)
    lps = make_ct(shape, spacing=spacing, direction=directions["LPS"], origin=(0.0, 0.0, 0.0))
    ras = sitk.GetImageFromArray(np.ascontiguousarray(ct_array(shape)[:, ::-1, ::-1]))
    ras.SetSpacing(spacing)
    ras.SetDirection(directions["RAS"])
    ras.SetOrigin(((shape[2] - 1) * spacing[0], (shape[1] - 1) * spacing[1], 0.0))  # same physical voxels
    assert lps.TransformIndexToPhysicalPoint((0, 0, 0)) == ras.TransformIndexToPhysicalPoint((shape[2] - 1, shape[1] - 1, 0))
    pet_lps = _array(translate_volume(lps, small_model, NONE))
    pet_ras = _array(translate_volume(ras, small_model, NONE))
    np.testing.assert_allclose(pet_ras, pet_lps[:, ::-1, ::-1], atol=1e-5)


def test_sagittal_storage_matches_axial(make_ct, ct_array, directions, small_model) -> None:
    """A sagittally stored volume is translated slice by axial slice like its axial twin."""
    nz, ny, nx = 12, 40, 8  # the axial twin: 12 slices of 40×8 pixels
    axial_arr = ct_array((nz, ny, nx))
    axial = sitk.GetImageFromArray(axial_arr)
    axial.SetSpacing((2.0, 0.9, 0.8))
    # Sagittal storage of the same voxels: columns = P (axial y), rows = I (axial -z), slices = L (axial x).
    sag_arr = np.ascontiguousarray(np.transpose(axial_arr, (2, 0, 1))[:, ::-1, :])  # (x, -z, y)
    sag = sitk.GetImageFromArray(sag_arr)
    sag.SetSpacing((0.9, 0.8, 2.0))
    sag.SetDirection(directions["SAGITTAL"])
    sag.SetOrigin((0.0, 0.0, (nz - 1) * 0.8))
    for index in [(0, 0, 0), (3, 5, 2), (ny - 1, nz - 1, nx - 1)]:  # (y, row of -z, x) -> same point
        y, zr, x = index
        assert np.allclose(
            sag.TransformIndexToPhysicalPoint((y, zr, x)), axial.TransformIndexToPhysicalPoint((x, y, nz - 1 - zr))
        )
    pet_axial = _array(translate_volume(axial, small_model, OVERLAP))
    pet_sag = _array(translate_volume(sag, small_model, OVERLAP))
    expected = np.transpose(pet_axial, (2, 0, 1))[:, ::-1, :]
    np.testing.assert_allclose(pet_sag, expected, atol=1e-5)


class _CoverageProbe(torch.nn.Module):
    """A stand-in generator whose output is, per slice, the fraction of the model grid
    covered by the slice (everything above the padding value -1), on the network scale."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fraction = (x > -0.9999).float().mean(dim=(1, 2, 3), keepdim=True)
        return (2.0 * fraction - 1.0).expand_as(x)


@pytest.mark.parametrize(("shape_yx", "spacing_xy"), [((40, 48), (0.5, 1.0)), ((40, 48), (1.0, 0.5)), ((30, 30), (0.6, 1.8))])
def test_network_sees_the_slice_at_the_models_pixel_size(shape_yx, spacing_xy, small_config) -> None:
    """The model grid holds the slice resampled to square pixels of the model's pixel size
    (its physical extent in mm over ``pixel_mm``), whatever the CT's own pixels."""
    ny, nx = shape_yx
    hu = np.full((3, ny, nx), -1000, dtype=np.int16)
    hu[:, ny // 4 : -ny // 4, nx // 4 : -nx // 4] = 40
    ct = sitk.GetImageFromArray(hu)
    ct.SetSpacing((*spacing_xy, 2.0))
    probe = LoadedModel(small_config, _CoverageProbe(), None)
    pet = _array(translate_volume(ct, probe, NONE))
    size, pixel = small_config.image_size, small_config.pixel_mm
    expected = round(ny * spacing_xy[1] / pixel) * round(nx * spacing_xy[0] / pixel) / size**2
    body = hu > -500
    np.testing.assert_allclose(pet[body], expected * small_config.intensity.pet_suv_max, rtol=1e-4)
    assert (pet[~body] == 0.0).all()  # outside the body mask


@pytest.mark.parametrize("refine", ["none", "non-overlap", "overlap"])
def test_refine_modes_run(refine, ct_image, small_model, assert_same_geometry) -> None:
    pet = translate_volume(ct_image, small_model, TranslationOptions(refine=refine, device="cpu"))
    _check_pet(pet, ct_image, small_model, assert_same_geometry)


def test_refinement_changes_the_result(ct_image, small_model) -> None:
    """The fixture's refiner is not the identity, so each mode gives its own answer."""
    results = {
        r: _array(translate_volume(ct_image, small_model, TranslationOptions(refine=r, device="cpu")))
        for r in ("none", "overlap")
    }
    assert np.abs(results["none"] - results["overlap"]).max() > 1e-3


@pytest.mark.parametrize(("n_slices", "refine"), [(1, "overlap"), (3, "overlap"), (3, "non-overlap"), (2, "none")])
def test_fewer_slices_than_window(n_slices, refine, make_ct, small_model, assert_same_geometry) -> None:
    assert n_slices < small_model.config.refiner.window
    ct = make_ct((n_slices, 30, 36))
    pet = translate_volume(ct, small_model, TranslationOptions(refine=refine, device="cpu"))
    _check_pet(pet, ct, small_model, assert_same_geometry)


@pytest.mark.parametrize(
    "options",
    [
        {"refine": "overlap", "window": 4, "stride": 4},
        {"refine": "overlap", "window": 4, "stride": 5},
        {"refine": "overlap", "window": 4, "stride": 0},
        {"refine": "overlap", "window": 1},
        {"refine": "non-overlap", "window": 4, "stride": 2},
        {"refine": "bilateral"},
        {"refine": "overlap", "window": 0},
        {"refine": "none", "batch_size": 0},
        {"refine": "none", "batch_size": 2.5},
    ],
)
def test_invalid_options_raise_input_error(options, ct_image, small_model) -> None:
    with pytest.raises(InputError):  # when the options are made (numbers) or meet the model (combinations)
        translate_volume(ct_image, small_model, TranslationOptions(**options, device="cpu"))


def test_explicit_window_and_stride(ct_image, small_model, assert_same_geometry) -> None:
    for options in (
        TranslationOptions(refine="overlap", window=3, stride=2, device="cpu"),
        TranslationOptions(refine="non-overlap", window=3, device="cpu"),
    ):
        _check_pet(translate_volume(ct_image, small_model, options), ct_image, small_model, assert_same_geometry)


def test_cancel_from_progress_callback(ct_image, small_model) -> None:
    token = CancelToken()
    calls: list[float] = []

    def progress(fraction: float, message: str) -> None:
        calls.append(fraction)
        token.cancel()

    with pytest.raises(CancelledError):
        translate_volume(ct_image, small_model, TranslationOptions(refine="overlap", device="cpu", batch_size=2), progress, token)
    assert len(calls) == 1  # stopped at the next batch


def test_cancel_before_start(ct_image, small_model) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        translate_volume(ct_image, small_model, NONE, cancel=token)


def test_progress_is_monotonic_and_ends_at_one(ct_image, small_model) -> None:
    calls: list[tuple[float, str]] = []
    translate_volume(ct_image, small_model, TranslationOptions(device="cpu", batch_size=3), lambda f, m: calls.append((f, m)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in fractions)
    assert all(isinstance(m, str) and m for _, m in calls)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_unavailable_raises_device_error(ct_image, small_model) -> None:
    with pytest.raises(DeviceError, match=r"'cuda' is not available: .*CUDA"):
        translate_volume(ct_image, small_model, TranslationOptions(device="cuda"))


def test_unknown_device_raises_device_error(ct_image, small_model) -> None:
    with pytest.raises(DeviceError, match="unknown device"):
        translate_volume(ct_image, small_model, TranslationOptions(device="tpu"))


def test_batch_size_invariance(make_ct, small_model, assert_same_pet) -> None:
    ct = make_ct((9, 30, 36))
    results = [
        _array(
            translate_volume(
                ct, small_model, TranslationOptions(refine="overlap", window=4, stride=3, device="cpu", batch_size=b)
            )
        )
        for b in (1, 4, 16)
    ]
    for other in results[1:]:
        assert_same_pet(other, results[0])


@pytest.mark.parametrize("pixel_type", [sitk.sitkFloat32, sitk.sitkInt32, sitk.sitkFloat64])
def test_ct_pixel_types(pixel_type, make_ct, small_model) -> None:
    reference = _array(translate_volume(make_ct((3, 30, 36)), small_model, NONE))
    other = _array(translate_volume(make_ct((3, 30, 36), pixel_type=pixel_type), small_model, NONE))
    np.testing.assert_allclose(other, reference, atol=1e-5)


def test_input_not_modified(ct_image, small_model) -> None:
    before = _array(ct_image).copy()
    geometry = (ct_image.GetSpacing(), ct_image.GetOrigin(), ct_image.GetDirection())
    translate_volume(ct_image, small_model, OVERLAP)
    np.testing.assert_array_equal(_array(ct_image), before)
    assert geometry == (ct_image.GetSpacing(), ct_image.GetOrigin(), ct_image.GetDirection())


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).random((4, 20, 24)),  # normalised to 0..1
        np.full((4, 20, 24), -1000.0),  # flat
        np.random.default_rng(0).integers(0, 4, (4, 20, 24)).astype(float),  # a label map
        np.random.default_rng(0).integers(0, 2000, (4, 20, 24)).astype(float),  # stored values without intercept
    ],
)
def test_implausible_ct_refused(values, small_model) -> None:
    with pytest.raises(InputError, match="Hounsfield"):
        translate_volume(sitk.GetImageFromArray(values), small_model, NONE)


def test_not_3d_refused(small_model) -> None:
    with pytest.raises(InputError, match="2D"):
        translate_volume(sitk.GetImageFromArray(np.full((20, 24), -1000.0)), small_model, NONE)
    vector = sitk.GetImageFromArray(np.full((3, 20, 24, 3), -1000.0), isVector=True)
    with pytest.raises(InputError, match="components"):
        translate_volume(vector, small_model, NONE)


def _signed_permutations() -> list[tuple[float, ...]]:
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            matrix = np.zeros((3, 3))
            for column, (row, sign) in enumerate(zip(perm, signs, strict=True)):
                matrix[row, column] = sign
            out.append(tuple(matrix.ravel()))
    return out


def test_axial_order_view_equals_dicom_orient(make_ct, directions) -> None:
    """For all 48 axis-aligned storage orders and an oblique one, the no-copy axial view is
    exactly the array SimpleITK's DICOMOrient gives, with its spacing."""
    from RegC2PLib.volume_io import AxialOrder, array_view, to_axial

    for direction in [*_signed_permutations(), directions["OBLIQUE"]]:
        ct = make_ct(shape_zyx=(5, 6, 7), spacing=(0.7, 0.9, 2.5), direction=direction)
        order = AxialOrder.of(ct)
        reference = to_axial(ct)
        np.testing.assert_array_equal(order.view(array_view(ct)), array_view(reference), err_msg=str(direction))
        assert order.spacing == pytest.approx(reference.GetSpacing()[::-1])
        assert (order.axes == (0, 1, 2) and not any(order.flips)) == (reference is ct)

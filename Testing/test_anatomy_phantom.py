"""Anatomy phantoms: labelled real CTs turned into synthetic PET/CT patients (reading, warp, look, uptake, CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from RegC2PLib.body import body_mask
from RegC2PLib.cli import main
from RegC2PLib.data.anatomy_phantom import (
    AnatomyMaker,
    AnatomyPhantomConfig,
    generate_anatomy_case,
    load_anatomies,
)
from RegC2PLib.data.anatomy_roles import Role
from RegC2PLib.data.anatomy_source import load_anatomy
from RegC2PLib.data.phantom import case_seed
from RegC2PLib.data.phantom_anatomy import Tissue
from RegC2PLib.data.random_warp import WarpSettings, draw_warp
from RegC2PLib.errors import InputError
from RegC2PLib.volume_io import resample_onto

FIXTURE = Path(__file__).parent / "data" / "totalseg_upper_abdomen"

# TotalSegmentator v2 "total" class values of the synthetic anatomy's structures.
NAMES = {
    1: "spleen",
    2: "kidney_right",
    3: "kidney_left",
    5: "liver",
    11: "lung_lower_lobe_left",
    14: "lung_lower_lobe_right",
    20: "colon",
    21: "urinary_bladder",
    31: "vertebrae_L1",
    51: "heart",
    52: "aorta",
    86: "autochthon_left",
    87: "autochthon_right",
}


def _ellipsoid(shape: tuple[int, int, int], centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((k - centre[0]) / radii[0]) ** 2 + ((j - centre[1]) / radii[1]) ** 2 + ((i - centre[2]) / radii[2]) ** 2 <= 1.0


def synthetic_anatomy(shift_liver: int = 0) -> tuple[sitk.Image, sitk.Image]:
    """A tiny labelled 'abdomen' CT (axial LPS arrays, stored RAS like NIfTI tools write it).

    Body in fat with unlabelled muscle, spine, paraspinal muscles, aorta, liver (right),
    spleen, kidneys, bladder, a colon with gas, lungs and a heart at the top, and a couch
    slab 8 mm under the back. HU with 4 HU noise; labels in TotalSegmentator v2 numbering.
    """
    shape = (18, 44, 52)  # (z up, y posterior, x left); 5 x 4 x 4 mm
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    hu = np.full(shape, -1000.0)
    labels = np.zeros(shape, np.uint8)
    body = np.broadcast_to(((j - 20) / 15.0) ** 2 + ((i - 26) / 21.0) ** 2 <= 1.0, shape)
    inner = np.broadcast_to(((j - 20) / 13.0) ** 2 + ((i - 26) / 19.0) ** 2 <= 1.0, shape)
    hu[body] = -100.0
    hu[inner] = 45.0
    hu[:, 38:40, 4:48] = 150.0  # couch shell, air gap of two rows under the body

    def put(mask: np.ndarray, value: int, h: float) -> None:
        mask = np.broadcast_to(mask, shape) & inner
        labels[mask] = value
        hu[mask] = h

    put(((j - 30) / 3.0) ** 2 + ((i - 26) / 3.0) ** 2 <= 1.0, 31, 300.0)
    put(((j - 31.5) / 2.0) ** 2 + ((i - 20) / 3.0) ** 2 <= 1.0, 87, 50.0)
    put(((j - 31.5) / 2.0) ** 2 + ((i - 32) / 3.0) ** 2 <= 1.0, 86, 50.0)
    put(((j - 24) / 2.0) ** 2 + ((i - 26) / 2.0) ** 2 <= 1.0, 52, 40.0)
    put(_ellipsoid(shape, (8 + shift_liver, 16, 15), (5, 8, 9)), 5, 55.0)
    put(_ellipsoid(shape, (9, 22, 38), (3, 4, 3)), 1, 45.0)
    put(_ellipsoid(shape, (6, 26, 17), (3, 3, 3)), 2, 30.0)
    put(_ellipsoid(shape, (6, 26, 35), (3, 3, 3)), 3, 30.0)
    put(_ellipsoid(shape, (2, 13, 26), (2, 4, 5)), 21, 8.0)
    put(_ellipsoid(shape, (5, 12, 36), (3, 3, 3)), 20, 20.0)
    hu[_ellipsoid(shape, (5, 12, 36), (1.5, 1.5, 1.5))] = -1000.0  # gas in the colon
    top = k >= 14
    put(top & (((j - 18) / 7.0) ** 2 + ((i - 15) / 6.0) ** 2 <= 1.0), 14, -850.0)
    put(top & (((j - 18) / 7.0) ** 2 + ((i - 37) / 6.0) ** 2 <= 1.0), 11, -850.0)
    put(_ellipsoid(shape, (16, 16, 26), (3, 5, 4)), 51, 40.0)
    hu += np.random.default_rng(0).normal(0.0, 4.0, shape)
    ct = sitk.GetImageFromArray(np.clip(np.round(hu), -1024, 3071).astype(np.int16))
    lab = sitk.GetImageFromArray(labels)
    for image in (ct, lab):
        image.SetSpacing((4.0, 4.0, 5.0))
        image.SetOrigin((-100.0, -80.0, 300.0))
    return sitk.DICOMOrient(ct, "RAS"), sitk.DICOMOrient(lab, "RAS")


def write_anatomy(folder: Path, layout: str = "multilabel", shift_liver: int = 0) -> Path:
    """Write the synthetic anatomy as a multilabel file + names JSON, or as TotalSegmentator's segmentations/."""
    folder.mkdir(parents=True, exist_ok=True)
    ct, labels = synthetic_anatomy(shift_liver)
    sitk.WriteImage(ct, str(folder / "ct.nii.gz"))
    if layout == "multilabel":
        sitk.WriteImage(labels, str(folder / "labels.nii.gz"))
        (folder / "label_names.json").write_text(json.dumps({str(k): v for k, v in NAMES.items()}))
    else:
        (folder / "segmentations").mkdir()
        for value, name in [*NAMES.items(), (90, "brain")]:  # TotalSegmentator also writes empty masks
            sitk.WriteImage(sitk.Cast(labels == value, sitk.sitkUInt8), str(folder / "segmentations" / f"{name}.nii.gz"))
    return folder


def arr(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


@pytest.fixture(scope="module")
def anatomy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_anatomy(tmp_path_factory.mktemp("anatomy") / "patient")


@pytest.fixture(scope="module")
def anatomy(anatomy_dir: Path):
    return load_anatomy(anatomy_dir)


CALM = AnatomyPhantomConfig(misalign=0.0, breathing_mm=0.0, lesions=(0, 0))


def test_roles_from_names_and_density(anatomy) -> None:
    roles = anatomy.roles
    assert anatomy.hu.shape == (18, 44, 52) and anatomy.spacing == (5.0, 4.0, 4.0)  # axial (z, y, x) again
    assert anatomy.unknown == [] and "liver" in anatomy.structures
    assert np.all(roles[:, 38:40, 4:48] == Role.COUCH)  # the couch is not the patient
    assert roles[9, 6, 26] == Role.FAT and roles[9, 20, 26] == Role.SOFT  # unlabelled, by CT number
    assert roles[8, 16, 15] == Role.LIVER and roles[9, 30, 26] in (Role.BONE_MARROW, Role.BONE_CORTEX)
    assert roles[5, 12, 36] == Role.GAS  # gas inside the colon label
    assert (roles == Role.RENAL_PELVIS).sum() > 0 and (roles == Role.KIDNEY).sum() > (roles == Role.RENAL_PELVIS).sum()
    heart = (roles == Role.MYOCARDIUM) | (roles == Role.HEART_BLOOD)
    wall_x = np.nonzero(roles == Role.MYOCARDIUM)[2]
    assert heart.sum() > 0 and (roles == Role.HEART_BLOOD).any() and wall_x.mean() > 26  # wall on the patient's left
    assert roles[0, 0, 0] == Role.OUTSIDE


def test_body_mask_keeps_limbs_and_drops_the_couch() -> None:
    """Two thighs (each with a femur) resting on a couch shell 8 mm thick: both legs are the
    patient, the couch is not (the shared body mask, which anatomy phantoms use)."""
    shape = (6, 60, 80)
    _, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    hu = np.full(shape, -1000.0, np.float32)
    for cx in (22, 58):
        hu[np.broadcast_to(((j - 25) / 16.0) ** 2 + ((i - cx) / 15.0) ** 2 <= 1.0, shape)] = 40.0
        hu[np.broadcast_to(((j - 25) / 3.0) ** 2 + ((i - cx) / 3.0) ** 2 <= 1.0, shape)] = 900.0
    hu[:, 41:43, 5:75] = 60.0  # couch shell, touching the legs
    body = body_mask(hu, (5.0, 4.0, 4.0))
    assert body[:, 25, 58].all() and body[:, 25, 22].all()
    assert not body[:, 42, 40].any() and not body[:, 42, 8].any()


def test_brain_label_becomes_grey_white_matter_and_csf(tmp_path: Path) -> None:
    shape = (12, 40, 40)
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    r = np.sqrt(((k - 6) * 5.0 / 4.0) ** 2 + (j - 20.0) ** 2 + (i - 20.0) ** 2)  # mm / 4
    hu = np.where(r <= 17, 700.0, -1000.0)  # skull
    hu[r <= 15] = 28.0  # white matter
    hu[(r <= 15) & (r > 13.5)] = 40.0  # cortex
    hu[_ellipsoid(shape, (6, 20, 20), (2, 3, 5))] = 8.0  # ventricles
    labels = np.where(r <= 15, 90, np.where(r <= 17, 91, 0)).astype(np.uint8)
    folder = tmp_path / "head"
    folder.mkdir()
    for array, name in ((hu.astype(np.int16), "ct.nii.gz"), (labels, "labels.nii.gz")):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((4.0, 4.0, 5.0))
        sitk.WriteImage(image, str(folder / name))
    (folder / "label_names.json").write_text('{"90": "brain", "91": "skull"}')
    roles = load_anatomy(folder).roles
    assert roles[6, 20, 20] == Role.CSF and roles[6, 20, 9] == Role.BRAIN_WHITE and roles[6, 20, 6] == Role.BRAIN_GRAY
    assert roles[6, 20, 4] == Role.BONE_CORTEX


def test_per_structure_layout_gives_the_same_phantom(tmp_path: Path, anatomy) -> None:
    other = load_anatomy(write_anatomy(tmp_path / "seg", layout="segmentations"))
    np.testing.assert_array_equal(other.roles, anatomy.roles)
    a, b = generate_anatomy_case(anatomy, AnatomyPhantomConfig(), 11), generate_anatomy_case(other, AnatomyPhantomConfig(), 11)
    for name in ("ct", "pet", "pet_aligned", "lesions", "organs"):
        np.testing.assert_array_equal(arr(getattr(a, name)), arr(getattr(b, name)), err_msg=name)


def test_same_seed_same_voxels_and_streams_are_separate(anatomy) -> None:
    config = AnatomyPhantomConfig(lesions=(2, 3))
    a, b = generate_anatomy_case(anatomy, config, 5), generate_anatomy_case(anatomy, config, 5)
    for name in ("ct", "pet", "pet_aligned", "lesions", "organs"):
        np.testing.assert_array_equal(arr(getattr(a, name)), arr(getattr(b, name)), err_msg=name)
    assert a.metadata() == b.metadata()
    c = generate_anatomy_case(anatomy, config, 6)
    assert arr(c.ct).shape != arr(a.ct).shape or np.abs(arr(c.ct) - arr(a.ct)).mean() > 5.0
    # Another misalignment leaves the CT and the ground-truth PET as they were.
    still = generate_anatomy_case(anatomy, AnatomyPhantomConfig(lesions=(2, 3), misalign=0.0, breathing_mm=0.0), 5)
    np.testing.assert_array_equal(arr(still.ct), arr(a.ct))
    np.testing.assert_array_equal(arr(still.pet_aligned), arr(a.pet_aligned))
    np.testing.assert_array_equal(arr(still.pet), arr(still.pet_aligned))
    assert np.abs(arr(a.pet) - arr(a.pet_aligned)).max() > 0.5


def test_warp_keeps_ct_and_labels_in_step() -> None:
    """A checkerboard of 8-voxel blocks, labels 1 and 2 at 100 and 200 HU: after the warp (CT
    trilinear, labels nearest) each voxel's CT still says its label, except where interpolation
    straddles a block corner; labels warped by another draw do not match."""
    k, j, i = np.ogrid[:24, :40, :48]
    labels = (1 + (k // 8 + j // 8 + i // 8) % 2).astype(np.uint8)
    hu = 100.0 * labels.astype(np.float32)
    spacing = (5.0, 4.0, 4.0)
    settings = WarpSettings(scale_xy=(1.05, 1.15), elastic_mm=8.0, organ_scales={2: (0.8, 0.9)})
    for seed in range(3):
        warp = draw_warp(np.random.default_rng(seed), labels, spacing, settings)
        warped_hu = warp.apply(hu, order=1, fill=0.0)
        inside = warp.apply(labels, order=0, fill=0.0)
        assert inside.dtype == np.uint8 and set(np.unique(inside)) <= set(np.unique(labels)) | {0}
        in_step = np.round(warped_hu / 100.0) == inside
        assert in_step[inside > 0].mean() > 0.97
        out_of_step = np.roll(inside, 1, axis=2)  # labels one voxel off
        assert (np.round(warped_hu / 100.0) == out_of_step)[out_of_step > 0].mean() < 0.93


def test_warp_moves_organs_as_its_field_says(anatomy) -> None:
    kidney = np.isin(anatomy.roles, [Role.KIDNEY, Role.RENAL_PELVIS])
    kidney[:, :, :26] = False  # the left one: small enough for the field to be near constant across it
    source_centre = np.array(ndimage.center_of_mass(kidney))
    settings = WarpSettings(scale_xy=(1.12, 1.15), elastic_mm=6.0, organ_scales={int(Role.LIVER): (0.9, 1.12)})
    for seed in range(3):
        warp = draw_warp(np.random.default_rng(seed), anatomy.roles, anatomy.spacing, settings)
        roles = warp.apply(anatomy.roles, order=0, fill=0.0)
        moved = np.isin(roles, [Role.KIDNEY, Role.RENAL_PELVIS])
        moved[:, :, : warp.out_shape[2] // 2] = False
        centre = np.array(ndimage.center_of_mass(moved))
        error = np.abs(warp.to_source(centre[:, None])[:, 0] - source_centre).max()
        unmoved = centre - (np.array(warp.out_shape) - 1) / 2 + (np.array(anatomy.roles.shape) - 1) / 2
        assert error < 0.65 and error < 0.35 * np.abs(unmoved - source_centre).max(), seed  # the field explains the move


def test_warp_keeps_the_body_in_every_slice(anatomy) -> None:
    """The scan ends at its first and last slice, not the body: a taller patient or the field
    must not leave an empty slice at either end."""
    source_min = int(np.isin(anatomy.roles, [Role.OUTSIDE, Role.COUCH], invert=True).sum(axis=(1, 2)).min())
    settings = WarpSettings(scale_z=(1.06, 1.08), elastic_mm=8.0)
    for seed in range(4):
        roles = draw_warp(np.random.default_rng(seed), anatomy.roles, anatomy.spacing, settings).apply(anatomy.roles, 0, 0.0)
        per_slice = np.isin(roles, [Role.OUTSIDE, Role.COUCH], invert=True).sum(axis=(1, 2))
        assert per_slice.min() > 0.6 * source_min, seed


def test_organ_scale_grows_and_shrinks_one_organ(anatomy) -> None:
    still = {"scale_z": (1.0, 1.0), "scale_xy": (1.0, 1.0), "aspect": (1.0, 1.0), "rotation_deg": 0.0, "elastic_mm": 0.0}
    volume = {}
    for factor in (0.85, 1.0, 1.2):
        settings = WarpSettings(**still, organ_scales={int(Role.LIVER): (factor, factor)})
        roles = draw_warp(np.random.default_rng(0), anatomy.roles, anatomy.spacing, settings).apply(anatomy.roles, 0, 0.0)
        volume[factor] = ((roles == Role.LIVER).sum(), (roles == Role.KIDNEY).sum())
    assert volume[1.0] == ((anatomy.roles == Role.LIVER).sum(), (anatomy.roles == Role.KIDNEY).sum())
    assert volume[0.85][0] < 0.8 * volume[1.0][0] and volume[1.2][0] > 1.25 * volume[1.0][0]
    assert abs(int(volume[1.2][1]) - int(volume[1.0][1])) < 0.15 * volume[1.0][1]  # the kidneys stay as they were


def test_pure_scaling_moves_an_organ_by_the_scale(anatomy) -> None:
    settings = WarpSettings(scale_z=(1.0, 1.0), scale_xy=(1.15, 1.15), aspect=(1.0, 1.0), rotation_deg=0.0, elastic_mm=0.0)
    warp = draw_warp(np.random.default_rng(0), anatomy.roles, anatomy.spacing, settings)
    src = np.array(anatomy.roles.shape, float)
    out = np.array(warp.out_shape, float)
    liver = np.array(ndimage.center_of_mass(anatomy.roles == Role.LIVER))
    moved = np.array(ndimage.center_of_mass(warp.apply(anatomy.roles, order=0, fill=0.0) == Role.LIVER))
    expected = (out - 1) / 2 + (liver - (src - 1) / 2) * np.array([1.0, 1.15, 1.15])
    np.testing.assert_allclose(moved, expected, atol=0.35)


def test_organ_uptake_survives_blur_in_the_core(anatomy) -> None:
    case = generate_anatomy_case(anatomy, CALM, 2)
    pet = arr(resample_onto(case.pet_aligned, case.ct))
    for role, low, high in ((Role.LIVER, 2.0, 2.5), (Role.SOFT, 0.55, 0.9)):  # unlabelled soft tissue: muscle uptake
        drawn = float(case.role_suv[role])
        assert low <= drawn <= high, role
        core = ndimage.binary_erosion(case.roles == role, iterations=2)
        assert core.sum() > 50 and abs(float(pet[core].mean()) - drawn) < 0.08 * drawn, (role, float(pet[core].mean()), drawn)
    organs = arr(case.organs)
    assert set(np.unique(organs)) >= {Tissue.LIVER, Tissue.KIDNEY, Tissue.KIDNEY_PELVIS, Tissue.BLADDER, Tissue.TABLE}
    assert case.role_suv[Role.RENAL_PELVIS] > case.role_suv[Role.KIDNEY] > case.role_suv[Role.LIVER]


def test_pet_is_zero_outside_the_body_and_on_the_couch(anatomy) -> None:
    for config in (CALM, AnatomyPhantomConfig(lesions=(1, 1))):
        case = generate_anatomy_case(anatomy, config, 4)
        for image in (case.pet_aligned, case.pet):
            pet = arr(resample_onto(image, case.ct, linear=False))
            assert np.all(pet[case.roles == Role.COUCH] == 0.0)
        body = np.isin(case.roles, [Role.OUTSIDE, Role.COUCH], invert=True)
        far = ndimage.distance_transform_edt(~body, sampling=case.ct.GetSpacing()[::-1]) > 15.0
        pet = arr(resample_onto(case.pet_aligned, case.ct, linear=False))
        assert np.all(pet[far] == 0.0) and pet[body].mean() > 0.3


def test_contrast_phase_raises_aorta_and_organs(anatomy) -> None:
    native = generate_anatomy_case(anatomy, AnatomyPhantomConfig(phases=("native",), kernels=("standard",)), 8)
    arterial = generate_anatomy_case(anatomy, AnatomyPhantomConfig(phases=("arterial",), kernels=("standard",)), 8)
    venous = generate_anatomy_case(anatomy, AnatomyPhantomConfig(phases=("venous",), kernels=("standard",)), 8)
    np.testing.assert_array_equal(native.roles, arterial.roles)

    def mean_hu(case, role: Role) -> float:
        return float(arr(case.ct)[case.roles == role].mean())

    assert 20.0 < mean_hu(native, Role.ARTERY) < 70.0
    assert mean_hu(arterial, Role.ARTERY) > mean_hu(native, Role.ARTERY) + 150.0
    assert mean_hu(venous, Role.LIVER) > mean_hu(native, Role.LIVER) + 25.0
    assert mean_hu(venous, Role.KIDNEY) > mean_hu(native, Role.KIDNEY) + 80.0
    # Uptake does not depend on the contrast phase.
    np.testing.assert_array_equal(arr(native.pet_aligned), arr(arterial.pet_aligned))


def test_lesions_sit_in_their_hosts_with_uptake(anatomy) -> None:
    clean_ct = AnatomyPhantomConfig(misalign=0.0, breathing_mm=0.0, lesions=(6, 6), kernels=("standard",), ct_noise_hu=(0.0, 0.0))
    case = generate_anatomy_case(anatomy, clean_ct, 3)
    lesion_map = arr(case.lesions)
    assert len(case.lesion_list) >= 4
    assert {lesion.kind for lesion in case.lesion_list} >= {"liver", "node"}
    ct = arr(case.ct)
    pet = arr(resample_onto(case.pet_aligned, case.ct))
    for lesion in case.lesion_list:
        mask = lesion_map == lesion.label
        assert mask.sum() > 0 and 3.0 <= lesion.suv <= 15.0
        if lesion.kind == "liver":
            assert lesion.hu < lesion.host_hu - 4.0
            assert np.all(np.isin(case.roles[mask], [Role.LIVER]))
        if abs(lesion.hu - lesion.host_hu) > 20.0:  # visible on CT (small lesions are mostly partial-volume edge)
            assert (float(ct[mask].mean()) - lesion.host_hu) / (lesion.hu - lesion.host_hu) > 0.35, lesion
        assert float(pet[mask].max()) > 1.5 * float(np.median(pet[ndimage.binary_dilation(mask, iterations=3) & ~mask]))


def test_unusable_folders_are_refused_in_one_line(tmp_path: Path, anatomy_dir: Path) -> None:
    def refused(folder: Path, match: str) -> None:
        with pytest.raises(InputError, match=match) as info:
            load_anatomies(folder)
        assert "\n" not in str(info.value)

    refused(tmp_path / "missing", "does not exist")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "holds no CT and no anatomy sub-folders")
    only_ct = tmp_path / "only_ct"
    only_ct.mkdir()
    (only_ct / "ct.nii.gz").write_bytes((anatomy_dir / "ct.nii.gz").read_bytes())
    refused(only_ct, "has a CT but no labels")
    (only_ct / "labels.nii.gz").write_bytes((anatomy_dir / "labels.nii.gz").read_bytes())
    refused(only_ct, "no label_names.json")
    (only_ct / "label_names.json").write_text('{"5": "tumour_x"}')
    refused(only_ct, "no labelled structure has a known name")
    (only_ct / "segmentations").mkdir()
    refused(only_ct, "holds both labels.nii.gz and segmentations/")
    floats = write_anatomy(tmp_path / "floats")
    labels = sitk.ReadImage(str(floats / "labels.nii.gz"))
    sitk.WriteImage(sitk.Cast(labels, sitk.sitkFloat32), str(floats / "labels.nii.gz"))
    refused(floats, "a label map must hold integers")
    several = tmp_path / "several"
    write_anatomy(several / "a")
    (several / "notes").mkdir()
    refused(several, r"anatomy .*notes holds no ct.nii.gz")


def test_labels_cut_from_a_longer_ct_are_diagnosed(tmp_path: Path) -> None:
    """A label map made on the top slices of the CT but carrying the CT's origin (how the
    shared reference anatomy is stored) is refused, and the message says where it fits."""
    ct, labels = synthetic_anatomy()
    lps_ct, lps_labels = sitk.DICOMOrient(ct, "LPS"), sitk.DICOMOrient(labels, "LPS")
    longer = sitk.GetArrayFromImage(lps_ct)
    pad = np.concatenate([np.repeat(longer[:1], 10, axis=0), longer])  # 10 more slices below
    big = sitk.GetImageFromArray(pad)
    big.SetSpacing(lps_ct.GetSpacing())
    origin = np.array(lps_ct.GetOrigin()) - np.array([0.0, 0.0, 10 * lps_ct.GetSpacing()[2]])
    big.SetOrigin(tuple(origin))
    lps_labels.SetOrigin(tuple(origin))  # the labels' origin was not updated: they claim slices 0-17
    folder = tmp_path / "cut"
    folder.mkdir()
    sitk.WriteImage(big, str(folder / "ct.nii.gz"))
    sitk.WriteImage(lps_labels, str(folder / "labels.nii.gz"))
    (folder / "label_names.json").write_text(json.dumps({str(k): v for k, v in NAMES.items()}))
    with pytest.raises(InputError, match=r"do not line up with its CT: .*fit CT slices 10-27 instead"):
        load_anatomy(folder)
    lps_labels.SetOrigin(big.TransformIndexToPhysicalPoint((0, 0, 10)))  # corrected: accepted, cut to the labels
    sitk.WriteImage(lps_labels, str(folder / "labels.nii.gz"))
    assert load_anatomy(folder).hu.shape == (18, 44, 52)


def test_several_anatomies_are_used_in_turn(tmp_path: Path) -> None:
    write_anatomy(tmp_path / "set" / "a")
    write_anatomy(tmp_path / "set" / "b", shift_liver=2)
    maker = AnatomyMaker(str(tmp_path / "set"), CALM)
    names = [maker(i, case_seed(0, i)).anatomy["name"] for i in range(3)]
    assert names == ["a", "b", "a"]
    assert maker.describe()["anatomies"] == ["a", "b"]


def test_cli_anatomy_phantoms(tmp_path: Path, anatomy_dir: Path, anatomy, capsys) -> None:
    out = tmp_path / "ds"
    argv = ["phantom", "--anatomy", str(anatomy_dir), "--out", str(out), "--cases", "2", "--seed", "3", "--workers", "1"]
    assert main([*argv, "--lesions", "1", "2", "--misalign", "1"]) == 0
    assert "wrote 2 anatomy phantom studies from patient" in capsys.readouterr().out
    summary = json.loads((out / "phantom_dataset.json").read_text())
    assert summary["generator"] == "RegC2P anatomy phantom" and summary["cases"]["case_0001"] == case_seed(3, 1)
    meta = json.loads((out / "case_0001" / "phantom.json").read_text())
    assert meta["config"]["lesions"] == [1, 2] and meta["misalignment"]["level"] == 1.0
    assert meta["organs"]["liver"]["suv"] > 1.9 and meta["ct_look"]["phase"] in ("native", "arterial", "venous")
    expected = generate_anatomy_case(anatomy, AnatomyPhantomConfig(misalign=1.0, lesions=(1, 2)), case_seed(3, 1))
    np.testing.assert_array_equal(arr(sitk.ReadImage(str(out / "case_0001" / "pet.nii.gz"))), arr(expected.pet))
    assert arr(sitk.ReadImage(str(out / "case_0001" / "organs.nii.gz"))).dtype == np.uint8
    assert main([*argv, "--overwrite", "--shape", "8", "8", "8"]) == 2
    assert "anatomy phantoms keep their CT's grid" in capsys.readouterr().err
    assert main(["phantom", "--anatomy", str(tmp_path / "nowhere"), "--out", str(out), "--cases", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_on_real_anatomy(tmp_path: Path, capsys) -> None:
    """The CLI end to end on a crop (12 slices) of the real TotalSegmentator anatomy in Testing/data."""
    crop = tmp_path / "real"
    crop.mkdir()
    ct = sitk.ReadImage(str(FIXTURE / "ct.nii.gz"))
    labels = sitk.ReadImage(str(FIXTURE / "labels.nii.gz"))
    sitk.WriteImage(ct[:, :, 10:22], str(crop / "ct.nii.gz"))
    sitk.WriteImage(labels[:, :, 10:22], str(crop / "labels.nii.gz"))
    (crop / "label_names.json").write_text((FIXTURE / "label_names.json").read_text())
    out = tmp_path / "ds"
    assert main(["phantom", "--anatomy", str(crop), "--out", str(out), "--cases", "2", "--workers", "2"]) == 0
    capsys.readouterr()
    for case in ("case_0000", "case_0001"):
        organs = arr(sitk.ReadImage(str(out / case / "organs.nii.gz")))
        ct_out = sitk.ReadImage(str(out / case / "ct.nii.gz"))
        pet = arr(resample_onto(sitk.ReadImage(str(out / case / "pet_aligned.nii.gz")), ct_out, linear=False))

        kidney, liver, muscle, fat = (
            float(pet[ndimage.binary_erosion(np.isin(organs, tissues))].mean())
            for tissues in ((Tissue.KIDNEY, Tissue.KIDNEY_PELVIS), (Tissue.LIVER,), (Tissue.MUSCLE,), (Tissue.FAT,))
        )
        assert kidney > liver > muscle > fat > 0.1  # the order of a real FDG scan
        assert np.all(pet[organs == Tissue.TABLE] == 0.0)


def test_fixture_is_the_labelled_part_of_the_shared_anatomy(shared_data: Path) -> None:
    """Testing/data/totalseg_upper_abdomen = the shared anatomy's CT where its labels belong, and its labels."""
    shared = shared_data / "anatomy" / "totalseg_abdomen"
    np.testing.assert_array_equal(
        arr(sitk.ReadImage(str(FIXTURE / "labels.nii.gz"))), arr(sitk.ReadImage(str(shared / "labels.nii.gz")))
    )
    crop = sitk.ReadImage(str(FIXTURE / "ct.nii.gz"))
    full = sitk.ReadImage(str(shared / "ct.nii.gz"))
    np.testing.assert_array_equal(arr(resample_onto(full, crop, linear=False)), arr(crop))

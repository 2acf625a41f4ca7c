"""Phantom generator: determinism, physical ranges per organ, PET physics, misalignment, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from RegC2PLib.cli import main
from RegC2PLib.data.pet_physics import add_noise, blur_fwhm, noise_field
from RegC2PLib.data.phantom import PhantomConfig, case_seed, generate_case, write_dataset
from RegC2PLib.data.phantom_anatomy import Tissue, tissue_values
from RegC2PLib.errors import InputError
from RegC2PLib.volume_io import resample_onto

SMALL = PhantomConfig(shape=(64, 96, 96))


def arr(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


@pytest.fixture(scope="module")
def case():
    return generate_case(SMALL, 3)


def test_same_seed_same_case_and_other_seed_differs(case) -> None:
    again = generate_case(SMALL, 3)
    for name in ("ct", "pet", "pet_aligned", "lesions", "organs"):
        np.testing.assert_array_equal(arr(getattr(case, name)), arr(getattr(again, name)), err_msg=name)
    other = generate_case(SMALL, 4)
    assert np.abs(arr(other.ct) - arr(case.ct)).mean() > 5.0
    assert case.metadata() == again.metadata()


def test_geometry_units_and_coarser_pet(case) -> None:
    assert case.ct.GetSize() == (96, 96, 64)
    assert arr(case.ct).dtype == np.float32 and arr(case.pet).dtype == np.float32
    assert arr(case.lesions).dtype == np.uint8
    ct_spacing, pet_spacing = np.array(case.ct.GetSpacing()), np.array(case.pet.GetSpacing())
    assert np.all(pet_spacing >= ct_spacing - 1e-9)
    assert case.ct.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    # PET and CT fields of view coincide.
    lo_ct = np.array(case.ct.GetOrigin()) - ct_spacing / 2
    lo_pet = np.array(case.pet.GetOrigin()) - pet_spacing / 2
    np.testing.assert_allclose(lo_ct, lo_pet, atol=1e-6)
    ct = arr(case.ct)
    assert -1030 < ct.min() < -950 and ct.max() > 500  # air and bone


def test_given_spacing_is_used() -> None:
    config = PhantomConfig(shape=(24, 64, 64), spacing=(12.0, 3.0, 3.0), lesions=(0, 0))
    c = generate_case(config, 0)
    assert c.ct.GetSpacing() == (3.0, 3.0, 12.0)
    assert c.pet.GetSpacing() == pytest.approx((4.0, 4.0, 12.0))
    assert c.pet.GetSize() == (48, 48, 24)
    assert arr(c.lesions).max() == 0


def test_ct_and_suv_ranges_per_organ(case) -> None:
    organs, lesions = arr(case.organs), arr(case.lesions)
    ct = arr(case.ct)
    pet = arr(resample_onto(case.pet_aligned, case.ct))
    hu_ranges = {
        Tissue.FAT: (-130, -70),
        Tissue.MUSCLE: (25, 75),
        Tissue.LUNG: (-900, -780),
        Tissue.LIVER: (40, 75),
        Tissue.BRAIN_GRAY: (25, 55),
        Tissue.BLADDER: (-15, 25),
        Tissue.BONE_CORTEX: (500, 1100),
        Tissue.BONE_MARROW: (120, 350),
    }
    for tissue, (low, high) in hu_ranges.items():
        mask = (organs == tissue) & (lesions == 0)
        assert mask.sum() > 20, tissue.name
        assert low <= np.median(ct[mask]) <= high, (tissue.name, np.median(ct[mask]))
    suv_ranges = {
        Tissue.FAT: (0.15, 0.5),
        Tissue.MUSCLE: (0.45, 1.0),
        Tissue.LUNG: (0.2, 0.6),
        Tissue.LIVER: (1.7, 2.8),
        Tissue.KIDNEY: (3.0, 8.5),
        Tissue.BLOOD: (1.2, 2.3),
        Tissue.BONE_MARROW: (0.8, 1.7),
    }
    for tissue, (low, high) in suv_ranges.items():
        core = ndimage.binary_erosion((organs == tissue) & (lesions == 0))  # away from partial volume
        if core.sum() < 5:
            core = (organs == tissue) & (lesions == 0)
        assert low <= np.median(pet[core]) <= high, (tissue.name, np.median(pet[core]))
    brain = np.isin(organs, [Tissue.BRAIN_GRAY, Tissue.BRAIN_WHITE])
    assert 4.0 <= pet[brain].max() <= 12.0
    assert pet[organs == Tissue.BLADDER].max() >= 8.0
    assert pet[organs == Tissue.AIR].mean() < 0.1
    assert arr(case.pet_aligned).min() >= 0.0


@pytest.mark.parametrize("organ", [Tissue.KIDNEY, Tissue.BLADDER])
def test_kidneys_and_bladder_are_set_in_fat_on_ct(case, organ) -> None:
    """Non-contrast CT shows kidneys and bladder by the fat around them; without it their
    uptake could not be inferred from the CT at all."""
    organs, ct = arr(case.organs), arr(case.ct)
    inside = organs == organ
    rim = ndimage.binary_dilation(inside, iterations=2) & ~np.isin(organs, [organ, Tissue.KIDNEY_PELVIS])
    assert inside.sum() > 20 and rim.sum() > 20
    assert np.median(ct[rim]) < -40.0, (organ.name, np.median(ct[rim]))
    assert np.median(ct[inside]) > np.median(ct[rim]) + 60.0


def test_uptake_tables_follow_clinical_fdg() -> None:
    tables = [tissue_values(np.random.default_rng(s)) for s in range(60)]
    suv = {t: np.array([v.suv[t] for v in tables]) for t in Tissue}
    checks = {
        Tissue.BRAIN_GRAY: (6, 10),
        Tissue.MYOCARDIUM: (1.5, 8),
        Tissue.BLOOD: (1.5, 2.0),
        Tissue.LIVER: (2.0, 2.5),
        Tissue.SPLEEN: (1.6, 2.0),
        Tissue.KIDNEY: (4, 8),
        Tissue.BLADDER: (10, 40),
        Tissue.MUSCLE: (0.55, 0.9),
        Tissue.FAT: (0.25, 0.4),
        Tissue.LUNG: (0.3, 0.5),
        Tissue.BONE_CORTEX: (0.4, 0.6),
        Tissue.BONE_MARROW: (1.0, 1.5),
    }
    for tissue, (low, high) in checks.items():
        assert low <= suv[tissue].min() and suv[tissue].max() <= high, tissue.name
    # Myocardial uptake varies from low to high between patients.
    assert suv[Tissue.MYOCARDIUM].min() < 2.5 and suv[Tissue.MYOCARDIUM].max() > 5.0


def test_lesions_have_labels_uptake_and_kinds(case) -> None:
    lesions = arr(case.lesions)
    low, high = SMALL.lesions
    assert low <= len(case.lesion_list) <= high
    pet = arr(resample_onto(case.pet_aligned, case.ct))
    for lesion in case.lesion_list:
        mask = lesions == lesion.label
        assert mask.any()
        assert 3.0 <= lesion.suv <= 15.0 and lesion.kind in ("lung", "liver", "node")
        # A lesion is hotter than its surroundings in the aligned PET.
        ring = ndimage.binary_dilation(mask, iterations=2) & ~mask & (lesions == 0)
        assert pet[mask].max() > np.median(pet[ring])
    kinds = {le.kind for s in range(8) for le in generate_case(PhantomConfig(shape=(40, 64, 64), lesions=(4, 4)), s).lesion_list}
    assert kinds == {"lung", "liver", "node"}


def test_pet_blur_and_noise_grow_as_specified() -> None:
    point = np.zeros((1, 41, 41), np.float32)
    point[0, 20, 20] = 1.0
    blurred = blur_fwhm(point, (1.0, 1.0, 1.0), 6.0)[0, 20]
    half = blurred.max() / 2
    above = np.nonzero(blurred >= half)[0]
    assert 5 <= above[-1] - above[0] + 1 <= 7  # FWHM of 6 mm on 1 mm pixels
    field = noise_field(np.random.default_rng(0), (4, 64, 64))
    low = add_noise(np.full((4, 64, 64), 1.0, np.float32), field, 0.15)
    high = add_noise(np.full((4, 64, 64), 4.0, np.float32), field, 0.15)
    assert high.std() / low.std() == pytest.approx(2.0, rel=0.05)  # std grows with sqrt(activity)


def _centroid(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    w = image * mask
    idx = np.indices(image.shape)
    return np.array([(w * idx[a]).sum() / w.sum() * spacing[a] for a in range(3)])


def test_misalignment_moves_only_the_pet() -> None:
    moved = generate_case(PhantomConfig(shape=(64, 96, 96), misalign=3.0, breathing_mm=10.0), 7)
    still = generate_case(PhantomConfig(shape=(64, 96, 96), misalign=0.0, breathing_mm=0.0), 7)
    for name in ("ct", "pet_aligned", "lesions", "organs"):
        np.testing.assert_array_equal(arr(getattr(moved, name)), arr(getattr(still, name)), err_msg=name)
    np.testing.assert_array_equal(arr(still.pet), arr(still.pet_aligned))
    assert still.misalignment.is_identity
    diff = np.abs(arr(moved.pet) - arr(moved.pet_aligned))
    assert diff.mean() > 0.02 and diff.max() > 1.0


def test_breathing_moves_the_liver_not_the_head_or_bladder() -> None:
    config = PhantomConfig(shape=(64, 96, 96), misalign=0.0, breathing_mm=15.0)
    spacing = config.ct_grid().spacing
    for seed in (0, 2):
        c = generate_case(config, seed)
        organs = arr(c.organs)
        aligned, moved = arr(resample_onto(c.pet_aligned, c.ct)), arr(resample_onto(c.pet, c.ct))
        shift = c.misalignment.breathing_mm
        assert 4.5 <= abs(shift) <= 15.0
        liver = ndimage.binary_dilation(organs == Tissue.LIVER, iterations=3)
        dz = (_centroid(moved, liver, spacing) - _centroid(aligned, liver, spacing))[0]
        assert np.sign(dz) == np.sign(shift) and abs(dz) > 0.1 * abs(shift)  # index z grows towards the head
        for still in ([Tissue.BRAIN_GRAY, Tissue.BRAIN_WHITE], [Tissue.BLADDER]):
            mask = ndimage.binary_dilation(np.isin(organs, still), iterations=2)
            np.testing.assert_allclose(_centroid(moved, mask, spacing), _centroid(aligned, mask, spacing), atol=0.05)


def test_affine_level_moves_the_head_in_plane() -> None:
    config = PhantomConfig(shape=(64, 96, 96), misalign=4.0, breathing_mm=0.0)
    c = generate_case(config, 0)
    organs = arr(c.organs)
    brain = ndimage.binary_dilation(np.isin(organs, [Tissue.BRAIN_GRAY, Tissue.BRAIN_WHITE]), iterations=3)
    aligned, moved = arr(resample_onto(c.pet_aligned, c.ct)), arr(resample_onto(c.pet, c.ct))
    shift = _centroid(moved, brain, config.ct_grid().spacing) - _centroid(aligned, brain, config.ct_grid().spacing)
    assert np.hypot(shift[1], shift[2]) > 2.0
    m = c.misalignment
    assert abs(m.rotation_deg) <= 4.0 and abs(m.scale - 1.0) <= 0.08
    assert all(abs(t) <= 0.08 * e for t, e in zip(m.translation_mm, (520.0, 520.0)))


def test_write_dataset_layout_and_case_seeds(tmp_path) -> None:
    config = PhantomConfig(shape=(24, 48, 48))
    folders = write_dataset(tmp_path / "ds", 2, config, seed=5)
    assert [f.name for f in folders] == ["case_0000", "case_0001"]
    for folder in folders:
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["ct.nii.gz", "pet.nii.gz", "pet_aligned.nii.gz", "lesions.nii.gz", "organs.nii.gz", "phantom.json"]
        )
    meta = json.loads((folders[1] / "phantom.json").read_text())
    assert meta["seed"] == case_seed(5, 1)
    assert meta["units"]["pet"] == "SUVbw"
    written = arr(sitk.ReadImage(str(folders[1] / "pet.nii.gz")))
    np.testing.assert_array_equal(written, arr(generate_case(config, case_seed(5, 1)).pet))
    assert not [p for p in (tmp_path / "ds").iterdir() if p.name.startswith(".")]  # no temporary leftovers
    with pytest.raises(InputError, match="already holds case_0000"):
        write_dataset(tmp_path / "ds", 1, config, seed=5)


def test_config_errors_say_what_to_do() -> None:
    with pytest.raises(InputError, match=r"misalignment level must be within \[0, 10\] \(got -1\)"):
        PhantomConfig(misalign=-1)
    with pytest.raises(InputError, match="each size of the shape must be between 8 and 1024"):
        PhantomConfig(shape=(4, 64, 64))
    with pytest.raises(InputError, match=r"each spacing \(mm\) must be within \[0.01, 100\]"):
        PhantomConfig(spacing=(0.0, 1.0, 1.0))


def test_cli_phantom(tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    argv = [
        "phantom",
        "--out",
        str(out),
        "--cases",
        "2",
        "--seed",
        "1",
        "--shape",
        "24",
        "48",
        "48",
        "--misalign",
        "1",
        "--lesions",
        "7",
        "7",
        "--workers",
        "1",
    ]
    assert main(argv) == 0
    assert "wrote 2 phantom studies" in capsys.readouterr().out
    assert (out / "case_0001" / "pet.nii.gz").exists()
    for case in ("case_0000", "case_0001"):
        description = json.loads((out / case / "phantom.json").read_text())
        assert description["config"]["lesions"] == [7, 7]
        assert len(description["lesions"]) == 7
        assert np.unique(arr(sitk.ReadImage(str(out / case / "lesions.nii.gz")))).size == 8  # background + 7 labels
    assert main(argv) == 2
    assert "already holds case_0000" in capsys.readouterr().err
    assert main([*argv[:-2], "--lesions", "5", "2", "--overwrite"]) == 2
    assert "the lesion count MAX must be between 5 and 255 (got 2)" in capsys.readouterr().err


def test_the_patient_lies_on_a_couch_under_a_blanket_that_carry_no_activity() -> None:
    """The CT shows a foam mattress on a carbon-fibre board (dense skins around a foam core)
    below the back and, for most patients, a blanket over the front; none of it has uptake,
    and the body mask leaves the couch out."""
    from RegC2PLib.body import body_mask
    from RegC2PLib.data.phantom_anatomy import EQUIPMENT

    found_blanket = False
    for seed in range(3):
        c = generate_case(SMALL, seed)
        organs, ct = arr(c.organs), arr(c.ct)
        board, foam, blanket = (organs == label for label in (Tissue.TABLE, Tissue.FOAM, Tissue.BLANKET))
        assert board.any() and foam.any()
        core = ndimage.binary_erosion(board | foam, iterations=1)  # away from partial-volume edges
        assert np.median(ct[board & core]) > 100 and np.median(ct[foam & core]) < -700
        body_rows = np.flatnonzero((~np.isin(organs, (Tissue.AIR, Tissue.AIRWAY, *EQUIPMENT))).any(axis=(0, 2)))
        assert np.flatnonzero(board.any(axis=(0, 2))).min() > body_rows.max()  # below the back (posterior)
        if blanket.any():
            found_blanket = True
            assert -950 < np.median(ct[blanket]) < -500
        equipment = np.isin(organs, EQUIPMENT)
        for pet in (c.pet, c.pet_aligned):  # no activity of its own: only PET blur spills onto it
            activity = arr(resample_onto(pet, c.ct))
            assert np.median(activity[equipment]) < 0.05
        mask = body_mask(ct, c.ct.GetSpacing()[::-1])
        assert not mask[board | foam].any()
    assert found_blanket


def test_misalign_image_moves_a_real_pet_by_the_drawn_affine_and_elastic_field() -> None:
    """A bright block in a PET moves by the drawn in-plane translation (elastic part off); with
    the elastic part on, voxels move by at most about its amplitude; same seed, same result."""
    from RegC2PLib.data.misalignment import misalign_image

    pet = np.zeros((20, 80, 80), np.float32)
    pet[8:12, 30:40, 40:50] = 5.0
    image = sitk.GetImageFromArray(pet)
    image.SetSpacing((2.0, 2.0, 3.0))
    moved, record = misalign_image(image, np.random.default_rng(7), level=5.0, elastic_mm=0.0)
    assert record["elastic_mm"] == 0.0 and abs(record["rotation_deg"]) <= 5.0 and abs(record["scale"] - 1) <= 0.1
    out = arr(moved)
    assert out.min() >= 0.0 and out[0].sum() == 0.0  # nothing is invented, outside stays empty
    before = np.array(ndimage.center_of_mass(pet))[1:] * 2.0
    after = np.array(ndimage.center_of_mass(out))[1:] * 2.0
    # The point p of the moved image shows the original at T(p): content moves by about -T's translation
    # (plus what the rotation and scale do to a block 15 mm off the centre).
    expected = -np.array(record["translation_mm"][::-1])
    assert np.abs(after - before - expected).max() < 0.2 * 15.0 + 1.0
    assert out.sum() == pytest.approx(pet.sum() / record["scale"] ** 2, rel=0.1)
    again, _ = misalign_image(image, np.random.default_rng(7), level=5.0, elastic_mm=0.0)
    np.testing.assert_array_equal(arr(again), out)
    wobbly, record = misalign_image(image, np.random.default_rng(8), level=0.0, elastic_mm=6.0)
    assert 0 < record["elastic_mm"] <= 6.0
    shift = np.abs(np.array(ndimage.center_of_mass(arr(wobbly))) - np.array(ndimage.center_of_mass(pet))) * np.array(
        [3.0, 2.0, 2.0]
    )
    assert shift.max() <= record["elastic_mm"] + 1.0 and not np.array_equal(arr(wobbly), pet)

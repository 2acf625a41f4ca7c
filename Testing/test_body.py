"""The CT body mask: what it keeps (lungs, both legs, a body filling a crop), what it drops
(a couch touching the back, a blanket, loose fragments, air), and that the synthetic PET
is 0 outside it; checked on synthetic CTs and on hand-checked slices of real ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from RegC2PLib.body import body_mask, in_plane_box
from RegC2PLib.inference import TranslationOptions, translate_volume

SPACING = (3.0, 1.0, 1.0)  # (z, y, x) mm


def _patient(nz: int = 6, ny: int = 96, nx: int = 112) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """HU volume of an elliptic trunk with lungs, as a CT shows a patient on the couch: a foam
    mattress (-850 HU) under the back on a 3 mm carbon board (+300 HU); a blanket (-750 HU)
    over the belly with a fold of denser cloth standing off it (-300 HU, 2 mm thick); an ECG
    lead (+500 HU, 2 mm) lying on the skin and running off into the air; a loose fragment.
    Returns the CT and each part's mask."""
    _, y, x = np.mgrid[:nz, :ny, :nx]
    trunk = ((y - 44) / 28.0) ** 2 + ((x - 56) / 44.0) ** 2 <= 1.0
    lungs = ((y - 40) / 12.0) ** 2 + ((np.abs(x - 56) - 18) / 10.0) ** 2 <= 1.0
    mattress = (y >= 66) & (y < 75) & (np.abs(x - 56) < 46) & ~trunk
    board = (y >= 75) & (y < 78) & (np.abs(x - 56) < 52)
    outer = ((y - 44) / 31.0) ** 2 + ((x - 56) / 47.0) ** 2 <= 1.0
    blanket = outer & ~trunk & (y < 36)
    fold = (np.abs(x - 40) < 1) & (y >= 0) & (y < 16) & ~outer  # standing off the blanket, upwards
    lead = (((np.abs(y - 44) < 1) & (x >= 98)) | ((np.abs(x - 99) < 1) & (y >= 44) & (y < 62))) & ~trunk
    fragment = np.zeros_like(trunk)
    fragment[:, 5:7, 5:7] = True
    ct = np.full((nz, ny, nx), -1000.0)
    ct[trunk] = 40.0
    ct[lungs] = -850.0
    ct[mattress] = -850.0
    ct[board] = 300.0
    ct[blanket] = -750.0
    ct[fold] = -300.0
    ct[lead] = 500.0
    ct[fragment] = 100.0
    parts = {"trunk": trunk, "lungs": lungs, "couch": mattress | board, "blanket": blanket | fold, "lead": lead}
    return ct, {**parts, "fragment": fragment}


def test_body_mask_keeps_the_trunk_and_lungs_and_drops_couch_blanket_and_fragments() -> None:
    ct, parts = _patient()
    mask = body_mask(ct, SPACING)
    assert mask.dtype == bool and mask.shape == ct.shape
    assert mask[parts["lungs"]].all()  # air inside the body counts as body
    interior = ndimage.binary_erosion(parts["trunk"], iterations=2)
    assert mask[interior].all()
    for thing in ("couch", "blanket", "fragment"):
        assert not mask[parts[thing]].any(), thing
    # Where the lead touches the skin a voxel or two may stay; the lead itself is cut off.
    near_skin = ndimage.binary_dilation(parts["trunk"], structure=np.ones((1, 3, 3), bool), iterations=3)  # 3 mm
    assert not mask[parts["lead"] & ~near_skin].any()
    # The outline is the CT's own (full resolution), not the blocky working grid.
    assert mask[parts["trunk"]].mean() > 0.99


def test_body_mask_keeps_both_legs_and_a_body_that_fills_the_crop() -> None:
    _, y, x = np.mgrid[:4, :60, :100]
    left = ((y - 30) / 20.0) ** 2 + ((x - 25) / 18.0) ** 2 <= 1.0
    right = ((y - 30) / 20.0) ** 2 + ((x - 75) / 18.0) ** 2 <= 1.0
    mask = body_mask(np.where(left | right, 50.0, -1000.0), SPACING)
    assert not mask[~(left | right)].any()
    assert mask[left].mean() > 0.98 and mask[right].mean() > 0.98  # the other leg is not dropped
    crop = np.full((4, 40, 40), 30.0)  # a crop inside a thigh: every voxel is body
    crop[:, 10:14, 10:14] = 800.0  # bone
    assert body_mask(crop, SPACING).all()


def test_body_mask_of_all_air_is_empty_and_the_box_is_none() -> None:
    mask = body_mask(np.full((2, 5, 5), -1000.0), SPACING)
    assert not mask.any()
    assert in_plane_box(mask) is None


def test_in_plane_box_spans_every_slice() -> None:
    mask = np.zeros((3, 20, 30), bool)
    mask[0, 4:6, 10:12] = True
    mask[2, 12:15, 3:5] = True
    assert in_plane_box(mask) == (4, 15, 3, 12)


def test_the_synthetic_pet_is_zero_outside_the_body(small_model, tmp_path: Path) -> None:
    """An untrained model puts activity everywhere; with the body mask (the default) the
    couch, the blanket and the air get exactly 0, and the body keeps G's output."""
    ct_array, parts = _patient(nz=8, ny=96, nx=112)
    ct = sitk.GetImageFromArray(ct_array.astype(np.int16))
    ct.SetSpacing(SPACING[::-1])
    masked = sitk.GetArrayFromImage(translate_volume(ct, small_model, TranslationOptions(device="cpu")))
    raw = sitk.GetArrayFromImage(translate_volume(ct, small_model, TranslationOptions(device="cpu", body_mask=False)))
    outside = ~body_mask(ct_array, SPACING)
    assert raw[parts["couch"]].max() > 0.01  # without the mask the couch would carry "uptake"
    assert (masked[outside] == 0.0).all()
    assert (masked[parts["couch"] | parts["blanket"]] == 0.0).all()
    assert masked[parts["trunk"]].mean() > 0.0


# --------------------------------------------------------------------------- real CTs


def test_body_mask_of_a_real_head_neck_ct(shared_data: Path) -> None:
    """HN-CHUS-052 (1.17 mm pixels, couch and head holder from row 330 down, thermoplastic
    mask around the head): rows checked by hand on the slices of the chest and the head."""
    ct = sitk.ReadImage(str(shared_data / "real" / "headneck" / "HN-CHUS-052" / "ct.nii.gz"))
    hu = sitk.GetArrayViewFromImage(ct)
    mask = body_mask(hu, ct.GetSpacing()[::-1])
    assert not mask[:, 330:, :].any()  # couch, mattress and head holder
    assert mask[2, 250, 180] and hu[2, 250, 180] < -700  # a lung (air inside the chest) is body
    assert mask[2, 200:300, 256].all()  # the mediastinum
    assert mask[86, 200, 256]  # the brain
    assert not mask[86, 200, 20] and not mask[2, 50, 256]  # air beside the head, above the chest
    # The whole patient: every voxel denser than soft tissue near the centre of the field of view is body.
    dense = (np.asarray(hu) > -100) & (np.arange(hu.shape[1])[None, :, None] < 320)
    assert mask[dense].mean() > 0.98


@pytest.mark.parametrize("study", ["STS_001", "STS_007"])
def test_body_mask_of_real_sarcoma_crops_covers_the_limb(shared_data: Path, study: str) -> None:
    """Thigh/pelvis crops: the crop cuts through the body; the mask is all the tissue, and
    the couch below (STS_007) is not body."""
    ct = sitk.ReadImage(str(shared_data / "real" / "sts" / study / "ct.nii.gz"))
    hu = np.asarray(sitk.GetArrayViewFromImage(ct))
    mask = body_mask(hu, ct.GetSpacing()[::-1])
    soft = hu > -200
    below = np.zeros_like(soft)
    if study == "STS_007":
        below[:, 190:, :] = True  # the couch boards across the bottom of this crop
    assert mask[soft & ~below].mean() > 0.97
    assert not mask[below & (hu > 0)].any()

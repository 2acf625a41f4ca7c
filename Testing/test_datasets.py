"""Dataset layout, bad-input messages, physical resampling, split by study, training samples."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from RegC2PLib.body import body_mask, in_plane_box
from RegC2PLib.config import preset
from RegC2PLib.data.cache import cache_key, prepare_studies
from RegC2PLib.data.datasets import SliceDataset, WindowDataset
from RegC2PLib.data.npy_layout import NpySliceDataset
from RegC2PLib.data.phantom import PhantomConfig, write_dataset
from RegC2PLib.data.split import read_manifest, select, split_studies, write_manifest
from RegC2PLib.data.studies import Study, discover_studies, load_study, skipped_summary
from RegC2PLib.errors import InputError
from RegC2PLib.intensity import ct_to_network
from RegC2PLib.slice_grid import SliceGrid

CONFIG = preset("small")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantoms")
    write_dataset(root, 3, PhantomConfig(shape=(24, 48, 40), lesions=(1, 2)), seed=11)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _image(array: np.ndarray, spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0), direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def _ct_array(shape=(6, 10, 12)) -> np.ndarray:
    ct = np.full(shape, -1000.0, np.float32)
    ct[:, 2:-2, 2:-2] = 40.0
    return ct


def _rotation(degrees: float, axis) -> np.ndarray:
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    t = math.radians(degrees)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(t) * cross + (1 - math.cos(t)) * cross @ cross


# ----------------------------------------------------------------------------- discovery


def test_discover_finds_phantom_studies(phantoms) -> None:
    studies, skipped = discover_studies(phantoms)
    assert [s.name for s in studies] == ["case_0000", "case_0001", "case_0002"]
    assert skipped == []
    assert all(s.pet_aligned is not None and s.lesions is not None for s in studies)
    loaded = load_study(studies[0])
    assert loaded.pet.GetSize() == loaded.ct.GetSize() and loaded.pet.GetOrigin() == loaded.ct.GetOrigin()
    assert loaded.lesions is not None and sitk.GetArrayViewFromImage(loaded.lesions).max() >= 1
    assert loaded.coverage.min() == 1.0


def test_every_bad_input_is_reported(tmp_path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    ct = _image(_ct_array())
    pet = _image(np.ones((6, 10, 12)))

    def study(name: str, **files: sitk.Image | str) -> Path:
        folder = root / name
        folder.mkdir()
        for fname, content in files.items():
            path = folder / fname.replace("_nii", ".nii.gz").replace("_mha", ".mha").replace("_json", ".json")
            if isinstance(content, str):
                path.write_text(content)
            else:
                sitk.WriteImage(content, str(path))
        return folder

    study("good", ct_nii=ct, pet_nii=pet)
    (root / "empty").mkdir()
    study("no_pet", ct_nii=ct)
    study("two_cts", ct_nii=ct, ct_mha=ct, pet_nii=pet)
    study("unreadable", ct_nii=ct, pet_nii="this is not an image")
    study("far_away", ct_nii=ct, pet_nii=_image(np.ones((6, 10, 12)), origin=(0.0, 0.0, 5000.0)))
    study("becquerel", ct_nii=ct, pet_nii=_image(np.full((6, 10, 12), 12000.0)))
    study("not_hu", ct_nii=_image(np.ones((6, 10, 12))), pet_nii=pet)
    study("bad_json", ct_nii=ct, pet_nii=pet, study_json="{oops")
    (root / "pet").mkdir()  # a study whose ct is missing and whose pet/ DICOM folder is empty
    sitk.WriteImage(ct, str(root / "loose.nii.gz"))

    studies, skipped = discover_studies(root)
    reasons = {s.name: s.reason for s in skipped}
    assert "no ct.* (or a ct/ DICOM folder) and pet.* (or a pet/ DICOM folder)" in reasons["empty"]
    assert "no pet.* (or a pet/ DICOM folder)" in reasons["no_pet"]
    assert "several ct volumes (ct.mha, ct.nii.gz); keep one" in reasons["two_cts"]
    assert "study.json is not valid JSON" in reasons["bad_json"]
    assert "put each study in its own sub-folder" in reasons["loose.nii.gz"]
    assert "no ct.*" in reasons["pet"]

    cached, failed = prepare_studies(studies, CONFIG, tmp_path / "cache")
    assert [c.name for c in cached] == ["good"]
    reasons = {s.name: s.reason for s in failed}
    assert reasons["unreadable"].startswith("cannot read") and "pet.nii.gz" in reasons["unreadable"]
    assert "do not overlap in space (along z" in reasons["far_away"] and "belong to this study" in reasons["far_away"]
    assert "not a plausible SUV (is it in Bq/ml?)" in reasons["becquerel"] and "suv_factor" in reasons["becquerel"]
    assert "not plausible Hounsfield units" in reasons["not_hu"]
    summary = skipped_summary(skipped + failed)
    for name in ("empty", "no_pet", "two_cts", "bad_json", "loose.nii.gz", "unreadable", "far_away", "becquerel", "not_hu"):
        assert f"  {name}: " in summary
    assert summary.startswith(f"skipped {len(skipped) + len(failed)} studies:")


def test_empty_or_missing_dataset_folder(tmp_path) -> None:
    with pytest.raises(InputError, match="holds no study folders; put each study in its own sub-folder"):
        discover_studies(tmp_path)
    with pytest.raises(InputError, match="is not a folder; give the dataset folder"):
        discover_studies(tmp_path / "missing")


def test_suv_factor_from_study_json_scales_a_becquerel_pet(tmp_path) -> None:
    folder = tmp_path / "ds" / "s1"
    folder.mkdir(parents=True)
    sitk.WriteImage(_image(_ct_array()), str(folder / "ct.nii.gz"))
    sitk.WriteImage(_image(np.full((6, 10, 12), 10000.0)), str(folder / "pet.nii.gz"))
    (folder / "study.json").write_text(json.dumps({"suv_factor": 2.5e-4}))
    studies, _ = discover_studies(tmp_path / "ds")
    pet = sitk.GetArrayFromImage(load_study(studies[0]).pet)
    np.testing.assert_allclose(pet[2, 5, 6], 2.5, rtol=1e-5)


# ----------------------------------------------------------------------------- resampling


def test_pet_resampled_onto_oblique_ct_by_physical_coordinates(tmp_path) -> None:
    """A linear PET (value = f(physical point)) must read f(p) at every oblique CT voxel p,
    and a hot spot at a known physical point must land on the CT voxel at that point."""
    rot = _rotation(30.0, (1.0, 0.5, 0.2))
    ct_spacing = np.array([1.5, 1.25, 2.0])
    ct_origin = np.array([10.0, -20.0, 30.0])
    ct = _image(_ct_array((8, 10, 12)), tuple(ct_spacing), tuple(ct_origin), tuple(rot.ravel()))

    def f(p: np.ndarray) -> np.ndarray:
        return 5.0 + 0.03 * p[..., 0] - 0.02 * p[..., 1] + 0.01 * p[..., 2]

    pet_spacing, pet_origin = np.array([2.0, 2.0, 3.0]), np.array([-40.0, -60.0, -20.0])
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in (40, 40, 30)], indexing="ij"), -1)  # (x, y, z) index
    points = pet_origin + idx * pet_spacing
    pet = _image(np.transpose(f(points), (2, 1, 0)), tuple(pet_spacing), tuple(pet_origin))
    folder = tmp_path / "ds" / "oblique"
    folder.mkdir(parents=True)
    sitk.WriteImage(ct, str(folder / "ct.nrrd"))
    sitk.WriteImage(pet, str(folder / "pet.nii.gz"))
    studies, _ = discover_studies(tmp_path / "ds")
    loaded = load_study(studies[0])
    assert loaded.pet.GetDirection() == pytest.approx(tuple(rot.ravel()))
    resampled = sitk.GetArrayFromImage(loaded.pet)
    for index in [(0, 0, 0), (5, 7, 3), (11, 9, 7), (3, 2, 6)]:
        p = np.array(loaded.ct.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(p, ct_origin + rot @ (np.array(index) * ct_spacing), atol=1e-6)
        assert resampled[index[2], index[1], index[0]] == pytest.approx(float(f(p)), abs=1e-4)

    # A hot voxel block centred on a PET voxel centre that is also a CT voxel centre.
    ct_index = (6, 4, 5)
    target = ct_origin + rot @ (np.array(ct_index) * ct_spacing)
    hot_origin = target - np.array([10, 10, 10]) * pet_spacing
    hot = np.zeros((21, 21, 21), np.float32)
    hot[9:12, 9:12, 9:12] = 7.0
    sitk.WriteImage(_image(hot, tuple(pet_spacing), tuple(hot_origin)), str(folder / "pet.nii.gz"))
    os.utime(folder / "pet.nii.gz")
    loaded = load_study(studies[0])
    moved = sitk.GetArrayFromImage(loaded.pet)
    assert moved[ct_index[2], ct_index[1], ct_index[0]] == pytest.approx(7.0, abs=1e-4)
    hot_points = [
        np.array(loaded.ct.TransformIndexToPhysicalPoint((int(i), int(j), int(k)))) for k, j, i in np.argwhere(moved > 0)
    ]
    assert max(np.abs(q - target).max() for q in hot_points) < 2 * pet_spacing.max()  # nothing lands elsewhere


# ----------------------------------------------------------------------------- split


def test_split_by_study_is_seeded_disjoint_and_round_trips(tmp_path) -> None:
    names = [f"p{i:03d}" for i in range(20)]
    split = split_studies(reversed(names), seed=3)
    assert (len(split.train), len(split.val), len(split.test)) == (16, 2, 2)
    subsets = [set(split.train), set(split.val), set(split.test)]
    assert set.union(*subsets) == set(names)
    assert sum(len(s) for s in subsets) == len(names)  # no study in two subsets
    assert split_studies(names, seed=3) == split
    assert split_studies(names, seed=4) != split
    assert split_studies(names[:3], seed=0).test and split_studies(names[:3], seed=0).val  # small sets keep val/test
    path = tmp_path / "split.json"
    write_manifest(path, split)
    assert read_manifest(path) == split
    data = json.loads(path.read_text())
    data["test"].append(data["train"][0])
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=f"puts study {data['train'][0]} in both train and test"):
        read_manifest(path)
    with pytest.raises(InputError, match="does not exist; create one"):
        read_manifest(tmp_path / "nothing.json")
    with pytest.raises(InputError, match="summing to 1"):
        split_studies(names, fractions=(0.5, 0.2, 0.2))


def test_training_slices_come_only_from_training_studies(phantoms, cache) -> None:
    studies, _ = discover_studies(phantoms)
    split = split_studies([s.name for s in studies], fractions=(0.34, 0.33, 0.33), seed=1)
    train = SliceDataset(select(studies, split, "train"), CONFIG, cache)
    seen = {train[i]["study"] for i in range(len(train))}
    assert seen == set(split.train)
    with pytest.raises(InputError, match="not found or skipped in the dataset"):
        select(studies[:1], split, "test" if studies[0].name not in split.test else "val")


# ----------------------------------------------------------------------------- samples


def test_slice_dataset_matches_the_inference_mapping(phantoms, cache) -> None:
    studies, _ = discover_studies(phantoms)
    data = SliceDataset(studies, CONFIG, cache)
    assert len(data) == 3 * 24
    item = data[30]
    assert item["study"] == "case_0001" and item["slice"] == 6
    for key in ("ct", "pet", "pet_aligned"):
        assert item[key].shape == (1, 128, 128) and item[key].dtype == torch.float32
        assert float(item[key].min()) >= -1.0 and float(item[key].max()) <= 1.0
    # The same mapping as inference: the body-centred grid of the whole volume at the model's pixel size.
    ct = load_study(studies[1]).ct
    volume = sitk.GetArrayFromImage(ct)
    box = in_plane_box(body_mask(volume, ct.GetSpacing()[::-1]))
    grid = SliceGrid.for_model(volume.shape[1:], (ct.GetSpacing()[1], ct.GetSpacing()[0]), CONFIG, box)
    assert grid.canvas == (128, 128)
    expected = grid.to_model(ct_to_network(torch.from_numpy(volume[6:7]), CONFIG.intensity), fill=-1.0)
    torch.testing.assert_close(item["ct"], expected, atol=2e-3, rtol=0)
    assert float(item["ct"][0, 0, 0]) == -1.0  # padding around the phantom's field of view


def test_cache_is_reused_and_invalidated(phantoms, tmp_path) -> None:
    cache = tmp_path / "cache"
    studies, _ = discover_studies(phantoms)
    SliceDataset(studies[:1], CONFIG, cache)
    first = sorted(p.name for p in cache.iterdir())
    meta = cache / first[0] / "meta.json"
    stamp = meta.stat().st_mtime_ns
    SliceDataset(studies[:1], CONFIG, cache)
    assert sorted(p.name for p in cache.iterdir()) == first and meta.stat().st_mtime_ns == stamp  # reused
    other = preset("paper")
    assert cache_key(studies[0], other) != cache_key(studies[0], CONFIG)
    key = cache_key(studies[0], CONFIG)
    pet = studies[0].pet
    st = pet.stat()
    os.utime(pet, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert cache_key(studies[0], CONFIG) != key  # a changed source file makes a new entry
    finally:
        os.utime(pet, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_window_dataset_stacks_consecutive_slices(phantoms, cache) -> None:
    studies, _ = discover_studies(phantoms)
    slices = SliceDataset(studies, CONFIG, cache)
    windows = WindowDataset(slices.studies, CONFIG, window=8, stride=4)
    assert len(windows) == 3 * ((24 - 8) // 4 + 1)
    item = windows[6]
    assert item["ct"].shape == (8, 128, 128) and item["pet_aligned"].shape == (8, 128, 128)
    assert item["study"] == "case_0001" and item["start"] == 4
    torch.testing.assert_close(item["pet"][3], slices[24 + 7]["pet"][0])
    whole = WindowDataset(slices.studies[:2], CONFIG, window=24)
    assert len(whole) == 2 and whole.skipped == []
    with pytest.raises(
        InputError,
        match=r"no slice windows to train on: case_0000 skipped \(only 24 usable slices, fewer than the refiner window of 30\)",
    ):
        WindowDataset(slices.studies[:2], CONFIG, window=30)


def test_no_usable_studies_is_an_error(tmp_path) -> None:
    folder = tmp_path / "ds" / "broken"
    folder.mkdir(parents=True)
    (folder / "ct.nii.gz").write_text("garbage")
    (folder / "pet.nii.gz").write_text("garbage")
    studies, _ = discover_studies(tmp_path / "ds")
    with pytest.raises(InputError, match="no slices to train on: broken skipped \\(cannot read"):
        SliceDataset(studies, CONFIG, tmp_path / "cache")


# ----------------------------------------------------------------------------- RegGAN / CPDM layout


def test_npy_slice_layout(tmp_path) -> None:
    for side in ("A", "B"):
        (tmp_path / "train" / side).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(tmp_path / "train" / "A" / f"pat7_{i}.npy", rng.uniform(-1, 1, (64, 64)).astype(np.float32))
        np.save(tmp_path / "train" / "B" / f"pat7_{i}.npy", rng.uniform(-1, 1, (64, 64)).astype(np.float32))
    np.save(tmp_path / "train" / "A" / "lonely_0.npy", np.zeros((64, 64), np.float32))
    data = NpySliceDataset(tmp_path, "train", CONFIG)
    assert len(data) == 3
    assert [s.name for s in data.skipped] == ["A/lonely_0.npy"] and "no PET slice of the same name" in data.skipped[0].reason
    assert "1 unpaired files not used" in data.summary()
    item = data[2]
    assert item["ct"].shape == (1, 128, 128) and item["study"] == "pat7" and item["slice"] == 2
    np.save(tmp_path / "train" / "B" / "pat7_1.npy", np.full((64, 64), 300.0, np.float32))
    with pytest.raises(InputError, match=r"values 300..300; the RegGAN/CPDM layout stores slices scaled to \[-1, 1\]"):
        data[1]
    with pytest.raises(InputError, match=r"needs .*/A \(CT\) and .*/B \(PET\)"):
        NpySliceDataset(tmp_path, "val", CONFIG)
    with pytest.raises(InputError, match="no CT/PET slice pairs"):
        (tmp_path / "test" / "A").mkdir(parents=True)
        (tmp_path / "test" / "B").mkdir(parents=True)
        NpySliceDataset(tmp_path, "test", CONFIG)


def test_study_sources_cover_dicom_folders(tmp_path) -> None:
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct" / "1.dcm").write_bytes(b"x")
    (tmp_path / "ct" / "2.dcm").write_bytes(b"y")
    (tmp_path / "pet.nii.gz").write_bytes(b"z")
    study = Study("s", tmp_path, tmp_path / "ct", tmp_path / "pet.nii.gz")
    assert [p.name for p in study.sources()] == ["1.dcm", "2.dcm", "pet.nii.gz"]

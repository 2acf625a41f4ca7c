"""Study folders whose ``dicom/`` tree holds a PACS export (CT, PET with and without
attenuation correction, scouts): read with no manual sorting, the same as the NIfTI
study they were written from; ``study.json`` chooses among several series; ``regc2p
train`` and ``evaluate`` run on such a dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_files import SUV_PER_BQML, write_ct, write_pet

from RegC2PLib.cli import main
from RegC2PLib.data.phantom import PhantomConfig, write_dataset
from RegC2PLib.data.studies import discover_studies, load_study
from RegC2PLib.errors import InputError


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantoms")
    write_dataset(root, 3, PhantomConfig(shape=(20, 40, 36), lesions=(1, 2)), seed=5)
    return root


def pacs_export(case: Path, tree: Path, extra_ct: bool = False) -> None:
    """The case's CT and PET as a PACS export under ``tree`` (series in nested folders),
    with a scout and a PET without attenuation correction."""
    ct = sitk.ReadImage(str(case / "ct.nii.gz"))
    pet = sitk.ReadImage(str(case / "pet.nii.gz"))
    write_ct(tree / "DICOM" / "ST0" / "SE1", ct, skip=range(1, ct.GetDepth()), ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    write_ct(tree / "DICOM" / "ST0" / "SE2", ct)
    write_pet(tree / "DICOM" / "ST0" / "SE4", pet, SUV_PER_BQML)
    write_pet(tree / "DICOM" / "ST0" / "SE5", pet, SUV_PER_BQML, CorrectedImage=["DECY"], SeriesNumber=5)
    if extra_ct:
        write_ct(tree / "DICOM" / "ST0" / "SE3", ct, SeriesDescription="CT lung kernel", SeriesNumber=3)


def test_a_dicom_tree_study_reads_like_its_nifti_study(phantoms, tmp_path, assert_same_geometry) -> None:
    pacs_export(phantoms / "case_0000", tmp_path / "ds" / "p1" / "dicom")
    (study,) = discover_studies(tmp_path / "ds")[0]
    assert study.ct == study.pet == tmp_path / "ds" / "p1" / "dicom"
    from_dicom = load_study(study)
    (original,) = [s for s in discover_studies(phantoms)[0] if s.name == "case_0000"]
    from_nifti = load_study(original)
    assert_same_geometry(from_dicom.ct, from_nifti.ct, 1e-5)
    # DICOM stores whole HU: the phantom's float HU come back rounded.
    np.testing.assert_allclose(sitk.GetArrayFromImage(from_dicom.ct), sitk.GetArrayFromImage(from_nifti.ct), atol=0.5)
    reference = sitk.GetArrayFromImage(from_nifti.pet)
    np.testing.assert_allclose(sitk.GetArrayFromImage(from_dicom.pet), reference, atol=2e-3 * reference.max())
    sources = study.sources()  # for the cache key: each DICOM file once
    assert len(sources) == len(set(sources)) == sum(1 for p in study.ct.rglob("*") if p.is_file())


def test_study_json_chooses_among_several_series(phantoms, tmp_path) -> None:
    pacs_export(phantoms / "case_0001", tmp_path / "ds" / "p1" / "dicom", extra_ct=True)
    (study,) = discover_studies(tmp_path / "ds")[0]
    with pytest.raises(InputError) as info:
        load_study(study)
    message = str(info.value)
    assert message.startswith("study p1: ") and "holds 2 CT image series" in message and "'CT lung kernel'" in message
    assert 'choose one with {"ct_series": "<SeriesInstanceUID or series number>"} in the study\'s study.json' in message
    (tmp_path / "ds" / "p1" / "study.json").write_text(json.dumps({"ct_series": 2, "pet_series": "4"}))
    (study,) = discover_studies(tmp_path / "ds")[0]
    assert (study.ct_series, study.pet_series) == ("2", "4")
    assert load_study(study).ct.GetSize() == (36, 40, 20)


def test_files_beside_the_tree_take_their_role(phantoms, tmp_path) -> None:
    folder = tmp_path / "ds" / "p1"
    pacs_export(phantoms / "case_0000", folder / "dicom")
    shutil.copy(phantoms / "case_0000" / "pet_aligned.nii.gz", folder / "pet.nii.gz")
    (study,) = discover_studies(tmp_path / "ds")[0]
    assert study.ct == folder / "dicom" and study.pet == folder / "pet.nii.gz"


def test_bad_study_folders_are_skipped_with_the_reason(tmp_path) -> None:
    for name, content in (("bad_series", {"ct_series": ["2"]}), ("bad_key", {"series": "2"}), ("bool", {"pet_series": True})):
        (tmp_path / name / "dicom").mkdir(parents=True)
        (tmp_path / name / "dicom" / "x.dcm").write_bytes(b"x")
        (tmp_path / name / "study.json").write_text(json.dumps(content))
    (tmp_path / "lesion_folder" / "dicom").mkdir(parents=True)
    (tmp_path / "lesion_folder" / "dicom" / "x.dcm").write_bytes(b"x")
    (tmp_path / "lesion_folder" / "lesions").mkdir()
    (tmp_path / "empty_tree" / "dicom").mkdir(parents=True)
    studies, skipped = discover_studies(tmp_path)
    reasons = {s.name: s.reason for s in skipped}
    assert not studies
    assert "ct_series ['2'] must be a SeriesInstanceUID or a series number" in reasons["bad_series"]
    assert 'may only hold "suv_factor" (a number), "ct_series" and "pet_series"' in reasons["bad_key"]
    assert "pet_series True must be" in reasons["bool"]
    assert "its lesions/ is a folder; give the lesion map as a volume file" in reasons["lesion_folder"]
    assert "its dicom/ folder is empty" in reasons["empty_tree"]


@pytest.mark.slow
def test_train_and_evaluate_on_pacs_exports(phantoms, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    for case in sorted(phantoms.glob("case_*")):
        pacs_export(case, data / case.name / "dicom")
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--out", str(run), "--image-size", "64", "--stage", "1", "--max-steps", "1"]
    assert main([*argv, "--epochs", "1", "--progress", "none"]) == 0
    assert "skipped" not in capsys.readouterr().err  # every study read from its export
    scores = tmp_path / "scores.json"
    argv = ["evaluate", "--data", str(data), "--model", str(run / "model.safetensors"), "--manifest", str(run / "split.json")]
    argv += ["--split", "all", "--refine", "none", "--json", str(scores), "--device", "cpu", "--progress", "none"]
    assert main(argv) == 0
    figures = json.loads(scores.read_text())
    assert sorted(s["study"] for s in figures["studies"]) == ["case_0000", "case_0001", "case_0002"]


@pytest.mark.slow
def test_a_real_philips_study_from_its_dicom_pet(shared_data: Path, tmp_path) -> None:
    """HN-CHUS-052 (TCIA Head-Neck-PET-CT, CC BY 3.0): the CT as a file and the raw Philips PET
    series (counts) as the study's dicom/ tree give the PET of the SUV file on the CT grid."""
    real = shared_data / "real"
    for name, pet in (("from_dicom", "dicom"), ("from_file", "pet.nii.gz")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ct.nii.gz").symlink_to(real / "headneck" / "HN-CHUS-052" / "ct.nii.gz")
        source = real / "dicom" / "HN-CHUS-052-PET" if pet == "dicom" else real / "headneck" / "HN-CHUS-052" / pet
        (tmp_path / name / pet).symlink_to(source)
    studies, skipped = discover_studies(tmp_path)
    assert not skipped
    from_dicom, from_file = (sitk.GetArrayFromImage(load_study(s).pet) for s in studies)
    assert np.abs(from_dicom - from_file).max() <= 0.005 * from_file.max()

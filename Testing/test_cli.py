"""The ``regc2p`` command line: every user error is one line on stderr, a non-zero exit
and no output file; successful runs keep the CT's geometry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_files import STUDY_UID, write_export
from safetensors import safe_open
from safetensors.torch import save_file

from RegC2PLib.cli import main
from RegC2PLib.config import preset
from RegC2PLib.data.dicom_series import find_series, read_series_image
from RegC2PLib.data.dicom_suv import read_pet_suv
from RegC2PLib.dicom_output import SUV_STEP
from RegC2PLib.volume_io import read_image

SUBPROCESS_TIMEOUT = 180


def _translate(ct: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "translate",
        "--ct",
        str(ct),
        "--model",
        str(model),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--progress",
        "none",
        *extra,
    ]


def _assert_user_error(capsys: pytest.CaptureFixture[str], argv: list[str], out: Path, *fragments: str) -> str:
    """Run the CLI, expect a clean one-line error and nothing written beside ``out``."""
    before = sorted(p.name for p in out.parent.iterdir()) if out.parent.is_dir() else None
    code = main(argv)
    captured = capsys.readouterr()
    assert code != 0
    err = captured.err.strip()
    assert err.startswith("regc2p: error: "), err
    assert "\n" not in err, err
    assert "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment.lower() in err.lower(), err
    assert not out.exists()
    if before is not None:
        assert sorted(p.name for p in out.parent.iterdir()) == before  # no temporary files either
    return err


# --------------------------------------------------------------------------- inputs


def test_missing_input(capsys, tmp_path: Path, small_model_file: Path) -> None:
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(tmp_path / "nope.nrrd", small_model_file, out), out, "does not exist")


@pytest.mark.parametrize("name", ["ct.nrrd", "ct.nii.gz", "ct.mha", "ct.dcm"])
def test_unreadable_input(capsys, tmp_path: Path, small_model_file: Path, name: str) -> None:
    ct = tmp_path / name
    ct.write_bytes(b"this is not an image\n" * 10)
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(ct, small_model_file, out), out, "cannot read")


def test_folder_without_dicom(capsys, tmp_path: Path, small_model_file: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here")
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(folder, small_model_file, out), out, "no DICOM image series")


def test_2d_input(capsys, tmp_path: Path, small_model_file: Path) -> None:
    ct = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((20, 24), -1000, dtype=np.int16)), str(ct))
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(ct, small_model_file, out), out, "2D", "3D")


def test_4d_input(capsys, tmp_path: Path, small_model_file: Path, make_ct) -> None:
    ct = tmp_path / "dynamic.nii.gz"
    frame = make_ct((3, 20, 24))
    image = sitk.JoinSeries([frame, frame])
    assert image.GetDimension() == 4
    sitk.WriteImage(image, str(ct))
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(ct, small_model_file, out), out, "4D", "3D")


@pytest.mark.parametrize("name", ["rgb.mha", "rgb.nrrd"])
def test_vector_input(capsys, tmp_path: Path, small_model_file: Path, make_ct, name: str) -> None:
    frame = make_ct((3, 20, 24))
    ct = tmp_path / name
    sitk.WriteImage(sitk.Compose([frame, frame, frame]), str(ct))
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(ct, small_model_file, out), out, "3 components")


@pytest.mark.parametrize("kind", ["unit", "labels"])
def test_implausible_hu(capsys, tmp_path: Path, small_model_file: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    values = rng.random((4, 20, 24)).astype(np.float32) if kind == "unit" else rng.integers(0, 5, (4, 20, 24)).astype(np.uint8)
    ct = tmp_path / "ct.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(values), str(ct))
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(ct, small_model_file, out), out, "Hounsfield")


# --------------------------------------------------------------------------- models


def _rewrite(model: Path, dst: Path, edit_metadata=None) -> Path:
    with safe_open(str(model), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        metadata = dict(f.metadata())
    if edit_metadata:
        edit_metadata(metadata)
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def test_model_for_another_architecture(capsys, tmp_path: Path, small_model_file: Path, ct_file: Path) -> None:
    def to_paper(metadata: dict[str, str]) -> None:
        metadata["regc2p_config"] = preset("paper").to_json()

    model = _rewrite(small_model_file, tmp_path / "paper_labelled.safetensors", to_paper)
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(ct_file, model, out), out, "does not match its config", "shape")


def test_model_with_edited_config(capsys, tmp_path: Path, small_model_file: Path, ct_file: Path) -> None:
    def widen(metadata: dict[str, str]) -> None:
        config = json.loads(metadata["regc2p_config"])
        config["generator"]["base_channels"] = 24
        metadata["regc2p_config"] = json.dumps(config)

    model = _rewrite(small_model_file, tmp_path / "edited.safetensors", widen)
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(ct_file, model, out), out, "does not match its config")


def test_model_with_edited_suv_range(capsys, tmp_path: Path, small_model_file: Path, ct_file: Path) -> None:
    def halve_suv_range(metadata: dict[str, str]) -> None:
        config = json.loads(metadata["regc2p_config"])
        config["intensity"]["pet_suv_max"] /= 2
        metadata["regc2p_config"] = json.dumps(config)

    model = _rewrite(small_model_file, tmp_path / "edited.safetensors", halve_suv_range)
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(ct_file, model, out), out, "integrity")


def test_tampered_model(capsys, tmp_path: Path, small_model_file: Path, ct_file: Path) -> None:
    model = tmp_path / "tampered.safetensors"
    data = bytearray(small_model_file.read_bytes())
    data[-100] ^= 0xFF  # inside the last tensor's bytes
    model.write_bytes(bytes(data))
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(ct_file, model, out), out, "integrity")


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.9])
def test_truncated_model(capsys, tmp_path: Path, small_model_file: Path, ct_file: Path, keep: float) -> None:
    data = small_model_file.read_bytes()
    model = tmp_path / "truncated.safetensors"
    model.write_bytes(data[: int(len(data) * keep)])
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(ct_file, model, out), out, "truncated.safetensors")


def test_missing_model(capsys, tmp_path: Path, ct_file: Path) -> None:
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(ct_file, tmp_path / "none.safetensors", out), out, "does not exist")


def test_no_refiner_with_overlap(capsys, tmp_path: Path, small_model_file_no_refiner: Path, ct_file: Path) -> None:
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(ct_file, small_model_file_no_refiner, out, "--refine", "overlap"), out, "no refiner")


# --------------------------------------------------------------------------- outputs and options


def test_output_folder_missing(capsys, tmp_path: Path, small_model_file: Path, ct_file: Path) -> None:
    out = tmp_path / "missing" / "pet.nrrd"
    _assert_user_error(capsys, _translate(ct_file, small_model_file, out), out, "does not exist")
    assert not out.parent.exists()


def test_output_format_unknown(capsys, tmp_path: Path, small_model_file: Path, ct_file: Path) -> None:
    out = tmp_path / "pet.png8"
    _assert_user_error(capsys, _translate(ct_file, small_model_file, out), out, ".nii.gz")


@pytest.mark.parametrize("spelling", ["same", "dotted"])
def test_output_equal_to_input_refused(capsys, tmp_path: Path, small_model_file: Path, ct_file: Path, spelling: str) -> None:
    before = ct_file.read_bytes()
    out = ct_file if spelling == "same" else tmp_path / "." / "sub" / ".." / ct_file.name
    (tmp_path / "sub").mkdir()
    code = main(_translate(ct_file, small_model_file, out))
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("regc2p: error: ") and "\n" not in err
    assert "input" in err
    assert ct_file.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ct_file.name, "sub"])


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--refine", "overlap", "--window", "4", "--stride", "4"], "stride"),
        (["--refine", "non-overlap", "--window", "4", "--stride", "2"], "stride"),
        (["--batch-size", "0"], "batch size"),
    ],
)
def test_bad_refinement_options(
    capsys, tmp_path: Path, small_model_file: Path, ct_file: Path, extra: list[str], fragment: str
) -> None:
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(ct_file, small_model_file, out, *extra), out, fragment)


def test_translate_with_jsonl_progress(
    capsys, tmp_path: Path, small_model_file: Path, ct_file: Path, assert_same_geometry
) -> None:
    out = tmp_path / "pet.nii.gz"
    argv = _translate(ct_file, small_model_file, out)
    argv[argv.index("--progress") + 1] = "jsonl"
    assert main(argv) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert records, "no progress lines"
    fractions = [r["fraction"] for r in records]
    assert all(isinstance(r["message"], str) for r in records)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    pet, ct = read_image(out), read_image(ct_file)
    assert_same_geometry(pet, ct, 1e-5)
    assert pet.GetPixelID() == sitk.sitkFloat32
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ct_file.name, out.name])


def test_overwrites_existing_output(capsys, tmp_path: Path, small_model_file: Path, ct_file: Path) -> None:
    out = tmp_path / "pet.mha"
    out.write_bytes(b"old")
    assert main(_translate(ct_file, small_model_file, out, "--refine", "none")) == 0
    assert read_image(out).GetSize() == read_image(ct_file).GetSize()
    assert "wrote" in capsys.readouterr().err


# --------------------------------------------------------------------------- DICOM


def _write_dicom_series(image: sitk.Image, folder: Path) -> None:
    """One file per slice with the tags GDCM needs to rebuild the geometry."""
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    orientation = "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    root = "1.2.826.0.1.3680043.2.1125.9"
    for i in range(image.GetDepth()):
        piece = image[:, :, i]
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
            "0008|0018": f"{root}.3.{i + 1}",
            "0008|0060": "CT",
            "0020|000d": f"{root}.1",
            "0020|000e": f"{root}.2",
            "0020|0013": str(i + 1),
            "0020|0037": orientation,
            "0020|0032": "\\".join(f"{v:.10f}" for v in image.TransformIndexToPhysicalPoint((0, 0, i))),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
        }
        for key, value in tags.items():
            piece.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{i:03d}.dcm"))
        writer.Execute(piece)


def test_dicom_series_input(capsys, tmp_path: Path, small_model_file: Path, make_ct, directions, assert_same_geometry) -> None:
    ct = make_ct((5, 30, 36), spacing=(0.8, 0.9, 2.5), direction=directions["OBLIQUE"], origin=(-10.0, 5.0, 30.0))
    folder = tmp_path / "ct_series"
    _write_dicom_series(ct, folder)
    read = read_image(folder)
    assert_same_geometry(read, ct, 1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(ct))
    out = tmp_path / "pet.nrrd"
    assert main(_translate(folder, small_model_file, out)) == 0
    pet = read_image(out)
    assert_same_geometry(pet, read, 1e-9)  # NRRD stores spacing × direction: last-digit rounding
    assert pet.GetPixelID() == sitk.sitkFloat32


def test_two_dicom_series_in_one_folder(capsys, tmp_path: Path, small_model_file: Path, make_ct) -> None:
    folder = tmp_path / "mixed"
    _write_dicom_series(make_ct((2, 20, 24)), folder)
    other = tmp_path / "other"
    _write_dicom_series(make_ct((2, 20, 24), origin=(0.0, 0.0, 0.0)), other)
    for f in other.iterdir():  # same file names, another series UID
        piece = sitk.ReadImage(str(f))
        piece.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.9.99")
        piece.SetMetaData("0008|0018", piece.GetMetaData("0008|0018") + ".9")
        w = sitk.ImageFileWriter()
        w.KeepOriginalImageUIDOn()
        w.SetFileName(str(folder / f"b_{f.name}"))
        w.Execute(piece)
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(folder, small_model_file, out), out, "2 CT image series", "--series UID")
    assert main(_translate(folder, small_model_file, out, "--series", "1.2.826.0.1.3680043.2.1125.9.99")) == 0


def _suv_like(ct: sitk.Image) -> sitk.Image:
    suv = sitk.GetImageFromArray(np.where(sitk.GetArrayFromImage(ct) > -500, 1.5, 0.05).astype(np.float32))
    suv.CopyInformation(ct)
    return suv


def test_a_pacs_export_translates_into_a_dicom_series_in_the_ct_study(
    capsys, tmp_path: Path, small_model_file: Path, make_ct, assert_same_geometry
) -> None:
    ct = make_ct((5, 30, 36))
    export = tmp_path / "export"
    write_export(export, ct, _suv_like(ct))
    volume = tmp_path / "pet.nii.gz"
    assert main(_translate(export, small_model_file, volume, "--refine", "none")) == 0
    expected = sitk.GetArrayFromImage(read_image(volume))
    out = tmp_path / "pet.dcm"  # a .dcm folder: DICOM without --format
    assert main(_translate(export, small_model_file, out, "--refine", "none")) == 0
    assert f"wrote {out} (DICOM PET series, 5 files, SUV)" in capsys.readouterr().err
    (series,) = find_series(out)
    assert {h.StudyInstanceUID for h in series.headers} == {STUDY_UID} and series.modality == "PT"
    written = read_series_image(series)
    assert_same_geometry(written, read_image(export), 1e-6)
    assert np.abs(sitk.GetArrayFromImage(written) - expected).max() <= SUV_STEP / 2 + 1e-5
    # The synthetic series added to the export changes nothing: it is never taken for the CT or the real PET.
    shutil.copytree(out, export / "synthetic")
    again = tmp_path / "petdir"
    assert main(_translate(export, small_model_file, again, "--refine", "none", "--format", "dicom")) == 0
    assert np.abs(sitk.GetArrayFromImage(read_series_image(find_series(again)[0])) - expected).max() <= SUV_STEP / 2 + 1e-5
    assert read_pet_suv(export).GetSize() == ct.GetSize()


def test_dicom_output_needs_a_dicom_ct_and_a_new_folder(capsys, tmp_path: Path, small_model_file: Path, ct_file: Path) -> None:
    for out, extra in ((tmp_path / "pet.dcm", ()), (tmp_path / "pet", ("--format", "dicom"))):
        _assert_user_error(capsys, _translate(ct_file, small_model_file, out, *extra), out, "this CT is not DICOM", "pet.nii.gz")
    out = tmp_path / "pet.nrrd"
    _assert_user_error(capsys, _translate(ct_file, small_model_file, out, "--series", "2"), out, "--series chooses among")
    taken = tmp_path / "taken.dcm"
    taken.mkdir()
    (taken / "IM1.dcm").write_bytes(b"old")
    argv = _translate(tmp_path / "nowhere", small_model_file, taken)
    assert main(argv) == 2
    assert "already exists; a DICOM series is written into a new (or empty) folder" in capsys.readouterr().err
    assert [p.name for p in taken.iterdir()] == ["IM1.dcm"]


# --------------------------------------------------------------------------- real processes


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(args, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, env=env, check=False)


def test_module_help_subprocess() -> None:
    done = _run(sys.executable, "-m", "RegC2PLib", "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: regc2p" in done.stdout and "translate" in done.stdout
    done = _run(sys.executable, "-m", "RegC2PLib", "translate", "--help")
    assert done.returncode == 0 and "--ct" in done.stdout and "--progress" in done.stdout


def test_console_script_help() -> None:
    script = shutil.which("regc2p", path=str(Path(sys.executable).parent)) or shutil.which("regc2p")
    if script is None:
        pytest.skip("the regc2p console script is not installed (pip install -e .)")
    done = _run(script, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: regc2p" in done.stdout


def test_subprocess_error_and_success(tmp_path: Path, small_model_file: Path, ct_file: Path, assert_same_geometry) -> None:
    out = tmp_path / "pet.nrrd"
    done = _run(sys.executable, "-m", "RegC2PLib", *_translate(tmp_path / "missing.nrrd", small_model_file, out))
    assert done.returncode == 2
    assert done.stderr.strip().startswith("regc2p: error: ") and "\n" not in done.stderr.strip()
    assert not out.exists()

    argv = _translate(ct_file, small_model_file, out)
    argv[argv.index("--progress") + 1] = "jsonl"
    done = _run(sys.executable, "-m", "RegC2PLib", *argv)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert records[-1]["fraction"] == 1.0
    assert_same_geometry(read_image(out), read_image(ct_file))


def test_missing_required_argument_is_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["translate", "--ct", "x.nrrd"])
    assert excinfo.value.code == 2
    assert "required" in capsys.readouterr().err

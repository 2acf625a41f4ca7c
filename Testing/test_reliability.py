"""Reliability (docs/reliability.md): no silent corruption. NaN, truncated or corrupt files,
full disks, damaged run folders and absurd sizes each end in one ``regc2p: error:`` line,
exit status 2, no output file and unchanged inputs.

The full-disk cases write to a real 256 KiB tmpfs when the tests run as root (else they
are skipped with that reason); :func:`test_silent_short_write_is_caught` injects the same
fault portably at the writer boundary.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from RegC2PLib import memory, model_file, volume_io
from RegC2PLib.atomic import TEMP_PREFIX, atomic_path
from RegC2PLib.cli import main
from RegC2PLib.config import ModelConfig
from RegC2PLib.data.studies import check_pet_suv
from RegC2PLib.errors import InputError, ModelFileError, OutputError, RegC2PError
from RegC2PLib.model_file import file_sha256, integrity_digest, load_model, new_model, save_model
from RegC2PLib.training.config import TrainConfig
from RegC2PLib.training.runner import RunOptions, train
from RegC2PLib.training.tasks import GanTask

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 240


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str) -> str:
    """Run the CLI in-process: exit 2 and exactly one ``regc2p: error:`` line on stderr."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("regc2p: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]
    return lines[0]


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _translate(ct: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["translate", "--ct", str(ct), "--model", str(model), "--out", str(out), "--device", "cpu", "--progress", "none",
            *extra]  # fmt: skip


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB file system (tmpfs), so writes fail with ENOSPC as on a full disk."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("a real full disk needs root to mount a small tmpfs")
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield folder
    finally:
        # lazily: ITK's NRRD writer keeps the (deleted) data file of a failed .nhdr write open
        subprocess.run(["umount", "--lazy", str(folder)], check=False)


def _write_float_ct(path: Path, make_ct, edit=None, shape=(6, 40, 48)) -> Path:
    image = sitk.Cast(make_ct(shape), sitk.sitkFloat32)
    if edit is not None:
        array = sitk.GetArrayFromImage(image)
        edit(array)
        edited = sitk.GetImageFromArray(array)
        edited.CopyInformation(image)
        image = edited
    sitk.WriteImage(image, str(path))
    return path


# --------------------------------------------------------------------------- inputs: NaN, truncation, grids


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_a_nan_voxel_in_the_ct_is_refused(capsys, tmp_path: Path, tiny_model_file: Path, make_ct, suffix: str) -> None:
    """min/max skip NaN, so the HU check passed and half the PET came out NaN."""
    ct = _write_float_ct(tmp_path / f"ct{suffix}", make_ct, lambda a: a.__setitem__((3, 20, 20), np.nan))
    before = ct.read_bytes()
    out = tmp_path / "pet.nii.gz"
    where = "(20, 20, 3)" if suffix == ".nrrd" else "read as 0"  # ITK reads NIfTI NaN as 0: found in the file
    _one_line_error(capsys, _translate(ct, tiny_model_file, out), "1 NaN or infinite voxel", where)
    assert not out.exists() and ct.read_bytes() == before


@pytest.mark.parametrize(
    ("suffix", "keep"),
    [(".nii.gz", 200), (".nii.gz", 0.5), (".nii.gz", -1), (".nii", 0.5), (".nii", -1)],
    ids=["gz 200 bytes", "gz half", "gz all but one byte", "half", "all but one byte"],
)
def test_a_truncated_nifti_is_refused(capsys, tmp_path: Path, tiny_model_file: Path, ct_array, suffix: str, keep) -> None:
    """ITK reads a cut NIfTI without a word, the missing voxels as 0 HU (which still looks like a CT)."""
    array = ct_array((12, 40, 48))
    array[:6] = -1000  # air first: 200 bytes of .nii.gz hold the whole header and some voxels
    ct = tmp_path / f"ct{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(ct))
    data = ct.read_bytes()
    ct.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    out = tmp_path / "pet.nrrd"
    _one_line_error(capsys, _translate(ct, tiny_model_file, out), "truncated")
    assert not out.exists()


def test_a_corrupt_compressed_metaimage_is_refused(capsys, tmp_path: Path, tiny_model_file: Path, make_ct) -> None:
    """ITK does not verify a MetaImage's zlib checksum: a flipped byte read as other voxels."""
    ct = tmp_path / "ct.mha"
    sitk.WriteImage(make_ct((6, 40, 48)), str(ct), True)
    data = bytearray(ct.read_bytes())
    data[int(len(data) * 0.6)] ^= 0x10
    ct.write_bytes(bytes(data))
    _one_line_error(capsys, _translate(ct, tiny_model_file, tmp_path / "pet.nrrd"), "cannot read", "ct.mha")


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda im: im.SetDirection((1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)), "not perpendicular"),
        (lambda im: im.SetSpacing((1e-5, 1.0, 1.0)), "spacing"),
        (lambda im: im.SetSpacing((1.0, 1.0, 1e5)), "spacing"),
    ],
)
def test_an_unusable_grid_is_refused(capsys, tmp_path: Path, tiny_model_file: Path, make_ct, edit, fragment: str) -> None:
    """A sheared CT was accepted and the written PET's direction differed from it."""
    image = make_ct((6, 40, 48))
    edit(image)
    ct = tmp_path / "ct.nrrd"
    sitk.WriteImage(image, str(ct))
    _one_line_error(capsys, _translate(ct, tiny_model_file, tmp_path / "pet.nrrd"), fragment)


def test_implausible_pet_values_are_refused(make_ct) -> None:
    pet = sitk.GetImageFromArray(np.full((6, 40, 48), -1e6, np.float32))
    with pytest.raises(InputError, match="goes down to -1e"):
        check_pet_suv(pet, "PET")
    pet = sitk.GetImageFromArray(np.where(np.arange(6 * 40 * 48).reshape(6, 40, 48) == 7, np.nan, 1.0).astype(np.float32))
    with pytest.raises(InputError, match="1 NaN or infinite voxel"):
        check_pet_suv(pet, "PET")


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr"])
def test_a_full_disk_is_a_one_line_error_and_leaves_the_old_file(
    capsys, tiny_disk: Path, tmp_path: Path, tiny_model_file: Path, make_ct, suffix: str
) -> None:
    """A real short write: the NIfTI writer prints "** ERROR: NWAD" and returns, the others raise."""
    ct = tmp_path / "ct.nrrd"
    sitk.WriteImage(make_ct((40, 128, 128)), str(ct))  # a 2.6 MB PET: more than the disk holds
    out = tiny_disk / f"pet{suffix}"
    out.write_bytes(b"the previous result")
    _one_line_error(capsys, _translate(ct, tiny_model_file, out, "--refine", "none"), "cannot write", "pet")
    assert out.read_bytes() == b"the previous result"
    assert _listing(tiny_disk) == [out.name]  # no temporary, no half data file


@pytest.mark.parametrize("command", ["phantom", "train"])
def test_phantom_and_training_on_a_full_disk(capsys, tiny_disk: Path, tiny_phantoms: Path, tiny_model_file: Path, command: str):
    """Both ended in a traceback; a new run that cannot be written must not be left half-made (the retry would be refused)."""
    out = tiny_disk / "out"
    if command == "phantom":
        argv = ["phantom", "--out", str(out), "--cases", "1", "--shape", "16", "64", "64", "--workers", "1"]
    else:
        argv = ["train", "--data", str(tiny_phantoms), "--out", str(out), "--init-from", str(tiny_model_file)]
    _one_line_error(capsys, argv, "cannot write")
    assert not [p for p in tiny_disk.rglob("*") if p.is_file()]  # no half-written case, run.json or model copy


def test_silent_short_write_is_caught(tmp_path: Path, make_ct, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection at the writer boundary: a writer that stops half-way and reports success."""
    out = tmp_path / "pet.nii.gz"
    volume_io.write_image(make_ct((6, 40, 48)), out)
    before = out.read_bytes()
    write = sitk.WriteImage

    def short_write(image: sitk.Image, path: str, *args) -> None:
        write(image, path, *args)
        Path(path).write_bytes(Path(path).read_bytes()[:-50])

    monkeypatch.setattr(volume_io.sitk, "WriteImage", short_write)
    with pytest.raises(OutputError, match="truncated"):
        volume_io.write_image(make_ct((6, 40, 48), seed=3), out)
    assert out.read_bytes() == before and _listing(tmp_path) == [out.name]


@pytest.mark.parametrize("suffix", [".mhd", ".nhdr"])
def test_header_and_data_pairs_name_their_final_data_file(tmp_path: Path, make_ct, suffix: str) -> None:
    """The data file was named after the temporary header, and the old one stayed behind."""
    out = tmp_path / f"pet{suffix}"
    for seed in (0, 1):  # the second write replaces the first
        image = make_ct((6, 40, 48), seed=seed)
        volume_io.write_image(image, out)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), sitk.GetArrayFromImage(image))
    header = out.read_text(errors="replace")
    data_files = [p.name for p in tmp_path.iterdir() if p != out]
    assert len(data_files) == 1 and data_files[0].startswith("pet.") and data_files[0] in header


@pytest.mark.parametrize("case", ["folder", "read-only", "long name"])
def test_unwritable_outputs_are_refused_before_any_work(capsys, tmp_path: Path, tiny_model_file: Path, ct_file: Path, case: str):
    if case == "folder":
        out = tmp_path / "pet.nii.gz"
        out.mkdir()
        fragment = "is a folder"
    elif case == "read-only":
        folder = tmp_path / "ro"
        folder.mkdir()
        if os.geteuid() == 0:  # root writes through permissions: a read-only mount instead
            if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], check=False).returncode:
                pytest.skip("cannot mount a read-only tmpfs here")
        else:
            folder.chmod(0o555)
        out, fragment = folder / "pet.nii.gz", "not writable"
    else:
        out, fragment = tmp_path / ("p" * 250 + ".nii.gz"), "bytes long"
    try:
        _one_line_error(capsys, _translate(ct_file, tiny_model_file, out), fragment)
    finally:
        if case == "read-only" and os.geteuid() == 0:
            subprocess.run(["umount", str(out.parent)], check=False)


def test_a_long_output_name_that_fits_is_written(capsys, tmp_path: Path, tiny_model_file: Path, ct_file: Path) -> None:
    """The temporary name used to grow the name past 255 bytes."""
    out = tmp_path / ("p" * 248 + ".nii.gz")  # 255 bytes
    assert main(_translate(ct_file, tiny_model_file, out)) == 0
    assert _listing(tmp_path) == sorted([ct_file.name, out.name])


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path: Path, make_ct) -> None:
    """kill -9 during a write left hidden partial files; the next write into the folder removes them
    (those of a process still alive are kept)."""
    writer = textwrap.dedent(
        f"""
        import sys, time
        from RegC2PLib.atomic import atomic_path
        with atomic_path({str(tmp_path / "pet.nii.gz")!r}) as tmp:
            tmp.write_bytes(b"partial" * 1000)
            print("writing", flush=True)
            time.sleep(600)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "writing"
    process.kill()
    process.wait(timeout=TIMEOUT)
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert len(stale) == 1 and (stale[0] / "pet.nii.gz").exists()
    with atomic_path(tmp_path / "other.json") as live:  # a live writer's temporary survives the clean-up
        live.write_text("{}")
        volume_io.write_image(make_ct((4, 20, 24)), tmp_path / "pet.nii.gz")
        assert live.parent.exists()
    assert _listing(tmp_path) == ["other.json", "pet.nii.gz"]


# --------------------------------------------------------------------------- numbers and sizes


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["phantom", "--cases", "1", "--spacing", "nan", "1", "1"], "finite"),
        (["phantom", "--cases", "1", "--spacing", "1e-30", "1", "1"], "spacing"),
        (["phantom", "--cases", "1", "--spacing", "1e30", "1", "1"], "spacing"),
        (["phantom", "--cases", "1", "--fwhm", "inf"], "FWHM"),
        (["phantom", "--cases", "1", "--fwhm", "0"], "FWHM"),
        (["phantom", "--cases", "1", "--seed", "-1"], "seed"),
        (["phantom", "--cases", "1", "--workers", "-1"], "workers"),
        (["train", "--lr", "nan"], "lr"),
        (["train", "--lr", "-1"], "lr"),
        (["train", "--lambda-corr", "nan"], "lambda_corr"),
        (["train", "--workers", "-1"], "num_workers"),
        (["train", "--seed", "-1"], "seed"),
        (["train", "--window", "0"], "window"),
        (["train", "--image-size", "0"], "image_size"),
        (["train", "--pixel-mm", "0"], "pixel_mm"),
        (["train", "--pet-suv-max", "0"], "pet_suv_max"),
        (["train", "--pet-suv-max", "nan"], "pet_suv_max"),
        (["evaluate", "--seed", "-1"], "seed"),
        (["evaluate", "--window", "0"], "window"),
        (["demo", "--seed", "-1"], "seed"),
    ],
)
def test_bad_numbers_are_one_line_errors(
    capsys, tmp_path: Path, tiny_model_file: Path, tiny_phantoms: Path, argv: list[str], fragment: str
) -> None:
    """Each of these was a traceback (or, for --window 0 and --fwhm 0, silently another value)."""
    out = tmp_path / "out"
    command = argv[0]
    extra = {
        "phantom": ["--out", str(out)],
        "train": ["--data", str(tiny_phantoms), "--out", str(out), "--progress", "none"],
        "evaluate": ["--data", str(tiny_phantoms), "--model", str(tiny_model_file), "--progress", "none"],
        "demo": ["--out", str(out), "--model", str(tiny_model_file), "--progress", "none"],
    }[command]
    _one_line_error(capsys, [*argv, *extra], fragment)
    assert not out.exists()  # nothing created before the options were checked


@pytest.fixture
def memory_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """Pretend the machine has 16 GiB available, whatever it has."""
    limit = 16 * memory.GIB
    monkeypatch.setattr(memory, "available_bytes", lambda: limit)
    return limit


@pytest.fixture(scope="module")
def huge_slice_model(tmp_path_factory: pytest.TempPathFactory, tiny_config: ModelConfig) -> Path:
    """A valid model file whose config says image_size 4096 (the same weights: G is fully convolutional)."""
    path = tmp_path_factory.mktemp("huge") / "huge.safetensors"
    save_model(path, new_model(tiny_config.with_changes(image_size=4096)))
    return path


def test_a_model_whose_slices_cannot_fit_is_refused_before_allocating(
    capsys, tmp_path: Path, huge_slice_model: Path, ct_file: Path, memory_limit: int
) -> None:
    """Such a file grew to 23.7 GB and was killed by the system."""
    start = time.monotonic()
    argv = _translate(ct_file, huge_slice_model, tmp_path / "pet.nii.gz")
    line = _one_line_error(capsys, argv, "needs about", "more than the 16.0 GiB available")
    assert float(line.split("needs about ")[1].split(" GiB")[0]) > 16
    assert time.monotonic() - start < 60  # refused, not computed


def test_a_translation_too_large_for_this_machine_is_refused(capsys, tmp_path: Path, huge_slice_model: Path, ct_file: Path):
    """Against the machine's real available memory: 4096 slices of 4096x4096 per pass need petabytes."""
    argv = _translate(ct_file, huge_slice_model, tmp_path / "pet.nii.gz", "--batch-size", "4096")
    _one_line_error(capsys, argv, "needs about", "GiB available")


def test_training_slices_that_cannot_fit_are_refused(capsys, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "run"
    line = _one_line_error(capsys, ["train", "--data", str(data), "--out", str(out), "--image-size", "100000"], "needs about")
    assert "GiB available" in line and not out.exists()


def test_a_phantom_that_cannot_fit_is_refused(capsys, tmp_path: Path, memory_limit: int) -> None:
    out = tmp_path / "phantoms"
    _one_line_error(capsys, ["phantom", "--out", str(out), "--cases", "2", "--shape", "1024", "1024", "1024"], "needs about")
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak RSS (clear_refs)")
def test_the_translation_estimate_is_close_to_the_measured_peak(tmp_path: Path, small_model_file: Path, make_ct) -> None:
    """The estimate refusals rely on: within 0.5-2x of the memory a translation really adds (peak RSS)."""
    ct = tmp_path / "ct.nrrd"
    sitk.WriteImage(make_ct((48, 384, 384), spacing=(1.2, 1.2, 3.0)), str(ct))
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        import SimpleITK as sitk
        import torch
        from RegC2PLib.body import body_mask, in_plane_box
        from RegC2PLib.inference import TranslationOptions, translate_volume
        from RegC2PLib.slice_grid import SliceGrid
        from RegC2PLib.memory import translation_bytes
        from RegC2PLib.model_file import load_model
        from RegC2PLib.volume_io import read_image
        torch.set_num_threads(1)
        model, ct = load_model({str(small_model_file)!r}), read_image({str(ct)!r})
        def kib(field):
            line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field))
            return int(line.split()[1]) * 1024
        before = kib("VmRSS:")
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
        translate_volume(ct, model, TranslationOptions(device="cpu"))
        peak = kib("VmHWM:") - before
        hu = sitk.GetArrayViewFromImage(ct)
        canvas = SliceGrid.for_model((384, 384), (1.2, 1.2), model.config, in_plane_box(body_mask(hu, (3.0, 1.2, 1.2)))).canvas
        print(peak, translation_bytes(model.config, canvas, 48, 48 * 384 * 384, 8, 8, 4))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT, check=True)
    peak, estimate = map(float, done.stdout.split())
    assert 0.5 <= peak / estimate <= 2.0, (peak, estimate)


# --------------------------------------------------------------------------- model files


def _rewrite_model(source: Path, target: Path, edit_config=None, edit_tensors=None, edit_metadata=None) -> Path:
    """A copy of a model file with its config, tensors or metadata edited and the integrity digest
    recomputed — what anyone can do, since the digest is stored in the same file."""
    with safe_open(str(source), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        metadata = dict(f.metadata())
    config = json.loads(metadata["regc2p_config"])
    if edit_config:
        edit_config(config)
    if edit_tensors:
        edit_tensors(tensors)
    metadata["regc2p_config"] = json.dumps(config)
    if edit_metadata:
        edit_metadata(metadata)
    metadata["regc2p_tensors_sha256"] = integrity_digest(tensors, metadata["regc2p_config"])
    save_file(tensors, str(target), metadata=metadata)
    return target


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("pet_suv_max", 200.0, "pet_suv_max"),
        ("pet_suv_max", math.nan, "pet_suv_max must be a finite number"),
        ("pet_suv_max", -20.0, "pet_suv_max"),
        ("ct_hu_min", 2000.0, "ct_hu_max"),
    ],
)
def test_implausible_scaling_is_refused_even_with_a_recomputed_digest(
    tmp_path: Path, tiny_model_file: Path, key: str, value: float, fragment: str
) -> None:
    """pet_suv_max 200 made every SUV x10, NaN a NaN PET, -20 a constant -20."""
    model = _rewrite_model(tiny_model_file, tmp_path / "m.safetensors", lambda c: c["intensity"].__setitem__(key, value))
    with pytest.raises(ModelFileError, match=fragment):
        load_model(model)


def test_nan_weights_are_refused_even_with_a_recomputed_digest(tmp_path: Path, tiny_model_file: Path) -> None:
    def poison(tensors: dict[str, torch.Tensor]) -> None:
        tensors["generator.1.weight"][0, 0, 0, 0] = math.nan

    with pytest.raises(ModelFileError, match=r"NaN or infinite weights in generator\.1\.weight"):
        load_model(_rewrite_model(tiny_model_file, tmp_path / "m.safetensors", edit_tensors=poison))


def test_sizes_far_beyond_any_model_are_refused_before_building_networks(tmp_path: Path, tiny_model_file: Path) -> None:
    model = _rewrite_model(
        tiny_model_file, tmp_path / "m.safetensors", lambda c: c["generator"].__setitem__("base_channels", 10**6)
    )
    with pytest.raises(ModelFileError, match="base_channels must be between 1 and"):
        load_model(model)


def test_info_metadata_outside_the_digest_is_validated(tmp_path: Path, tiny_model_file: Path) -> None:
    model = _rewrite_model(tiny_model_file, tmp_path / "m.safetensors", edit_metadata=lambda m: m.update(regc2p_info="[1, 2]"))
    with pytest.raises(ModelFileError, match="regc2p_info"):
        load_model(model)


def test_the_shipped_model_is_checked_against_its_published_sha256(
    tmp_path: Path, tiny_model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edited shipped model passes its own integrity check (the digest is recomputable), not the library's SHA-256."""
    if model_file.bundled_model_path() is not None:
        assert file_sha256(model_file.BUNDLED_MODEL) == model_file.BUNDLED_MODEL_SHA256  # what the README publishes
        assert model_file.BUNDLED_MODEL_SHA256 in (REPO / "README.md").read_text(encoding="utf-8")
    impostor = _rewrite_model(
        tiny_model_file, tmp_path / "default.safetensors", lambda c: c["intensity"].update(pet_suv_max=40.0)
    )
    monkeypatch.setattr(model_file, "BUNDLED_MODEL", impostor)
    with pytest.raises(ModelFileError, match="not the expected"):
        load_model(impostor)


@pytest.mark.parametrize(("given", "fragment"), [("0" * 64, "not the expected"), ("abc", "64 hexadecimal digits"), (None, "")])
def test_sha256_option_checks_the_model_file(
    capsys, tmp_path: Path, tiny_model_file: Path, ct_file: Path, given: str | None, fragment: str
) -> None:
    out = tmp_path / "pet.nii.gz"
    argv = _translate(ct_file, tiny_model_file, out, "--sha256", given or file_sha256(tiny_model_file).upper())
    if given is None:
        assert main(argv) == 0 and out.exists()
    else:
        _one_line_error(capsys, argv, fragment)
        assert not out.exists()


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_phantoms: Path, tiny_config: ModelConfig) -> Path:
    """A stage-1 run of two steps (checkpoint every step): the folder resume tests damage copies of."""
    out = tmp_path_factory.mktemp("runs") / "run"
    config = TrainConfig(stage="1", max_steps=2, epochs=1, checkpoint_every=1, device="cpu")
    train(RunOptions(out, tiny_phantoms, tiny_config, config))
    return out


def _resume(out: Path) -> list[str]:
    return ["train", "--out", str(out), "--resume", "--progress", "none"]


def _edit_json(path: Path, edit) -> None:
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda run: (run / "run.json").write_text("{ not json"), "not valid JSON"),
        (lambda run: _edit_json(run / "run.json", lambda r: r.pop("model")), "lacks 'model'"),
        (lambda run: _edit_json(run / "run.json", lambda r: r.update(data=5)), "'data' must be a JSON array"),
        (lambda run: _edit_json(run / "run.json", lambda r: r.update(data=[{"name": "x"}])), "lists its datasets in a form"),
        (lambda run: _edit_json(run / "run.json", lambda r: r["train"].update(lr=1e-3)), "train.lr is 0.001 in run.json"),
        (lambda run: _edit_json(run / "run.json", lambda r: r["train"].update(seed=5)), "train.seed is 5 in run.json"),
        (lambda run: _edit_json(run / "run.json", lambda r: r["model"].update(image_size=128)), "model.image_size is 128"),
        (lambda run: _edit_json(run / "run.json", lambda r: r["train"].update(lr="fast")), "lr must be a number"),
        (lambda run: torch.save({"stage": "stage1"}, run / "checkpoints" / "stage1_last.pt"), "is incomplete"),
        (lambda run: _poison_checkpoint(run / "checkpoints" / "stage1_last.pt"), "NaN or infinite values"),
        (lambda run: _poison_checkpoint(run / "checkpoints" / "stage1_best.pt"), "NaN or infinite values"),
        (lambda run: (run / "checkpoints" / "stage1_last.pt").write_bytes(b"PK\x03\x04 cut"), "cannot read checkpoint"),
        (lambda run: _insert_line(run / "metrics.jsonl", 1, "{broken"), "line 2 is not a JSON record"),
    ],
)
def test_resume_refuses_a_damaged_run_folder_and_records_nothing(capsys, tmp_path: Path, finished_run: Path, damage, fragment):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    damage(run)
    before = (run / "run.json").read_bytes()
    _one_line_error(capsys, _resume(run), fragment)
    assert (run / "run.json").read_bytes() == before  # a failed resume is not appended to run.json


def _poison_checkpoint(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    next(iter(state["modules"]["generator"].values())).view(-1)[0] = math.nan
    torch.save(state, path)


def _insert_line(path: Path, index: int, line: str) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:index], line, *lines[index:]]) + "\n")


def test_a_partial_last_metrics_line_does_not_block_resume(capsys, tmp_path: Path, finished_run: Path) -> None:
    """A kill in the middle of a metrics write left half a line, and resume failed on it."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"stage": "stage1", "kind": "tr')
    assert main([*_resume(run), "--max-steps", "3"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    assert len(json.loads((run / "run.json").read_text())["resumes"]) == 1


def _rewrite_volume(path: Path, edit) -> None:
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    edit(array)
    edited = sitk.GetImageFromArray(array)
    edited.CopyInformation(image)
    sitk.WriteImage(edited, str(path))


def test_a_new_run_on_unusable_volumes_is_refused_and_leaves_no_folder(capsys, tmp_path: Path, tiny_phantoms: Path) -> None:
    """NaN in a CT or a PET ended in a segmentation fault; a failed first start left run.json behind,
    which then blocked the retry ("use --resume")."""
    data = tmp_path / "data"
    shutil.copytree(tiny_phantoms, data)
    _rewrite_volume(data / "case_0000" / "ct.nii.gz", lambda a: a.__setitem__((8, 32, 32), np.nan))
    _rewrite_volume(data / "case_0001" / "pet.nii.gz", lambda a: a.__setitem__((4, 10, 10), np.inf))
    _rewrite_volume(data / "case_0002" / "pet.nii.gz", lambda a: a.__setitem__(slice(None), -1e6))
    out = tmp_path / "run"
    line = _one_line_error(capsys, ["train", "--data", str(data), "--out", str(out), "--progress", "none"], "no slices")
    assert "NaN or infinite" in line or "not a plausible SUV" in line
    assert not out.exists()


def test_a_non_finite_loss_stops_the_step_before_its_backward_pass(tiny_config: ModelConfig) -> None:
    """Last line of defence (inputs are checked on reading): no backward pass through NaN."""
    torch.manual_seed(0)
    task = GanTask(tiny_config, TrainConfig(), torch.device("cpu"))
    weights = {k: v.clone() for k, v in task.generator.state_dict().items()}
    ct = torch.zeros(1, 1, 64, 64)
    ct[0, 0, 10, 10] = math.nan
    with pytest.raises(RegC2PError, match="the loss is not finite"):
        task.train_step({"ct": ct, "pet": torch.zeros(1, 1, 64, 64)})
    assert all(torch.equal(weights[k], v) for k, v in task.generator.state_dict().items())


# --------------------------------------------------------------------------- evaluate, demo, Ctrl-C


def test_evaluate_json_is_strict_json(capsys, tmp_path: Path, tiny_phantoms: Path, tiny_model_file: Path) -> None:
    """Studies without lesions have no lesion figures: they were written as NaN, which is not JSON."""
    data = tmp_path / "data"
    shutil.copytree(tiny_phantoms, data)
    for study in data.iterdir():
        if study.is_dir():
            (study / "lesions.nii.gz").unlink()
    scores = tmp_path / "scores.json"
    argv = ["evaluate", "--data", str(data), "--model", str(tiny_model_file), "--split", "all", "--json", str(scores)]
    assert main([*argv, "--progress", "none", "--refine", "none"]) == 0

    def refuse(token: str) -> None:
        raise AssertionError(f"{token} in JSON")

    record = json.loads(scores.read_text(), parse_constant=refuse)
    assert record["summary"]["lesion_suvmax_error"] is None and record["summary"]["n_lesions"] == 0
    assert record["summary"]["mae"] > 0


def test_evaluate_refuses_a_binary_manifest(capsys, tmp_path: Path, tiny_phantoms: Path, tiny_model_file: Path) -> None:
    manifest = tmp_path / "split.json"
    manifest.write_bytes(bytes(range(256)))
    argv = ["evaluate", "--data", str(tiny_phantoms), "--model", str(tiny_model_file), "--manifest", str(manifest)]
    _one_line_error(capsys, [*argv, "--progress", "none"], "split manifest", "not readable JSON")


def test_a_refused_demo_creates_no_folder(capsys, tmp_path: Path, tiny_model_file: Path) -> None:
    out = tmp_path / "demo"
    _one_line_error(
        capsys, ["demo", "--out", str(out), "--model", str(tiny_model_file), "--sha256", "0" * 64], "not the expected"
    )
    assert not out.exists()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see when torch is being loaded")
def test_ctrl_c_during_start_up_imports_is_one_line(tmp_path: Path) -> None:
    """SIGINT while torch is being imported (seconds at start-up) printed a traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "RegC2PLib", "translate", "--ct", str(tmp_path / "ct.nrrd"), "--out", str(tmp_path / "p.nrrd")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    maps = Path(f"/proc/{process.pid}/maps")
    deadline = time.monotonic() + TIMEOUT
    while True:
        with contextlib.suppress(OSError):
            if "libtorch" in maps.read_text():
                break
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "torch was never loaded"
        time.sleep(0.002)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 130
    assert err == "regc2p: interrupted\n"

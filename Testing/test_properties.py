"""Property-based reliability suite (Hypothesis): generated bad volumes, bad numbers and
corrupted files thrown at ``translate``, ``train`` and ``evaluate``.

Whatever is generated, the command exits with status 2, prints exactly one
``regc2p: error:`` line on stderr (file descriptor 2, so C++ messages from ITK would
count too), no traceback, writes no output file and leaves its inputs unchanged — or,
where a corrupted byte leaves the input meaning the same (a gzip timestamp, a model's
free-text metadata), produces exactly the result of the clean input.

Profiles (``Testing/conftest.py``): ``ci`` by default (few derandomized examples, well
under two minutes on two cores); ``pytest --hypothesis-profile thorough`` for hundreds.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import assume, given
from hypothesis import strategies as st

from RegC2PLib.atomic import TEMP_PREFIX
from RegC2PLib.cli import main
from RegC2PLib.data.split import split_studies, write_manifest
from RegC2PLib.volume_io import read_image

CT_SHAPE = (4, 20, 24)  # (z, y, x)
FORMATS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr")
COMPRESSED = (".nii.gz", ".nrrd", ".mha")  # written compressed: a checksum guards the data


@contextmanager
def _scratch() -> Iterator[Path]:
    """A fresh folder per example (pytest's tmp_path is one per test, shared by all examples)."""
    with tempfile.TemporaryDirectory(prefix="regc2p-property-") as folder:
        yield Path(folder)


def _snapshot(*roots: Path) -> dict[str, bytes]:
    """Path -> SHA-256 of every file under ``roots``: inputs must come out unchanged."""
    files = [p for root in roots for p in ([root] if root.is_file() else sorted(root.rglob("*"))) if p.is_file()]
    return {str(p): hashlib.sha256(p.read_bytes()).digest() for p in files}


def _run(capfd: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, list[str]]:
    capfd.readouterr()
    code = main(argv)
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    return code, err.splitlines()


def _assert_refused(code: int, lines: list[str], outputs: list[Path]) -> None:
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("regc2p: error: "), lines
    for out in outputs:
        assert not out.exists(), out
        if out.parent.is_dir():
            assert not [p for p in out.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]


def _write(image: sitk.Image, path: Path) -> None:
    sitk.WriteImage(image, str(path), path.name.endswith(COMPRESSED))


def _data_file(path: Path) -> Path:
    """The file holding the voxels: the header itself, or the data file beside a .mhd/.nhdr."""
    if path.suffix in (".mhd", ".nhdr"):
        return next(p for p in path.parent.iterdir() if p.name.startswith(path.stem + ".") and p != path)
    return path


def _translate_argv(ct: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["translate", "--ct", str(ct), "--model", str(model), "--out", str(out), "--device", "cpu", "--progress", "none",
            "--refine", "none", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def clean_ct(make_ct) -> sitk.Image:
    return sitk.Cast(make_ct(CT_SHAPE), sitk.sitkFloat32)


@pytest.fixture(scope="module")
def clean_pet(tmp_path_factory: pytest.TempPathFactory, clean_ct: sitk.Image, tiny_model_file: Path) -> np.ndarray:
    """The PET of the clean CT: what a harmless corruption must reproduce exactly."""
    folder = tmp_path_factory.mktemp("clean")
    _write(clean_ct, folder / "ct.nrrd")
    assert main(_translate_argv(folder / "ct.nrrd", tiny_model_file, folder / "pet.nrrd")) == 0
    return sitk.GetArrayFromImage(read_image(folder / "pet.nrrd"))


def _refused_or_same(code: int, lines: list[str], out: Path, clean_pet: np.ndarray) -> None:
    if code == 0:
        np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(out)), clean_pet)
    else:
        _assert_refused(code, lines, [out])


# --------------------------------------------------------------------------- translate: bad volumes

NON_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf")])
VOXEL = st.tuples(*(st.integers(0, n - 1) for n in CT_SHAPE))
BAD_SPACING = st.sampled_from([0.0, 1e-9, 1e-3, 5e3, 1e30, float("nan"), float("inf")])


@given(
    suffix=st.sampled_from((".nrrd", ".nii.gz", ".nii", ".mha")),
    voxels=st.lists(VOXEL, min_size=1, max_size=4),
    value=NON_FINITE,
)
def test_translate_refuses_non_finite_voxels(capfd, tiny_model_file, clean_ct, suffix, voxels, value) -> None:
    array = sitk.GetArrayFromImage(clean_ct)
    for voxel in voxels:
        array[voxel] = value
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(clean_ct)
    with _scratch() as folder:
        ct, out = folder / f"ct{suffix}", folder / "pet.nrrd"
        _write(image, ct)
        before = _snapshot(ct, tiny_model_file)
        _assert_refused(*_run(capfd, _translate_argv(ct, tiny_model_file, out)), [out])
        assert _snapshot(ct, tiny_model_file) == before


@given(
    spacing=st.tuples(BAD_SPACING, st.just(1.0), st.just(1.0)).flatmap(st.permutations),
    shear=st.floats(0.01, 2.0),
    kind=st.sampled_from(["spacing", "shear", "flat values"]),
    suffix=st.sampled_from((".nrrd", ".mha")),
)
def test_translate_refuses_unusable_grids_and_values(capfd, tiny_model_file, clean_ct, spacing, shear, kind, suffix) -> None:
    image = sitk.Image(clean_ct)
    with _scratch() as folder:
        ct, out = folder / f"ct{suffix}", folder / "pet.nrrd"
        try:
            if kind == "spacing":
                image.SetSpacing(tuple(spacing))
            elif kind == "shear":
                image.SetDirection((1.0, shear, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
            else:
                image = sitk.GetImageFromArray(np.full(CT_SHAPE, shear, np.float32))  # no air, no spread of HU
            _write(image, ct)
        except RuntimeError:
            return  # SimpleITK itself refuses to make or store this grid: there is no file to read
        stored = sitk.ImageFileReader()
        stored.SetFileName(str(ct))
        stored.ReadImageInformation()
        # A grid the format cannot hold (NaN spacing is written as "none", read as 1 mm) is a valid file.
        assume(np.array_equal(stored.GetSpacing(), image.GetSpacing()) or kind != "spacing")
        _assert_refused(*_run(capfd, _translate_argv(ct, tiny_model_file, out)), [out])


@given(suffix=st.sampled_from(FORMATS), keep=st.floats(0.0, 1.0, exclude_max=True))
def test_translate_refuses_truncated_files(capfd, tiny_model_file, clean_ct, clean_pet, suffix, keep) -> None:
    with _scratch() as folder:
        ct, out = folder / f"ct{suffix}", folder / "pet.nrrd"
        _write(clean_ct, ct)
        data = _data_file(ct)
        content = data.read_bytes()
        data.write_bytes(content[: int(len(content) * keep)])
        code, lines = _run(capfd, _translate_argv(ct, tiny_model_file, out))
        _refused_or_same(code, lines, out, clean_pet)  # "same": only a trailer no reader needs was cut


@given(suffix=st.sampled_from(COMPRESSED), where=st.floats(0.0, 1.0, exclude_max=True), bit=st.integers(0, 7))
def test_translate_refuses_corrupt_compressed_data(capfd, tiny_model_file, clean_ct, clean_pet, suffix, where, bit) -> None:
    with _scratch() as folder:
        ct, out = folder / f"ct{suffix}", folder / "pet.nrrd"
        _write(clean_ct, ct)
        content = bytearray(ct.read_bytes())
        # Where the compressed data starts: .nii.gz is one gzip stream; .nrrd/.mha have a text header first.
        start = {".nii.gz": 0, ".nrrd": content.find(b"\n\n") + 2, ".mha": content.find(b"LOCAL\n") + 6}[suffix]
        position = start + int((len(content) - start) * where)
        content[position] ^= 1 << bit
        ct.write_bytes(bytes(content))
        code, lines = _run(capfd, _translate_argv(ct, tiny_model_file, out))
        _refused_or_same(code, lines, out, clean_pet)  # "same": a gzip timestamp or flag byte


# --------------------------------------------------------------------------- translate: bad numbers, corrupt models

OPTION_NUMBER = st.one_of(st.integers(-(10**6), 10**6), st.sampled_from([0, 1, 2, 3, 4, 5, 8, 256, 257, 4096, 4097]))


@given(
    window=st.none() | OPTION_NUMBER,
    stride=st.none() | OPTION_NUMBER,
    batch=OPTION_NUMBER,
    refine=st.sampled_from(["overlap", "non-overlap", "none"]),
)
def test_translate_options_give_a_result_or_one_line(capfd, tiny_model_file, clean_ct, window, stride, batch, refine) -> None:
    extra = ["--refine", refine, "--batch-size", str(batch)]
    extra += ["--window", str(window)] if window is not None else []
    extra += ["--stride", str(stride)] if stride is not None else []
    with _scratch() as folder:
        ct, out = folder / "ct.nrrd", folder / "pet.nii.gz"
        _write(clean_ct, ct)
        code, lines = _run(capfd, [*_translate_argv(ct, tiny_model_file, out)[:-2], *extra])
        if code == 0:  # a valid combination: a complete, finite PET on the CT's grid
            pet = sitk.GetArrayFromImage(read_image(out))
            assert pet.shape == CT_SHAPE and np.isfinite(pet).all()
        else:
            _assert_refused(code, lines, [out])


@given(
    flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 7)), min_size=1, max_size=3),
    keep=st.none() | st.floats(0.0, 1.0, exclude_max=True),
)
def test_corrupted_model_files_are_refused_or_harmless(capfd, tiny_model_file, clean_ct, clean_pet, flips, keep) -> None:
    content = bytearray(tiny_model_file.read_bytes())
    for where, bit in flips:
        content[int(len(content) * where)] ^= 1 << bit
    if keep is not None:
        content = content[: int(len(content) * keep)]
    with _scratch() as folder:
        ct, model, out = folder / "ct.nrrd", folder / "model.safetensors", folder / "pet.nrrd"
        _write(clean_ct, ct)
        model.write_bytes(bytes(content))
        code, lines = _run(capfd, _translate_argv(ct, model, out))
        _refused_or_same(code, lines, out, clean_pet)  # "same": a flip in free-text metadata (version, info)


# --------------------------------------------------------------------------- train

NAN_INF = st.sampled_from(["nan", "inf", "-inf"])


def _below(low: int) -> st.SearchStrategy[str]:
    return st.integers(max_value=low - 1, min_value=-(10**12)).map(str)


def _above(high: int) -> st.SearchStrategy[str]:
    return st.integers(min_value=high + 1, max_value=10**12).map(str)


def _negative_float() -> st.SearchStrategy[str]:
    return st.floats(max_value=-1e-12, allow_nan=False, allow_infinity=False).map(repr)


BAD_TRAIN_OPTIONS = st.one_of(
    st.tuples(st.sampled_from(["--lr", "--refiner-lr"]), NAN_INF | _negative_float() | st.sampled_from(["1.5", "1e9"])),
    st.tuples(st.sampled_from(["--lambda-corr", "--lambda-smooth", "--lambda-adv"]), NAN_INF | _negative_float()),
    st.tuples(st.just("--lesion-fraction"), NAN_INF | _negative_float() | st.sampled_from(["1", "1.0", "7"])),
    st.tuples(st.just("--seed"), _below(0) | _above(2**32 - 1)),
    st.tuples(st.just("--workers"), _below(0) | _above(256)),
    st.tuples(st.sampled_from(["--batch-size", "--refiner-batch-size"]), _below(1) | _above(4096)),
    st.tuples(st.sampled_from(["--epochs", "--refiner-epochs", "--checkpoint-every"]), _below(1)),
    st.tuples(st.sampled_from(["--max-steps", "--validate-every"]), _below(0)),
    st.tuples(st.sampled_from(["--window", "--stride"]), _below(1) | _above(256)),
    st.tuples(st.just("--image-size"), _below(32) | _above(2**17) | st.integers(2**13, 2**15).map(lambda n: str(4 * n))),
)


@given(bad=st.lists(BAD_TRAIN_OPTIONS, min_size=1, max_size=3, unique_by=lambda option: option[0]))
def test_train_refuses_bad_numbers(capfd, tiny_phantoms, bad) -> None:
    """Every option value here is out of range (or, for --image-size, far beyond memory)."""
    before = _snapshot(tiny_phantoms)
    with _scratch() as folder:
        out = folder / "run"
        argv = ["train", "--data", str(tiny_phantoms), "--out", str(out), "--progress", "none"]
        _assert_refused(*_run(capfd, [*argv, *(f"{option}={value}" for option, value in bad)]), [out])  # "=": "-inf" is a value
    assert _snapshot(tiny_phantoms) == before


BAD_STUDY_VOLUME = st.one_of(
    st.tuples(st.just("non-finite"), st.sampled_from(["ct", "pet"]), NON_FINITE),
    st.tuples(st.just("truncated"), st.sampled_from(["ct", "pet"]), st.floats(0.0, 0.98)),
    st.tuples(st.just("negative PET"), st.just("pet"), st.floats(-1e9, -11.0)),
)


def _damage_study(study: Path, damage: tuple) -> None:
    kind, role, value = damage
    path = study / f"{role}.nii.gz"
    if kind == "truncated":
        content = path.read_bytes()
        path.write_bytes(content[: int(len(content) * value)])
        return
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    if kind == "non-finite":
        array[array.shape[0] // 2, array.shape[1] // 2, array.shape[2] // 2] = value
    else:
        array[:] = value
    damaged = sitk.GetImageFromArray(array)
    damaged.CopyInformation(image)
    sitk.WriteImage(damaged, str(path))


@given(damage=BAD_STUDY_VOLUME)
def test_train_refuses_a_study_with_a_bad_volume(capfd, tiny_phantoms, damage) -> None:
    """A dataset of one study whose CT or PET is NaN, cut short or not in SUV: nothing to train on."""
    with _scratch() as folder:
        data, out = folder / "data", folder / "run"
        shutil.copytree(tiny_phantoms / "case_0000", data / "case_0000")
        _damage_study(data / "case_0000", damage)
        before = _snapshot(data)
        _assert_refused(*_run(capfd, ["train", "--data", str(data), "--out", str(out), "--progress", "none"]), [out])
        assert _snapshot(data) == before


# --------------------------------------------------------------------------- evaluate

BAD_EVALUATE_OPTIONS = st.one_of(
    st.tuples(st.sampled_from(["--window", "--stride"]), _below(1) | _above(256)),
    st.tuples(st.just("--batch-size"), _below(1) | _above(4096)),
    st.tuples(st.just("--seed"), _below(0) | _above(2**32 - 1)),
)


@given(
    problem=st.one_of(
        st.tuples(st.just("options"), BAD_EVALUATE_OPTIONS),
        st.tuples(st.just("manifest bytes"), st.binary(max_size=300)),
        st.tuples(st.just("manifest cut"), st.floats(0.0, 1.0, exclude_max=True)),
        st.tuples(st.just("study"), BAD_STUDY_VOLUME),
    )
)
def test_evaluate_refuses_bad_inputs(capfd, tiny_phantoms, tiny_model_file, problem) -> None:
    kind, detail = problem
    with _scratch() as folder:
        data, scores = folder / "data", folder / "scores.json"
        shutil.copytree(tiny_phantoms, data)
        argv = ["evaluate", "--data", str(data), "--model", str(tiny_model_file), "--json", str(scores), "--progress", "none"]
        argv += ["--refine", "none", "--split", "all"]
        if kind == "options":
            argv.append("=".join(detail))
        elif kind == "study":
            _damage_study(data / "case_0001", detail)
        else:
            manifest = folder / "split.json"
            write_manifest(manifest, split_studies(["case_0000", "case_0001", "case_0002"]))
            content = manifest.read_bytes()
            cut = detail if kind == "manifest bytes" else content[: int((len(content) - 2) * detail)]  # no closing brace
            manifest.write_bytes(cut)
            argv[argv.index("all")] = "test"
            argv += ["--manifest", str(manifest)]
        before = _snapshot(data, tiny_model_file)
        _assert_refused(*_run(capfd, argv), [scores])
        assert _snapshot(data, tiny_model_file) == before

"""Inference speed options: batched refiner windows and channels_last (exact), bfloat16
autocast (close to float32 on the trained model), the ``--precision`` option and ``auto``
with the model's precision record. (Channels-last training is tested with the training in
test_distributed.py.)"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from RegC2PLib.body import body_mask
from RegC2PLib.cli import main
from RegC2PLib.data.phantom import PhantomConfig, generate_case
from RegC2PLib.errors import InputError
from RegC2PLib.inference import TranslationOptions, WindowPlan, acceleration, refine_windows, translate_volume
from RegC2PLib.inference.acceleration import PRECISIONS, compute_precision, native_bfloat16, resolve_precision
from RegC2PLib.inference.precision_record import TOLERANCE, bfloat16_adopted, record_path
from RegC2PLib.model_file import LoadedModel, load_model, require_bundled_model

CPU = torch.device("cpu")
needs_native_bf16 = pytest.mark.skipif(
    not native_bfloat16(CPU), reason="this CPU has no native bfloat16 (AVX512-BF16/AMX), where bfloat16 is refused"
)


def _translate(ct: sitk.Image, model: LoadedModel, **options: object) -> np.ndarray:
    return sitk.GetArrayFromImage(translate_volume(ct, model, TranslationOptions(device="cpu", **options)))


@needs_native_bf16
def test_bfloat16_of_the_shipped_model_within_tolerance_and_model_left_as_it_was() -> None:
    """On a phantom, the shipped model's bfloat16 PET is within the precision tolerance of its float32 PET."""
    model = load_model(require_bundled_model())
    ct = generate_case(PhantomConfig(shape=(12, 160, 160)), seed=5).ct
    f32 = _translate(ct, model, precision="float32", batch_size=4)
    bf16 = _translate(ct, model, precision="bfloat16", batch_size=4)
    assert bf16.dtype == np.float32 and np.isfinite(bf16).all()
    body = body_mask(sitk.GetArrayViewFromImage(ct), ct.GetSpacing()[::-1])
    diff = np.abs(bf16 - f32)[body]
    assert diff.max() > 0.0  # bfloat16 really ran
    assert diff.mean() <= TOLERANCE.mean_abs_suv and np.percentile(diff, 99.9) <= TOLERANCE.p999_abs_suv
    # The model keeps float32 weights and float32 results are unchanged.
    assert all(p.dtype == torch.float32 for p in model.generator.parameters())
    np.testing.assert_array_equal(_translate(ct, model, precision="float32", batch_size=4), f32)


def test_channels_last_equals_contiguous(small_model: LoadedModel) -> None:
    """G and F give the same output in the CPU's channels_last layout as in the contiguous one."""
    assert small_model.refiner is not None
    gen = torch.Generator().manual_seed(3)
    slices = torch.rand(3, 1, 64, 64, generator=gen) * 2 - 1
    volume = torch.rand(9, 32, 32, generator=gen) * 2 - 1
    plan = WindowPlan(9, 8, 4)
    g_flat = copy.deepcopy(small_model.generator).to(memory_format=torch.contiguous_format)
    g_last = copy.deepcopy(small_model.generator).to(memory_format=torch.channels_last)
    f_flat = copy.deepcopy(small_model.refiner).to(memory_format=torch.contiguous_format)
    f_last = copy.deepcopy(small_model.refiner).to(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        flat = g_flat(slices)
        last = g_last(slices.contiguous(memory_format=torch.channels_last))
        one = refine_windows(volume, f_flat, plan, CPU, 2)
        other = refine_windows(volume, f_last, plan, CPU, 2, layout=torch.channels_last_3d)
        first = g_last[1](g_last[0](slices.contiguous(memory_format=torch.channels_last)))
    assert first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous()  # really channels_last
    torch.testing.assert_close(last, flat, atol=1e-5, rtol=0)
    torch.testing.assert_close(other, one, atol=1e-5, rtol=0)


def test_batched_windows_equal_one_window_per_pass(small_model: LoadedModel) -> None:
    assert small_model.refiner is not None
    volume = torch.rand(21, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    plan = WindowPlan(21, 8, 4)
    with torch.inference_mode():
        one = refine_windows(volume, small_model.refiner, plan, CPU, 1)
        batched = refine_windows(volume, small_model.refiner, plan, CPU, TranslationOptions().windows_per_batch)
    torch.testing.assert_close(batched, one, atol=1e-5, rtol=0)
    assert not torch.equal(one, volume)  # the refiner is not the identity


@pytest.mark.parametrize(("batch_size", "windows"), [(1, 1), (2, 1), (3, 1), (8, 4), (9, 4)])
def test_windows_per_batch(batch_size: int, windows: int) -> None:
    assert TranslationOptions(batch_size=batch_size).windows_per_batch == windows


def test_precision_validation(small_model: LoadedModel) -> None:
    assert TranslationOptions().precision == "auto"
    with pytest.raises(InputError, match="precision must be one of auto, float32, bfloat16"):
        TranslationOptions(precision="float16")
    with pytest.raises(InputError, match="MPS"):
        resolve_precision("bfloat16", torch.device("mps"))
    assert resolve_precision("float32", CPU) == torch.float32


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_only_on_cpus_with_native_bfloat16(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(acceleration, "native_bfloat16", lambda device: native)
    if native:
        assert resolve_precision("bfloat16", CPU) == torch.bfloat16
    else:
        with pytest.raises(InputError, match=r"no native bfloat16 .*use --precision float32"):
            resolve_precision("bfloat16", CPU)
    assert resolve_precision("float32", CPU) == torch.float32


def _record(model: LoadedModel, adopted: object, sha256: str | None = None, device: str = "cpu") -> dict[str, object]:
    return {
        "format": "regc2p-precision-record",
        "version": 1,
        "model_sha256": sha256 or model.sha256,
        "measured": {"device": device},
        "bfloat16": {"adopted": adopted},
    }


def test_auto_precision_follows_the_model_files_record(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, small_model_file: Path
) -> None:
    """``auto`` is bfloat16 only on a device with native bfloat16 and with a record of this very file that adopted it."""
    path = tmp_path / small_model_file.name
    shutil.copyfile(small_model_file, path)
    model = load_model(path)
    record = record_path(path)
    assert record == tmp_path / "small.precision.json"
    monkeypatch.setattr(acceleration, "native_bfloat16", lambda device: True)
    assert resolve_precision("auto", CPU, model) == torch.float32  # no record
    cases = [
        (_record(model, True), torch.bfloat16),
        (_record(model, False), torch.float32),
        (_record(model, True, sha256="0" * 64), torch.float32),  # another model's record
        (_record(model, True, device="cuda"), torch.float32),  # measured on another kind of device
        (_record(model, "yes"), torch.float32),
        ({**_record(model, True), "bfloat16": True}, torch.float32),  # malformed
    ]
    for content, expected in cases:
        record.write_text(json.dumps(content), encoding="utf-8")
        assert resolve_precision("auto", CPU, model) == expected
    record.write_text(json.dumps(_record(model, True))[:-5], encoding="utf-8")  # damaged
    assert not bfloat16_adopted(model, CPU) and resolve_precision("auto", CPU, model) == torch.float32
    record.write_text(json.dumps(_record(model, True)), encoding="utf-8")
    monkeypatch.setattr(acceleration, "native_bfloat16", lambda device: False)
    assert resolve_precision("auto", CPU, model) == torch.float32  # no native bfloat16
    assert resolve_precision("auto", CPU) == torch.float32  # no model


def test_cli_refuses_emulated_bfloat16(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, ct_file: Path, small_model_file: Path
) -> None:
    monkeypatch.setattr(acceleration, "native_bfloat16", lambda device: False)
    out = tmp_path / "pet.nrrd"
    argv = ["translate", "--ct", str(ct_file), "--model", str(small_model_file), "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--progress", "none", "--precision", "bfloat16"]) != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "no native bfloat16" in error[0]
    assert not out.exists()


def test_compute_precision_contexts(small_model: LoadedModel) -> None:
    x = torch.rand(1, 1, 32, 32)
    with torch.inference_mode(), compute_precision(CPU, torch.float32):
        assert not torch.is_autocast_enabled("cpu")
        assert small_model.generator(x).dtype == torch.float32
    with torch.inference_mode(), compute_precision(CPU, torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert small_model.generator(x).dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")


@needs_native_bf16
def test_cli_precision_option(tmp_path: Path, ct_file: Path, small_model_file: Path) -> None:
    outputs = {}
    for precision in PRECISIONS:
        out = tmp_path / f"pet-{precision}.nrrd"
        argv = ["translate", "--ct", str(ct_file), "--model", str(small_model_file), "--out", str(out), "--batch-size", "4"]
        assert main([*argv, "--device", "cpu", "--progress", "none", "--precision", precision]) == 0
        outputs[precision] = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert not np.array_equal(outputs["bfloat16"], outputs["float32"])
    np.testing.assert_array_equal(outputs["auto"], outputs["float32"])  # this model file has no precision record


def test_cli_rejects_unknown_precision(tmp_path: Path, ct_file: Path, small_model_file: Path) -> None:
    out = tmp_path / "pet.nrrd"
    argv = ["translate", "--ct", str(ct_file), "--model", str(small_model_file), "--out", str(out), "--precision", "fp8"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert not out.exists()


@needs_native_bf16
def test_precision_check_writes_the_record_auto_reads(tmp_path: Path, small_model_file: Path, tiny_phantoms: Path) -> None:
    """The check measures every study in both precisions, decides from the figures, and
    ``auto`` follows its record; a study's figure matches a direct translation."""
    from RegC2PLib.data.studies import discover_studies, load_study
    from RegC2PLib.evaluation import scored_region
    from RegC2PLib.precision_check import check_bfloat16, write_record

    path = tmp_path / small_model_file.name
    shutil.copyfile(small_model_file, path)
    model = load_model(path)
    studies, _ = discover_studies(tiny_phantoms)
    # A fixed batch: in bfloat16 the PET depends on the batch size at the 0.02-SUV level
    # (oneDNN's kernels), and the CPU's timed choice can differ from one translation to the next.
    options = TranslationOptions(device="cpu", batch_size=4)
    record = check_bfloat16(model, {"phantoms": studies[:2]}, options)
    write_record(model, record)
    result = record["bfloat16"]
    rows = result["datasets"]["phantoms"]["studies"]
    assert [r["study"] for r in rows] == [s.name for s in studies[:2]]
    loaded = load_study(studies[0])
    keep, body = scored_region(loaded)
    pets = {precision: _translate(loaded.ct, model, precision=precision, batch_size=4) for precision in ("bfloat16", "float32")}
    diff = np.abs(pets["bfloat16"] - pets["float32"])
    assert rows[0]["mean_abs_suv_body"] == pytest.approx(float(diff[keep][body].mean()), abs=1e-4)
    over = any(r["mean_abs_suv_body"] > TOLERANCE.mean_abs_suv or r["p999_abs_suv_body"] > TOLERANCE.p999_abs_suv for r in rows)
    over = over or max(result["datasets"]["phantoms"]["paper_relative"].values()) > TOLERANCE.paper_relative
    assert result["adopted"] is (not over) and bool(result["reasons"]) is over
    assert bfloat16_adopted(model, CPU) is result["adopted"]
    expected = torch.bfloat16 if result["adopted"] else torch.float32
    assert resolve_precision("auto", CPU, model) == expected


def test_precision_check_needs_native_bfloat16(monkeypatch: pytest.MonkeyPatch, small_model_file: Path) -> None:
    from RegC2PLib.precision_check import check_bfloat16

    monkeypatch.setattr("RegC2PLib.precision_check.native_bfloat16", lambda device: False)
    with pytest.raises(InputError, match="no native bfloat16"):
        check_bfloat16(load_model(small_model_file), {"none": []}, TranslationOptions(device="cpu"))


def test_precision_check_refuses_a_study_without_body(
    monkeypatch: pytest.MonkeyPatch, small_model_file: Path, tiny_phantoms: Path
) -> None:
    """A study whose scored slices hold no body cannot be compared: a one-line error names it."""
    from RegC2PLib import precision_check
    from RegC2PLib.data.studies import discover_studies

    monkeypatch.setattr(precision_check, "native_bfloat16", lambda device: True)
    real_region = precision_check.scored_region

    def no_body(loaded):  # type: ignore[no-untyped-def]
        keep, body = real_region(loaded)
        return keep, np.zeros_like(body)

    monkeypatch.setattr(precision_check, "scored_region", no_body)
    studies, _ = discover_studies(tiny_phantoms)
    with pytest.raises(InputError, match=rf"phantoms/{studies[0].name}: no body .*leave it out"):
        precision_check.check_bfloat16(load_model(small_model_file), {"phantoms": studies}, TranslationOptions(device="cpu"))

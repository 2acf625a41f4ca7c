"""Inference speed options: batched refiner windows (exact), bfloat16 autocast (opt-in,
close to float32) and the ``--precision`` option. (Channels-last is a training option,
tested with the training in test_distributed.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from RegC2PLib.cli import main
from RegC2PLib.errors import InputError
from RegC2PLib.inference import TranslationOptions, WindowPlan, acceleration, refine_windows, translate_volume
from RegC2PLib.inference.acceleration import PRECISIONS, compute_precision, native_bfloat16, resolve_precision
from RegC2PLib.model_file import LoadedModel

CPU = torch.device("cpu")
needs_native_bf16 = pytest.mark.skipif(
    not native_bfloat16(CPU), reason="this CPU has no native bfloat16 (AVX512-BF16/AMX), where bfloat16 is refused"
)
# Loose bounds for bfloat16 on the tiny test CT with untrained weights (measured: max 0.25,
# mean 0.04 SUV); float32 is the default precisely because bfloat16 is not exact.
BF16_MAX_SUV, BF16_MEAN_SUV = 1.0, 0.15


def _translate(ct: sitk.Image, model: LoadedModel, **options: object) -> np.ndarray:
    return sitk.GetArrayFromImage(translate_volume(ct, model, TranslationOptions(device="cpu", **options)))


@needs_native_bf16
def test_bfloat16_close_to_float32_and_model_left_as_it_was(ct_image: sitk.Image, small_model: LoadedModel) -> None:
    f32 = _translate(ct_image, small_model)
    bf16 = _translate(ct_image, small_model, precision="bfloat16")
    assert bf16.dtype == np.float32 and np.isfinite(bf16).all()
    diff = np.abs(bf16 - f32)
    assert 0.0 < diff.max() <= BF16_MAX_SUV  # autocast really ran, and stayed close
    assert diff.mean() <= BF16_MEAN_SUV
    # The shared model keeps float32 weights and float32 results are unchanged.
    assert all(p.dtype == torch.float32 for p in small_model.generator.parameters())
    np.testing.assert_array_equal(_translate(ct_image, small_model), f32)


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
    assert PRECISIONS[0] == "float32" and TranslationOptions().precision == "float32"
    with pytest.raises(InputError, match="precision must be one of float32, bfloat16"):
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
        argv = ["translate", "--ct", str(ct_file), "--model", str(small_model_file), "--out", str(out)]
        assert main([*argv, "--device", "cpu", "--progress", "none", "--precision", precision]) == 0
        outputs[precision] = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    diff = np.abs(outputs["bfloat16"] - outputs["float32"])
    assert 0.0 < diff.max() <= BF16_MAX_SUV


def test_cli_rejects_unknown_precision(tmp_path: Path, ct_file: Path, small_model_file: Path) -> None:
    out = tmp_path / "pet.nrrd"
    argv = ["translate", "--ct", str(ct_file), "--model", str(small_model_file), "--out", str(out), "--precision", "fp8"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert not out.exists()

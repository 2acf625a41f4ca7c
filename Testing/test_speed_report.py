"""The speed report's verdicts follow the measured numbers (benchmarks/speed_report.py, torch-free)."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import pytest

REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed_report.py"


@pytest.fixture(scope="module")
def speed_report() -> Any:
    spec = importlib.util.spec_from_file_location("speed_report", REPORT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(
    section: str, variant: str, ours_s: float, reference_s: float, extra: dict[str, float], preset: str = "small", note: str = ""
) -> dict[str, Any]:
    return {
        "section": section,
        "preset": preset,
        "variant": variant,
        "what": f"{section} {variant}",
        "count": 8,
        "unit": "slice",
        "ours_s": ours_s,
        "ours_iqr_s": ours_s / 100,
        "reference_s": reference_s,
        "reference_iqr_s": reference_s / 100,
        "samples": 5,
        "ratio": reference_s / ours_s,
        "note": note,
        "extra": extra,
    }


def _record(adopted: bool, preset: str = "small") -> dict[str, Any]:
    """The summary of a precision record as speed.py embeds it."""
    worst = {"mean_abs_suv_body": 0.01, "p999_abs_suv_body": 0.1 if adopted else 0.5, "paper_relative": 0.001}
    return {
        "model": f"{preset}.safetensors",
        "preset": preset,
        "model_sha256": "ab" * 32,
        "measured": {"date": "2026-12-02", "device": "cpu", "processor": "test CPU", "torch": "x"},
        "command": "precision.py",
        "tolerance": {"mean_abs_suv": 0.02, "p999_abs_suv": 0.2, "paper_relative": 0.005},
        "adopted": adopted,
        "reasons": [] if adopted else ["sarcoma/STS_1: p99.9 |ΔSUV| 0.500 > 0.2"],
        "worst": worst,
        "datasets": {"sarcoma": {"studies": 8, "paper_relative": {"mae": 0.001, "ssim": 0.0001, "psnr": 0.0002}}},
    }


def _suv(mean: float) -> dict[str, float]:
    return {"max_abs_suv_body": 10 * mean, "mean_abs_suv_body": mean, "p999_abs_suv_body": 5 * mean, "mae_paper_units": mean}


def _result(bf16_s: float, adopted: bool | None, paper_adopted: bool | None = None) -> dict[str, Any]:
    """A small result: G in float32 and bfloat16, the refiner, paper-preset translations of a
    real CT, and (unless None) precision records of a small and a paper model."""
    records = {}
    if adopted is not None:
        records["small"] = _record(adopted)
    if paper_adopted is not None:
        records["paper"] = _record(paper_adopted, "paper")
    return {
        "command": "speed.py",
        "args": {"paper_slices": 10, "g_slices": 16},
        "machine": {
            "cpu": "test CPU",
            "logical_cpus": 2,
            "torch": "x",
            "torch_threads": 2,
            "cpu_capability": "AVX512",
            "native_bfloat16": True,
            "python": "3.11",
            "load_average_1min_at_start": 0.1,
        },
        "timing": {"method": "Timer", "rounds": 3, "min_run_time_s": 0.5},
        "tolerance": {"mean_abs_suv": 0.02, "p999_abs_suv": 0.2, "paper_relative": 0.005},
        "precision_records": records,
        "tolerance_weights": "untrained",
        "rows": [
            _row("G", "ours", 0.020, 0.025, {"max_abs_net": 0.0, "mean_abs_net": 0.0}),
            _row("G", "bfloat16", bf16_s, 0.020, {"max_abs_net": 0.01, "mean_abs_net": 0.001}),
            _row("volume", "refiner", 0.050, 0.049, {"max_abs_net": 2e-7, "mean_abs_net": 1e-8}),
            _row("volume", "translate-none-float32", 0.30, 0.36, _suv(0.001), "paper", "real (ct.nii.gz)"),
            _row("volume", "translate-none-bfloat16", 0.09, 0.36, _suv(0.1), "paper", "real (ct.nii.gz)"),
            _row("volume", "translate-overlap-float32", 0.55, 0.52, _suv(0.001), "paper", "real (ct.nii.gz)"),
            _row("volume", "translate-overlap-bfloat16", 0.10, 0.52, _suv(0.1), "paper", "real (ct.nii.gz)"),
        ],
        "linearity": [],
        "memory": None,
        "total_seconds": 10.0,
    }


def _verdict(lines: list[str], title: str) -> str:
    (line,) = [line for line in lines if line.startswith(f"- **{title} — ")]
    return line.split(" — ", 1)[1].split("**", 1)[0]


def _bf16_verdict(lines: list[str], preset: str = "small") -> str:
    (line,) = [line for line in lines if line.startswith("- **bfloat16 autocast — ") and f"** ({preset})" in line]
    return line.split(" — ", 1)[1].split("**", 1)[0]


def test_bfloat16_verdict_follows_speed_and_the_precision_record(speed_report: Any) -> None:
    fast_accurate = speed_report.verdicts(_result(bf16_s=0.010, adopted=True))
    fast_inaccurate = speed_report.verdicts(_result(bf16_s=0.010, adopted=False))
    slow_accurate = speed_report.verdicts(_result(bf16_s=0.020, adopted=True))
    unchecked = speed_report.verdicts(_result(bf16_s=0.010, adopted=None))
    assert _bf16_verdict(fast_accurate) == "the default where the model's record allows"
    for lines in (fast_inaccurate, slow_accurate, unchecked):
        assert _bf16_verdict(lines) == "kept opt-in"
    assert "outside the tolerance" in " ".join(fast_inaccurate)
    assert "not faster (1×)" in " ".join(slow_accurate)
    assert "accuracy not measured" in " ".join(unchecked)


def test_goals_follow_the_numbers(speed_report: Any) -> None:
    result = _result(bf16_s=0.010, adopted=True, paper_adopted=True)
    result["memory"] = {
        "shape_xyz": "512x512x300",
        "seconds": 6.0,
        "precision": "bfloat16",
        "torch_threads": 2,
        "peak_rss_mib": 1400,
    }
    text = "\n".join(speed_report.goal_lines(result))
    assert "refine none, real CT (volume translate-none-bfloat16), ≥ 3× RegGAN's loop: **met** — 4× in bfloat16" in text
    assert "refine overlap" in text and "5.2× in bfloat16" in text
    assert "512×512×300 CT under 15 s: **met** — 6.0 s" in text
    assert "never slower than RegGAN's loop: **missed** — slowest case 0.945×" in text
    # bfloat16 counts for the paper preset only with an adopting record of a paper model:
    # otherwise float32 counts, and 1.2× misses 3× by 1.8×.
    small_only = _result(bf16_s=0.010, adopted=True)
    assert "**missed** — 1.2× in float32, by 1.80×" in "\n".join(speed_report.goal_lines(small_only))
    refused = _result(bf16_s=0.010, adopted=True, paper_adopted=False)
    refused["memory"] = {**result["memory"], "seconds": 20.0}
    text = "\n".join(speed_report.goal_lines(refused))
    assert "**missed** — 1.2× in float32, by 1.80×" in text
    assert "under 15 s: **missed** — 20.0 s" in text and "by 5.0 s" in text


def test_ratio_statements_follow_the_numbers(speed_report: Any) -> None:
    result = _result(bf16_s=0.010, adopted=True)
    lines = speed_report.verdicts(result)
    assert _verdict(lines, "Batched G + inference mode") == "adopted"  # 1.25×, same output
    assert _verdict(lines, "Batched refiner windows") == "no measurable gain"  # 0.98×
    slower = copy.deepcopy(result)
    slower["rows"][0].update(reference_s=0.015, ratio=0.75)
    assert _verdict(speed_report.verdicts(slower), "Batched G + inference mode") == "slower than what it replaces"


def test_report_says_not_measured_for_missing_numbers(speed_report: Any) -> None:
    result = _result(bf16_s=0.010, adopted=None)
    del result["rows"][0]["ours_iqr_s"]
    text = speed_report.render(result)
    assert "accuracy not measured" in text
    assert "No precision record for a trained model" in text
    assert "Not measured in this run (`benchmarks/speed.py --memory`)." in text
    assert "512×512×300 CT under 15 s: not measured" in text


def test_cpu_without_native_bfloat16_says_so(speed_report: Any) -> None:
    result = _result(bf16_s=0.010, adopted=True)
    result["machine"]["native_bfloat16"] = False
    result["rows"] = [r for r in result["rows"] if not r["variant"].endswith("bfloat16")]
    lines = speed_report.verdicts(result)
    assert _verdict(lines, "bfloat16 autocast") == "not measured"
    assert "refuses `--precision bfloat16`" in speed_report.render(result)


def test_achieved_throughput_against_the_gemm_peak(speed_report: Any) -> None:
    result = _result(bf16_s=0.010, adopted=True)
    assert "GEMM peak: not measured" in speed_report.render(result)
    result["gemm_peak_gflop_per_s"] = {"float32": 200.0, "bfloat16": 400.0}
    result["rows"][0]["extra"]["gflop_per_s"] = 100.0
    result["rows"][1]["extra"]["gflop_per_s"] = 300.0
    text = speed_report.render(result)
    assert "- small, float32: 100 GFLOP/s, 50 % of the GEMM peak." in text
    assert "- small, bfloat16: 300 GFLOP/s, 75 % of the GEMM peak." in text

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


def _row(section: str, variant: str, ours_s: float, reference_s: float, extra: dict[str, float]) -> dict[str, Any]:
    return {
        "section": section,
        "preset": "small",
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
        "note": "",
        "extra": extra,
    }


def _result(bf16_s: float, bf16_max_suv: float, bf16_mae: float) -> dict[str, Any]:
    """A small result: G in float32 and bfloat16, the refiner, and the phantom tolerance check."""
    bf16_err = {"max_abs_suv_body": bf16_max_suv, "mean_abs_suv_body": bf16_max_suv / 10, "p999_abs_suv_body": bf16_max_suv / 2}
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
        "tolerance": {"mae_paper_units": 1.0, "max_abs_suv": 0.1},
        "tolerance_weights": "untrained",
        "rows": [
            _row("G", "ours", 0.020, 0.025, {"max_abs_net": 0.0, "mean_abs_net": 0.0}),
            _row("G", "bfloat16", bf16_s, 0.020, {"max_abs_net": 0.01, "mean_abs_net": 0.001}),
            _row("volume", "refiner", 0.050, 0.049, {"max_abs_net": 2e-7, "mean_abs_net": 1e-8}),
            _row("tolerance", "bfloat16", bf16_s * 2, 0.040, {**bf16_err, "mae_paper_units": bf16_mae}),
        ],
        "linearity": [],
        "memory": None,
        "total_seconds": 10.0,
    }


def _verdict(lines: list[str], title: str) -> str:
    (line,) = [line for line in lines if line.startswith(f"- **{title} — ")]
    return line.split(" — ", 1)[1].split("**", 1)[0]


def test_bfloat16_verdict_follows_speed_and_accuracy(speed_report: Any) -> None:
    fast_accurate = speed_report.verdicts(_result(bf16_s=0.010, bf16_max_suv=0.05, bf16_mae=0.5))
    fast_inaccurate = speed_report.verdicts(_result(bf16_s=0.010, bf16_max_suv=0.5, bf16_mae=0.5))
    mean_off = speed_report.verdicts(_result(bf16_s=0.010, bf16_max_suv=0.05, bf16_mae=5.0))
    slow_accurate = speed_report.verdicts(_result(bf16_s=0.020, bf16_max_suv=0.05, bf16_mae=0.5))
    assert _verdict(fast_accurate, "bfloat16 autocast") == "adopt as the default"
    for lines in (fast_inaccurate, mean_off, slow_accurate):
        assert _verdict(lines, "bfloat16 autocast") == "kept opt-in"
    assert "outside the tolerance" in " ".join(fast_inaccurate)
    assert "not faster (1×)" in " ".join(slow_accurate)


def test_ratio_statements_follow_the_numbers(speed_report: Any) -> None:
    result = _result(bf16_s=0.010, bf16_max_suv=0.05, bf16_mae=0.5)
    lines = speed_report.verdicts(result)
    assert _verdict(lines, "Batched G + inference mode") == "adopted"  # 1.25×, same output
    assert _verdict(lines, "Batched refiner windows") == "no measurable gain"  # 0.98×
    slower = copy.deepcopy(result)
    slower["rows"][0].update(reference_s=0.015, ratio=0.75)
    assert _verdict(speed_report.verdicts(slower), "Batched G + inference mode") == "slower than what it replaces"


def test_report_says_not_measured_for_missing_numbers(speed_report: Any) -> None:
    result = _result(bf16_s=0.010, bf16_max_suv=0.05, bf16_mae=0.5)
    result["rows"] = [r for r in result["rows"] if r["section"] != "tolerance"]
    del result["rows"][0]["ours_iqr_s"]
    text = speed_report.render(result)
    assert _verdict(speed_report.verdicts(result), "bfloat16 autocast") == "kept opt-in"
    assert "accuracy not measured" in text
    assert "Not measured in this run (`benchmarks/speed.py --memory`)." in text


def test_cpu_without_native_bfloat16_says_so(speed_report: Any) -> None:
    result = _result(bf16_s=0.010, bf16_max_suv=0.05, bf16_mae=0.5)
    result["machine"]["native_bfloat16"] = False
    result["rows"] = [r for r in result["rows"] if r["variant"] != "bfloat16"]
    lines = speed_report.verdicts(result)
    assert _verdict(lines, "bfloat16 autocast") == "not measured"
    assert "refuses `--precision bfloat16`" in speed_report.render(result)

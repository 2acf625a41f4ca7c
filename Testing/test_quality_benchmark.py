"""benchmarks/quality.py on a real-data layout, end to end at a tiny budget: both settings train
every method, score them on the test split against the PET as acquired and write the report,
the figure and the JSON record (to the folders given, never over the committed ones)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("quality_benchmark", ROOT / "benchmarks" / "quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _real_layout(phantoms: Path, out: Path) -> Path:
    """The phantom studies as real studies look: CT, the PET as acquired, the tumour mask (no aligned PET)."""
    for study in sorted(p for p in phantoms.iterdir() if p.is_dir()):
        (out / study.name).mkdir(parents=True)
        for name in ("ct.nii.gz", "lesions.nii.gz"):
            shutil.copy(study / name, out / study.name / name)
        shutil.copy(study / "pet_aligned.nii.gz", out / study.name / "pet.nii.gz")
    return out


@pytest.mark.slow
def test_real_benchmark_end_to_end(quality, tiny_phantoms: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = _real_layout(tiny_phantoms, tmp_path / "real")
    docs, results = tmp_path / "docs", tmp_path / "results"
    docs.mkdir()
    argv = ["--data", str(data), "--out", str(tmp_path / "work"), "--steps", "2", "--refiner-steps", "1"]
    assert quality.main([*argv, "--batch-size", "1", "--docs", str(docs), "--results", str(results)]) == 0

    record = json.loads((results / "quality-real.json").read_text(encoding="utf-8"))
    methods = [quality.LOOKUP, *quality.METHODS]
    for setting in quality.SETTINGS:
        rows = record[setting]["rows"]
        assert list(rows) == methods
        assert all(np.isfinite(rows[m]["suv_mae_body"]) and rows[m]["n_studies"] == len(record[setting]["test"]) for m in methods)
    report = (docs / "benchmark-real.md").read_text(encoding="utf-8")
    assert all(f"| {m} |" in report for m in methods)
    assert (
        "With misalignment, RegC2P overlap" in report
        and "## Goals" in report
        and (docs / "benchmark-real.png").stat().st_size > 0
    )

    # The misaligned setting trains on a moved PET and scores against the PET as acquired.
    moved = tmp_path / "work" / "misaligned-data" / sorted(p.name for p in data.iterdir())[0]
    acquired = sitk.GetArrayFromImage(sitk.ReadImage(str(moved / "pet_aligned.nii.gz")))
    original = sitk.GetArrayFromImage(sitk.ReadImage(str(data / moved.name / "pet.nii.gz")))
    np.testing.assert_array_equal(acquired, original)
    assert np.abs(sitk.GetArrayFromImage(sitk.ReadImage(str(moved / "pet.nii.gz"))) - original).max() > 0.1

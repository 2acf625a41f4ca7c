"""The model card's oracle scale (benchmarks/model_card.py): the exact minimiser of the MAE."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def model_card() -> Any:
    spec = importlib.util.spec_from_file_location("model_card", BENCHMARKS / "model_card.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # it finds its neighbour baselines.py itself
    return module


def _mae(a: float, pred: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a * pred.astype(np.float64) - ref).mean())


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 300), zeros=st.floats(0.0, 0.9))
def test_best_scale_is_no_worse_than_any_other_scale(model_card: Any, seed: int, n: int, zeros: float) -> None:
    rng = np.random.default_rng(seed)
    pred = rng.gamma(2.0, 0.5, n).astype(np.float32) * (rng.random(n) >= zeros)
    ref = rng.gamma(1.5, 0.8, n).astype(np.float32)
    a = model_card.best_scale(pred, ref)
    best = _mae(a, pred, ref)
    for other in np.concatenate([np.linspace(0.0, 5.0, 101), a * np.array([0.99, 1.01])]):
        assert best <= _mae(other, pred, ref) + 1e-9


def test_best_scale_recovers_a_known_factor(model_card: Any) -> None:
    rng = np.random.default_rng(3)
    pred = rng.gamma(2.0, 0.5, (4, 16, 16)).astype(np.float32)
    assert model_card.best_scale(pred, 1.7 * pred) == pytest.approx(1.7, rel=1e-6)
    assert model_card.best_scale(np.zeros(5, np.float32), pred[0, 0, :5]) == 1.0  # nothing to scale


def test_held_out_organs_reads_each_organ_against_the_aligned_pet(model_card: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A "model" whose PET is exactly half each phantom's aligned PET scores 50 % on every organ
    of the held-out drawn phantoms, bladder and myocardium included, in every phantom."""
    import SimpleITK as sitk

    cases = list(model_card.drawn_cases(2))
    half = {id(case.ct): sitk.Cast(model_card.resample_onto(case.pet_aligned, case.ct), sitk.sitkFloat32) * 0.5 for case in cases}
    monkeypatch.setattr(model_card, "translate_volume", lambda ct, model, options: half[id(ct)])
    organs = model_card.held_out_organs(None, cases)
    assert {"bladder", "myocardium", "kidney", "brain_gray", "liver"} <= organs.keys()
    for name, (model_suv, reference_suv, phantoms) in organs.items():
        assert reference_suv > 0.1, name
        assert model_suv == pytest.approx(0.5 * reference_suv, rel=1e-5), name
        assert phantoms == 2, name
    assert organs["bladder"][1] > 3 * organs["liver"][1]  # the phantoms' own uptake, not a constant

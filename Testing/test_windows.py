"""Sliding windows along z: which windows run, how often each slice is covered, and
that overlapping refiner outputs are averaged as the plan's weights say."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from RegC2PLib.errors import CancelledError
from RegC2PLib.inference import WindowPlan, refine_windows
from RegC2PLib.progress import CancelToken

CPU = torch.device("cpu")

# (n_slices, window s, stride k) — awkward on purpose.
CASES = [
    (3, 8, 4),  # n < s: one window of all slices
    (8, 8, 4),  # n == s
    (11, 4, 3),  # n not reached by the stride: an extra window ends at the last slice
    (10, 4, 3),  # the stride lands exactly on the end
    (10, 4, 4),  # k == s (non-overlap) with a remainder
    (12, 4, 4),  # k == s, exact
    (6, 4, 1),  # k == 1
    (1, 8, 4),  # a single slice
    (1, 1, 1),  # window of one
    (7, 1, 1),  # window of one, many slices
    (9, 5, 2),
    (17, 8, 7),
]


class IdentityRefiner(nn.Module):
    """Same call signature as the Refiner: (N, 1, s, H, W) -> (N, 1, s, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return x.clone()


class StartTaggingRefiner(nn.Module):
    """Adds ``offset(start) + 0.25·j`` to slice j of a window. The window's start is read
    from the input, whose slice z holds the value z everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        starts = x[:, 0, 0, 0, 0].round()
        offsets = 100.0 + 7.0 * starts
        position = 0.25 * torch.arange(x.shape[2], dtype=x.dtype)
        return x + offsets.view(-1, 1, 1, 1, 1) + position.view(1, 1, -1, 1, 1)


def _brute_force_starts(n: int, s: int, k: int) -> list[int]:
    """Independent statement of the rule: windows of min(s, n) slices at 0, k, 2k, ...
    while they fit, plus one ending at the last slice if the last one does not."""
    length = min(s, n)
    starts = []
    start = 0
    while start + length <= n:
        starts.append(start)
        start += k
    if starts[-1] + length < n:
        starts.append(n - length)
    return starts


def _brute_force_coverage(n: int, starts: list[int], length: int) -> np.ndarray:
    return np.array([sum(1 for st in starts if st <= z < st + length) for z in range(n)], dtype=float)


@pytest.mark.parametrize(("n", "s", "k"), CASES)
def test_starts_and_coverage(n: int, s: int, k: int) -> None:
    plan = WindowPlan(n, s, k)
    length = min(s, n)
    assert plan.length == length
    starts = plan.starts
    assert starts == _brute_force_starts(n, s, k)
    assert starts[0] == 0 and starts[-1] == n - length
    assert all(b > a for a, b in itertools.pairwise(starts))  # strictly increasing, no duplicate window
    assert all(b - a <= k for a, b in itertools.pairwise(starts))  # no gap
    coverage = _brute_force_coverage(n, starts, length)
    assert coverage.min() >= 1  # every slice is covered
    np.testing.assert_array_equal(plan.coverage(), coverage)  # uniform weights: count of windows


def test_hand_written_starts() -> None:
    assert WindowPlan(11, 4, 3).starts == [0, 3, 6, 7]
    assert WindowPlan(10, 4, 3).starts == [0, 3, 6]
    assert WindowPlan(10, 4, 4).starts == [0, 4, 6]
    assert WindowPlan(6, 4, 1).starts == [0, 1, 2]
    assert WindowPlan(3, 8, 4).starts == [0]
    assert WindowPlan(1, 8, 4).starts == [0]
    np.testing.assert_array_equal(WindowPlan(11, 4, 3).coverage(), [1, 1, 1, 2, 1, 1, 2, 2, 2, 2, 1])


@pytest.mark.parametrize(("n", "s", "k"), [(0, 4, 2), (5, 0, 1), (5, 4, 0), (5, 4, 5)])
def test_invalid_plan(n: int, s: int, k: int) -> None:
    with pytest.raises(ValueError):
        WindowPlan(n, s, k)


@pytest.mark.parametrize(("n", "s", "k"), CASES)
@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_identity_refiner_returns_input(n: int, s: int, k: int, batch_size: int) -> None:
    plan = WindowPlan(n, s, k)
    gen = torch.Generator().manual_seed(n * 100 + s * 10 + k)
    # Dyadic values: the sums of copies and the correctly rounded division by the count are exact.
    dyadic = torch.randint(-64, 64, (n, 6, 5), generator=gen).float() / 64
    refiner = IdentityRefiner()
    out = refine_windows(dyadic, refiner, plan, CPU, batch_size)
    assert out.dtype == torch.float32 and out.shape == dyadic.shape
    assert torch.equal(out, dyadic)
    # Arbitrary values agree to float32 rounding.
    noise = torch.rand(n, 6, 5, generator=gen) * 2 - 1
    torch.testing.assert_close(refine_windows(noise, refiner, plan, CPU, batch_size), noise, atol=1e-6, rtol=0)
    # Batching: every window once, at most batch_size per pass.
    refiner.batches.clear()
    refine_windows(noise, refiner, plan, CPU, batch_size)
    assert sum(refiner.batches) == len(plan.starts)
    assert max(refiner.batches) <= batch_size


@pytest.mark.parametrize(("n", "s", "k"), CASES)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_overlap_average_equals_hand_computed_mean(n: int, s: int, k: int, batch_size: int) -> None:
    plan = WindowPlan(n, s, k)
    length = min(s, n)
    volume = torch.arange(n, dtype=torch.float32).view(n, 1, 1).expand(n, 4, 3).contiguous()
    out = refine_windows(volume, StartTaggingRefiner(), plan, CPU, batch_size)
    expected = np.zeros((n, 4, 3))
    for z in range(n):
        added = [100.0 + 7.0 * st + 0.25 * (z - st) for st in _brute_force_starts(n, s, k) if st <= z < st + length]
        expected[z] = z + np.mean(added)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)


def test_volume_must_match_plan() -> None:
    with pytest.raises(ValueError, match="slices"):
        refine_windows(torch.zeros(5, 4, 4), IdentityRefiner(), WindowPlan(6, 4, 2), CPU)


def test_progress_reaches_one_and_cancel_stops() -> None:
    plan = WindowPlan(20, 4, 2)
    fractions: list[float] = []
    refine_windows(torch.zeros(20, 4, 4), IdentityRefiner(), plan, CPU, 2, lambda f, m: fractions.append(f))
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert len(fractions) == -(-len(plan.starts) // 2)

    token = CancelToken()
    refiner = IdentityRefiner()

    def cancel_after_first(fraction: float, message: str) -> None:
        token.cancel()

    with pytest.raises(CancelledError):
        refine_windows(torch.zeros(20, 4, 4), refiner, plan, CPU, 2, cancel_after_first, token)
    assert len(refiner.batches) == 1

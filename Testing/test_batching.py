"""Slices per generator pass chosen by timing (inference.batching), and air-only slices left
out of the computation (their PET is 0)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from RegC2PLib.body import axial_extent
from RegC2PLib.inference import TranslationOptions, translate_volume
from RegC2PLib.inference.batching import CPU_CANDIDATES, GPU_BATCH, BatchSizer, forget_choices, largest_batch
from RegC2PLib.model_file import LoadedModel

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _fresh_choices() -> None:
    forget_choices()


def _run(sizer: BatchSizer, n_slices: int, seconds_per_slice: dict[int, float]) -> list[int]:
    """Feed ``n_slices`` slices through ``sizer`` with a fake clock; the batch sizes it used."""
    used, done = [], 0
    while done < n_slices:
        b = min(sizer.next_size(), n_slices - done)
        sizer.record(b, b * seconds_per_slice.get(b, 1.0))
        used.append(b)
        done += b
    return used


def test_cpu_times_every_candidate_then_keeps_the_fastest() -> None:
    sizer = BatchSizer(None, CPU, "grid")
    timings = {1: 0.5, 2: 0.4, 4: 0.3, 8: 0.45}
    used = _run(sizer, 100, timings)
    probing = [b for b in CPU_CANDIDATES for _ in range(2)]
    assert used[: len(probing)] == probing
    assert set(used[len(probing) : -1]) == {4} and used[-1] <= 4 and sizer.next_size() == 4
    assert sizer.seconds_per_slice == pytest.approx(timings)


def test_probing_stops_at_the_first_clearly_slower_size() -> None:
    sizer = BatchSizer(None, CPU, "grid")
    used = _run(sizer, 40, {1: 0.5, 2: 0.6, 4: 0.1, 8: 0.1})
    assert used[:4] == [1, 1, 2, 2] and set(used[4:]) == {1}  # 4 and 8 are never run
    assert sizer.next_size() == 1 and set(sizer.seconds_per_slice) == {1, 2}


def test_warm_round_counts_not_the_first_pass() -> None:
    sizer = BatchSizer(None, CPU, "grid")
    clock = {1: [9.0, 0.2], 2: [0.1, 0.3], 4: [0.1, 0.4], 8: [0.1, 0.5]}  # batch 1 pays the setup once
    while sizer.measuring:
        b = sizer.next_size()
        sizer.record(b, b * clock[b].pop(0))
    assert sizer.next_size() == 1


def test_choice_is_remembered_per_key() -> None:
    _run(BatchSizer(None, CPU, "grid A"), 60, {1: 0.9, 2: 0.8, 4: 0.7, 8: 0.1})
    again = BatchSizer(None, CPU, "grid A")
    assert not again.measuring and again.next_size() == 8
    assert BatchSizer(None, CPU, "grid B").measuring  # another grid or network is measured anew
    assert BatchSizer(None, CPU, "grid A", largest=2).next_size() == 2  # never above what memory allows


def test_short_last_pass_is_not_a_measurement() -> None:
    sizer = BatchSizer(None, CPU, "grid")
    used = _run(sizer, 5, {1: 1.0, 2: 0.1, 4: 0.1, 8: 0.1})  # 1, 1, 2, then 1 slice left for a planned 2
    assert used == [1, 1, 2, 1]
    assert sizer.seconds_per_slice == {1: 1.0, 2: 0.1}
    following = BatchSizer(None, CPU, "grid")  # the next volume goes on where this one stopped
    assert following.measuring and following.next_size() == 2 and following.seconds_per_slice == {1: 1.0, 2: 0.1}


def test_fixed_size_and_gpu() -> None:
    fixed = BatchSizer(3, CPU, "grid")
    assert not fixed.measuring and _run(fixed, 10, {3: 1.0, 1: 1.0}) == [3, 3, 3, 1]
    assert BatchSizer(None, torch.device("cuda"), "grid").next_size() == GPU_BATCH


def test_largest_batch_respects_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from RegC2PLib.inference import batching

    monkeypatch.setattr(batching, "available_bytes", lambda: 1000)
    assert largest_batch(None, CPU, lambda b: 300 * b) == 2
    assert largest_batch(None, CPU, lambda b: 5000 * b) == 1  # nothing fits: the memory check will refuse
    assert largest_batch(6, CPU, lambda b: 5000 * b) == 6


def test_chosen_batch_gives_the_same_pet(make_ct, small_model: LoadedModel, assert_same_pet) -> None:
    ct = make_ct((20, 30, 36))
    fixed = translate_volume(ct, small_model, TranslationOptions(device="cpu", batch_size=8))
    chosen = translate_volume(ct, small_model, TranslationOptions(device="cpu"))
    assert_same_pet(sitk.GetArrayFromImage(chosen), sitk.GetArrayFromImage(fixed))


def test_axial_extent() -> None:
    mask = np.zeros((7, 3, 3), bool)
    assert axial_extent(mask) == (0, 0)
    mask[2, 1, 1] = mask[4, 0, 0] = True
    assert axial_extent(mask) == (2, 5)


def test_air_slices_are_not_computed_and_get_zero(make_ct, small_model: LoadedModel) -> None:
    """A CT with air-only slices at both ends: G sees only the body's slices, which come out as
    when the CT holds only them; the air slices' PET is 0."""
    body = sitk.GetArrayFromImage(make_ct((8, 30, 36))).astype(np.float32)
    padded = np.full((14, 30, 36), -1000.0, np.float32)
    padded[3:11] = body
    seen: list[int] = []
    hook = small_model.generator.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    try:
        options = TranslationOptions(refine="none", device="cpu", batch_size=4)
        full = sitk.GetArrayFromImage(translate_volume(sitk.GetImageFromArray(padded), small_model, options))
        seen_full, seen[:] = sum(seen), []
        alone = sitk.GetArrayFromImage(translate_volume(sitk.GetImageFromArray(body), small_model, options))
    finally:
        hook.remove()
    assert seen_full == 8
    assert not full[:3].any() and not full[11:].any()
    np.testing.assert_allclose(full[3:11], alone, atol=1e-5, rtol=0)


def test_nothing_computed_for_a_ct_of_air_and_foam(small_model: LoadedModel) -> None:
    air = np.full((6, 24, 24), -1000.0, np.float32)
    air[:, 18:21] = -600.0  # a foam mattress: below the body threshold
    air = sitk.GetImageFromArray(air)
    calls: list[int] = []
    hook = small_model.generator.register_forward_hook(lambda *_: calls.append(1))
    try:
        pet = sitk.GetArrayFromImage(translate_volume(air, small_model, TranslationOptions(device="cpu")))
    finally:
        hook.remove()
    assert not calls and pet.shape == (6, 24, 24) and not pet.any()

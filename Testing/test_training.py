"""Training: losses fall, R learns a known shift, one code path for both modes,
kill-and-resume reproduces an uninterrupted run, clean stop, evaluation by hand."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from RegC2PLib.body import body_mask, in_plane_box
from RegC2PLib.cli import main
from RegC2PLib.config import IntensityConfig, ModelConfig, RegistrationConfig, preset
from RegC2PLib.data.datasets import SliceDataset
from RegC2PLib.data.phantom import PhantomConfig, write_dataset
from RegC2PLib.data.studies import discover_studies, load_study
from RegC2PLib.errors import InputError
from RegC2PLib.evaluation import score_volume, summarize
from RegC2PLib.inference import TranslationOptions, translate_volume
from RegC2PLib.intensity import network_to_pet
from RegC2PLib.model_file import file_sha256, load_model, new_model, save_model
from RegC2PLib.networks import RegistrationNet, smoothness_loss, warp
from RegC2PLib.slice_grid import SliceGrid
from RegC2PLib.training.config import TrainConfig
from RegC2PLib.training.data_access import prepare_data
from RegC2PLib.training.loop import MetricsLog, StopRequest, TrainingStopped, run_stage, stage_seconds
from RegC2PLib.training.runner import RunOptions, train
from RegC2PLib.training.sampling import EpochSampler, oversample_lesions
from RegC2PLib.training.sources import DataSource
from RegC2PLib.training.tasks import GanTask, RefinerTask
from RegC2PLib.training.validation import make_validator

SIZE = 64
# Learning tests train the small networks; mechanics tests (resume, stop, validation) the tiny ones.
LEARN = preset("small").with_changes(image_size=SIZE)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantoms") / "data"
    write_dataset(root, 5, PhantomConfig(shape=(24, 64, 64)), seed=7)
    return root


@pytest.fixture(scope="module")
def slices(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> SliceDataset:
    studies, skipped = discover_studies(dataset)
    assert not skipped
    return SliceDataset(studies, LEARN, tmp_path_factory.mktemp("cache"))


def _batch(dataset: SliceDataset, indices: list[int]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([dataset[i][key] for i in indices]) for key in ("ct", "pet")}


def test_stage1_losses_fall_on_phantoms(slices: SliceDataset) -> None:
    torch.manual_seed(0)
    task = GanTask(LEARN, TrainConfig(), CPU)
    order = torch.randperm(len(slices), generator=torch.Generator().manual_seed(0)).tolist()
    losses = [task.train_step(_batch(slices, order[2 * i : 2 * i + 2])) for i in range(30)]
    first = np.mean([step["l_corr"] for step in losses[:5]])
    last = np.mean([step["l_corr"] for step in losses[-5:]])
    assert last < 0.5 * first, (first, last)
    assert all(np.isfinite(list(step.values())).all() for step in losses)


def test_registration_network_learns_a_known_shift() -> None:
    """fixed = moving moved by (+2, -3) px, so warp(moving, u) = fixed needs u = (-2, +3)."""
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    moving = (torch.sin(xx / 3.0) * torch.cos(yy / 4.0) + 0.3 * torch.sin((xx + yy) / 5.0))[None, None]
    fixed = torch.roll(moving, shifts=(2, -3), dims=(2, 3))
    net = RegistrationNet(RegistrationConfig((16, 16, 16), (16, 16, 16), 32, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(250):
        field = net(moving, fixed)
        loss = F.l1_loss(warp(moving, field)[..., 4:-4, 4:-4], fixed[..., 4:-4, 4:-4]) + 0.1 * smoothness_loss(field)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    interior = net(moving, fixed).detach()[0, :, 8:-8, 8:-8].mean(dim=(1, 2))
    assert torch.allclose(interior, torch.tensor([-2.0, 3.0]), atol=0.5), interior


@pytest.mark.parametrize("mode", ["regc2p", "pix2pix"])
def test_both_modes_run_the_same_step(mode: str, slices: SliceDataset, tiny_config: ModelConfig) -> None:
    task = GanTask(tiny_config, TrainConfig(mode=mode, refiner_target="misaligned"), CPU)
    assert ("registration" in task.modules) == (mode == "regc2p")
    before = {k: v.clone() for k, v in task.generator.state_dict().items()}
    losses = task.train_step(_batch(slices, [0, 1]))
    assert set(losses) == {"loss_g", "l_corr", "l_smooth", "l_adv", "loss_d"}
    assert (losses["l_smooth"] == 0.0) == (mode == "pix2pix")
    assert any(not torch.equal(before[k], v) for k, v in task.generator.state_dict().items())


def test_registered_refiner_target_undoes_r_field(slices: SliceDataset, tiny_config: ModelConfig) -> None:
    """With R predicting a constant shift u, the target is the PET moved by -u (onto G's output)."""
    stage1 = GanTask(tiny_config, TrainConfig(), CPU)

    class ConstantShift(torch.nn.Module):
        def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
            field = torch.zeros(moving.shape[0], 2, *moving.shape[-2:])
            field[:, 0], field[:, 1] = 3.0, -2.0
            return field

    task = RefinerTask(tiny_config, TrainConfig(), CPU, stage1.generator, ConstantShift())  # type: ignore[arg-type]
    pet = torch.rand(1, 4, SIZE, SIZE)
    _, target = task.inputs_and_targets(torch.zeros(1, 4, SIZE, SIZE), pet)
    # warp(target, u) must give the PET back: target(p) = pet(p - u) = pet(y - 3, x + 2)
    expected = torch.roll(pet, shifts=(3, -2), dims=(2, 3))
    assert torch.allclose(target[0, 0, :, 8:-8, 8:-8], expected[0, :, 8:-8, 8:-8], atol=1e-4)


def test_stop_request_keeps_a_checkpoint_and_resume_is_exact(
    slices: SliceDataset, tmp_path: Path, tiny_config: ModelConfig
) -> None:
    settings = TrainConfig(epochs=2, batch_size=2, max_steps=9, lr_schedule="linear-decay", checkpoint_every=4)

    def fresh() -> GanTask:
        torch.manual_seed(0)
        return GanTask(tiny_config, TrainConfig(), CPU)

    reference = fresh()
    run_stage(reference, slices, _all(slices), settings, tmp_path / "a", _log(tmp_path / "a"), None, StopRequest())

    stopping = _stop_after(6)
    with pytest.raises(TrainingStopped, match="step 6"):
        run_stage(fresh(), slices, _all(slices), settings, tmp_path / "b", _log(tmp_path / "b"), None, stopping)
    resumed = fresh()
    run_stage(resumed, slices, _all(slices), settings, tmp_path / "b", _log(tmp_path / "b"), None, StopRequest())
    for name, module in reference.modules.items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, resumed.modules[name].state_dict()[key]), f"{name}.{key}"
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 10))


def test_validation_every_n_steps_keeps_the_best_checkpoint(
    slices: SliceDataset, tmp_path: Path, tiny_config: ModelConfig
) -> None:
    """Validation at steps 3 and 6 and at the end (9); the best score (lowest) picks the best checkpoint."""
    settings = TrainConfig(epochs=1, batch_size=2, max_steps=9, checkpoint_every=100, validate_every=3)
    scores = {3: 2.0, 6: 1.0, 9: 5.0}
    seen: list[int] = []

    def validate(task: GanTask) -> dict[str, float]:
        step = sum(1 for line in (tmp_path / "log.jsonl").read_text().splitlines() if '"train"' in line)
        seen.append(step)
        return {"score": scores[step]}

    run_stage(
        GanTask(tiny_config, TrainConfig(), CPU),
        slices,
        _all(slices),
        settings,
        tmp_path,
        _log(tmp_path),
        validate,
        StopRequest(),
    )
    assert seen == [3, 6, 9]
    best = torch.load(tmp_path / "stage1_best.pt", weights_only=True)
    assert best["counters"]["step"] == 6
    assert best["counters"]["best_score"] == 1.0


def test_a_finished_stage_continues_when_its_budget_grows(slices: SliceDataset, tmp_path: Path, tiny_config: ModelConfig) -> None:
    def settings(max_steps: int) -> TrainConfig:
        return TrainConfig(epochs=5, batch_size=2, max_steps=max_steps, checkpoint_every=100)

    first = run_stage(
        GanTask(tiny_config, TrainConfig(), CPU), slices, _all(slices), settings(3), tmp_path, _log(tmp_path), None, StopRequest()
    )
    assert first.completed and first.step == 3
    again = run_stage(
        GanTask(tiny_config, TrainConfig(), CPU), slices, _all(slices), settings(3), tmp_path, _log(tmp_path), None, StopRequest()
    )
    assert again.step == 3  # nothing more to do
    longer = run_stage(
        GanTask(tiny_config, TrainConfig(), CPU), slices, _all(slices), settings(5), tmp_path, _log(tmp_path), None, StopRequest()
    )
    assert longer.completed and longer.step == 5
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    # Training time adds up over the sessions: it never restarts from zero on a resume.
    seconds = [r["seconds"] for r in records]
    assert seconds[-1] > 0 and all(0 <= a <= b for a, b in itertools.pairwise(seconds))
    assert stage_seconds(tmp_path, "stage1") == pytest.approx(longer.seconds) and longer.seconds >= seconds[-1] - 0.01
    assert stage_seconds(tmp_path, "stage2") == 0.0


def test_a_stopped_stage_ended_by_a_lower_budget_is_validated(
    slices: SliceDataset, tmp_path: Path, tiny_config: ModelConfig
) -> None:
    """Stopped at step 2 of 6, then resumed with --max-steps 2: the stage ends there and its
    final weights are validated (and become the best checkpoint) instead of going unscored."""

    def settings(max_steps: int) -> TrainConfig:
        return TrainConfig(epochs=5, batch_size=2, max_steps=max_steps, checkpoint_every=100)

    def validate(task: GanTask) -> dict[str, float]:
        return {"score": float(next(task.generator.parameters()).detach().abs().sum())}

    stopping = _stop_after(2)
    with pytest.raises(TrainingStopped, match="step 2"):
        run_stage(
            GanTask(tiny_config, TrainConfig(), CPU),
            slices,
            _all(slices),
            settings(6),
            tmp_path,
            _log(tmp_path),
            validate,
            stopping,
        )
    assert not (tmp_path / "stage1_best.pt").exists()
    task = GanTask(tiny_config, TrainConfig(), CPU)
    ended = run_stage(task, slices, _all(slices), settings(2), tmp_path, _log(tmp_path), validate, StopRequest())
    assert ended.completed and ended.step == 2
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("train", 1), ("train", 2), ("val", 2)]
    assert records[-1]["score"] == pytest.approx(validate(task)["score"])
    assert torch.load(tmp_path / "stage1_best.pt", weights_only=True)["counters"]["step"] == 2


def _all(dataset: SliceDataset) -> EpochSampler:
    """Every sample of ``dataset`` once per epoch, shuffled (a run of one dataset folder)."""
    return EpochSampler([len(dataset)], [1.0], seed=0, stage="stage1")


def _stop_after(steps: int) -> StopRequest:
    """A stop request that answers yes after ``steps`` steps, as a user's Ctrl-C would."""
    calls = itertools.count(1)
    stopping = StopRequest()
    stopping.__class__ = type("StopAfter", (StopRequest,), {"__call__": lambda self: next(calls) == steps})
    return stopping


def _log(folder: Path) -> MetricsLog:
    folder.mkdir(parents=True, exist_ok=True)
    return MetricsLog(folder / "log.jsonl")


def _train_command(data: Path, out: Path, networks: Path, *extra: str) -> list[str]:
    """``regc2p train`` of the networks of model file ``networks`` (tiny ones, for speed)."""
    return [
        sys.executable, "-m", "RegC2PLib", "train", "--data", str(data), "--out", str(out), "--init-from", str(networks),
        "--epochs", "1", "--refiner-epochs", "1", "--max-steps", "6", "--checkpoint-every", "2", "--progress", "none", *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    model = load_model(path)
    state = {f"generator.{k}": v for k, v in model.generator.state_dict().items()}
    assert model.refiner is not None
    state.update({f"refiner.{k}": v for k, v in model.refiner.state_dict().items()})
    return state


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(dataset: Path, tmp_path: Path, tiny_model_file: Path) -> None:
    """A real process killed (SIGKILL) right after its first checkpoint, then --resume, ends
    with exactly the weights of an uninterrupted run (same data, seed and thread count)."""
    subprocess.run(_train_command(dataset, tmp_path / "whole", tiny_model_file), check=True, env=_env(), capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        _train_command(dataset, killed, tiny_model_file), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _wait_for(killed / "checkpoints" / "stage1_last.pt", process)
    process.kill()
    process.wait()
    assert not (killed / "model.safetensors").exists()
    subprocess.run(
        [sys.executable, "-m", "RegC2PLib", "train", "--out", str(killed), "--resume", "--progress", "none"],
        check=True,
        env=_env(),
        capture_output=True,
    )
    whole, resumed = _tensors(tmp_path / "whole" / "model.safetensors"), _tensors(killed / "model.safetensors")
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    for run in (tmp_path / "whole", killed):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records if r["kind"] == "train" and r["stage"] == "stage1"] == list(range(1, 7))
        assert (run / "curves.png").stat().st_size > 1000
        assert json.loads((run / "split.json").read_text())["train"]
    # run.json keeps the first command and lists the resume; the uninterrupted run has none.
    resumes = json.loads((killed / "run.json").read_text())["resumes"]
    assert len(resumes) == 1 and "--resume" in resumes[0]["command"]
    assert "resumes" not in json.loads((tmp_path / "whole" / "run.json").read_text())


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_a_checkpoint(dataset: Path, tmp_path: Path, tiny_model_file: Path) -> None:
    out = tmp_path / "run"
    process = subprocess.Popen(
        _train_command(dataset, out, tiny_model_file, "--stage", "1", "--max-steps", "500"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(out / "metrics.jsonl", process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "continue with --resume" in err
    checkpoint = torch.load(out / "checkpoints" / "stage1_last.pt", weights_only=True)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert checkpoint["counters"]["step"] == steps[-1] < 500
    assert not (out / "model.safetensors").exists()


def test_train_refuses_bad_run_folders(dataset: Path, tmp_path: Path, tiny_config: ModelConfig) -> None:
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    options = RunOptions(occupied, dataset, tiny_config, TrainConfig(max_steps=1))
    with pytest.raises(InputError, match="already exists and is not empty; use --resume"):
        train(options)
    assert (occupied / "notes.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="not a RegC2P run folder"):
        train(RunOptions(tmp_path / "nothing", resume=True))
    with pytest.raises(InputError, match="--stage 2 needs a run whose stage 1 is trained"):
        train(RunOptions(tmp_path / "new", dataset, tiny_config, TrainConfig(stage="2")))
    with pytest.raises(InputError, match="does not exist"):
        train(RunOptions(tmp_path / "new2", tmp_path / "missing", tiny_config, TrainConfig()))


def test_init_from_starts_g_and_f_from_a_model_file(dataset: Path, tmp_path: Path, capsys, tiny_config: ModelConfig) -> None:
    """Fine-tuning: with learning rates 0 the run's model is exactly the --init-from model, which
    is copied into the run, so stage 2 started by a later resume no longer needs the original."""
    start = tmp_path / "start.safetensors"
    save_model(start, new_model(tiny_config, seed=3))
    out = tmp_path / "run"
    argv = ["train", "--data", str(dataset), "--out", str(out), "--init-from", str(start), "--stage", "1"]
    argv += ["--max-steps", "1", "--epochs", "1", "--refiner-epochs", "1", "--lr", "0", "--refiner-lr", "0"]
    argv += ["--lesion-fraction", "0.5"]  # rides along: the option reaches the run's config
    assert main([*argv, "--progress", "none"]) == 0  # no --preset: the model file's 64 px network
    record = json.loads((out / "run.json").read_text())
    assert record["init"]["sha256"] == file_sha256(start) == file_sha256(out / "init.safetensors")
    assert record["train"]["lesion_fraction"] == 0.5
    # A stage-1 fine-tune keeps the starting model's refiner (so the model still refines in 3D) and says so.
    stage1, initial = _tensors(out / "model.safetensors"), _tensors(out / "init.safetensors")
    refiner_keys = [key for key in initial if key.startswith("refiner.")]
    assert refiner_keys and all(torch.equal(stage1[key], initial[key]) for key in refiner_keys)
    assert "not retrained" in load_model(out / "model.safetensors").info["refiner"]
    start.unlink()
    assert main(["train", "--out", str(out), "--resume", "--stage", "2", "--progress", "none"]) == 0
    capsys.readouterr()
    trained, initial = _tensors(out / "model.safetensors"), _tensors(out / "init.safetensors")
    for key in initial:
        assert torch.equal(trained[key], initial[key]), key
    fresh = new_model(tiny_config, seed=0).generator.state_dict()
    assert any(not torch.equal(fresh[k], trained[f"generator.{k}"]) for k in fresh)  # not the seed's random init

    save_model(start, new_model(tiny_config, seed=3))
    with pytest.raises(InputError, match="holds other networks than this run asks for: generator GeneratorConfig"):
        train(RunOptions(tmp_path / "other", dataset, preset("small"), TrainConfig(init_from=str(start))))
    assert not (tmp_path / "other").exists()


def test_fine_tuning_onto_a_wider_pet_scale(dataset: Path, tmp_path: Path, tiny_config: ModelConfig) -> None:
    """``--pet-suv-max`` with ``--init-from`` re-scales the PET: with learning rates 0 the
    networks are the start model's, so every SUV of the new model is the start model's times
    40 / 20 (where neither clips), and the training targets were read on the 40-SUV scale."""
    start = tmp_path / "start.safetensors"
    save_model(start, new_model(tiny_config, seed=3))
    out = tmp_path / "run"
    argv = ["train", "--data", str(dataset), "--out", str(out), "--init-from", str(start), "--stage", "1"]
    argv += ["--max-steps", "1", "--epochs", "1", "--lr", "0", "--pet-suv-max", "40", "--progress", "none"]
    assert main(argv) == 0
    before, after = load_model(start), load_model(out / "model.safetensors")
    assert before.config.intensity.pet_suv_max == 20.0 and after.config.intensity.pet_suv_max == 40.0
    ct = load_study(discover_studies(dataset)[0][0]).ct
    options = TranslationOptions(precision="float32", body_mask=False, batch_size=4)
    old = sitk.GetArrayFromImage(translate_volume(ct, before, options))
    new = sitk.GetArrayFromImage(translate_volume(ct, after, options))
    inside = (old > 0) & (old < 20)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(new[inside], 2 * old[inside], rtol=1e-5, atol=1e-5)
    record = json.loads((out / "run.json").read_text())
    assert record["model"]["intensity"]["pet_suv_max"] == 40.0


def test_keep_last_takes_each_stages_last_weights_instead_of_the_best(
    dataset: Path, tmp_path: Path, capsys, tiny_model_file: Path
) -> None:
    """Stage 1 keeps its best validated G by default; ``--resume --stage 2 --keep last`` trains
    F on the last stage-1 G and puts the last G and F in the model file."""
    out = tmp_path / "run"
    argv = ["train", "--data", str(dataset), "--out", str(out), "--init-from", str(tiny_model_file), "--stage", "1"]
    argv += ["--epochs", "1", "--refiner-epochs", "1", "--max-steps", "5", "--validate-every", "1", "--lr", "0.1"]
    assert main([*argv, "--refiner-lr", "0.02", "--progress", "none"]) == 0

    def checkpoint(name: str) -> dict:
        return torch.load(out / "checkpoints" / name, weights_only=True)

    def generator(state: dict) -> dict[str, torch.Tensor]:
        return {f"generator.{k}": v for k, v in state["modules"]["generator"].items()}

    best, last = checkpoint("stage1_best.pt"), checkpoint("stage1_last.pt")
    assert best["counters"]["step"] < last["counters"]["step"] == 5  # the best is not the last here
    model = load_model(out / "model.safetensors").generator.state_dict()
    assert all(torch.equal(model[k.removeprefix("generator.")], v) for k, v in generator(best).items())

    assert main(["train", "--out", str(out), "--resume", "--stage", "2", "--keep", "last", "--progress", "none"]) == 0
    capsys.readouterr()
    assert json.loads((out / "run.json").read_text())["resumes"][0]["overrides"] == {"stage": "2", "keep": "last"}
    trained = _tensors(out / "model.safetensors")
    for key, value in generator(last).items():
        assert torch.equal(trained[key], value), key
    refiner = checkpoint("stage2_last.pt")["modules"]["refiner"]
    assert all(torch.equal(trained[f"refiner.{k}"], v) for k, v in refiner.items())
    assert checkpoint("stage2_last.pt")["counters"]["step"] == 5


def test_validation_scores_the_lesions_of_the_validation_studies(dataset: Path, tmp_path: Path, tiny_config: ModelConfig) -> None:
    """The lesion maps of the phantoms reach validation on the model grid (the body-centred
    canvas, nearest neighbour), so the lesion SUVmax error is measured during training, not NaN."""
    data = prepare_data([DataSource(dataset)], tmp_path, tiny_config, seed=0, need_windows=False)
    studies = {s.name: s for s in discover_studies(dataset)[0]}
    torch.manual_seed(0)
    task = GanTask(tiny_config, TrainConfig(), CPU)
    errors = []
    for volume in data.val_volumes:
        loaded = load_study(studies[volume.name])
        ct = sitk.GetArrayFromImage(loaded.ct)
        box = in_plane_box(body_mask(ct, loaded.ct.GetSpacing()[::-1]))
        grid = SliceGrid.for_model(ct.shape[1:], loaded.ct.GetSpacing()[1::-1], tiny_config, box)
        native = torch.from_numpy(sitk.GetArrayFromImage(loaded.lesions).astype(np.float32))
        assert volume.lesions is not None and volume.lesions.dtype == np.uint8
        # every slice lies in the PET field of view here
        assert np.array_equal(grid.to_model(native, fill=0.0, labels=True).numpy().astype(np.uint8), volume.lesions)
        with torch.no_grad():
            pred = network_to_pet(
                task.generator(torch.from_numpy(np.asarray(volume.ct, np.float32))[:, None])[:, 0].numpy(), tiny_config.intensity
            )
        ref = network_to_pet(np.asarray(volume.reference, np.float32), tiny_config.intensity)
        errors += [abs(pred[volume.lesions == k].max() - ref[volume.lesions == k].max()) for k in np.unique(volume.lesions) if k]
    assert errors
    scores = make_validator(data.val_volumes, tiny_config, CPU, refine=False)(task)
    assert scores["n_lesions"] == len(errors)
    assert scores["lesion_suvmax_error"] == pytest.approx(np.mean(errors), rel=1e-4)


def test_oversampled_lesions_reach_their_share_and_every_sample_stays() -> None:
    lesion = np.array([2, 5])
    indices = oversample_lesions(10, lesion, 0.5)
    assert sorted(set(indices.tolist())) == list(range(10)) and len(indices) == 16
    assert np.isin(indices, lesion).mean() == pytest.approx(0.5)
    assert np.array_equal(oversample_lesions(10, lesion, 0.1), np.arange(10))  # already 20 %
    with pytest.raises(ValueError, match="lesion_fraction must be within"):
        TrainConfig(lesion_fraction=1.0)


def test_lesion_fraction_repeats_the_training_slices_that_show_a_lesion(
    dataset: Path, tmp_path: Path, tiny_config: ModelConfig
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = prepare_data([DataSource(dataset)], tmp_path / "a", tiny_config, seed=0, need_windows=False)
    data = prepare_data([DataSource(dataset)], tmp_path / "b", tiny_config, seed=0, need_windows=False, lesion_fraction=0.6)
    train_names = json.loads((tmp_path / "b" / "split.json").read_text())["train"]
    # Which slices show a lesion, read from the lesion maps themselves (every slice is in the PET view here).
    shown = np.concatenate(
        [
            sitk.GetArrayFromImage(load_study(study).lesions).any(axis=(1, 2))
            for study in discover_studies(dataset)[0]
            if study.name in train_names
        ]
    )
    n, lesion = len(shown), np.flatnonzero(shown)
    assert len(plain.slices) == n and 0 < len(lesion) < 0.6 * n
    indices = np.asarray(data.slice_sampler.indices(0))
    assert sorted(set(indices.tolist())) == list(range(n)) and len(indices) == data.slice_sampler.length
    assert 0.6 <= np.isin(indices, lesion).mean() < 0.6 + 1 / len(indices)
    assert f"lesion slices: {len(lesion)} of {n}" in data.summary


def test_slice_layout_trains_stage1_and_refuses_stage2(tmp_path: Path, tiny_config: ModelConfig) -> None:
    rng = np.random.default_rng(0)
    for subset, n in (("train", 4), ("val", 2)):
        for side in ("A", "B"):
            (tmp_path / "npy" / subset / side).mkdir(parents=True)
        for i in range(n):
            ct = rng.uniform(-1, 1, (SIZE, SIZE)).astype(np.float32)
            np.save(tmp_path / "npy" / subset / "A" / f"p1_{i}.npy", ct)
            np.save(tmp_path / "npy" / subset / "B" / f"p1_{i}.npy", np.clip(ct, -1, 0))
    model = train(RunOptions(tmp_path / "run", tmp_path / "npy", tiny_config, TrainConfig(stage="1", max_steps=2, epochs=1)))
    assert load_model(model).refiner is None
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["train", "train", "val"]
    with pytest.raises(InputError, match="only supports --stage 1"):
        train(RunOptions(tmp_path / "run2", tmp_path / "npy", tiny_config, TrainConfig(max_steps=2, epochs=1)))
    with pytest.raises(InputError, match="needs studies with a lesions map"):
        train(RunOptions(tmp_path / "run3", tmp_path / "npy", tiny_config, TrainConfig(stage="1", lesion_fraction=0.5)))


def test_evaluation_matches_a_hand_computation() -> None:
    """pred = reference + 1 SUV except a lesion 3 SUV too low; SUV MAE in the body, lesion
    SUVmax error and the paper-scale MAE (32767 · mean |Δ| / SUVmax) by hand."""
    intensity = IntensityConfig(pet_suv_max=20.0)
    reference = np.zeros((6, 32, 32))
    reference[:, 8:24, 8:24] = 2.0
    lesions = np.zeros(reference.shape, np.uint8)
    lesions[2:4, 12:15, 12:15] = 1
    reference[lesions == 1] = 9.0
    pred = reference + 1.0
    pred[lesions == 1] = 6.0
    body = np.zeros(reference.shape, bool)
    body[:, 8:24, 8:24] = True
    scores = score_volume("hand", pred, reference, body, intensity, lesions)
    expected_mae = np.abs(pred - reference)[body].mean()
    assert scores.suv.mae_body == pytest.approx(expected_mae)
    assert scores.suv.lesion_suvmax_error == pytest.approx(3.0)
    assert scores.suv.lesion_suvmean_error == pytest.approx(3.0)  # every lesion voxel 3 SUV low
    assert scores.suv.lesion_suvmax_bias == pytest.approx(-3.0)
    # [0, 1] paper scale = SUV / 20 here; per-slice means of equal-sized slices = global mean
    assert scores.paper.mae == pytest.approx(32767.0 * np.abs(pred - reference).mean() / 20.0)
    pooled = summarize([scores, scores])
    assert pooled["mae"] == pytest.approx(scores.paper.mae)
    assert pooled["n_lesions"] == 2

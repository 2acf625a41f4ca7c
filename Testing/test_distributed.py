"""Training over several processes: torch.distributed with the gloo backend on the CPU, tiny networks.

Two ranks with a global batch of 4 (2 each) against one process with batch 4, on the same
data order: gradients after one step agree to float round-off (DDP averages the ranks'
batch-mean gradients, which is the global batch's mean gradient) and validation scores
computed by the two ranks (each scoring every other study) are exactly those of one
process on the same weights. Whole runs through ``torchrun`` (``regc2p train --processes
2``): the logged losses agree with a one-process run to 1e-4 and the networks compute
the same functions to ``OUTPUT_TOLERANCE``; only rank 0 writes into the run folder (every
file write of each rank is recorded by an audit hook); a killed rank ends the job with a
non-zero status and a readable checkpoint, and the run continues from it with two
processes (bit-identical to an uninterrupted two-process run) or with one.

Why whole runs are compared loosely, through outputs: GAN training with Adam amplifies
round-off. Here, scaling the initial weights by 1 + 1e-7 (about one float32 rounding)
moves G's output after 4 steps by 2.5e-5, and by 1e-6 already by 1.2e-2, while training
rank 0's half of each batch without averaging gradients moves it by 0.25. Weights
themselves are not compared at all: a convolution bias followed by InstanceNorm has no
effect (the norm subtracts it again), so its exact gradient is zero and its computed one
is round-off, which Adam turns into a full step of ``lr``.
"""

from __future__ import annotations

import functools
import json
import locale
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from RegC2PLib.cli import main
from RegC2PLib.config import ModelConfig
from RegC2PLib.data.phantom import PhantomConfig, write_dataset
from RegC2PLib.errors import InputError
from RegC2PLib.networks import Discriminator, Generator, Refiner, RegistrationNet
from RegC2PLib.training.checkpoint import load_checkpoint
from RegC2PLib.training.config import TrainConfig
from RegC2PLib.training.data_access import GridVolume, prepare_data
from RegC2PLib.training.distributed import SINGLE, Distributed, from_environment
from RegC2PLib.training.loop import MetricsLog, StopRequest, run_stage
from RegC2PLib.training.runner import RunOptions, open_run, train
from RegC2PLib.training.sharding import RankShard
from RegC2PLib.training.sources import DataSource
from RegC2PLib.training.tasks import GanTask, RefinerTask
from RegC2PLib.training.validation import make_validator

CPU = torch.device("cpu")
# Largest difference allowed between the outputs (on the networks' [-1, 1] scale) of networks
# trained the same way by two processes and by one (or compiled and not): 4 steps move G's
# output by about 0.65; 2 processes differed by 6e-4, a missing gradient average gives 0.25.
OUTPUT_TOLERANCE = 1e-2
DEADLINE_S = 300.0
STAGES = ("stage1", "stage2")

# Recorded by every rank of a torchrun job: its process id, then every file it opens for
# writing, creates, renames or removes (Python's audit events), written out at exit.
AUDIT_HOOK = """
import atexit, os, sys
if os.environ.get("AUDIT_DIR") and "RANK" in os.environ:
    _rank, _events = os.environ["RANK"], []
    with open(os.path.join(os.environ["AUDIT_DIR"], "pid" + _rank), "w") as f:
        f.write(str(os.getpid()))
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND
    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            if (mode and any(c in mode for c in "wax+")) or (flags and flags & _WRITE):
                _events.append(str(path))
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "os.truncate"):
            _events.append(str(args[0]))
    sys.addaudithook(_hook)
    def _dump():
        with open(os.path.join(os.environ["AUDIT_DIR"], "writes" + _rank), "w") as f:
            f.write("\\n".join(_events))
    atexit.register(_dump)
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantoms") / "data"
    write_dataset(root, 5, PhantomConfig(shape=(24, 64, 64)), seed=7)
    return root


# --------------------------------------------------------------------------- pieces


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_the_ranks_batches_make_up_each_global_batch(world_size: int) -> None:
    order = torch.randperm(48, generator=torch.Generator().manual_seed(3)).tolist()
    global_batch = 8
    shards = [list(RankShard(order, rank, world_size)) for rank in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == sorted(order)  # every sample once
    local = global_batch // world_size
    for step in range(len(order) // global_batch):
        together = [i for shard in shards for i in shard[step * local : (step + 1) * local]]
        assert sorted(together) == sorted(order[step * global_batch : (step + 1) * global_batch])
    with pytest.raises(ValueError, match="do not split evenly"):
        RankShard(order[:7], 0, 2)


@pytest.mark.slow
def test_out_of_memory_names_the_largest_batch_that_fits(
    dataset: Path, tmp_path: Path, tiny_config: ModelConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: a device that holds a step of at most 3 slices. The step of 8 fails,
    the bisection takes real steps of 4 (fails), 2 and 3 (fit) and names 3."""
    real_step = GanTask.train_step
    tried: list[int] = []

    def limited(self: GanTask, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        tried.append(len(batch["ct"]))
        if len(batch["ct"]) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self, batch)

    monkeypatch.setattr(GanTask, "train_step", limited)
    options = RunOptions(tmp_path / "run", dataset, tiny_config, TrainConfig(stage="1", batch_size=8, max_steps=2, epochs=1))
    with pytest.raises(InputError) as failure:
        train(options)
    assert str(failure.value) == (
        "out of memory on cpu in a stage1 step of 8 slices; the largest that fits is 3: "
        "start a new run folder with --batch-size 3"
    )
    assert tried == [8, 4, 2, 3]
    assert not (tmp_path / "run" / "checkpoints" / "stage1_last.pt").exists()


def test_restarted_workers_continue_the_run_they_started(
    dataset: Path, tmp_path: Path, tiny_config: ModelConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchrun --max-restarts runs the same command again: a new-run command then continues
    the run it started, and only that one."""
    cfg = TrainConfig(stage="1", max_steps=2)
    options = RunOptions(tmp_path / "run", dataset, tiny_config, cfg, command="first")
    open_run(options)
    with pytest.raises(InputError, match="already exists"):
        open_run(options)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert open_run(options) == (tiny_config, cfg, (DataSource(dataset.resolve()),))
    assert [r["command"] for r in json.loads((tmp_path / "run" / "run.json").read_text())["resumes"]] == ["first"]
    with pytest.raises(InputError, match="already exists"):
        open_run(RunOptions(tmp_path / "run", dataset, tiny_config, cfg.replace(lr=2e-4)))


class _SlowItems(Dataset):
    """A dataset whose every item takes ``delay`` seconds to read (a slow disk)."""

    def __init__(self, dataset: Dataset, delay: float) -> None:
        self.dataset, self.delay = dataset, delay

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> object:
        time.sleep(self.delay)
        return self.dataset[index]


def test_each_step_records_how_long_it_waited_for_its_batch(dataset: Path, tmp_path: Path, tiny_config: ModelConfig) -> None:
    data = prepare_data([DataSource(dataset)], tmp_path, tiny_config, seed=0, need_windows=False)
    settings = TrainConfig(epochs=1, batch_size=2, max_steps=3, checkpoint_every=100)
    messages: list[str] = []
    log = MetricsLog(tmp_path / "log.jsonl")
    task = GanTask(tiny_config, settings, CPU)
    slow = _SlowItems(data.slices, 0.1)
    every = data.slice_sampler
    run_stage(task, slow, every, settings, tmp_path, log, None, StopRequest(), lambda fraction, message: messages.append(message))
    records = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert all(r["data_s"] >= 0.2 for r in records)  # two items of 0.1 s each
    shown = int(re.search(r"(\d+)% waiting for data", messages[-1]).group(1))
    assert shown == pytest.approx(100 * sum(r["data_s"] for r in records) / records[-1]["seconds"], abs=2)

    fast = tmp_path / "fast"
    fast.mkdir()
    log = MetricsLog(fast / "log.jsonl")
    run_stage(GanTask(tiny_config, settings, CPU), data.slices, every, settings, fast, log, None, StopRequest())
    assert all(json.loads(line)["data_s"] < 0.1 for line in log.path.read_text().splitlines())


@pytest.fixture
def utf8_locale() -> Iterator[None]:
    """A UTF-8 C locale for the test: GDCM's DICOM writer (which other tests in this process
    run) leaves the plain C locale behind, whose ASCII default encoding torch's compiler
    cannot read its own template files with."""
    ctype = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
    yield
    locale.setlocale(locale.LC_CTYPE, ctype)


@pytest.mark.slow
@pytest.mark.usefixtures("utf8_locale")
def test_compiled_channels_last_networks_train_like_plain_ones(tiny_config: ModelConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--compile --channels-last``: torch.compile, here with its ``aot_eager`` backend (graph
    capture and a compiled backward, without the C++ code generation that takes minutes on a
    CPU), and channels-last weights give the steps of the plain networks."""
    import torch._dynamo

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    generator = torch.Generator().manual_seed(1)
    slices = {key: torch.rand(2, 1, 64, 64, generator=generator) * 2 - 1 for key in ("ct", "pet")}
    windows = {key: torch.rand(1, tiny_config.refiner.window, 64, 64, generator=generator) * 2 - 1 for key in ("ct", "pet")}
    results = {}
    for fast in (False, True):
        cfg = TrainConfig(compile_networks=fast, channels_last=fast)
        torch.manual_seed(0)
        stage1 = GanTask(tiny_config, cfg, CPU)
        losses = [stage1.train_step(slices) for _ in range(2)]
        stage2 = RefinerTask(tiny_config, cfg, CPU, stage1.generator, stage1.registration)
        losses.append(stage2.train_step(windows))
        with torch.no_grad():
            results[fast] = (losses, stage1.generator(slices["ct"]), stage2.refiner(windows["ct"][:, None]))
        weight = stage2.refiner.out.weight if fast else None
    assert weight is not None and weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert stage1.generator[1].weight.is_contiguous(memory_format=torch.channels_last)
    # G+R, D trained, D as G's adversary, F, G and R in stage 2: each captured as a graph
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 6
    (plain_losses, *plain), (fast_losses, *compiled) = results[False], results[True]
    for a, b in zip(plain_losses, fast_losses):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6)
    for a, b in zip(plain, compiled):
        assert (a - b).abs().max() <= OUTPUT_TOLERANCE


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG exists on Linux only")
def test_a_worker_ends_when_its_launcher_is_killed() -> None:
    """torchrun starts each worker in a session of its own, out of reach of signals to the
    launcher's group: should torchrun's agent be killed outright, the workers end with it."""
    worker = (
        "import os, time; from RegC2PLib.training.distributed import end_with_parent; end_with_parent(); "
        "print(os.getpid(), flush=True); time.sleep(300)"
    )
    agent = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {worker!r}], start_new_session=True).wait()"
    launcher = subprocess.Popen([sys.executable, "-c", agent], stdout=subprocess.PIPE, text=True)
    child = int(launcher.stdout.readline())  # type: ignore[union-attr]
    try:
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 30
        while _running(child):
            assert time.monotonic() < deadline, "the worker outlived its killed launcher"
            time.sleep(0.05)
    finally:
        if _running(child):
            os.kill(child, signal.SIGKILL)


# --------------------------------------------------------------------------- two ranks in processes of their own


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs(dataset: Path, tiny_config: ModelConfig, folder: Path) -> dict[str, object]:
    """4 training slices, 4 refiner windows and 3 validation "studies" (thirds of the validation study)."""
    data = prepare_data([DataSource(dataset)], folder, tiny_config, seed=0, need_windows=True)
    assert data.windows is not None
    volume = data.val_volumes[0]
    third = len(volume.ct) // 3
    parts = [slice(i * third, (i + 1) * third) for i in range(3)]  # an odd number: rank 0 scores two, rank 1 one

    def batch(items: Dataset, indices: tuple[int, ...]) -> dict[str, torch.Tensor]:
        return {key: torch.stack([items[i][key] for i in indices]) for key in ("ct", "pet")}

    return {
        "slices": batch(data.slices, (3, 9, 20, 31)),
        "windows": batch(data.windows, (0, 5, 17, 30)),
        "volumes": [
            GridVolume(f"part{i}", volume.ct[part], volume.reference[part], volume.body[part], volume.lesions[part])
            for i, part in enumerate(parts)
        ],
    }


def _one_step_and_validation(dist: Distributed, config: ModelConfig, inputs: dict) -> dict[str, object]:
    """Rank ``dist.rank``'s gradients after one stage-1 and one stage-2 step on its share of
    the batches (positions rank, rank + W, ... as RankShard gives them), and the validation
    scores of seeded networks (with a refiner that is not the identity)."""
    torch.set_num_threads(1)
    torch.manual_seed(5)
    judged = RefinerTask(config, TrainConfig(mode="pix2pix"), CPU, Generator(config.generator), None, dist)
    torch.nn.init.normal_(judged.refiner.out.weight, 0.0, 0.05)
    scores = {refine: make_validator(inputs["volumes"], config, CPU, refine, dist)(judged) for refine in (False, True)}

    share = {name: {k: v[dist.rank :: dist.world_size] for k, v in inputs[name].items()} for name in ("slices", "windows")}
    torch.manual_seed(0)
    stage1 = GanTask(config, TrainConfig(), CPU, dist)
    losses = stage1.train_step(share["slices"])
    stage2 = RefinerTask(config, TrainConfig(), CPU, stage1.generator, stage1.registration, dist)
    losses.update(stage2.train_step(share["windows"]))
    grads = {
        f"{name}.{key}": p.grad.clone()
        for task in (stage1, stage2)
        for name, module in task.modules.items()
        for key, p in module.named_parameters()
    }
    return {"grads": grads, "losses": dist.mean_and_any(losses, False)[0], "scores": scores}


def _saved_volume(volume: GridVolume) -> dict[str, object]:
    """A validation volume as tensors and a name, which ``torch.load(weights_only=True)`` reads back."""
    arrays = {key: getattr(volume, key) for key in ("ct", "reference", "body", "lesions")}
    return {"name": volume.name, **{key: torch.tensor(a) if a is not None else None for key, a in arrays.items()}}


def _loaded_volume(saved: dict) -> GridVolume:
    arrays = {key: saved[key].numpy() if saved[key] is not None else None for key in ("ct", "reference", "body", "lesions")}
    return GridVolume(saved["name"], **arrays)


def _rank_main(rank: int, port: int, folder: str, config: ModelConfig) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    dist = from_environment()
    try:
        dist.device(CPU)
        inputs = torch.load(Path(folder) / "inputs.pt", weights_only=True)
        inputs["volumes"] = [_loaded_volume(v) for v in inputs["volumes"]]
        torch.save(_one_step_and_validation(dist, config, inputs), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.close()


@pytest.mark.slow
def test_two_ranks_compute_the_gradients_and_validation_of_one_process(
    dataset: Path, tmp_path: Path, tiny_config: ModelConfig
) -> None:
    inputs = _inputs(dataset, tiny_config, tmp_path)
    torch.save({**inputs, "volumes": [_saved_volume(v) for v in inputs["volumes"]]}, tmp_path / "inputs.pt")
    context = torch.multiprocessing.start_processes(
        _rank_main, args=(_free_port(), str(tmp_path), tiny_config), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + DEADLINE_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two ranks did not finish")
    threads = torch.get_num_threads()
    try:
        single = _one_step_and_validation(SINGLE, tiny_config, inputs)
    finally:
        torch.set_num_threads(threads)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for rank in ranks:
        assert rank["grads"].keys() == single["grads"].keys()
        for key, grad in single["grads"].items():
            # D, R and F gradients and G's all agree to float round-off of the summation order.
            torch.testing.assert_close(rank["grads"][key], grad, rtol=1e-4, atol=1e-6, msg=key)
        assert rank["losses"] == pytest.approx(single["losses"], rel=1e-6)
        assert rank["scores"] == single["scores"]  # exactly: the same per-study scores, summarised in order
    assert single["scores"][False] != single["scores"][True]


# --------------------------------------------------------------------------- whole runs through torchrun


def _args(data: Path, out: Path, networks: Path, *extra: str) -> list[str]:
    """``regc2p train`` arguments: tiny networks, both stages, 4 steps each, global batches of 4 slices and 2 windows."""
    return [
        "train", "--data", str(data), "--out", str(out), "--init-from", str(networks), "--epochs", "1",
        "--refiner-epochs", "1", "--max-steps", "4", "--checkpoint-every", "2", "--batch-size", "4",
        "--refiner-batch-size", "2", "--progress", "none", *extra,
    ]  # fmt: skip


def _torchrun(arguments: list[str], audit: Path) -> subprocess.Popen:
    """``regc2p ARGUMENTS --processes 2`` with each rank's writes recorded in ``audit``."""
    audit.mkdir(parents=True, exist_ok=True)
    (audit / "sitecustomize.py").write_text(AUDIT_HOOK)
    path = os.pathsep.join(filter(None, [str(audit), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "AUDIT_DIR": str(audit)}
    command = [sys.executable, "-m", "RegC2PLib", *arguments, "--processes", "2"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=DEADLINE_S)
    return process.returncode, err


def _networks(run: Path, config: ModelConfig) -> dict[str, torch.nn.Module]:
    """The last weights of every network of both stages."""
    makers = {"generator": Generator, "registration": RegistrationNet, "discriminator": Discriminator, "refiner": Refiner}
    sizes = {"generator": config.generator, "registration": config.registration}
    sizes.update(discriminator=config.discriminator, refiner=config.refiner)
    networks = {}
    for stage in STAGES:
        for name, weights in load_checkpoint(run / "checkpoints" / f"{stage}_last.pt")["modules"].items():
            networks[name] = makers[name](sizes[name]).eval()
            networks[name].load_state_dict(weights)
    return networks


@torch.no_grad()
def _outputs(run: Path, config: ModelConfig, dataset_run: Path) -> dict[str, torch.Tensor]:
    """G, R, D and F applied to 8 cached slices of a study (F to the first 4 of G's outputs)."""
    folder = sorted((dataset_run / "cache").glob("*/ct.npy"))[0].parent
    ct = torch.from_numpy(np.load(folder / "ct.npy")[8:16, None].astype(np.float32))
    pet = torch.from_numpy(np.load(folder / "pet.npy")[8:16, None].astype(np.float32))
    nets = _networks(run, config)
    fake = nets["generator"](ct)
    window = fake[: config.refiner.window, 0][None, None]
    return {"G": fake, "R": nets["registration"](fake, pet), "D": nets["discriminator"](pet), "F": nets["refiner"](window)}


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_functions(a: Path, b: Path, config: ModelConfig) -> None:
    first, second = _outputs(a, config, a), _outputs(b, config, a)
    for key in first:
        assert (first[key] - second[key]).abs().max() <= OUTPUT_TOLERANCE, key


@pytest.fixture(scope="module")
def runs(dataset: Path, tiny_model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same run trained by one process (in this one) and by two through torchrun."""
    root = tmp_path_factory.mktemp("runs")
    assert main(_args(dataset, root / "one", tiny_model_file)) == 0
    status, err = _finish(_torchrun(_args(dataset, root / "two", tiny_model_file), root / "audit"))
    assert status == 0, err
    return {"one": root / "one", "two": root / "two", "audit": root / "audit", "root": root}


@pytest.mark.slow
def test_two_processes_train_the_networks_of_one(runs: dict[str, Path], tiny_config: ModelConfig) -> None:
    _assert_same_functions(runs["one"], runs["two"], tiny_config)
    one, two = _records(runs["one"]), _records(runs["two"])
    assert [(r["stage"], r["kind"], r["step"]) for r in one] == [(r["stage"], r["kind"], r["step"]) for r in two]
    assert [r["step"] for r in two if r["kind"] == "train"] == [1, 2, 3, 4] * 2
    assert json.loads((runs["two"] / "run.json").read_text())["processes"] == 2
    # The logged losses and validation figures are the global batch's, as one process logs them.
    # The two runs' weights differ in the last bits from the first gradient average on (another
    # summation order), so figures averaged over few voxels, such as the lesion SUV errors, move
    # a little (measured: 3e-4 relative); a missing gradient average moves them by far more.
    for a, b in zip(one, two):
        for key, value in a.items():
            if key not in ("seconds", "data_s") and isinstance(value, float):
                assert b[key] == pytest.approx(value, rel=1e-3, abs=1e-6), (a["stage"], a["step"], key)


@pytest.mark.slow
def test_only_rank_0_writes(runs: dict[str, Path], dataset: Path) -> None:
    def writes(rank: int) -> list[str]:
        return (runs["audit"] / f"writes{rank}").read_text().split("\n")

    run, data = str(runs["two"]), str(dataset)
    assert not [path for path in writes(1) if path.startswith((run, data))]
    ours = [path for path in writes(0) if path.startswith(run)]
    for written in ("metrics.jsonl", "run.json", "model.safetensors", "stage1_last.pt", "stage2_best.pt", "curves.png"):
        assert any(written in path for path in ours), written
    assert not [path for path in writes(0) if path.startswith(data)]


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_and_the_run_continues_on_two_or_one_processes(
    runs: dict[str, Path], dataset: Path, tiny_model_file: Path, tiny_config: ModelConfig
) -> None:
    killed, audit = runs["root"] / "killed", runs["root"] / "audit-killed"
    process = _torchrun(_args(dataset, killed, tiny_model_file), audit)
    deadline = time.monotonic() + DEADLINE_S
    while not (killed / "checkpoints" / "stage1_last.pt").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.kill(int((audit / "pid1").read_text()), signal.SIGKILL)
    status, err = _finish(process)
    assert status not in (0, 130), err
    assert not (killed / "model.safetensors").exists()
    saved = load_checkpoint(killed / "checkpoints" / "stage1_last.pt")
    assert saved["counters"]["step"] in (2, 4) and len(saved["rng"]) == 2  # each rank's RNG state
    Generator(tiny_config.generator).load_state_dict(saved["modules"]["generator"])

    on_one = runs["root"] / "killed-one"
    shutil.copytree(killed, on_one)
    status, err = _finish(_torchrun(["train", "--out", str(killed), "--resume", "--progress", "none"], audit))
    assert status == 0, err
    for stage in STAGES:  # two processes again: exactly the uninterrupted two-process run
        for name, weights in load_checkpoint(runs["two"] / "checkpoints" / f"{stage}_last.pt")["modules"].items():
            resumed = load_checkpoint(killed / "checkpoints" / f"{stage}_last.pt")["modules"][name]
            assert all(torch.equal(weights[key], resumed[key]) for key in weights), (stage, name)

    assert main(["train", "--out", str(on_one), "--resume", "--progress", "none"]) == 0
    _assert_same_functions(runs["two"], on_one, tiny_config)
    for run, processes in ((killed, 2), (on_one, 1)):
        assert [r["processes"] for r in json.loads((run / "run.json").read_text())["resumes"]] == [processes]
        assert [(r["stage"], r["step"]) for r in _records(run) if r["kind"] == "train"] == [
            (stage, step) for stage in STAGES for step in (1, 2, 3, 4)
        ]


@pytest.mark.slow
def test_a_global_batch_that_does_not_split_is_refused_in_one_line(dataset: Path, tiny_model_file: Path, tmp_path: Path) -> None:
    arguments = _args(dataset, tmp_path / "run", tiny_model_file, "--stage", "1", "--batch-size", "3")
    status, err = _finish(_torchrun(arguments, tmp_path / "audit"))
    assert status != 0
    errors = [line for line in err.splitlines() if line.startswith("regc2p: error:")]
    assert errors == [
        "regc2p: error: --batch-size 3 does not split evenly over 2 processes: it is the batch of all processes "
        "together; use a multiple of 2"
    ]

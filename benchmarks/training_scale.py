"""Training at scale: throughput of several processes and of one GPU, and what it means per epoch.

Sub-commands (each prints a Markdown table and writes ``benchmarks/results/training_scale_<name>.json``):

* ``processes`` — whole ``regc2p train`` runs on generated phantoms with 1 or more processes
  (``--processes``: torchrun; gloo on the CPU, NCCL on GPUs): slices/s of stage 1, windows/s
  (and slices/s) of stage 2, read from each run's ``metrics.jsonl`` after warm-up steps, and
  the share of the time the steps waited for data. ``--runs 1x2 2x1 1x1`` = processes x
  threads each (CPU)::

      .venv/bin/python benchmarks/training_scale.py processes --device cpu --preset small --image-size 128

* ``steps`` — the training step alone, in this process, on synthetic batches: per stage, batch
  size, precision (bfloat16 autocast or float32), ``torch.compile`` and channels-last; slices/s,
  the FLOP of a step (``torch.utils.flop_counter``), achieved TFLOP/s, the fraction of the
  device's bfloat16 peak, and epochs per day for 300,000 slices on 1 and 8 GPUs.

* ``gpu`` — the prepared GPU session, in priority order within ``--budget-s`` (results are
  written after every measurement, so a time limit still leaves them): ``steps`` for the
  ``paper`` preset at 256² (batch 1/4/16, both stages, bfloat16 and float32), then
  ``torch.compile`` and channels-last at batch 16, then data loading (``processes`` with 1
  process and 0/4/8 workers), then 1 against every GPU when there are several::

      python benchmarks/training_scale.py gpu --out $OUT

``--device cpu --preset small --image-size 64 --quick`` runs any of them in seconds on a CPU
(a check of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from RegC2PLib.config import ModelConfig, preset
from RegC2PLib.data.phantom import PhantomConfig, write_dataset
from RegC2PLib.inference.device import resolve_device
from RegC2PLib.networks import Generator, RegistrationNet
from RegC2PLib.training.config import TrainConfig
from RegC2PLib.training.tasks import GanTask, RefinerTask, Task

ROOT = Path(__file__).resolve().parents[1]
EPOCH_SLICES = 300_000  # the paper's cohort: about 1,000 studies
DAY_S = 86_400.0
ASSUMED_SCALING = 0.9  # per-GPU efficiency of 8 GPUs when it could not be measured here
# Dense bfloat16 tensor-core peaks (TFLOP/s, vendors' data sheets), by a part of the device name.
BF16_PEAK_TFLOPS = {
    "H200": 989.4,
    "H100 SXM": 989.4,
    "H100 80GB HBM3": 989.4,
    "H100 PCIe": 756.0,
    "H100": 756.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "RTX 4090": 165.2,
    "RTX 3090": 71.0,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def bf16_peak(device: torch.device, override: float | None) -> float | None:
    """The device's dense bfloat16 peak in TFLOP/s: ``override``, else from the table by name."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


class Results:
    """Measurements written to ``out/training_scale_<name>.json`` after every addition."""

    def __init__(self, out: Path, name: str, settings: dict[str, Any]) -> None:
        self.path = out / f"training_scale_{name}.json"
        self.data: dict[str, Any] = {"machine": machine(), "settings": settings, "rows": []}
        out.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict[str, Any]) -> None:
        self.data["rows"].append(row)
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1) + "\n")


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class StepCase:
    stage: str  # stage1 or stage2
    batch: int  # slices (stage 1) or windows (stage 2) per step
    amp: bool  # bfloat16 autocast (CUDA)
    compile: bool = False
    channels_last: bool = False


def make_task(model: ModelConfig, case: StepCase, device: torch.device) -> Task:
    cfg = TrainConfig(amp=case.amp, compile_networks=case.compile, channels_last=case.channels_last)
    torch.manual_seed(0)
    if case.stage == "stage1":
        return GanTask(model, cfg, device)
    return RefinerTask(model, cfg, device, Generator(model.generator), RegistrationNet(model.registration))


def synthetic_batch(model: ModelConfig, case: StepCase, pin: bool) -> dict[str, torch.Tensor]:
    """Random CT and PET in [-1, 1]: (B, 1, M, M) slices or (B, s, M, M) windows, in pinned memory on CUDA."""
    depth = 1 if case.stage == "stage1" else model.refiner.window
    shape = (case.batch, depth, model.image_size, model.image_size)
    batch = {key: torch.rand(shape) * 2 - 1 for key in ("ct", "pet")}
    return {key: value.pin_memory() for key, value in batch.items()} if pin else batch


def slices_per_sample(model: ModelConfig, stage: str) -> int:
    return 1 if stage == "stage1" else model.refiner.window


def step_flops(model: ModelConfig, case: StepCase, device: torch.device) -> float:
    """FLOP of one training step (forward and backward of every network), counted on an eager task."""
    task = make_task(model, StepCase(case.stage, case.batch, case.amp), device)
    batch = synthetic_batch(model, case, device.type == "cuda")
    with FlopCounterMode(display=False) as counter:
        task.train_step(batch)
    return float(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_step(model: ModelConfig, case: StepCase, device: torch.device, warmup: int, steps: int) -> dict[str, Any]:
    """Samples/s of ``steps`` timed steps after ``warmup`` (the first one timed on its own: compilation)."""
    task = make_task(model, case, device)
    batch = synthetic_batch(model, case, device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    task.train_step(batch)
    _sync(device)
    first_s = time.perf_counter() - start
    for _ in range(warmup - 1):
        task.train_step(batch)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        task.train_step(batch)
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    row: dict[str, Any] = {"first_step_s": round(first_s, 2), "step_s": seconds, "samples_per_s": case.batch / seconds}
    row["slices_per_s"] = row["samples_per_s"] * slices_per_sample(model, case.stage)
    if device.type == "cuda":
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def run_steps(
    model: ModelConfig,
    cases: list[StepCase],
    device: torch.device,
    results: Results,
    warmup: int,
    steps: int,
    peak: float | None,
    deadline: float,
) -> None:
    flops: dict[tuple[str, int], float] = {}
    for case in cases:
        if time.monotonic() > deadline:
            log(f"time budget spent; skipped {case}")
            continue
        log(f"steps: {case}")
        row: dict[str, Any] = {"kind": "steps", "image_size": model.image_size, "pixel_mm": model.pixel_mm, **asdict(case)}
        try:
            key = (case.stage, case.batch)
            if key not in flops:
                flops[key] = step_flops(model, case, device)
            row.update(measure_step(model, case, device, warmup + (3 if case.compile else 0), steps))
        except torch.cuda.OutOfMemoryError:
            row["error"] = "out of memory"
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if "step_s" in row:
            row["gflop_per_slice"] = flops[key] / (case.batch * slices_per_sample(model, case.stage)) / 1e9
            row["tflops"] = flops[key] / row["step_s"] / 1e12
            row["fraction_of_bf16_peak"] = row["tflops"] / peak if peak else None
        results.add(row)


def epochs_per_day(slices_per_s: float, gpus: int, efficiency: float) -> float:
    """Epochs of :data:`EPOCH_SLICES` slices per day at ``slices_per_s`` on one GPU, on ``gpus`` of them."""
    return DAY_S * slices_per_s * gpus * (efficiency if gpus > 1 else 1.0) / EPOCH_SLICES


def extrapolate(results: Results, efficiency: float | None) -> None:
    """Epochs per day on 1 and 8 GPUs from the fastest measured step of each stage."""
    measured = efficiency is not None
    efficiency = efficiency if efficiency is not None else ASSUMED_SCALING
    for stage in ("stage1", "stage2"):
        rows = [r for r in results.data["rows"] if r["kind"] == "steps" and r["stage"] == stage and "slices_per_s" in r]
        if not rows:
            continue
        best = max(rows, key=lambda r: r["samples_per_s"])
        per_s = best["slices_per_s"] if stage == "stage1" else best["samples_per_s"]  # stage 2: one window per slice
        results.data.setdefault("epochs_per_day", {})[stage] = {
            "from": {k: best[k] for k in ("batch", "amp", "compile", "channels_last")},
            "samples_per_s": per_s,
            "one_gpu": epochs_per_day(per_s, 1, efficiency),
            "eight_gpus": epochs_per_day(per_s, 8, efficiency),
            "scaling_efficiency": efficiency,
            "efficiency_measured": measured,
        }
    results.save()


# --------------------------------------------------------------------------- whole runs


def phantoms(work: Path, size: int, cases: int, depth: int) -> Path:
    root = work / f"phantoms-{size}-{cases}x{depth}"
    if not (root / "phantom_dataset.json").exists():
        log(f"writing {cases} phantoms of {depth}x{size}x{size}")
        write_dataset(root, cases, PhantomConfig(shape=(depth, size, size)), seed=0)
    return root


def parse_run(run: Path, batch: dict[str, int], warmup: int, window: int) -> dict[str, Any]:
    """Rates of each stage from ``metrics.jsonl``: the steps after the first ``warmup`` (at
    least 1) within the same epoch, so that no validation falls between them."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rates: dict[str, Any] = {}
    warmup = max(warmup, 1)
    for stage in ("stage1", "stage2"):
        train = [r for r in records if r["stage"] == stage and r["kind"] == "train"]
        if len(train) <= warmup + 1:
            continue
        timed = [r for r in train[warmup:] if r["epoch"] == train[warmup - 1]["epoch"]]
        seconds = timed[-1]["seconds"] - train[warmup - 1]["seconds"]
        durations = [b["seconds"] - a["seconds"] for a, b in zip([train[warmup - 1], *timed], timed)]
        slices = batch[stage] * (1 if stage == "stage1" else window)
        rates[stage] = {
            "samples_per_s": len(timed) * batch[stage] / seconds,
            "slices_per_s": len(timed) * slices / seconds,
            # the median step (logged to 0.01 s): robust to other jobs' bursts on a shared machine
            "median_slices_per_s": slices / max(statistics.median(durations), 0.01),
            "waiting_for_data": sum(r["data_s"] for r in timed) / seconds,
            "timed_steps": len(timed),
        }
    return rates


def train_run(data: Path, out: Path, processes: int, threads: int, args: argparse.Namespace, workers: int = 0) -> dict[str, Any]:
    """One ``regc2p train`` run of ``args.run_steps`` steps per stage after ``args.warmup``; its rates.
    The batches are global: per process times ``processes`` with ``args.scale_batch``."""
    scale = processes if args.scale_batch else 1
    batch, refiner_batch = args.batch * scale, args.refiner_batch * scale
    command = [
        sys.executable, "-m", "RegC2PLib", "train", "--data", str(data), "--out", str(out), "--preset", args.preset,
        "--image-size", str(args.image_size), "--device", args.device, "--epochs", "1000", "--refiner-epochs", "1000",
        "--max-steps", str(args.warmup + args.run_steps), "--batch-size", str(batch), "--refiner-batch-size", str(refiner_batch),
        "--checkpoint-every", "100000", "--workers", str(workers), "--progress", "none",
    ]  # fmt: skip
    if processes > 1:
        command += ["--processes", str(processes)]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    window = preset(args.preset).refiner.window
    rates = parse_run(out, {"stage1": batch, "stage2": refiner_batch}, args.warmup, window)
    return {"batch": batch, "refiner_batch": refiner_batch, "wall_s": round(time.perf_counter() - started, 1), **rates}


def run_processes(
    runs: list[tuple[int, int]], workers: list[int], args: argparse.Namespace, results: Results, deadline: float
) -> None:
    if not runs or not workers or time.monotonic() > deadline:
        return
    most = max(p for p, _ in runs) if args.scale_batch else 1
    needed = (args.warmup + args.run_steps) * args.batch * most  # slices of one epoch, so no validation falls inside
    cases = max(args.cases, math.ceil(needed / (0.6 * args.depth)) + 2)  # about 60-80 % of the studies train
    data = phantoms(args.work, args.image_size, cases, args.depth)
    for _, (processes, threads) in itertools.product(range(args.repeat), runs):  # repeats interleaved
        for count in workers:
            if time.monotonic() > deadline:
                log(f"time budget spent; skipped {processes} processes, {count} workers")
                continue
            log(f"run: {processes} process(es) x {threads or 'default'} thread(s), {count} workers")
            out = Path(tempfile.mkdtemp(prefix="run-", dir=args.work))
            row = {"kind": "processes", "processes": processes, "threads": threads, "workers": count}
            row.update(train_run(data, out, processes, threads, args, count))
            results.add(row)


def parse_runs(specs: list[str], device: str) -> list[tuple[int, int]]:
    """``PxT`` (processes x threads each) or ``P`` (on the CPU: the cores shared evenly)."""
    cores = os.cpu_count() or 1
    runs = []
    for spec in specs:
        processes, _, threads = spec.partition("x")
        p = int(processes)
        runs.append((p, int(threads) if threads else (max(1, cores // p) if device == "cpu" else 0)))
    return runs


# --------------------------------------------------------------------------- reports


def markdown(results: Results) -> str:
    lines = []
    steps = [r for r in results.data["rows"] if r["kind"] == "steps"]
    if steps:
        lines += [
            "| stage | batch | precision | compile | channels-last | samples/s | slices/s | GFLOP/slice | TFLOP/s "
            "| of bf16 peak | first step s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in steps:
            if "error" in r:
                lines.append(f"| {r['stage']} | {r['batch']} | {'bf16' if r['amp'] else 'fp32'} | {r['compile']} | "
                             f"{r['channels_last']} | {r['error']} | | | | | |")  # fmt: skip
                continue
            fraction = f"{r['fraction_of_bf16_peak']:.1%}" if r.get("fraction_of_bf16_peak") else "n/a"
            lines.append(
                f"| {r['stage']} | {r['batch']} | {'bf16' if r['amp'] else 'fp32'} | {r['compile']} | {r['channels_last']} | "
                f"{r['samples_per_s']:.3g} | {r['slices_per_s']:.3g} | {r['gflop_per_slice']:.1f} | {r['tflops']:.3g} | "
                f"{fraction} | {r['first_step_s']} |"
            )
    runs = [r for r in results.data["rows"] if r["kind"] == "processes"]
    if runs:
        lines += [
            "",
            "| processes | threads each | workers | batch (stage 1/2) | stage 1 slices/s (median step) | waiting for data | "
            "stage 2 slices/s (median step) | waiting for data |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in runs:
            one, two = r.get("stage1", {}), r.get("stage2", {})
            lines.append(
                f"| {r['processes']} | {r['threads'] or 'default'} | {r['workers']} | {r['batch']}/{r['refiner_batch']} | "
                f"{one.get('slices_per_s', 0):.3g} ({one.get('median_slices_per_s', 0):.3g}) | "
                f"{one.get('waiting_for_data', 0):.0%} | "
                f"{two.get('slices_per_s', 0):.3g} ({two.get('median_slices_per_s', 0):.3g}) | "
                f"{two.get('waiting_for_data', 0):.0%} |"
            )
    for stage, e in results.data.get("epochs_per_day", {}).items():
        source = "measured" if e["efficiency_measured"] else "assumed"
        lines.append(
            f"\n{stage}: {e['samples_per_s']:.3g} samples/s on one device ({e['from']}) -> {e['one_gpu']:.2f} epochs of "
            f"{EPOCH_SLICES:,} slices per day on 1 GPU, {e['eight_gpus']:.1f} on 8 "
            f"({e['scaling_efficiency']:.0%} scaling, {source})"
        )
    return "\n".join(lines)


def scaling_efficiency(results: Results) -> float | None:
    """Per-GPU efficiency of the most processes against one, stage 1, from ``processes`` rows."""
    rows = [
        r for r in results.data["rows"] if r["kind"] == "processes" and r["workers"] == max_workers(results) and "stage1" in r
    ]
    one = [r for r in rows if r["processes"] == 1]
    many = [r for r in rows if r["processes"] > 1]
    if not one or not many:
        return None
    best = max(many, key=lambda r: r["processes"])
    return best["stage1"]["slices_per_s"] / (best["processes"] * one[0]["stage1"]["slices_per_s"])


def max_workers(results: Results) -> int:
    return max((r["workers"] for r in results.data["rows"] if r["kind"] == "processes"), default=0)


# --------------------------------------------------------------------------- sub-commands


def plain_cases(args: argparse.Namespace) -> list[StepCase]:
    """Every stage, batch size and precision, without compile or channels-last."""
    return [
        StepCase(stage, batch, amp)
        for amp in args.precisions
        for stage in ("stage1", "stage2")
        for batch in (args.batches if stage == "stage1" else args.refiner_batches)
    ]


def option_cases(args: argparse.Namespace) -> list[StepCase]:
    """Channels-last (first precision), then torch.compile (every precision), at the largest batches."""
    top = {"stage1": max(args.batches), "stage2": max(args.refiner_batches)}
    cases = [StepCase(stage, top[stage], args.precisions[0], channels_last=True) for stage in top] if args.channels_last else []
    if args.compile:
        cases += [StepCase(stage, top[stage], amp, compile=True) for amp in args.precisions for stage in top]
    return cases


def measure_cases(args: argparse.Namespace, results: Results, deadline: float, cases: list[StepCase]) -> None:
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        # bfloat16 autocast is for CUDA only (TrainConfig.amp): every case in float32, once
        cases = list(dict.fromkeys(dataclasses.replace(case, amp=False) for case in cases))
    model = preset(args.preset).with_changes(image_size=args.image_size)
    run_steps(model, cases, device, results, args.warmup, args.steps, bf16_peak(device, args.peak_tflops), deadline)
    extrapolate(results, scaling_efficiency(results))


def steps_command(args: argparse.Namespace, results: Results, deadline: float) -> None:
    measure_cases(args, results, deadline, plain_cases(args) + option_cases(args))


def gpu_command(args: argparse.Namespace, results: Results, deadline: float) -> None:
    """In priority order: plain steps, data loading with 0 and 4 workers, channels-last and
    compile, more workers, then all GPUs against one (weak scaling: the same batch per GPU)."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 1
    args.scale_batch = True
    first, more = sorted(args.workers)[:2], sorted(args.workers)[2:]
    measure_cases(args, results, deadline, plain_cases(args))
    run_processes([(1, 0)], first, args, results, deadline)
    measure_cases(args, results, deadline, option_cases(args))
    run_processes([(1, 0)], more, args, results, deadline)
    if gpus > 1:
        run_processes([(gpus, 0)], [max(args.workers)], args, results, deadline)
    extrapolate(results, scaling_efficiency(results))


def processes_command(args: argparse.Namespace, results: Results, deadline: float) -> None:
    run_processes(parse_runs(args.runs, args.device), args.workers, args, results, deadline)


COMMANDS: dict[str, Callable[[argparse.Namespace, Results, float], None]] = {
    "steps": steps_command,
    "gpu": gpu_command,
    "processes": processes_command,
}
DEFAULTS = {  # sub-command -> preset, image size, batches, refiner batches
    "steps": ("paper", 256, [1, 4, 16], [1, 2, 4]),
    "gpu": ("paper", 256, [1, 4, 16], [1, 2, 4]),
    "processes": ("small", 128, [4], [2]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--preset", help="network preset (default: paper for steps/gpu, small for processes)")
    parser.add_argument("--image-size", type=int, help="slice size M (default: 256 for steps/gpu, 128 for processes)")
    parser.add_argument("--batches", type=int, nargs="+", help="stage-1 slices per step to measure")
    parser.add_argument("--refiner-batches", type=int, nargs="+", help="stage-2 windows per step to measure")
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile cases")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false", help="skip the channels-last cases")
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of the step measurements")
    parser.add_argument("--run-steps", type=int, default=30, help="timed steps per stage of whole runs")
    parser.add_argument(
        "--scale-batch", action="store_true", help="whole runs: the batch per process (global = batch x processes)"
    )
    parser.add_argument("--runs", nargs="+", default=["1", "2"], help="processes: PxT = P processes x T threads each")
    parser.add_argument("--workers", type=int, nargs="+", help="data-loading workers (default: 0; gpu: 0 4 8)")
    parser.add_argument("--repeat", type=int, default=1, help="whole runs: run each configuration this often, interleaved")
    parser.add_argument("--cases", type=int, default=6, help="phantom studies for whole runs")
    parser.add_argument("--depth", type=int, default=48, help="slices per phantom study")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bfloat16 peak (default: from its name)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="stop starting measurements after this long")
    parser.add_argument("--work", type=Path, help="folder for phantoms and run folders (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="where the JSON goes")
    parser.add_argument("--quick", action="store_true", help="one batch size, 2 timed steps: checks the script")
    args = parser.parse_args(argv)
    preset_name, size, batches, refiner_batches = DEFAULTS[args.command]
    args.preset = args.preset or preset_name
    args.image_size = args.image_size or size
    args.batches = args.batches or ([2] if args.quick else batches)
    args.refiner_batches = args.refiner_batches or ([1] if args.quick else refiner_batches)
    args.batch, args.refiner_batch = max(args.batches), max(args.refiner_batches)
    args.workers = args.workers or ([0, 4, 8] if args.command == "gpu" and not args.quick else [0])
    args.precisions = [p == "bf16" for p in args.precisions]
    if args.quick:
        args.steps, args.run_steps, args.warmup, args.cases, args.depth = 2, 3, 1, 3, 16
    deadline = time.monotonic() + args.budget_s
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "work")}
    results = Results(args.out, args.command + ("-quick" if args.quick else ""), settings)
    with tempfile.TemporaryDirectory() as scratch:
        args.work = args.work or Path(scratch)
        COMMANDS[args.command](args, results, deadline)
    print(markdown(results))
    log(f"wrote {results.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

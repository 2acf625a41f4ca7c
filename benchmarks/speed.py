"""Speed benchmark: RegC2P inference and training against RegGAN-style reference loops.

Measures on the CPU, for the ``small`` and ``paper`` presets (reference loops in
``benchmarks/speed_reference.py``):

* **G per slice** — ours (``batch_size`` slices per pass, ``torch.inference_mode``, channels_last)
  vs G one slice at a time under ``no_grad`` with PyTorch's ``InstanceNorm2d``, contiguous, as
  RegGAN's test script runs it; channels_last vs the contiguous layout; bfloat16 autocast
  (where the CPU has it natively) and ``torch.compile`` vs ours float32, with their
  difference on the network scale [-1, 1].
* **Per volume** — ``translate_volume`` without and with overlap refinement, float32 and
  bfloat16, and the refiner alone vs the reference loops, with the |ΔSUV| in the body.
* **Tolerance** — batched float32 vs the reference loop on a phantom (the same PET expected);
  whether bfloat16 is accurate enough is the shipped model's precision record
  (``benchmarks/precision.py``, on real and phantom studies), summarised into the result.
* **Training throughput** (``small``) — the project's stage-1 (``GanTask``) and stage-2
  (``RefinerTask``) steps vs batch-1 float32 reference steps.
* **Linearity** — translation time for growing slice counts, a fitted line and R².
* **Time and peak memory** (``--memory``) — ``benchmarks/memory_translate.py``: the shipped
  model, as ``translate`` runs it by default, on a 512×512×``--memory-slices`` CT.

Every timed callable goes through ``torch.utils.benchmark.Timer.blocked_autorange``; the
callables compared with each other are timed in turn, ``--rounds`` times (interleaved, so a
change in machine load hits all of them), and the median seconds per call is kept with its
interquartile range. Writes the numbers (and the machine) to ``benchmarks/results/speed.json``
and nothing else; progress goes to stderr. ``benchmarks/speed_report.py`` turns the JSON into
``docs/benchmark-speed.md``::

    .venv/bin/python benchmarks/speed.py [--threads 1] [--rounds 3] [--memory] [--compile]
    .venv/bin/python benchmarks/speed_report.py

Weights: ``new_model`` weights (N(0, 0.02)) with the refiner's last layer drawn N(0, 0.02)
too, so that F is not the identity (speed does not depend on the weights; the ``paper`` preset
has no trained model); the tolerance check uses the trained model at
``out/quality/run-regc2p/model.safetensors`` when present.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from memory_translate import _synthetic_ct
from speed_reference import (
    ReferenceGanStep,
    ReferenceRefinerStep,
    reference_generator,
    reference_of,
    reference_refine,
    reference_translate,
    regan_copy,
)
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode

from RegC2PLib.body import body_mask
from RegC2PLib.config import preset
from RegC2PLib.data.phantom import PhantomConfig, generate_case
from RegC2PLib.inference import TranslationOptions, WindowPlan, refine_windows, translate_volume
from RegC2PLib.inference.acceleration import native_bfloat16
from RegC2PLib.inference.device import device_name
from RegC2PLib.inference.precision_record import TOLERANCE, read_record
from RegC2PLib.model_file import BUNDLED_MODEL, LoadedModel, load_model, new_model
from RegC2PLib.training.config import TrainConfig
from RegC2PLib.training.tasks import GanTask, RefinerTask
from RegC2PLib.volume_io import read_image, to_axial

ROOT = Path(__file__).resolve().parents[1]
TRAINED_MODEL = ROOT / "out" / "quality" / "run-regc2p" / "model.safetensors"
CPU = torch.device("cpu")
_START = time.perf_counter()


def log(message: str) -> None:
    """Progress line on stderr with the seconds since start."""
    print(f"[{time.perf_counter() - _START:6.0f} s] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one callable: median and interquartile range over ``samples`` timed blocks."""

    median_s: float
    iqr_s: float
    samples: int


@dataclass(frozen=True)
class Bench:
    """How callables are timed: ``rounds`` interleaved rounds of ``blocked_autorange(min_run_time_s)`` each."""

    rounds: int
    min_run_time_s: float

    def measure(self, callables: dict[str, Callable[[], Any]]) -> dict[str, Timing]:
        """Time each callable (already warmed up) in turn, ``rounds`` times; seconds per call."""
        timers = {
            key: benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads(), label=key)
            for key, fn in callables.items()
        }
        blocks: dict[str, list[benchmark.Measurement]] = {key: [] for key in callables}
        for _ in range(self.rounds):
            for key, timer in timers.items():
                blocks[key].append(timer.blocked_autorange(min_run_time=self.min_run_time_s))
        merged = {key: benchmark.Measurement.merge(ms)[0] for key, ms in blocks.items()}
        return {key: Timing(m.median, m.iqr, len(m.times)) for key, m in merged.items()}


@dataclass
class Row:
    """One measurement in seconds per ``unit``: ours vs the reference (or vs ours float32), or ours alone."""

    section: str
    preset: str
    variant: str
    what: str
    count: int
    unit: str
    ours: Timing
    reference: Timing | None = None
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The row as the JSON record the report reads (seconds per unit, speed-up = reference / ours)."""
        ref = self.reference
        return {
            "section": self.section,
            "preset": self.preset,
            "variant": self.variant,
            "what": self.what,
            "count": self.count,
            "unit": self.unit,
            "ours_s": self.ours.median_s / self.count,
            "ours_iqr_s": self.ours.iqr_s / self.count,
            "reference_s": None if ref is None else ref.median_s / self.count,
            "reference_iqr_s": None if ref is None else ref.iqr_s / self.count,
            "samples": self.ours.samples,
            "ratio": None if ref is None else ref.median_s / self.ours.median_s,
            "note": self.note,
            "extra": self.extra,
        }


# --------------------------------------------------------------------------- models


def bench_model(name: str) -> LoadedModel:
    """Untrained model of preset ``name`` whose refiner is not the identity."""
    model = new_model(preset(name), seed=0, with_refiner=True)
    assert model.refiner is not None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        torch.nn.init.normal_(model.refiner.out.weight, 0.0, 0.02)
    return model


def tolerance_model(name: str) -> tuple[LoadedModel, str]:
    """The trained quality-run model when present and of preset ``name``, else :func:`bench_model`."""
    if TRAINED_MODEL.is_file():
        model = load_model(TRAINED_MODEL)
        if model.config.preset_name == name and model.refiner is not None:
            return model, f"trained ({TRAINED_MODEL.relative_to(ROOT)})"
    return bench_model(name), "untrained (N(0, 0.02) weights, refiner output layer N(0, 0.02))"


def random_slices(*shape: int, seed: int = 0) -> torch.Tensor:
    """Reproducible uniform noise on the network scale [-1, 1]."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def net_diff(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Max and mean |a - b| on the network scale [-1, 1]."""
    d = (a.float() - b.float()).abs()
    return {"max_abs_net": float(d.max()), "mean_abs_net": float(d.mean())}


# --------------------------------------------------------------------------- sections


@contextlib.contextmanager
def fresh_inductor_cache() -> Iterator[None]:
    """A new, empty torch.compile cache, so compile time is measured cold."""
    old = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tmp
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = old


def gemm_peak(bench: Bench, size: int = 2048) -> dict[str, float]:
    """Measured matrix-multiply throughput (GFLOP/s) of ``size``² float32 and, where native, bfloat16 GEMMs:
    the ceiling the convolutions' achieved GFLOP/s are set against."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(size, size, generator=gen), torch.rand(size, size, generator=gen)
    runs = {"float32": lambda: torch.mm(a, b)}
    if native_bfloat16(CPU):
        a16, b16 = a.bfloat16(), b.bfloat16()
        runs["bfloat16"] = lambda: torch.mm(a16, b16)
    for run in runs.values():
        run()
    t = bench.measure(runs)
    return {key: 2 * size**3 / t[key].median_s / 1e9 for key in runs}


def generator_gflop(g: torch.nn.Module, size: int) -> float:
    """GFLOP of G on one size×size slice (torch's FlopCounterMode: 2 per multiply-add)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        g(torch.zeros(1, 1, size, size))
    return counter.get_total_flops() / 1e9


def generator_rows(bench: Bench, name: str, n: int, batch: int, compile_: bool) -> list[Row]:
    """G alone on ``n`` slices: ours (``batch`` slices per pass, inference mode, the CPU's
    channels_last layout, float32) vs RegGAN's loop, and the variants of G vs ours."""
    g = bench_model(name).generator
    regan = regan_copy(g, 2)
    g.to(memory_format=torch.channels_last)
    contiguous = copy.deepcopy(g).to(memory_format=torch.contiguous_format)
    size = preset(name).image_size
    slices = random_slices(n, size, size)

    def ours(net: torch.nn.Module, layout: torch.memory_format, bf16: bool) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return torch.cat(
                [net(slices[i : i + batch, None].contiguous(memory_format=layout))[:, 0].float() for i in range(0, n, batch)]
            )

    runs: dict[str, Callable[[], torch.Tensor]] = {
        "reference": lambda: reference_generator(regan, slices),
        "ours": lambda: ours(g, torch.channels_last, False),
        "contiguous": lambda: ours(contiguous, torch.contiguous_format, False),
    }
    if native_bfloat16(CPU):  # emulated bfloat16 is tens of times slower, and refused by translate
        runs["bfloat16"] = lambda: ours(g, torch.channels_last, True)
    outputs = {key: run() for key, run in runs.items()}  # also the warm-up: oneDNN primitives, allocator
    t = bench.measure(runs)
    gflop = generator_gflop(g, size)
    what = f"G, {batch} slice{'s' if batch > 1 else ''}/pass, inference mode, channels_last"
    rate = {key: gflop * n / t[key].median_s for key in t}  # achieved GFLOP/s
    ours_extra = {**net_diff(outputs["ours"], outputs["reference"]), "gflop_per_slice": gflop, "gflop_per_s": rate["ours"]}
    rows = [Row("G", name, "ours", what, n, "slice", t["ours"], t["reference"], extra=ours_extra)]
    # channels_last is timed against the contiguous layout it replaces (speed-up = contiguous / channels_last).
    layout_extra = net_diff(outputs["ours"], outputs["contiguous"])
    rows.append(
        Row(
            "G",
            name,
            "channels_last",
            "G channels_last vs contiguous (float32)",
            n,
            "slice",
            t["ours"],
            t["contiguous"],
            "ratio vs contiguous",
            layout_extra,
        )
    )
    if "bfloat16" in runs:
        bf16_extra = {**net_diff(outputs["bfloat16"], outputs["ours"]), "gflop_per_s": rate["bfloat16"]}
        rows.append(
            Row(
                "G",
                name,
                "bfloat16",
                "G + bfloat16 autocast",
                n,
                "slice",
                t["bfloat16"],
                t["ours"],
                "ratio vs ours float32",
                bf16_extra,
            )
        )
    if compile_:
        with fresh_inductor_cache():
            compiled = torch.compile(g)
            # Compiling happens once, on the first call: a single wall-clock span is what a user waits.
            start = time.perf_counter()
            out = ours(compiled, torch.channels_last, False)
            compile_s = time.perf_counter() - start
            tc = bench.measure({"compiled": lambda: ours(compiled, torch.channels_last, False), "ours": runs["ours"]})
        extra = {**net_diff(out, outputs["ours"]), "compile_and_first_call_s": compile_s}
        rows.append(
            Row(
                "G",
                name,
                "compile",
                "G + torch.compile (after compiling)",
                n,
                "slice",
                tc["compiled"],
                tc["ours"],
                "ratio vs ours",
                extra,
            )
        )
        torch._dynamo.reset()
    return rows


def volume_rows(bench: Bench, name: str, ct: sitk.Image, source: str) -> list[Row]:
    """Whole translation of ``ct`` (axial LPS, HU) without and with overlap refinement, in
    float32 and (where native) bfloat16, and the refiner alone: ours vs RegGAN-style loops;
    ``source`` names the CT in the row's label."""
    model = bench_model(name)
    reference = reference_of(model)
    assert model.refiner is not None and reference.refiner is not None
    n = ct.GetDepth()
    window, stride = TranslationOptions().validate(model.config)
    precisions = ["float32", "bfloat16"] if native_bfloat16(CPU) else ["float32"]
    body = body_mask(sitk.GetArrayViewFromImage(ct), ct.GetSpacing()[::-1])
    suv_max = model.config.intensity.pet_suv_max
    rows = []
    for refine in ("none", "overlap"):
        runs = {
            "reference": lambda refine=refine: reference_translate(ct, reference, window, stride if refine == "overlap" else None)
        }
        for precision in precisions:
            options = TranslationOptions(refine=refine, device="cpu", precision=precision)
            runs[precision] = lambda options=options: sitk.GetArrayFromImage(translate_volume(ct, model, options))
        outputs = {key: run() for key, run in runs.items()}
        t = bench.measure(runs)
        steps = "G" if refine == "none" else f"G + overlap refiner s={window} k={stride}"
        for precision in precisions:
            label = f"{source} CT {ct.GetWidth()}×{ct.GetHeight()}×{n} → PET, {steps}, {precision}"
            extra = suv_errors(outputs[precision], outputs["reference"], body, suv_max)
            rows.append(
                Row(
                    "volume",
                    name,
                    f"translate-{refine}-{precision}",
                    label,
                    n,
                    "slice",
                    t[precision],
                    t["reference"],
                    source,
                    extra,
                )
            )

    size = model.config.image_size
    stack = random_slices(n, size, size)
    plan = WindowPlan(n, window, stride)
    windows = TranslationOptions().windows_per_batch

    def ours_refine() -> torch.Tensor:
        with torch.inference_mode():
            return refine_windows(stack, model.refiner, plan, CPU, windows, layout=torch.channels_last_3d)

    runs = {"ours": ours_refine, "reference": lambda: reference_refine(reference.refiner, stack, plan)}
    outputs = {key: run() for key, run in runs.items()}
    t = bench.measure(runs)
    label = f"refiner only, {len(plan.starts)} windows, {windows}/pass, channels_last, float32"
    rows.append(
        Row(
            "volume",
            name,
            "refiner",
            label,
            n,
            "slice",
            t["ours"],
            t["reference"],
            source,
            net_diff(outputs["ours"], outputs["reference"]),
        )
    )
    return rows


def real_ct(path: Path, n: int) -> sitk.Image:
    """The ``n`` central axial slices of the CT at ``path`` (HU), reoriented to axial LPS (no resampling)."""
    ct = to_axial(read_image(path))
    first = max(0, (ct.GetDepth() - n) // 2)
    return ct[:, :, first : first + n]


def suv_errors(out: np.ndarray, against: np.ndarray, body: np.ndarray, suv_max: float) -> dict[str, float]:
    """|ΔSUV| in the body (max, mean, 99.9th percentile) and the whole-volume mean in paper MAE units (1/32767 of ``suv_max``)."""
    d = np.abs(out - against)
    inside = d[body] if body.any() else d.ravel()
    return {
        "max_abs_suv_body": float(inside.max()),
        "mean_abs_suv_body": float(inside.mean()),
        "p999_abs_suv_body": float(np.percentile(inside, 99.9)),
        "mae_paper_units": 32767.0 * float(d.mean()) / suv_max,
    }


def tolerance_rows(bench: Bench, name: str, n: int) -> tuple[list[Row], str]:
    """Batched float32 translation vs the reference loops on a phantom of ``n`` slices (same output
    expected); the rows and which weights were used."""
    model, weights = tolerance_model(name)
    reference = reference_of(model)
    size = model.config.image_size
    case = generate_case(PhantomConfig(shape=(n, 2 * size, 2 * size)), seed=7)
    body = body_mask(sitk.GetArrayViewFromImage(case.ct), case.ct.GetSpacing()[::-1])
    f32 = TranslationOptions(refine="overlap", device="cpu", precision="float32")
    window, stride = f32.validate(model.config)
    runs = {
        "float32": lambda: sitk.GetArrayFromImage(translate_volume(case.ct, model, f32)),
        "reference": lambda: reference_translate(case.ct, reference, window, stride),
    }
    out = {key: run() for key, run in runs.items()}
    t = bench.measure(runs)
    batched = suv_errors(out["float32"], out["reference"], body, model.config.intensity.pet_suv_max)
    label = "batched windows + batched G, channels_last, vs reference loop"
    rows = [
        Row("tolerance", name, "batched", label, n, "slice", t["float32"], t["reference"], "reference loop (float32)", batched)
    ]
    return rows, weights


def precision_summary(path: Path) -> dict[str, Any] | None:
    """The precision record of the model file at ``path`` (``benchmarks/precision.py``), without
    the per-study rows; None when the file or its record is missing."""
    if not path.is_file():
        return None
    model = load_model(path)
    record = read_record(model)
    if record is None:
        return None
    result = record["bfloat16"]
    datasets = {
        name: {"studies": len(d["studies"]), "paper_relative": d["paper_relative"]} for name, d in result["datasets"].items()
    }
    where = path.resolve()
    return {
        "model": str(where.relative_to(ROOT)) if where.is_relative_to(ROOT) else where.name,
        "preset": model.config.preset_name,
        "model_sha256": record["model_sha256"],
        "measured": record["measured"],
        "command": record.get("command"),
        "tolerance": record["tolerance"],
        "adopted": result["adopted"],
        "reasons": result["reasons"],
        "worst": result["worst"],
        "datasets": datasets,
    }


def training_rows(bench: Bench, name: str, batch: int, windows: int) -> list[Row]:
    """Seconds per slice of the project's stage-1 and stage-2 steps vs the batch-1 reference steps."""
    config = preset(name)
    size, s = config.image_size, config.refiner.window
    torch.manual_seed(0)
    train = TrainConfig(batch_size=batch, refiner_batch_size=windows, refiner_target="misaligned", amp=True, device="cpu")
    gan, reference = GanTask(config, train, CPU), ReferenceGanStep(config)
    ct, pet = random_slices(batch, 1, size, size), random_slices(batch, 1, size, size, seed=1)
    runs = {
        "ours": lambda: gan.train_step({"ct": ct, "pet": pet}),
        "reference": lambda: [reference(ct[i : i + 1], pet[i : i + 1]) for i in range(batch)],
    }
    for run in runs.values():
        run()
    t = bench.measure(runs)
    rows = [
        Row(
            "training",
            name,
            "stage1",
            f"stage 1 G+R+D step (ours batch {batch}, reference batch 1)",
            batch,
            "slice",
            t["ours"],
            t["reference"],
        )
    ]

    refiner_task = RefinerTask(config, train, CPU, bench_model(name).generator, None)
    ref_step = ReferenceRefinerStep(bench_model(name))
    wct, wpet = random_slices(windows, s, size, size), random_slices(windows, s, size, size, seed=1)
    runs = {
        "ours": lambda: refiner_task.train_step({"ct": wct, "pet": wpet}),
        "reference": lambda: [ref_step(wct[i], wpet[i]) for i in range(windows)],
    }
    for run in runs.values():
        run()
    t = bench.measure(runs)
    label = f"stage 2 refiner step, s={s} (ours {windows} windows/step, reference 1)"
    rows.append(Row("training", name, "stage2", label, windows * s, "slice", t["ours"], t["reference"]))
    return rows


def linearity(bench: Bench, name: str, counts: list[int], ct_size: int) -> dict[str, Any]:
    """Median translation seconds for each slice count (interleaved), a least-squares line t = a + b·n and its R²."""
    model = bench_model(name)
    options = TranslationOptions(refine="overlap", device="cpu")
    cts = {str(n): _synthetic_ct(n, ct_size) for n in counts}
    runs = {key: (lambda ct=ct: translate_volume(ct, model, options)) for key, ct in cts.items()}
    runs[str(counts[0])]()  # warm-up
    t = bench.measure(runs)
    seconds = [t[str(n)].median_s for n in counts]
    x, y = np.asarray(counts, float), np.asarray(seconds)
    slope, intercept = np.polyfit(x, y, 1)
    fit = slope * x + intercept
    r2 = 1.0 - float(((y - fit) ** 2).sum()) / float(((y - y.mean()) ** 2).sum())
    return {
        "preset": name,
        "ct_size": ct_size,
        "slices": counts,
        "seconds": seconds,
        "slope_s_per_slice": float(slope),
        "intercept_s": float(intercept),
        "r2": r2,
        "log_log_exponent": float(np.polyfit(np.log(x), np.log(y), 1)[0]),
    }


def peak_memory(slices: int, size: int) -> dict[str, Any]:
    """``memory_translate.py`` in a fresh child process (its own peak RSS measurement)."""
    script = Path(__file__).with_name("memory_translate.py")
    command = [sys.executable, str(script), "--child", "--slices", str(slices), "--size", str(size)]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    """CPU model, thread count, torch build and load at the start of the run."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "cpu": device_name(CPU),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bfloat16": native_bfloat16(CPU),
        "python": platform.python_version(),
        "load_average_1min_at_start": round(load, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-slices", type=int, default=64, help="slices of the per-volume run, small preset")
    parser.add_argument("--paper-slices", type=int, default=10, help="slices of the per-volume run, paper preset")
    parser.add_argument("--g-slices", type=int, default=16, help="slices of the G-alone run (paper: an eighth, >= 2)")
    parser.add_argument("--presets", default="small,paper", help="presets of the G and per-volume runs")
    parser.add_argument("--tolerance-slices", type=int, default=32, help="phantom slices of the tolerance check")
    parser.add_argument("--linearity", default="16,32,64,128", help="slice counts of the linearity run (small)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per comparison")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds of blocked_autorange per callable and round")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's, one per core)")
    parser.add_argument("--memory", action="store_true", help="also measure time and peak memory on a 512×512 CT")
    parser.add_argument("--memory-slices", type=int, default=300, help="slices of the --memory CT")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on G (cold cache)")
    parser.add_argument(
        "--real-ct", type=Path, help="also translate this real CT (its central slices, as many as the synthetic run's)"
    )
    parser.add_argument(
        "--paper-model",
        type=Path,
        help="a trained paper-preset model file whose precision record decides whether bfloat16 counts for that preset",
    )
    parser.add_argument("--out-json", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(args.rounds, args.min_run_time)
    info = machine()
    rows: list[Row] = []
    log("GEMM peak")
    peak = gemm_peak(bench)
    presets = [p for p in ("small", "paper") if p in args.presets.split(",")]
    for name in presets:
        log(f"G alone: {name}")
        g_slices = args.g_slices if name == "small" else max(2, args.g_slices // 8)
        # The small G gains from batching on CPUs, the paper G loses (its activations leave the caches).
        rows += generator_rows(bench, name, g_slices, 8 if name == "small" else 1, args.compile and name == "small")
    for name in presets:
        n = args.small_slices if name == "small" else args.paper_slices
        log(f"per volume: {name}, {n} slices")
        size = 2 * preset(name).image_size
        rows += volume_rows(bench, name, _synthetic_ct(n, size), "synthetic")
        if args.real_ct is not None:
            rows += volume_rows(bench, name, real_ct(args.real_ct, n), f"real ({args.real_ct.parent.name}/{args.real_ct.name})")
    log("tolerance")
    tolerance, weights = tolerance_rows(bench, "small", args.tolerance_slices)
    rows += tolerance
    log("training")
    rows += training_rows(bench, "small", batch=4, windows=2)
    log("linearity")
    lin = [linearity(bench, "small", [int(c) for c in args.linearity.split(",")], 256)]
    memory = None
    if args.memory:
        log(f"peak memory (512×512×{args.memory_slices})")
        memory = peak_memory(args.memory_slices, 512)
    result: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "benchmarks/speed.py", *sys.argv[1:]]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": info,
        "timing": {"method": "torch.utils.benchmark.Timer.blocked_autorange, interleaved rounds, median", **asdict(bench)},
        "rows": [r.as_json() for r in rows],
        "tolerance_weights": weights,
        "gemm_peak_gflop_per_s": peak,
        "tolerance": TOLERANCE.as_dict(),
        # Whether bfloat16 may count for a preset: the record of a trained model of that preset.
        "precision_records": {
            r["preset"]: r for r in (precision_summary(p) for p in (BUNDLED_MODEL, args.paper_model) if p) if r is not None
        },
        "linearity": lin,
        "memory": memory,
        "total_seconds": time.perf_counter() - _START,
    }
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

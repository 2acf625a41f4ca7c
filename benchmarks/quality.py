"""Quality benchmark: the paper's Table 1, reproduced on misaligned phantoms.

One phantom dataset with misalignment (RegGAN affine noise + breathing) is split by
study; held-out test studies are scored against their *aligned* reference PET. Under
the same step budget it trains:

* ``pix2pix``   — G + D, plain L1 to the misaligned PET (no R), no refiner;
* ``RegGAN``    — G + R + D (registration-corrected L1), no refiner;
* ``RegC2P``    — the RegGAN stage-1 networks plus the 3D refiner (stage 2),
  evaluated with non-overlapping (k = s) and overlapping (k < s) windows.

It writes ``docs/benchmark-quality.md`` (table beside the paper's numbers, SUV figures,
command, seed, budget, machine), ``docs/benchmark-quality.png`` (axial and coronal views
of every method and the reference) and ``benchmarks/results/quality.json``; the RegC2P
run's model file is the candidate for the shipped default model.

    .venv/bin/python benchmarks/quality.py --out out/quality [--cases 30] [--steps 3000] ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from RegC2PLib.config import preset
from RegC2PLib.data.phantom import PhantomConfig, write_dataset
from RegC2PLib.data.phantom_anatomy import Tissue
from RegC2PLib.data.split import read_manifest, select
from RegC2PLib.data.studies import discover_studies, load_study
from RegC2PLib.evaluation import PAPER_TABLE, evaluate_study, format_table, summarize
from RegC2PLib.figures import fused_figure
from RegC2PLib.inference import TranslationOptions, translate_volume
from RegC2PLib.model_file import load_model
from RegC2PLib.training.config import TrainConfig
from RegC2PLib.training.loop import stage_seconds
from RegC2PLib.training.runner import RunOptions, train
from RegC2PLib.volume_io import array_view, read_image, to_axial

ROOT = Path(__file__).resolve().parents[1]
METHODS = {  # name -> (training run, refinement)
    "pix2pix": ("pix2pix", "none"),
    "RegGAN": ("regc2p", "none"),
    "RegC2P non-overlap": ("regc2p", "non-overlap"),
    "RegC2P overlap": ("regc2p", "overlap"),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/quality"), help="work folder (dataset, runs)")
    p.add_argument("--cases", type=int, default=30, help="phantom studies (split 80/10/10 by study)")
    p.add_argument("--shape", type=int, nargs=3, default=(96, 128, 128), metavar=("Z", "Y", "X"))
    p.add_argument("--misalign", type=float, default=2.0, help="RegGAN noise level L of the phantoms")
    p.add_argument("--steps", type=int, default=3000, help="stage-1 steps per method (same budget for all)")
    p.add_argument("--refiner-steps", type=int, default=600, help="stage-2 steps")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--docs", type=Path, default=ROOT / "docs", help="where benchmark-quality.md/.png go")
    return p.parse_args(argv)


def train_runs(args: argparse.Namespace, data: Path) -> dict[str, Path]:
    """Train pix2pix (stage 1) and RegC2P (stage 1, then stage 2 on the same run); re-running resumes."""
    model = preset("small")
    runs = {}
    for mode in ("pix2pix", "regc2p"):
        out = args.out / f"run-{mode}"
        cfg = TrainConfig(
            mode=mode,
            stage="1",
            epochs=1000,
            refiner_epochs=1000,
            max_steps=args.steps,
            batch_size=args.batch_size,
            checkpoint_every=250,
            lr_schedule="linear-decay",
            seed=args.seed,
            device=args.device,
        )
        report = _reporter(mode)
        started = time.monotonic()
        resume = (out / "run.json").exists()
        options = RunOptions(out, resume=True) if resume else RunOptions(out, data, model, cfg, command=" ".join(sys.argv))
        runs[mode] = train(options, report, notify=print)
        if mode == "regc2p":
            stage2 = {"stage": "2", "max_steps": args.refiner_steps}
            runs[mode] = train(RunOptions(out, resume=True, resume_overrides=stage2), report, notify=print)
        print(f"{mode}: {(time.monotonic() - started) / 60:.1f} min", flush=True)
    return runs


def _reporter(mode: str):  # type: ignore[no-untyped-def]
    last = [-1]

    def report(fraction: float, message: str) -> None:
        if int(fraction * 100) != last[0]:
            last[0] = int(fraction * 100)
            print(f"  {mode}: {fraction:4.0%} {message}", flush=True)

    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "data"
    if not data.exists():
        write_dataset(data, args.cases, PhantomConfig(shape=tuple(args.shape), misalign=args.misalign), seed=args.seed, workers=2)
    runs = train_runs(args, data)
    # From the checkpoints, so a re-run that only resumes finished runs reports the real cost.
    train_minutes = sum(stage_seconds(run.parent / "checkpoints", s) for run in runs.values() for s in ("stage1", "stage2")) / 60
    studies, _ = discover_studies(data)
    test = select(studies, read_manifest(args.out / "run-regc2p" / "split.json"), "test")
    rows, per_study = {}, {}
    for name, (mode, refine) in METHODS.items():
        model = load_model(runs[mode])
        scores = [evaluate_study(study, model, TranslationOptions(refine=refine, device=args.device)) for study in test]
        rows[name] = summarize(scores)
        per_study[name] = [{"study": s.study, "paper": asdict(s.paper), "suv": asdict(s.suv)} for s in scores]
        print(format_table({name: rows[name]}).splitlines()[-1], flush=True)
    figure(args, test[0], runs)
    record = {
        "rows": rows,
        "studies": per_study,
        "args": {k: str(v) for k, v in vars(args).items()},
        "train_minutes": train_minutes,
    }
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "quality.json").write_text(json.dumps(record, indent=2))
    write_report(args, rows, train_minutes, runs)
    return 0


def figure(args: argparse.Namespace, study, runs: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    loaded = load_study(study)
    pets = {}
    for name, (mode, refine) in METHODS.items():
        pets[name] = array_view(
            translate_volume(loaded.ct, load_model(runs[mode]), TranslationOptions(refine=refine, device=args.device))
        )
    pets["reference (aligned)"] = array_view(loaded.pet_aligned)
    pets["training target (misaligned)"] = array_view(loaded.pet)
    ct = array_view(loaded.ct)
    organs = array_view(to_axial(read_image(study.folder / "organs.nii.gz")))
    levels = [int(np.argmax((organs == label).sum(axis=(1, 2)))) for label in (Tissue.MYOCARDIUM, Tissue.LIVER, Tissue.KIDNEY)]
    fused_figure(
        ct, pets, loaded.ct.GetSpacing()[::-1], levels, args.docs / "benchmark-quality.png", title=f"test study {study.name}"
    )


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {platform.system()}"


def write_report(
    args: argparse.Namespace, rows: dict[str, dict[str, float]], train_minutes: float, runs: dict[str, Path]
) -> None:
    lines = [
        "# Quality benchmark: Table 1 on misaligned phantoms",
        "",
        "Generated by `benchmarks/quality.py`; do not edit by hand.",
        "",
        f"Command: `python benchmarks/quality.py {' '.join(sys.argv[1:])}`  ",
        f"Dataset: {args.cases} phantom studies {tuple(args.shape)}, misalignment level {args.misalign} + breathing, "
        f"seed {args.seed}, split 80/10/10 by study; scored on the test studies against their **aligned** reference PET.  ",
        f"Budget (same for every method): {args.steps} stage-1 steps of batch {args.batch_size} "
        "(`small` preset, 128×128 slices); "
        f"the refiner {args.refiner_steps} stage-2 steps of one {preset('small').refiner.window}-slice window; "
        f"{train_minutes:.0f} min of training in all.  ",
        f"Machine: {machine()}.",
        "",
        "## This benchmark (paper scale: MAE ×32767, SSIM, PSNR on [0, 1]; SUV figures inside the body)",
        "",
        format_table(rows),
        "",
        "## The paper's Table 1 (1,000 real studies, 256×256, 80 epochs)",
        "",
        "| model | MAE ↓ | SSIM ↑ | PSNR ↑ |",
        "|---|---|---|---|",
        *(f"| {name} | {m:.2f} | {s:.4f} | {p:.2f} |" for name, (m, s, p) in PAPER_TABLE.items()),
        "",
        "![axial and coronal views](benchmark-quality.png)",
        "",
    ]
    (args.docs / "benchmark-quality.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

"""Quality benchmark: the paper's Table 1 on real PET/CT (or phantoms), against an honest baseline.

Every method is trained and tested on the same split by patient, under one step budget:

* ``HU→SUV lookup`` — the mean SUV of each 10-HU bin on the training studies (``baselines.py``):
  tissue density and nothing else, the floor a learned model must beat;
* ``pix2pix``   — G + D, plain L1 to the (possibly misaligned) PET, no R, no refiner;
* ``RegGAN``    — G + R + D (registration-corrected L1), no refiner;
* ``RegC2P``    — the RegGAN stage-1 networks plus the 3D refiner (stage 2), with
  non-overlapping (k = s) and overlapping (k < s) windows.

With ``--data DIR`` (a study folder of real PET/CT, e.g. the soft-tissue-sarcoma studies) and
``--split MANIFEST`` (committed under ``benchmarks/splits/``), two settings are run:

* **acquired** — trained on the real PET as the scanner gave it (PET and CT of one session
  are nearly aligned, so R has little to correct);
* **misaligned** — trained on the real PET moved by the phantoms' misalignment model
  (RegGAN's affine of noise level ``--misalign`` plus a smooth elastic displacement of up to
  ``--elastic`` mm, drawn per study from its name and the seed); scored against the PET as
  acquired, which is what R buys.

Both are scored on the test patients against the acquired PET: the paper's MAE/SSIM/PSNR,
SUV MAE and bias in the body, tumour SUVmax and SUVmean errors over the ``lesions`` mask, and
the inter-slice consistency. Results go to ``docs/benchmark-real.md`` (with a figure of
three test patients) and ``benchmarks/results/quality-real.json``. Without ``--data``,
phantoms are generated and scored against their aligned PET (``docs/benchmark-quality.md``).

    .venv/bin/python benchmarks/quality.py --data data/STS --split benchmarks/splits/sts.json \\
        --out out/bench-sts [--steps 2500] [--refiner-steps 400] [--setting acquired misaligned]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from RegC2PLib.config import preset
from RegC2PLib.data.misalignment import misalign_image
from RegC2PLib.data.phantom import PhantomConfig, write_dataset
from RegC2PLib.data.phantom_anatomy import Tissue
from RegC2PLib.data.split import read_manifest, select
from RegC2PLib.data.studies import discover_studies, load_study
from RegC2PLib.evaluation import evaluate_study, format_table, score_study, summarize
from RegC2PLib.figures import fused_figure
from RegC2PLib.inference import TranslationOptions, translate_volume
from RegC2PLib.model_file import load_model
from RegC2PLib.training.config import TrainConfig
from RegC2PLib.training.loop import stage_seconds
from RegC2PLib.training.runner import RunOptions, train
from RegC2PLib.training.sources import DataSource
from RegC2PLib.volume_io import array_view, read_image, to_axial, write_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import HuLookup

ROOT = Path(__file__).resolve().parents[1]
LOOKUP = "HU→SUV lookup"
METHODS = {  # name -> (training run, refinement)
    "pix2pix": ("pix2pix", "none"),
    "RegGAN": ("regc2p", "none"),
    "RegC2P non-overlap": ("regc2p", "non-overlap"),
    "RegC2P overlap": ("regc2p", "overlap"),
}
SETTINGS = ("acquired", "misaligned")
# Goals on the real test patients: RegC2P overlap this much below the lookup table's SUV MAE in
# the body (acquired setting), with |SUV bias| at most GOAL_BIAS.
GOAL_GAIN, GOAL_BIAS = 0.20, 0.15
# The paper's ranking by MAE (its Table 1; RegGAN's own paper puts pix2pix below RegGAN).
PAPER_ORDER = ("RegC2P overlap", "RegC2P non-overlap", "RegGAN", "pix2pix")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="study folder of real PET/CT (default: generated phantoms)")
    p.add_argument("--split", type=Path, help="split manifest of --data (by patient); default: a seeded split")
    p.add_argument("--setting", nargs="+", choices=SETTINGS, default=list(SETTINGS), help="with --data: which settings")
    p.add_argument("--out", type=Path, default=Path("out/quality"), help="work folder (datasets, runs)")
    p.add_argument("--cases", type=int, default=30, help="phantoms: studies (split 80/10/10 by study)")
    p.add_argument("--shape", type=int, nargs=3, default=(96, 128, 128), metavar=("Z", "Y", "X"), help="phantoms: voxels")
    p.add_argument("--misalign", type=float, default=2.0, help="RegGAN noise level L of the misalignment")
    p.add_argument("--elastic", type=float, default=10.0, help="with --data: largest elastic displacement, mm")
    p.add_argument("--steps", type=int, default=3000, help="stage-1 steps per method (the same budget for all)")
    p.add_argument("--refiner-steps", type=int, default=600, help="stage-2 steps")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--lambda-adv", type=float, default=1.0, help="adversarial weight (the paper's 1 by default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--docs", type=Path, default=ROOT / "docs", help="where the report and figure go")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="where the JSON record goes")
    return p.parse_args(argv)


def misaligned_copy(data: Path, out: Path, level: float, elastic_mm: float, seed: int) -> Path:
    """A copy of study folder ``data`` whose ``pet`` is moved (:func:`misalign_image`, seeded
    per study by its name) and whose ``pet_aligned`` is the PET as acquired; the CT and
    lesion maps are linked, not copied. Made once; a finished copy is reused."""
    done = out / ".complete"
    if done.exists():
        return out
    studies, _ = discover_studies(data)
    record = {}
    for study in studies:
        folder = out / study.name
        folder.mkdir(parents=True, exist_ok=True)
        pet = read_image(study.pet)
        rng = np.random.default_rng([seed, zlib.crc32(study.name.encode())])
        moved, record[study.name] = misalign_image(pet, rng, level, elastic_mm)
        write_image(moved, folder / "pet.nii.gz")
        links = {study.ct.name: study.ct, "pet_aligned" + study.pet.name[len("pet") :]: study.pet}
        if study.lesions is not None:
            links[study.lesions.name] = study.lesions
        for name, path in links.items():
            if not (folder / name).exists():
                (folder / name).symlink_to(path.resolve())
    (out / "misalignment.json").write_text(json.dumps(record, indent=1))
    done.touch()
    return out


def train_runs(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Path]:
    """pix2pix (stage 1) and RegC2P (stage 1, then stage 2 on the same run); a re-run resumes."""
    runs = {}
    for mode in ("pix2pix", "regc2p"):
        out = work / f"run-{mode}"
        cfg = TrainConfig(
            mode=mode, stage="1", epochs=1000, refiner_epochs=1000, max_steps=args.steps, batch_size=args.batch_size,
            lr=args.lr, lambda_adv=args.lambda_adv, checkpoint_every=250, lr_schedule="linear-decay", seed=args.seed,
            device=args.device,
        )  # fmt: skip
        report = _reporter(mode)
        if (out / "run.json").exists():
            options = RunOptions(out, resume=True)
        else:
            source = DataSource(data, split=args.split)
            options = RunOptions(out, (source,), preset("small"), cfg, command=" ".join(sys.argv))
        runs[mode] = train(options, report, notify=print)
        if mode == "regc2p":
            stage2 = {"stage": "2", "max_steps": args.refiner_steps}
            runs[mode] = train(RunOptions(out, resume=True, resume_overrides=stage2), report, notify=print)
    return runs


def _reporter(mode: str):  # type: ignore[no-untyped-def]
    last = [-1]

    def report(fraction: float, message: str) -> None:
        if int(fraction * 100) != last[0]:
            last[0] = int(fraction * 100)
            print(f"  {mode}: {fraction:4.0%} {message}", flush=True)

    return report


def run_setting(args: argparse.Namespace, name: str, data: Path) -> dict[str, object]:
    """Train, fit the lookup table and score every method on the test patients of ``data``."""
    work = args.out / name
    work.mkdir(parents=True, exist_ok=True)
    runs = train_runs(args, data, work)
    minutes = sum(stage_seconds(run.parent / "checkpoints", s) for run in runs.values() for s in ("stage1", "stage2")) / 60
    studies, _ = discover_studies(data)
    split = read_manifest(runs["regc2p"].parent / "split.json")
    test = select(studies, split, "test")
    started = time.monotonic()
    lookup = HuLookup.fit(select(studies, split, "train"))
    fit_seconds = time.monotonic() - started
    intensity = load_model(runs["regc2p"]).config.intensity
    rows, per_study = {}, {}
    scores = [score_study(study, lookup.predict, intensity) for study in test]
    rows[LOOKUP], per_study[LOOKUP] = summarize(scores), scores
    for method, (mode, refine) in METHODS.items():
        model = load_model(runs[mode])
        scores = [evaluate_study(study, model, TranslationOptions(refine=refine, device=args.device)) for study in test]
        rows[method], per_study[method] = summarize(scores), scores
        print(format_table({method: rows[method]}).splitlines()[-1], flush=True)
    return {
        "rows": rows,
        "studies": {
            m: [{"study": s.study, "paper": asdict(s.paper), "suv": asdict(s.suv)} for s in v] for m, v in per_study.items()
        },
        "train_minutes": minutes,
        "lookup_fit_seconds": fit_seconds,
        "runs": {mode: str(path) for mode, path in runs.items()},
        "test": [s.name for s in test],
        "lookup": lookup,
    }


def figure(args: argparse.Namespace, results: dict[str, dict], out: Path, n_patients: int = 3) -> None:
    """Per test patient (the first ``n_patients``): CT, each method's PET and the reference, at the slice with the most tumour."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    setting = results[SETTINGS[0]] if SETTINGS[0] in results else next(iter(results.values()))
    studies = {s.name: s for s in discover_studies(Path(args.data))[0]}
    names = setting["test"][:n_patients]
    methods = [LOOKUP, *METHODS]
    fig = Figure(figsize=(2.2 * (len(methods) + 2), 2.3 * len(names)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(names), len(methods) + 2, squeeze=False)
    for row, name in zip(axes, names):
        loaded = load_study(studies[name])
        ct = array_view(loaded.ct)
        lesions = array_view(loaded.lesions) if loaded.lesions is not None else None
        z = int(np.argmax((lesions > 0).sum(axis=(1, 2)))) if lesions is not None and lesions.any() else ct.shape[0] // 2
        pets = {LOOKUP: array_view(setting["lookup"].predict(loaded.ct))}
        for method, (mode, refine) in METHODS.items():
            model = load_model(setting["runs"][mode])
            pets[method] = array_view(translate_volume(loaded.ct, model, TranslationOptions(refine=refine, device=args.device)))
        pets["real PET"] = array_view(loaded.pet)
        row[0].imshow(ct[z], cmap="gray", vmin=-160, vmax=240)
        row[0].set_title(f"{name} CT", fontsize=8)
        for ax, (label, pet) in zip(row[1:], pets.items()):
            ax.imshow(pet[z], cmap="hot", vmin=0, vmax=8)
            ax.set_title(label, fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def verdicts(results: dict[str, dict]) -> list[str]:
    """Plain statements computed from the numbers: where the paper's ranking holds and where not."""
    lines = []
    for setting, result in results.items():
        rows = result["rows"]
        floor = rows[LOOKUP]["suv_mae_body"]
        best = min(METHODS, key=lambda m: rows[m]["suv_mae_body"])
        for method in dict.fromkeys(("RegC2P overlap", best)):  # once when they are the same
            gain = 1.0 - rows[method]["suv_mae_body"] / floor
            lines.append(
                f"- {setting}: {method} has SUV MAE {rows[method]['suv_mae_body']:.3f} in the body against the lookup "
                f"table's {floor:.3f}: {'better' if gain > 0 else 'worse'} by {abs(gain):.0%} "
                f"(SUV bias {rows[method]['suv_bias_body']:+.3f})."
            )
        order = tuple(sorted(METHODS, key=lambda m: rows[m]["mae"]))
        lines.append(
            f"- {setting}: ranking by paper-scale MAE (best first): {', '.join(order)}; the paper's order is "
            f"{', '.join(PAPER_ORDER)} — {'the same' if order == PAPER_ORDER else 'not the same'}."
        )
    return lines


def goal_lines(results: dict[str, dict]) -> list[str]:
    """The project's goals for real data, each marked met or missed (and by how much)."""
    lines = []
    if "acquired" in results:
        rows = results["acquired"]["rows"]
        ours, floor = rows["RegC2P overlap"]["suv_mae_body"], rows[LOOKUP]["suv_mae_body"]
        gain, bias = 1.0 - ours / floor, rows["RegC2P overlap"]["suv_bias_body"]
        lines.append(
            f"- RegC2P overlap at least {GOAL_GAIN:.0%} below the lookup table in SUV MAE in the body: "
            f"{gain:+.1%} ({ours:.3f} against {floor:.3f}) — "
            + ("met." if gain >= GOAL_GAIN else f"missed by {GOAL_GAIN - gain:.1%} points (needs {floor * (1 - GOAL_GAIN):.3f}).")
        )
        lines.append(
            f"- |SUV bias| in the body at most {GOAL_BIAS:g}: {bias:+.3f} — "
            + ("met." if abs(bias) <= GOAL_BIAS else f"missed by {abs(bias) - GOAL_BIAS:.3f}.")
        )
    if "misaligned" in results:
        rows = results["misaligned"]["rows"]
        ours, theirs = rows["RegC2P overlap"]["suv_mae_body"], rows["pix2pix"]["suv_mae_body"]
        lines.append(
            f"- With misalignment, RegC2P overlap below pix2pix in SUV MAE in the body: {ours:.3f} against {theirs:.3f} — "
            + ("met." if ours < theirs else f"missed by {ours - theirs:.3f}.")
        )
    return lines


def write_real_report(args: argparse.Namespace, results: dict[str, dict]) -> None:
    lines = [
        "# Quality benchmark on real PET/CT: Table 1 with an honest baseline",
        "",
        "Generated by `benchmarks/quality.py`; do not edit by hand.",
        "",
        f"Command: `python benchmarks/quality.py {' '.join(sys.argv[1:])}`  ",
        f"Data: `{args.data}` with the split `{args.split}` (by patient); scored on its "
        f"{len(next(iter(results.values()))['test'])} test patients against the PET as acquired.  ",
        f"Budget (the same for every learned method): {args.steps} stage-1 steps of batch {args.batch_size}, "
        f"learning rate {args.lr:g} with linear decay, λ_adv {args.lambda_adv:g}, `small` preset "
        f"({preset('small').image_size}² grid of {preset('small').pixel_mm} mm); "
        f"the refiner {args.refiner_steps} stage-2 steps.  ",
        f"Machine: {machine()}.",
        "",
    ]
    for setting, result in results.items():
        what = (
            "trained on the real PET as acquired"
            if setting == "acquired"
            else f"trained on the real PET moved by RegGAN's affine of noise level {args.misalign:g} and an elastic "
            f"displacement of up to {args.elastic:g} mm"
        )
        lines += [
            f"## {setting}: {what}",
            "",
            f"Training: {result['train_minutes']:.0f} min for the learned methods together; the lookup table "
            f"{result['lookup_fit_seconds']:.0f} s.",
            "",
            format_table(result["rows"]),
            "",
        ]
    lines += ["## What this says", "", *verdicts(results), "", "## Goals", "", *goal_lines(results), ""]
    lines += ["![three test patients](benchmark-real.png)", ""]
    lines += [
        "Columns: MAE ×32767, SSIM and PSNR per axial slice on the paper's [0, 1] scale; SUV MAE and bias inside the CT's",
        "body; tumour SUVmax and SUVmean errors over each study's `lesions` mask; inter-slice: mean |∂z(pred − ref)| in SUV.",
        "",
    ]
    (args.docs / "benchmark-real.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.data is None:
        return phantom_benchmark(args)
    results = {}
    for setting in args.setting:
        data = args.data
        if setting == "misaligned":
            data = misaligned_copy(args.data, args.out / "misaligned-data", args.misalign, args.elastic, args.seed)
        results[setting] = run_setting(args, setting, data)
    figure(args, results, args.docs / "benchmark-real.png")
    record = {s: {k: v for k, v in r.items() if k != "lookup"} for s, r in results.items()}
    record["args"] = {k: str(v) for k, v in vars(args).items()}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "quality-real.json").write_text(json.dumps(record, indent=1))
    write_real_report(args, results)
    return 0


def phantom_benchmark(args: argparse.Namespace) -> int:
    """Table 1 on misaligned phantoms, scored against their aligned PET."""
    data = args.out / "data"
    if not data.exists():
        write_dataset(data, args.cases, PhantomConfig(shape=tuple(args.shape), misalign=args.misalign), seed=args.seed, workers=2)
    result = run_setting(args, "phantoms", data)
    study = next(s for s in discover_studies(data)[0] if s.name == result["test"][0])
    loaded = load_study(study)
    pets = {
        method: array_view(
            translate_volume(loaded.ct, load_model(result["runs"][mode]), TranslationOptions(refine=refine, device=args.device))
        )
        for method, (mode, refine) in METHODS.items()
    }
    pets["reference (aligned)"], pets["training target (misaligned)"] = array_view(loaded.pet_aligned), array_view(loaded.pet)
    organs = array_view(to_axial(read_image(study.folder / "organs.nii.gz")))
    levels = [int(np.argmax((organs == label).sum(axis=(1, 2)))) for label in (Tissue.MYOCARDIUM, Tissue.LIVER, Tissue.KIDNEY)]
    fused_figure(array_view(loaded.ct), pets, loaded.ct.GetSpacing()[::-1], levels, args.docs / "benchmark-quality.png",
                 title=f"test study {study.name}")  # fmt: skip
    lines = [
        "# Quality benchmark: Table 1 on misaligned phantoms",
        "",
        "Generated by `benchmarks/quality.py`; do not edit by hand.",
        "",
        f"Command: `python benchmarks/quality.py {' '.join(sys.argv[1:])}`  ",
        f"Dataset: {args.cases} phantom studies {tuple(args.shape)}, misalignment level {args.misalign} + breathing, "
        f"seed {args.seed}, split 80/10/10 by study; scored on the test studies against their **aligned** reference PET.  ",
        f"Budget: {args.steps} stage-1 steps of batch {args.batch_size} (`small` preset), the refiner {args.refiner_steps} "
        f"stage-2 steps; {result['train_minutes']:.0f} min of training in all.  ",
        f"Machine: {machine()}.",
        "",
        format_table(result["rows"]),
        "",
        *verdicts({"phantoms": result}),
        "",
        "![axial and coronal views](benchmark-quality.png)",
        "",
    ]
    (args.docs / "benchmark-quality.md").write_text("\n".join(lines), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(os.cpu_count() or 1)
    sys.exit(main())

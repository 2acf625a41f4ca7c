"""``regc2p evaluate``: score a model on a dataset split, in the paper's table format."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from ..atomic import check_output_file, write_json
from ..data.split import SUBSETS, check_seed, read_manifest, select, split_studies
from ..data.studies import discover_studies, skipped_summary
from ..errors import InputError
from ..evaluation import evaluate_study, format_table, summarize
from ..inference import REFINE_MODES, TranslationOptions
from ..inference.device import DEVICE_CHOICES
from ..model_file import load_model
from ..progress import Stage
from .model_options import add_sha256_option
from .progress_display import add_progress_option, progress_display


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a model on a dataset split (paper-scale MAE/SSIM/PSNR, SUV figures)",
        description="Translate every CT of a split and score it against the study's aligned PET (else its PET): "
        "MAE/SSIM/PSNR on the paper's scale (comparable with its Table 1), SUV MAE and bias inside the body, "
        "lesion SUVmax error and the inter-slice consistency figure.",
    )
    p.add_argument("--data", required=True, type=Path, help="dataset folder (one sub-folder per study)")
    p.add_argument("--model", required=True, type=Path, help="model file (.safetensors)")
    add_sha256_option(p)
    p.add_argument("--refine", choices=REFINE_MODES, default="overlap")
    p.add_argument("--window", type=int, help="refiner window s (default: the model's)")
    p.add_argument("--stride", type=int, help="refiner stride k (default: the model's)")
    p.add_argument("--split", choices=(*SUBSETS, "all"), default="test", help="which studies (default: test)")
    p.add_argument("--manifest", type=Path, help="split manifest (a run's split.json; default: the seeded default split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the default split when there is no --manifest")
    p.add_argument("--json", type=Path, help="also write per-study and pooled figures to this JSON file")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_seed(args.seed)  # also when --manifest or --split all leaves it unused: a bad value is never ignored
    if args.json is not None:
        check_output_file(args.json)
    model = load_model(args.model, sha256=args.sha256)
    options = TranslationOptions(args.refine, args.window, args.stride, args.device, args.batch_size)
    options.window_and_stride(model.config)
    studies, skipped = discover_studies(args.data)
    if skipped:
        print(skipped_summary(skipped), file=sys.stderr)
    if args.split != "all":
        split = read_manifest(args.manifest) if args.manifest else split_studies([s.name for s in studies], seed=args.seed)
        studies = select(studies, split, args.split)
    if not studies:
        raise InputError(f"the {args.split} split of {args.data} holds no study; use --split all or more studies")
    scores = []
    with progress_display(args.progress, "evaluate") as progress:
        for i, study in enumerate(studies):
            scores.append(evaluate_study(study, model, options, Stage(progress, i / len(studies), (i + 1) / len(studies))))
    summary = summarize(scores)
    name = f"{model.path.name if model.path else 'model'} ({args.refine})"
    print(format_table({name: summary}))
    print(f"{summary['n_studies']} studies, {summary['n_slices']} slices, {summary['n_lesions']} lesions ({args.split} split)")
    if args.json is not None:
        record = {
            "model": str(args.model),
            "model_sha256": model.sha256,
            "refine": args.refine,
            "split": args.split,
            "summary": summary,
            "studies": [{"study": s.study, "paper": asdict(s.paper), "suv": asdict(s.suv)} for s in scores],
        }
        write_json(args.json, record)  # undefined figures (no lesions: NaN) become null
    return 0

"""``regc2p evaluate``: score a model on a dataset split, in the paper's table format."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from ..choices import SUBSETS
from ..errors import InputError
from ..inference import TranslationOptions
from .model_options import add_sha256_option
from .options import add_config_options, given_options
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
    p.add_argument("--split", choices=(*SUBSETS, "all"), default="test", help="which studies (default: test)")
    p.add_argument("--manifest", type=Path, help="split manifest (a run's split.json; default: the seeded default split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the default split when there is no --manifest")
    p.add_argument("--json", type=Path, help="also write per-study and pooled figures to this JSON file")
    add_config_options(p, TranslationOptions)
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..atomic import check_output_file, write_json
    from ..data.split import check_seed, read_manifest, select, split_studies
    from ..data.studies import discover_studies, skipped_summary
    from ..evaluation import evaluate_study, format_table, summarize
    from ..model_file import load_model
    from ..progress import ProgressRange

    check_seed(args.seed)  # also when --manifest or --split all leaves it unused: a bad value is never ignored
    if args.json is not None:
        check_output_file(args.json)
    model = load_model(args.model, sha256=args.sha256)
    options = TranslationOptions(**given_options(args, TranslationOptions))
    options.validate(model.config)
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
            part = ProgressRange(progress, i / len(studies), (i + 1) / len(studies))
            scores.append(evaluate_study(study, model, options, part))
    summary = summarize(scores)
    name = f"{model.path.name if model.path else 'model'} ({options.refine})"
    print(format_table({name: summary}))
    print(f"{summary['n_studies']} studies, {summary['n_slices']} slices, {summary['n_lesions']} lesions ({args.split} split)")
    if args.json is not None:
        record = {
            "model": str(args.model),
            "model_sha256": model.sha256,
            "refine": options.refine,
            "split": args.split,
            "summary": summary,
            "studies": [{"study": s.study, "paper": asdict(s.paper), "suv": asdict(s.suv)} for s in scores],
        }
        write_json(args.json, record)  # undefined figures (no lesions: NaN) become null
    return 0

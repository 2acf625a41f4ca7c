"""``regc2p translate``: CT volume file or DICOM folder -> synthetic PET volume file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from ..inference import REFINE_MODES, TranslationOptions, translate_volume
from ..inference.acceleration import PRECISIONS
from ..inference.device import DEVICE_CHOICES
from ..model_file import load_model, require_bundled_model
from ..volume_io import check_ct, check_output_path, read_image, write_image
from .model_options import add_sha256_option
from .progress_display import add_progress_option, progress_display


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "translate",
        help="translate a CT (HU) into a synthetic PET (SUV) on the CT's grid",
        description="Translate a CT volume (HU) into a synthetic PET volume (SUV) with exactly the CT's geometry. "
        "Reads any SimpleITK format (.nii.gz, .nrrd, .mha, ...) or a folder holding one DICOM series.",
    )
    p.add_argument("--ct", required=True, type=Path, help="CT volume file or DICOM series folder, in HU")
    p.add_argument("--model", type=Path, help="RegC2P model file (.safetensors; default: the bundled default model)")
    add_sha256_option(p)
    p.add_argument("--out", required=True, type=Path, help="output PET file (.nii.gz, .nrrd, .mha, ...), written atomically")
    p.add_argument("--refine", choices=REFINE_MODES, default="overlap", help="3D refinement (default: overlap)")
    p.add_argument("--window", type=int, help="slices per refiner window s (default: the model's)")
    p.add_argument("--stride", type=int, help="window offset k (default: the model's; non-overlap uses k = s)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="compute device (default: auto)")
    p.add_argument("--batch-size", type=int, default=8, help="slices per generator pass (default: 8)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="float32 (default) or bfloat16 (autocast: faster on GPUs and CPUs with native bfloat16, "
        "but up to about 0.5 SUV from float32; for quick previews)",
    )
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = check_output_path(args.out)
    if args.ct.exists() and out.exists() and out.resolve() == args.ct.resolve():
        raise InputError("--out is the input CT; choose another output file (inputs are never overwritten)")
    options = TranslationOptions(args.refine, args.window, args.stride, args.device, args.batch_size, args.precision)
    ct = read_image(args.ct)
    check_ct(ct)
    model = load_model(args.model or require_bundled_model(), sha256=args.sha256)
    options.window_and_stride(model.config)  # refuse bad refinement options before any work
    with progress_display(args.progress, "translate") as progress:
        pet = translate_volume(ct, model, options, progress)
    write_image(pet, out)
    if args.progress != "jsonl":
        print(f"wrote {out} ({'x'.join(map(str, pet.GetSize()))} voxels, SUV)", file=sys.stderr)
    return 0

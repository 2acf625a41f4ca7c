"""``regc2p translate``: CT volume file or DICOM folder -> synthetic PET volume file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from ..inference import TranslationOptions, translate_volume
from ..model_file import load_model, require_bundled_model
from ..volume_io import check_ct, check_output_path, read_image, write_image
from .options import add_config_options, given_options
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
    p.add_argument("--out", required=True, type=Path, help="output PET file (.nii.gz, .nrrd, .mha, ...), written atomically")
    add_config_options(p, TranslationOptions)
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = check_output_path(args.out)
    if args.ct.exists() and out.exists() and out.resolve() == args.ct.resolve():
        raise InputError("--out is the input CT; choose another output file (inputs are never overwritten)")
    options = TranslationOptions(**given_options(args, TranslationOptions))
    ct = read_image(args.ct)
    check_ct(ct)
    model = load_model(args.model or require_bundled_model())
    options.validate(model.config)  # refuse bad refinement options before any work
    with progress_display(args.progress, "translate") as progress:
        pet = translate_volume(ct, model, options, progress)
    write_image(pet, out)
    if args.progress != "jsonl":
        print(f"wrote {out} ({'x'.join(map(str, pet.GetSize()))} voxels, SUV)", file=sys.stderr)
    return 0

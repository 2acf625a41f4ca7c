"""``regc2p translate``: CT volume file or DICOM folder -> synthetic PET volume file or DICOM series.

The translation options are generated from :class:`~RegC2PLib.inference.TranslationOptions`;
only torch-free modules are imported until the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from ..inference import TranslationOptions
from .model_options import add_sha256_option
from .options import add_config_options, given_options
from .progress_display import add_progress_option, progress_display

OUTPUT_FORMATS = ("auto", "file", "dicom")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "translate",
        help="translate a CT (HU) into a synthetic PET (SUV) on the CT's grid",
        description="Translate a CT volume (HU) into a synthetic PET volume (SUV) with exactly the CT's geometry. "
        "Reads any SimpleITK format (.nii.gz, .nrrd, .mha, ...) or the CT series of a DICOM folder tree "
        "(a PACS export may hold several series); writes a volume file or a DICOM PET series in the CT's study.",
    )
    p.add_argument("--ct", required=True, type=Path, help="CT volume file or DICOM folder (searched recursively), in HU")
    p.add_argument(
        "--series",
        metavar="UID|NUMBER",
        help="the CT series to use when the DICOM folder holds several (SeriesInstanceUID or SeriesNumber)",
    )
    p.add_argument("--model", type=Path, help="RegC2P model file (.safetensors; default: the bundled default model)")
    add_sha256_option(p)
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output PET file (.nii.gz, .nrrd, .mha, ...) or, for DICOM, a new folder; written atomically",
    )
    p.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default="auto",
        help="file: a volume file chosen by --out's suffix; dicom: a DICOM PET series in the CT's study "
        "(needs a DICOM CT); auto (default): dicom when --out ends in .dcm, else file",
    )
    add_config_options(p, TranslationOptions)
    p.add_argument(
        "--stop-file",
        type=Path,
        metavar="PATH",
        help="stop cleanly, writing nothing, once PATH exists or its folder is removed (for GUIs running this in the background)",
    )
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.dicom_series import read_ct_series
    from ..dicom_output import SyntheticSource, check_series_folder, is_dicom_output, write_pet_series
    from ..inference import translate_volume
    from ..model_file import load_model, require_bundled_model
    from ..progress import StopFile
    from ..volume_io import check_ct, check_output_path, read_image, write_image

    dicom = is_dicom_output(args.out, args.format)
    out = check_series_folder(args.out) if dicom else check_output_path(args.out)
    if args.ct.exists() and out.exists() and out.resolve() == args.ct.resolve():
        raise InputError("--out is the input CT; choose another output file (inputs are never overwritten)")
    if args.ct.is_file() and dicom:
        raise InputError(
            "a DICOM PET series is written into the CT's DICOM study, and this CT is not DICOM; "
            "give the CT's DICOM folder, or write a volume file (--out pet.nii.gz)"
        )
    if args.ct.is_file() and args.series is not None:
        raise InputError("--series chooses among the series of a DICOM folder; --ct is a volume file")
    options = TranslationOptions(**given_options(args, TranslationOptions))
    source = read_ct_series(args.ct, args.series, "choose one with --series UID or --series NUMBER") if args.ct.is_dir() else None
    ct = source.image if source is not None else read_image(args.ct)
    check_ct(ct)
    model = load_model(args.model or require_bundled_model(), sha256=args.sha256)
    options.validate(model.config)  # refuse bad refinement options before any work
    with progress_display(args.progress, "translate") as progress:
        pet = translate_volume(ct, model, options, progress, StopFile(args.stop_file) if args.stop_file else None)
    if dicom and source is not None:  # (a DICOM output with a file CT was refused above)
        model_name = model.path.name if model.path is not None else "unnamed model"
        write_pet_series(pet, source.series, out, SyntheticSource(model_name, model.sha256))
        what = f"DICOM PET series, {pet.GetSize()[2]} files"
    else:
        write_image(pet, out)
        what = f"{'x'.join(map(str, pet.GetSize()))} voxels"
    if args.progress != "jsonl":
        print(f"wrote {out} ({what}, SUV)", file=sys.stderr)
    return 0

"""``regc2p demo``: a phantom PET/CT study, translated, scored, pictured and saved as a scene.

Writes into ``--out``: ``ct.nii.gz`` (HU), ``reference_pet.nii.gz`` (the phantom's
aligned PET, SUV), ``lesions.nii.gz``, ``synthetic_pet.nii.gz`` (SUV, the CT's grid),
``fused.png`` (axial slices through brain, heart, liver, kidneys, bladder and the most lesion
area, and a coronal view; CT with a heat overlay, synthetic beside reference),
``metrics.json`` (paper-scale and SUV figures against the reference) and, where the
``slicer-core`` wheel (or Slicer) is present, ``demo.mrb`` — a scene that opens in
Slicer with the synthetic PET fused over the CT.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..inference import TranslationOptions
from .model_options import add_sha256_option
from .options import add_config_options, given_options
from .progress_display import add_progress_option, progress_display

if TYPE_CHECKING:
    from ..model_file import LoadedModel


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="translate a generated PET/CT phantom and write PET, fused PNG, metrics and a Slicer scene",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default: out/demo)")
    p.add_argument("--model", type=Path, help="model file (default: the bundled default model)")
    add_sha256_option(p)
    p.add_argument("--seed", type=int, default=2024, help="phantom seed (default: 2024)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="phantom voxels (default: 96 128 128)")
    add_config_options(p, TranslationOptions)
    add_progress_option(p)
    p.set_defaults(func=run)


def _model(path: Path | None, sha256: str | None) -> tuple[LoadedModel, str]:
    from ..config import preset
    from ..model_file import bundled_model_path, load_model, new_model

    path = path or bundled_model_path()
    if path is not None:
        model = load_model(path, sha256=sha256)
        return model, f"{path.name} (sha256 {model.sha256[:12]}…)"
    print(
        "regc2p: warning: no bundled default model in this installation; using an UNTRAINED small model — "
        "the synthetic PET is meaningless (give --model FILE)",
        file=sys.stderr,
    )
    return new_model(preset("small")), "untrained small model"


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..atomic import write_json
    from ..body import body_mask
    from ..data.phantom import PhantomConfig, generate_case
    from ..data.phantom_anatomy import Tissue
    from ..evaluation import format_table, score_volume, summarize
    from ..figures import fused_figure
    from ..inference import translate_volume
    from ..volume_io import array_view, resample_onto, write_image

    # Organs whose largest axial cross-section gives the figure's axial levels (plus one lesion level).
    level_organs = (Tissue.BRAIN_GRAY, Tissue.MYOCARDIUM, Tissue.LIVER, Tissue.KIDNEY, Tissue.BLADDER)
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"{args.out} is a file; give a folder for the demo outputs")
    model, model_name = _model(args.model, args.sha256)
    options = TranslationOptions(**given_options(args, TranslationOptions))
    options.validate(model.config)
    case = generate_case(PhantomConfig(shape=tuple(args.shape)) if args.shape else PhantomConfig(), args.seed)
    reference = resample_onto(case.pet_aligned, case.ct)
    with progress_display(args.progress, "demo") as progress:
        pet = translate_volume(case.ct, model, options, progress)
    args.out.mkdir(parents=True, exist_ok=True)  # only now: a refused demo leaves no folder behind

    for name, image in (("ct", case.ct), ("reference_pet", reference), ("lesions", case.lesions), ("synthetic_pet", pet)):
        write_image(image, args.out / f"{name}.nii.gz")

    ct, synthetic, ref, lesions = (array_view(image) for image in (case.ct, pet, reference, case.lesions))
    body = body_mask(ct, case.ct.GetSpacing()[::-1])
    scores = score_volume("demo", synthetic, ref, body, model.config.intensity, lesions)
    record = {
        "model": model_name,
        "seed": args.seed,
        "refine": options.refine,
        "paper": asdict(scores.paper),
        "suv": asdict(scores.suv),
    }
    write_json(args.out / "metrics.json", record)

    organs = array_view(case.organs)
    levels = [int(np.argmax((organs == organ).sum(axis=(1, 2)))) for organ in level_organs]
    if lesions.any():  # and the slice where lesions cover the most area, head to feet with the rest
        levels = sorted({*levels, int(np.argmax((lesions > 0).sum(axis=(1, 2))))}, reverse=True)
    spacing_zyx = case.ct.GetSpacing()[::-1]
    fused_figure(ct, {"synthetic PET": synthetic, "reference PET": ref}, spacing_zyx, levels, args.out / "fused.png",
                 title=f"RegC2P demo — {model_name}, refine {options.refine}")  # fmt: skip

    scene_note = _write_scene(case.ct, pet, reference, args.out / "demo.mrb")
    print(format_table({"synthetic vs reference": summarize([scores])}))
    print(f"wrote {args.out}/: ct, reference_pet, lesions, synthetic_pet (.nii.gz), fused.png, metrics.json{scene_note}")
    return 0


def _write_scene(ct: object, pet: object, reference: object, path: Path) -> str:
    """The .mrb needs Slicer's MRML (the slicer-core wheel); the glue package is loaded only then."""
    if importlib.util.find_spec("slicer") is None:
        return " (no demo.mrb: install the slicer-core wheel, or run inside Slicer, for the scene)"
    bundle = importlib.import_module("RegC2PSlicer.scene_bundle")
    bundle.save_fused_scene(ct, pet, path, "demo CT", {"reference PET": reference})
    return ", demo.mrb"

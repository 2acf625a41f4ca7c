"""Batch synthetic PET from CT with the RegC2P Slicer module's code, in Slicer or plain Python.

In Slicer (no window)::

    Slicer --no-splash --no-main-window --python-script RegC2PBatch.py \\
        --ct ct.nii.gz --out pet.nii.gz [--scene fused.mrb] [--model m.safetensors]

In a plain Python with the ``slicer-core`` wheel (same arguments)::

    python RegC2PBatch.py --ct cts/ --out pets/ --scene scenes/

``--ct`` is a CT volume file (HU), a DICOM series folder, or a folder of CT volume files
(and/or DICOM series sub-folders); then ``--out`` (and ``--scene``) are folders and each
case gives ``<name>_synthetic_pet.nii.gz`` (and ``<name>.mrb``). The scene holds the CT,
the PET (PET-Heat, SUV window) and slice views showing the fusion. Outputs are written
atomically. Exit status: 0 when every case succeeded, 2 otherwise (one
``regc2p: error: ...`` line per failed case on stderr), 1 with a traceback for an
unexpected error; the script always ends Slicer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The folder holding RegC2PLib and RegC2PSlicer: two levels up in an installed extension
# (<modules>/Resources/Scripts/), the RegC2P module folder in the source tree.
# Everything else is imported inside functions, so that any failure ends in run_script's handling.
SCRIPT = Path(globals().get("__file__") or sys.argv[0]).resolve()
sys.path[:0] = [str(p) for p in (SCRIPT.parents[2], SCRIPT.parents[3] / "RegC2P") if (p / "RegC2PSlicer").is_dir()][:1]

OUTPUT_SUFFIX = "_synthetic_pet.nii.gz"


def build_parser() -> argparse.ArgumentParser:
    from RegC2PLib.choices import DEVICE_CHOICES, REFINE_MODES
    from RegC2PSlicer.output import PET_COLORS, PetDisplay

    display = PetDisplay()
    p = argparse.ArgumentParser(prog="RegC2PBatch.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--ct", required=True, type=Path, help="CT file, DICOM series folder, or folder of CTs (HU)")
    p.add_argument("--out", required=True, type=Path, help="PET file (one CT) or folder (folder of CTs), SUV")
    p.add_argument("--scene", type=Path, help="also save a Slicer scene: .mrb file (one CT) or folder (folder of CTs)")
    p.add_argument("--model", type=Path, help="RegC2P model file (default: the bundled model, else the user's first)")
    p.add_argument("--refine", choices=REFINE_MODES, default="overlap", help="3D refinement")
    p.add_argument("--window", type=int, help="slices per refiner window s (default: the model's)")
    p.add_argument("--stride", type=int, help="window offset k (default: the model's)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="compute device")
    p.add_argument("--batch-size", type=int, help="slices per generator pass (default: the library's)")
    p.add_argument("--opacity", type=float, default=display.opacity, help="fusion opacity saved in the scene")
    p.add_argument("--color", choices=PET_COLORS, default=display.color, help="PET colour table")
    p.add_argument("--suv-window", type=float, nargs=2, default=display.suv_window, metavar=("LOW", "HIGH"), help="SUV window")
    return p


def _case_name(path: Path) -> str:
    from RegC2PLib.volume_io import WRITABLE_SUFFIXES

    name = path.name
    for suffix in WRITABLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def plan_cases(ct: Path, out: Path, scene: Path | None) -> list[tuple[Path, Path, Path | None]]:
    """(CT, PET file, scene file or None) for each case; refuses inconsistent arguments."""
    from RegC2PLib.errors import InputError
    from RegC2PLib.volume_io import WRITABLE_SUFFIXES, check_output_path

    def is_volume_file(path: Path) -> bool:
        return path.is_file() and path.name.lower().endswith(WRITABLE_SUFFIXES)

    if not ct.exists():
        raise InputError(f"{ct} does not exist; give a CT file, a DICOM folder or a folder of CTs")
    if scene is not None and not ct.is_dir() and scene.suffix.lower() != ".mrb":
        raise InputError(f"--scene {scene.name}: a scene bundle must end in .mrb")
    entries = sorted(ct.iterdir()) if ct.is_dir() else []
    batch = [e for e in entries if is_volume_file(e) or e.is_dir()]
    if ct.is_dir() and any(is_volume_file(e) for e in entries):
        if out.exists() and not out.is_dir():
            raise InputError(f"--ct is a folder of CTs, so --out must be a folder ({out} is a file)")
        out.mkdir(parents=True, exist_ok=True)
        if scene is not None:
            scene.mkdir(parents=True, exist_ok=True)
        return [(e, out / (_case_name(e) + OUTPUT_SUFFIX), scene / (_case_name(e) + ".mrb") if scene else None) for e in batch]
    check_output_path(out)
    if out.resolve() == ct.resolve():
        raise InputError("--out is the input CT; choose another output file (inputs are never overwritten)")
    return [(ct, out, scene)]


def run_case(ct_path: Path, pet_path: Path, scene_path: Path | None, model, settings) -> None:
    """Translate one CT: PET file, and the scene bundle (CT, PET, fused slice views) when asked."""
    from RegC2PLib.volume_io import read_image, write_image
    from RegC2PSlicer.batch import work_scene
    from RegC2PSlicer.processing import process
    from RegC2PSlicer.scene_bundle import write_scene
    from RegC2PSlicer.volumes import add_volume_node, image_from_volume_node

    image = read_image(ct_path)
    with work_scene(clear=True) as scene:
        ct_node = add_volume_node(scene, image, _case_name(ct_path))
        del image
        shown = -1

        def report(fraction: float, message: str) -> None:
            nonlocal shown
            if int(fraction * 10) != shown:
                shown = int(fraction * 10)
                print(f"  {fraction:4.0%} {message}", file=sys.stderr, flush=True)

        pet_node = process(ct_node, None, settings, loaded_model=model, progress=report)
        write_image(image_from_volume_node(pet_node), pet_path)
        if scene_path is not None:
            write_scene(scene, scene_path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from RegC2PLib.errors import InputError, RegC2PError
    from RegC2PLib.inference import TranslationOptions
    from RegC2PLib.model_file import load_model
    from RegC2PSlicer.models import resolve_model_path
    from RegC2PSlicer.processing import PetDisplay, RunSettings

    try:
        cases = plan_cases(args.ct, args.out, args.scene)
        if not cases:
            raise InputError(f"{args.ct} holds no CT volume files or DICOM folders")
        model_path = resolve_model_path(args.model)
        model = load_model(model_path)
        given = {"refine": args.refine, "window": args.window, "stride": args.stride, "device": args.device}
        given["batch_size"] = args.batch_size
        translation = TranslationOptions(**{name: value for name, value in given.items() if value is not None})
        translation.validate(model.config)
        display = PetDisplay(color=args.color, suv_window=tuple(args.suv_window), opacity=args.opacity)
        display.check()
        settings = RunSettings(model=str(model_path), translation=translation, display=display)
    except RegC2PError as exc:
        print(f"regc2p: error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for number, (ct_path, pet_path, scene_path) in enumerate(cases, 1):
        print(f"[{number}/{len(cases)}] {ct_path.name} -> {pet_path}", file=sys.stderr, flush=True)
        try:
            run_case(ct_path, pet_path, scene_path, model, settings)
        except RegC2PError as exc:
            failed += 1
            print(f"regc2p: error: {ct_path.name}: {exc}", file=sys.stderr)
    print(f"{len(cases) - failed} of {len(cases)} translated", file=sys.stderr)
    return 2 if failed else 0


if __name__ == "__main__":
    try:
        from RegC2PSlicer.batch import run_script
    except ImportError:
        if hasattr(sys.modules.get("slicer"), "app"):  # inside Slicer: end it, or it would wait forever
            sys.modules["slicer"].util.exit(1)
        raise
    run_script(main)

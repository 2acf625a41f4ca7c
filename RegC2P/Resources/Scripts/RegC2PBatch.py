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
``regc2p: error: ...`` line per failed case on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The module folder (holding RegC2PLib and RegC2PSlicer) is two levels up, in the source
# tree and in an installed extension alike (<module>/Resources/Scripts/RegC2PBatch.py).
MODULE_DIR = Path(globals().get("__file__") or sys.argv[0]).resolve().parents[2]
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

import slicer  # noqa: E402

from RegC2PLib.choices import DEVICE_CHOICES, REFINE_MODES  # noqa: E402
from RegC2PLib.errors import InputError, RegC2PError  # noqa: E402
from RegC2PLib.volume_io import WRITABLE_SUFFIXES, check_output_path, read_image, write_image  # noqa: E402
from RegC2PSlicer.headless import HeadlessScene  # noqa: E402
from RegC2PSlicer.models import resolve_model_path  # noqa: E402
from RegC2PSlicer.output import DEFAULT_OPACITY, DEFAULT_PET_COLOR, DEFAULT_SUV_WINDOW, PET_COLORS  # noqa: E402
from RegC2PSlicer.scene_bundle import write_scene  # noqa: E402
from RegC2PSlicer.volumes import add_volume_node, image_from_volume_node  # noqa: E402

try:  # torch: inside Slicer it comes from the PyTorch extension
    from RegC2PLib.inference import TranslationOptions
    from RegC2PLib.model_file import load_model
    from RegC2PSlicer.processing import PetDisplay, RunSettings, process
except ImportError as exc:
    print(f"regc2p: error: {exc}; in Slicer, install the PyTorch extension (and open the RegC2P module once)", file=sys.stderr)
    if hasattr(slicer, "app"):
        slicer.util.exit(2)
    sys.exit(2)

OUTPUT_SUFFIX = "_synthetic_pet.nii.gz"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="RegC2PBatch.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--ct", required=True, type=Path, help="CT file, DICOM series folder, or folder of CTs (HU)")
    p.add_argument("--out", required=True, type=Path, help="PET file (one CT) or folder (folder of CTs), SUV")
    p.add_argument("--scene", type=Path, help="also save a Slicer scene: .mrb file (one CT) or folder (folder of CTs)")
    p.add_argument("--model", type=Path, help="RegC2P model file (default: the bundled model, else the user's first)")
    p.add_argument("--refine", choices=REFINE_MODES, default="overlap", help="3D refinement")
    p.add_argument("--window", type=int, help="slices per refiner window s (default: the model's)")
    p.add_argument("--stride", type=int, help="window offset k (default: the model's)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="compute device")
    p.add_argument("--batch-size", type=int, default=TranslationOptions().batch_size, help="slices per generator pass")
    p.add_argument("--opacity", type=float, default=DEFAULT_OPACITY, help="fusion opacity saved in the scene")
    p.add_argument("--color", choices=PET_COLORS, default=DEFAULT_PET_COLOR, help="PET colour table")
    p.add_argument("--suv-window", type=float, nargs=2, default=DEFAULT_SUV_WINDOW, metavar=("LOW", "HIGH"), help="SUV window")
    return p


def _is_volume_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(WRITABLE_SUFFIXES)


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in WRITABLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def plan_cases(ct: Path, out: Path, scene: Path | None) -> list[tuple[Path, Path, Path | None]]:
    """(CT, PET file, scene file or None) for each case; refuses inconsistent arguments."""
    if not ct.exists():
        raise InputError(f"{ct} does not exist; give a CT file, a DICOM folder or a folder of CTs")
    if scene is not None and not ct.is_dir() and scene.suffix.lower() != ".mrb":
        raise InputError(f"--scene {scene.name}: a scene bundle must end in .mrb")
    entries = sorted(ct.iterdir()) if ct.is_dir() else []
    batch = [e for e in entries if _is_volume_file(e) or e.is_dir()]
    if ct.is_dir() and any(_is_volume_file(e) for e in entries):
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
    """Translate one CT: PET file, and the scene bundle when asked."""
    image = read_image(ct_path)
    in_slicer = hasattr(slicer, "app")
    headless = None if in_slicer else HeadlessScene()
    scene = slicer.mrmlScene if in_slicer else headless.scene
    try:
        if in_slicer:
            scene.Clear(False)
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
    finally:
        if headless is not None:
            headless.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cases = plan_cases(args.ct, args.out, args.scene)
        if not cases:
            raise InputError(f"{args.ct} holds no CT volume files or DICOM folders")
        model_path = resolve_model_path(args.model)
        model = load_model(model_path)
        translation = TranslationOptions(
            refine=args.refine, window=args.window, stride=args.stride, device=args.device, batch_size=args.batch_size
        )
        translation.window_and_stride(model.config)
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
    status = main(sys.argv[1:])
    if hasattr(slicer, "app"):
        slicer.util.exit(status)
    else:
        sys.exit(status)

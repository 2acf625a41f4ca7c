"""``regc2p phantom``: write synthetic FDG PET/CT studies with misalignment (whole-body or on real anatomy)."""

from __future__ import annotations

import argparse
import os
import time

from ..errors import InputError

DEFAULT_SHAPE = (96, 128, 128)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantom",
        help="write synthetic PET/CT phantom studies",
        description=(
            "Write N synthetic whole-body FDG PET/CT studies (CT in HU, PET in SUVbw, lesions) in the "
            "dataset layout: DIR/case_0000/{ct,pet,pet_aligned,lesions,organs}.nii.gz + phantom.json. "
            "pet is misaligned with the CT (breathing + RegGAN affine noise), pet_aligned is the ground truth. "
            "With --anatomy, every study is a new patient made from a real CT with organ labels "
            "(deformed, re-scanned, given FDG uptake and lesions) instead of the drawn whole-body phantom."
        ),
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    parser.add_argument(
        "--anatomy",
        metavar="DIR",
        help="real CT with organ labels: a folder with ct.nii.gz and labels.nii.gz + label_names.json or TotalSegmentator's "
        "segmentations/, or a folder of such folders (used in turn); the studies keep the CT's voxel size",
    )
    parser.add_argument("--cases", required=True, type=int, metavar="N", help="number of studies")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="dataset seed; case i is the same for any N (default 0)")
    parser.add_argument(
        "--misalign",
        type=float,
        default=2.0,
        metavar="LEVEL",
        help="RegGAN noise level L: rotation ±L°, shift ±2L %%, scale ±2L %% (default 2; 0 = none)",
    )
    parser.add_argument(
        "--breathing",
        type=float,
        default=10.0,
        metavar="MM",
        help="largest respiratory diaphragm shift in mm (default 10; 0 = none)",
    )
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="CT size in voxels (default 96 128 128; not with --anatomy)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="CT voxel size in mm (default: fit vertex to thigh, 520 mm wide; not with --anatomy)",
    )
    parser.add_argument("--fwhm", type=float, default=6.0, metavar="MM", help="PET resolution FWHM in mm (default 6)")
    parser.add_argument(
        "--lesions",
        type=int,
        nargs=2,
        default=(2, 5),
        metavar=("MIN", "MAX"),
        help="FDG-avid lesions per study, drawn in MIN..MAX (default 2 5; more for a lesion-rich training set)",
    )
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="parallel processes (default: up to 2)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing case folders in DIR")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.phantom import PhantomConfig, write_dataset

    if args.anatomy:
        from ..data.anatomy_phantom import AnatomyMaker, AnatomyPhantomConfig, load_anatomies

        if args.shape or args.spacing:
            raise InputError(
                "--shape and --spacing size the whole-body phantom; anatomy phantoms keep their CT's grid, drop them"
            )
        config = AnatomyPhantomConfig(
            misalign=args.misalign, breathing_mm=args.breathing, pet_fwhm_mm=args.fwhm, lesions=tuple(args.lesions)
        )
        anatomies = load_anatomies(args.anatomy)  # errors in the folder show before any work starts
        maker = AnatomyMaker(args.anatomy, config)
        what = f"anatomy phantom stud{'y' if args.cases == 1 else 'ies'} from {', '.join(a.name for a in anatomies)}"
        kwargs: dict[str, object] = {"maker": maker}
    else:
        whole_body = PhantomConfig(
            shape=tuple(args.shape or DEFAULT_SHAPE),
            spacing=tuple(args.spacing) if args.spacing else None,
            misalign=args.misalign,
            breathing_mm=args.breathing,
            pet_fwhm_mm=args.fwhm,
            lesions=tuple(args.lesions),
        )
        grid = whole_body.ct_grid()
        what = (
            f"phantom stud{'y' if args.cases == 1 else 'ies'} ({'x'.join(map(str, grid.shape))} voxels of "
            + "x".join(f"{s:.2f}" for s in grid.spacing)
            + " mm)"
        )
        kwargs = {"config": whole_body}
    start = time.perf_counter()
    with tqdm(total=args.cases, unit="case", desc="phantom", disable=None) as bar:

        def progress(fraction: float, message: str) -> None:
            bar.n = round(fraction * args.cases)
            bar.set_postfix_str(message, refresh=False)
            bar.refresh()

        write_dataset(
            args.out,
            args.cases,
            seed=args.seed,
            progress=progress,
            workers=args.workers,
            overwrite=args.overwrite,
            **kwargs,
        )
    print(
        f"wrote {args.cases} {what}, misalign {args.misalign:g}, breathing {args.breathing:g} mm, "
        f"to {args.out} in {time.perf_counter() - start:.1f} s"
    )
    return 0

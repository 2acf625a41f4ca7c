"""``regc2p phantom``: write synthetic whole-body FDG PET/CT studies with misalignment."""

from __future__ import annotations

import argparse
import os
import time

from ..data.phantom import PhantomConfig, write_dataset


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantom",
        help="write synthetic PET/CT phantom studies",
        description=(
            "Write N synthetic whole-body FDG PET/CT studies (CT in HU, PET in SUVbw, lesions) in the "
            "dataset layout: DIR/case_0000/{ct,pet,pet_aligned,lesions,organs}.nii.gz + phantom.json. "
            "pet is misaligned with the CT (breathing + RegGAN affine noise), pet_aligned is the ground truth."
        ),
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
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
        default=(96, 128, 128),
        metavar=("Z", "Y", "X"),
        help="CT size in voxels (default 96 128 128)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="CT voxel size in mm (default: fit vertex to thigh, 520 mm wide)",
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

    config = PhantomConfig(
        shape=tuple(args.shape),
        spacing=tuple(args.spacing) if args.spacing else None,
        misalign=args.misalign,
        breathing_mm=args.breathing,
        pet_fwhm_mm=args.fwhm,
        lesions=tuple(args.lesions),
    )
    start = time.perf_counter()
    with tqdm(total=args.cases, unit="case", desc="phantom", disable=None) as bar:

        def progress(fraction: float, message: str) -> None:
            bar.n = round(fraction * args.cases)
            bar.set_postfix_str(message, refresh=False)
            bar.refresh()

        write_dataset(args.out, args.cases, config, args.seed, progress, workers=args.workers, overwrite=args.overwrite)
    grid = config.ct_grid()
    sz, sy, sx = grid.spacing
    print(
        f"wrote {args.cases} phantom stud{'y' if args.cases == 1 else 'ies'} "
        f"({'x'.join(map(str, grid.shape))} voxels of {sz:.2f}x{sy:.2f}x{sx:.2f} mm, misalign {args.misalign:g}, "
        f"breathing {args.breathing:g} mm) to {args.out} in {time.perf_counter() - start:.1f} s"
    )
    return 0

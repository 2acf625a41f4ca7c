"""Anatomy phantoms: per-organ CT numbers and FDG uptake of N generated cases, time per case, a figure.

For each case of ``regc2p phantom --anatomy DIR`` (generated in memory with the same
seeds as the command: ``case_seed(seed, i)``) and each voxel role present, it reports the
mean CT number (HU, the final CT) and, in the role's core (eroded by one CT voxel, at least
8 voxels; lesions and 3 voxels around them left out), the mean of the aligned PET resampled onto the CT (SUV: what blur and noise
leave) beside the SUV drawn for the case. Prints a markdown table (mean and range over
the cases) and the time per case (generation, then writing the study folder), and writes
a PNG with CT and PET side by side (axial and coronal) for the first cases::

    .venv/bin/python benchmarks/anatomy_phantoms.py --anatomy Testing/data/totalseg_upper_abdomen \\
        [--cases 10] [--seed 0] [--figure out/anatomy_phantoms.png] [--rows 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from RegC2PLib.data.anatomy_phantom import AnatomyMaker, AnatomyPhantomConfig, load_anatomies
from RegC2PLib.data.anatomy_roles import Role
from RegC2PLib.data.phantom import case_seed, write_case
from RegC2PLib.volume_io import resample_onto


def organ_table(cases: list) -> str:
    """Markdown table: per role, mean (min-max) over cases of mean HU, drawn SUV and core PET SUV."""
    rows: dict[Role, list[tuple[float, float, float]]] = {}
    for case in cases:
        hu = sitk.GetArrayFromImage(case.ct)
        pet = sitk.GetArrayFromImage(resample_onto(case.pet_aligned, case.ct))
        near_lesion = ndimage.binary_dilation(sitk.GetArrayFromImage(case.lesions) > 0, iterations=3)
        for role in Role:
            mask = (case.roles == role) & ~near_lesion
            if role in (Role.OUTSIDE, Role.COUCH) or mask.sum() < 8:
                continue
            core = ndimage.binary_erosion(mask)
            core = core if core.sum() >= 8 else mask
            rows.setdefault(role, []).append((float(hu[mask].mean()), float(case.role_suv[role]), float(pet[core].mean())))
    lines = ["| role | cases | CT HU | SUV drawn | SUV in PET (core) |", "|---|---|---|---|---|"]
    for role, values in rows.items():
        v = np.array(values)
        cells = [f"{v[:, c].mean():.{d}f} ({v[:, c].min():.{d}f}–{v[:, c].max():.{d}f})" for c, d in ((0, 0), (1, 2), (2, 2))]
        lines.append(f"| {role.name.lower()} | {len(values)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(cases: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(cases), 4, figsize=(14, 3.4 * len(cases)), squeeze=False)
    for row, case in zip(axes, cases):
        ct = sitk.GetArrayFromImage(case.ct)
        pet = sitk.GetArrayFromImage(resample_onto(case.pet_aligned, case.ct))
        lesions = sitk.GetArrayFromImage(case.lesions)
        z = int(np.argmax(lesions.sum(axis=(1, 2)))) if lesions.any() else ct.shape[0] // 2
        kidney = case.roles == Role.KIDNEY
        y = int(np.argmax(kidney.sum(axis=(0, 2)))) if kidney.any() else ct.shape[1] // 2
        sz, sy, _ = case.ct.GetSpacing()[::-1]
        views = ((ct[z], pet[z], 1.0, f"axial {z}"), (ct[::-1, y], pet[::-1, y], sz / sy, f"coronal {y}"))
        for q, (c, p, aspect, name) in enumerate(views):
            row[2 * q].imshow(c, cmap="gray", vmin=-160, vmax=240, aspect=aspect)
            row[2 * q].set_title(f"seed {case.seed}: CT {case.look.phase}/{case.look.kernel}, {name}", fontsize=8)
            row[2 * q + 1].imshow(p, cmap="hot", vmin=0, vmax=8, aspect=aspect)
            row[2 * q + 1].set_title("aligned PET, SUV 0-8", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=70)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anatomy", required=True, help="anatomy folder (or folder of anatomies)")
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", type=Path, help="PNG with CT and PET of the first --rows cases")
    parser.add_argument("--rows", type=int, default=4)
    args = parser.parse_args()
    maker = AnatomyMaker(args.anatomy, AnatomyPhantomConfig())
    anatomies = load_anatomies(args.anatomy)
    print("anatomies:", ", ".join(f"{a.name} {'x'.join(map(str, a.hu.shape))} at {a.spacing} mm" for a in anatomies))
    cases, make_s, write_s = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.cases):
            start = time.perf_counter()
            case = maker(i, case_seed(args.seed, i))
            make_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            write_case(case, Path(tmp) / f"case_{i:04d}")
            write_s.append(time.perf_counter() - start)
            cases.append(case)
    print(organ_table(cases))
    print(
        f"\nper case: generation {np.mean(make_s):.2f} s (min {np.min(make_s):.2f}, max {np.max(make_s):.2f}), "
        f"writing {np.mean(write_s):.2f} s; output size {cases[0].ct.GetSize()[::-1]} (z, y, x)"
    )
    if args.figure:
        figure(cases[: args.rows], args.figure)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()

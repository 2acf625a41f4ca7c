"""Peak memory and time of translating a large CT on the CPU.

Translates a synthetic 512×512×600 int16 CT (HU) with the shipped default model (``small``
preset, G + refiner, ``refine=overlap``, precision ``auto`` as a user gets it: bfloat16 where
the CPU has it natively and the model's precision record allows; a fresh ``small`` model when
no model is shipped) on the CPU and reports:

* the peak resident set size (``resource.getrusage(...).ru_maxrss``) of a fresh child
  process, minus its RSS after the imports and model creation (torch's allocator is
  invisible to tracemalloc, so only the OS figure is trustworthy);
* the same peak minus the RSS once the input CT exists (what translation itself adds);
* the wall time of ``translate_volume``.

Usage::

    python benchmarks/memory_translate.py [--slices 600] [--size 512] [--refine overlap] [--batch-size B]
        [--precision auto] [--orientation LPS]

The measurement runs in a child process (``--child``) so the peak is not polluted by
anything the parent did.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def _rss_mib() -> float:
    """Current resident set size in MiB (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/self/status")


def _peak_mib() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / (1024.0 * 1024.0)


def _synthetic_ct(n_slices: int, size: int, orientation: str = "LPS"):
    """int16 CT in HU: air outside an elliptic body of soft tissue, lungs, a spine."""
    import numpy as np
    import SimpleITK as sitk

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2.0, size / 2.0
    body = ((yy - cy) / (0.35 * size)) ** 2 + ((xx - cx) / (0.45 * size)) ** 2 <= 1.0
    lungs = (((yy - cy) / (0.2 * size)) ** 2 + ((np.abs(xx - cx) - 0.2 * size) / (0.12 * size)) ** 2) <= 1.0
    spine = ((yy - cy - 0.25 * size) / (0.05 * size)) ** 2 + ((xx - cx) / (0.05 * size)) ** 2 <= 1.0
    plane = np.full((size, size), -1000, dtype=np.int16)
    plane[body] = 40
    plane[lungs & body] = -850
    plane[spine] = 700
    volume = np.empty((n_slices, size, size), dtype=np.int16)
    for z in range(n_slices):
        volume[z] = plane + np.int16(z % 7)  # slices differ slightly
    image = sitk.GetImageFromArray(volume)
    del volume
    image.SetSpacing((0.8, 0.8, 1.25))
    if orientation == "RAS":  # how NIfTI tools often store a CT: translation must reorient it
        image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    return image


def child(args: argparse.Namespace) -> dict[str, float | int | str]:
    import time

    import torch

    from RegC2PLib.config import preset
    from RegC2PLib.inference import TranslationOptions, translate_volume
    from RegC2PLib.inference.translate import PRECISION_KEY
    from RegC2PLib.model_file import bundled_model_path, load_model, new_model

    torch.set_num_threads(max(1, torch.get_num_threads()))
    shipped = bundled_model_path()
    model = load_model(shipped) if shipped else new_model(preset("small"), seed=0, with_refiner=True)
    rss_after_imports = _rss_mib()
    ct = _synthetic_ct(args.slices, args.size, args.orientation)
    rss_after_ct = _rss_mib()
    options = TranslationOptions(refine=args.refine, device="cpu", batch_size=args.batch_size, precision=args.precision)
    start = time.perf_counter()
    pet = translate_volume(ct, model, options)
    seconds = time.perf_counter() - start
    peak = _peak_mib()
    return {
        "shape_xyz": "x".join(map(str, pet.GetSize())),
        "refine": args.refine,
        "orientation": args.orientation,
        "batch_size": args.batch_size or "measured",
        "model": shipped.name if shipped else "untrained small",
        "precision": pet.GetMetaData(PRECISION_KEY),  # what the networks ran in
        "torch_threads": torch.get_num_threads(),
        "rss_after_imports_mib": round(rss_after_imports, 1),
        "rss_after_ct_mib": round(rss_after_ct, 1),
        "peak_rss_mib": round(peak, 1),
        "peak_minus_imports_mib": round(peak - rss_after_imports, 1),
        "peak_minus_ct_mib": round(peak - rss_after_ct, 1),
        "ct_mib": round(args.slices * args.size * args.size * 2 / 2**20, 1),
        "pet_float32_mib": round(args.slices * args.size * args.size * 4 / 2**20, 1),
        "seconds": round(seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=600)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--refine", default="overlap", choices=("overlap", "non-overlap", "none"))
    parser.add_argument("--batch-size", type=int, help="slices per G pass (default: measured, as translate does)")
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--orientation", default="LPS", choices=("LPS", "RAS"), help="storage orientation of the CT")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return 0
    command = [sys.executable, __file__, "--child", "--slices", str(args.slices), "--size", str(args.size)]
    command += ["--refine", args.refine, "--precision", args.precision, "--orientation", args.orientation]
    command += ["--batch-size", str(args.batch_size)] if args.batch_size else []
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return done.returncode
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key, value in result.items():
        print(f"{key:>24}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

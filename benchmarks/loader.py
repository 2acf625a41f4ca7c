"""Measure the training-sample loader alone (slices/s), without any network.

``python benchmarks/loader.py DIR [--preset small] [--workers 2] [--batch 16]`` builds the
cache for the dataset folder ``DIR`` (in a temporary folder unless ``--cache``) and reads
shuffled batches of slices and of refiner windows through a DataLoader.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from RegC2PLib.config import preset
from RegC2PLib.data.datasets import SliceDataset, WindowDataset
from RegC2PLib.data.studies import discover_studies, skipped_summary
from RegC2PLib.errors import InputError


def loader_speed(dataset: Dataset, batch_size: int = 16, workers: int = 2, max_batches: int = 200) -> float:
    """Slices per second delivered by a shuffled DataLoader over ``dataset`` (loader only).

    For window datasets a sample counts as its number of slices.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=False)
    count, start = 0, None
    for i, batch in enumerate(loader):
        if i == 0:
            start = time.perf_counter()  # exclude worker start-up
            continue
        count += int(batch["ct"].shape[0] * batch["ct"].shape[1])
        if i >= max_batches:
            break
    if start is None or count == 0:
        raise InputError("the dataset is too small to measure the loader; use more studies or a smaller batch")
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", metavar="DIR", help="dataset folder (one sub-folder per study)")
    parser.add_argument("--preset", default="small", help="model preset deciding the slice size (default small)")
    parser.add_argument("--cache", metavar="DIR", help="cache folder (default: a fresh temporary folder)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)
    config = preset(args.preset)
    try:
        studies, skipped = discover_studies(args.data)
        with tempfile.TemporaryDirectory() as scratch:
            cache = Path(args.cache) if args.cache else Path(scratch)
            start = time.perf_counter()
            slices = SliceDataset(studies, config, cache)
            prepared = time.perf_counter() - start
            n = max(len(slices.studies), 1)
            print(f"cache built in {prepared:.1f} s for {len(slices.studies)} studies ({prepared / n:.2f} s/study)")
            print(slices.summary())
            if skipped:
                print(skipped_summary(skipped))
            speed = loader_speed(slices, args.batch, args.workers)
            size = f"{config.image_size}x{config.image_size}"
            print(f"SliceDataset  {size}: {speed:.0f} slices/s ({args.workers} workers, batch {args.batch})")
            windows = WindowDataset(slices.studies, config)
            speed = loader_speed(windows, max(1, args.batch // config.refiner.window), args.workers)
            print(f"WindowDataset {config.refiner.window}x{config.image_size}x{config.image_size}: {speed:.0f} slices/s")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

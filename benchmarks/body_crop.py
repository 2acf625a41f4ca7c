"""Would cropping the model grid to the body's box keep the PET? Measured on real studies.

``translate`` places every slice on a canvas of at least the model's ``image_size`` (the
size it was trained on), centred on the body. Cropping the canvas to the body's bounding
box (plus a margin, rounded to the networks' size multiple) computes less air: on the
sarcoma crops the canvas shrinks from 128² to about 48². The networks are fully
convolutional, but their instance normalisation takes its statistics over the whole
canvas, air included, so a smaller canvas changes every activation. This script measures
by how much: for each study, the PET with the usual canvas and with the cropped one
(``--min-size``), the |ΔSUV| between them inside the body, each one's SUV MAE and bias
against the real PET, and the time of each.

    .venv/bin/python benchmarks/body_crop.py --data STS [--split MANIFEST] [--model M] [--min-size 32]

Writes ``benchmarks/results/body-crop.json``; the decision it supports is in
docs/benchmark.md ("Speed, in short").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from RegC2PLib.body import body_mask
from RegC2PLib.data.split import read_manifest, select
from RegC2PLib.data.studies import MIN_COVERAGE, discover_studies, load_study
from RegC2PLib.inference import TranslationOptions, translate_volume
from RegC2PLib.metrics import suv_metrics
from RegC2PLib.model_file import BUNDLED_MODEL, load_model
from RegC2PLib.slice_grid import SliceGrid
from RegC2PLib.volume_io import array_view

ROOT = Path(__file__).resolve().parents[1]


def cropped_grids(min_size: int):  # type: ignore[no-untyped-def]
    """A replacement for ``SliceGrid.for_model`` whose canvas may shrink to ``min_size``.

    Patched in for the measurement only: the library keeps the model's training size on
    purpose, and this benchmark is the reason.
    """

    def for_model(cls, in_shape, spacing_yx, config, box=None):  # type: ignore[no-untyped-def]
        return cls.fit(in_shape, spacing_yx, config.pixel_mm, min_size, config.size_multiple, box)

    return classmethod(for_model)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="study folder of real PET/CT (e.g. the sarcoma studies, STS)")
    p.add_argument("--split", type=Path, default=ROOT / "benchmarks" / "splits" / "sts.json")
    p.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    p.add_argument("--min-size", type=int, default=32, help="smallest canvas side of the cropped grid, pixels")
    p.add_argument("--refine", default="none", choices=("none", "overlap"))
    p.add_argument("--out-json", type=Path, default=ROOT / "benchmarks" / "results" / "body-crop.json")
    args = p.parse_args(argv)

    model = load_model(args.model)
    studies, _ = discover_studies(args.data)
    test = select(studies, read_manifest(args.split), "test") if args.split else studies
    full_grid, crop_grid = SliceGrid.__dict__["for_model"], cropped_grids(args.min_size)
    options = TranslationOptions(refine=args.refine, device="cpu", precision="float32")
    records = []
    for study in test:
        loaded = load_study(study)
        keep = loaded.coverage >= MIN_COVERAGE
        body = body_mask(array_view(loaded.ct), loaded.ct.GetSpacing()[::-1])[keep]
        real = array_view(loaded.pet)[keep]
        record: dict[str, object] = {"study": study.name}
        pets = {}
        for name, grid in (("full", full_grid), ("cropped", crop_grid)):
            SliceGrid.for_model = grid  # type: ignore[method-assign]
            try:
                translate_volume(loaded.ct, model, options)  # warm-up, and the batch size is chosen
                started = time.perf_counter()
                pets[name] = array_view(translate_volume(loaded.ct, model, options))[keep]
                record[f"{name}_seconds"] = time.perf_counter() - started
            finally:
                SliceGrid.for_model = full_grid  # type: ignore[method-assign]
            scores = suv_metrics(pets[name], real, body)
            record[f"{name}_suv_mae"], record[f"{name}_suv_bias"] = scores.mae_body, scores.bias_body
        delta = np.abs(pets["cropped"] - pets["full"])[body]
        record.update(mean_abs_delta_suv=float(delta.mean()), p999_abs_delta_suv=float(np.quantile(delta, 0.999)))
        records.append(record)
        print(json.dumps(record), flush=True)
    summary = {
        key: float(np.mean([r[key] for r in records]))  # type: ignore[misc]
        for key in records[0]
        if key != "study"
    }
    summary["speed_up"] = summary["full_seconds"] / summary["cropped_seconds"]
    print("mean:", json.dumps(summary), flush=True)
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps({"command": " ".join(sys.argv), "studies": records, "mean": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

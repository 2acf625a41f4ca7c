"""Does bfloat16 keep a model's PET within tolerance of float32? Measured, and recorded beside the model.

For every study of the given datasets, the CT is translated in float32 and in bfloat16 (every
other option the default), and :func:`RegC2PLib.precision_check.check_bfloat16` compares them:
|ΔSUV| inside the body per study (mean, 99.9th percentile, max), the paper metrics against
the study's PET per dataset, the seconds of each translation. The verdict (bfloat16 adopted
by ``--precision auto`` or not) follows from those figures and the tolerance; the record is
written beside the model file (``default.safetensors`` -> ``default.precision.json``), where
``translate`` reads it. Needs a device with native bfloat16 (AVX512-BF16/AMX CPU or a GPU).

    .venv/bin/regc2p phantom --out out/precision/phantoms --cases 3 --seed 900
    .venv/bin/regc2p phantom --anatomy ANATOMY_DIR --out out/precision/anatomy --cases 2 --seed 901
    .venv/bin/python benchmarks/precision.py --data sarcoma=data/STS:benchmarks/splits/sts.json \\
        headneck=data/headneck phantoms=out/precision/phantoms anatomy=out/precision/anatomy [--model M]

``NAME=DIR:MANIFEST`` takes the test studies of the split manifest; ``NAME=DIR`` every study.
Use it on your own model and your own studies the same way: the record then sits beside your
model file and ``--precision auto`` uses bfloat16 for it where the figures allow.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from RegC2PLib.data.split import read_manifest, select
from RegC2PLib.data.studies import Study, discover_studies
from RegC2PLib.inference import TranslationOptions
from RegC2PLib.inference.precision_record import record_path
from RegC2PLib.model_file import BUNDLED_MODEL, load_model
from RegC2PLib.precision_check import check_bfloat16, write_record

_START = time.perf_counter()


def dataset(spec: str) -> tuple[str, list[Study]]:
    """``NAME=DIR[:MANIFEST]`` -> the name and its studies (the manifest's test split, else all)."""
    name, sep, rest = spec.partition("=")
    if not sep or not name:
        raise SystemExit(f"--data {spec!r}: write NAME=DIR or NAME=DIR:MANIFEST")
    folder, _, manifest = rest.partition(":")
    studies, _skipped = discover_studies(folder)
    if manifest:
        studies = select(studies, read_manifest(manifest), "test")
    if not studies:
        raise SystemExit(f"--data {spec!r}: no studies there")
    return name, studies


def report(record: dict) -> str:
    """The record as Markdown: per-dataset tables and the verdict."""
    result = record["bfloat16"]
    tol = record["tolerance"]
    lines = [
        f"bfloat16 vs float32, model {record['model']} (SHA-256 {record['model_sha256'][:12]}…), "
        f"{record['measured']['device']} ({record['measured']['processor']}), torch {record['measured']['torch']}",
        "",
        "| dataset | study | mean \\|ΔSUV\\| body | p99.9 | max | float32 s | bfloat16 s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, data in result["datasets"].items():
        for row in data["studies"]:
            lines.append(
                f"| {name} | {row['study']} | {row['mean_abs_suv_body']:.4f} | {row['p999_abs_suv_body']:.3f} | "
                f"{row['max_abs_suv_body']:.3f} | {row['seconds_float32']:.2f} | {row['seconds_bfloat16']:.2f} |"
            )
    lines += [
        "",
        "| dataset | MAE f32 → bf16 | SSIM f32 → bf16 | PSNR f32 → bf16 | largest relative change |",
        "|---|---|---|---|---|",
    ]
    for name, data in result["datasets"].items():
        a, b = data["paper_float32"], data["paper_bfloat16"]
        lines.append(
            f"| {name} | {a['mae']:.2f} → {b['mae']:.2f} | {a['ssim']:.4f} → {b['ssim']:.4f} | "
            f"{a['psnr']:.2f} → {b['psnr']:.2f} | {100 * max(data['paper_relative'].values()):.3f} % |"
        )
    worst = result["worst"]
    verdict = "adopted" if result["adopted"] else "not adopted: " + "; ".join(result["reasons"])
    lines += [
        "",
        f"Worst: mean |ΔSUV| {worst['mean_abs_suv_body']:.4f} (tolerance {tol['mean_abs_suv']}), p99.9 "
        f"{worst['p999_abs_suv_body']:.3f} (tolerance {tol['p999_abs_suv']}), paper metrics "
        f"{100 * worst['paper_relative']:.3f} % (tolerance {100 * tol['paper_relative']:.1f} %) — bfloat16 {verdict}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL, help="model file (default: the shipped model)")
    parser.add_argument("--data", nargs="+", required=True, metavar="NAME=DIR[:MANIFEST]", help="datasets to check on")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device to check on")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    datasets = dict(dataset(spec) for spec in args.data)

    def progress(fraction: float, message: str) -> None:
        print(f"[{time.perf_counter() - _START:6.0f} s] {100 * fraction:3.0f} % {message}", file=sys.stderr, flush=True)

    record = check_bfloat16(model, datasets, TranslationOptions(device=args.device), progress)
    record["command"] = " ".join([".venv/bin/python", "benchmarks/precision.py", *(argv if argv is not None else sys.argv[1:])])
    write_record(model, record)
    print(report(record))
    print(f"\nwrote {record_path(model.path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

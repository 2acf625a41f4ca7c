"""Markdown report of the speed benchmark: ``benchmarks/results/speed.json`` -> ``docs/benchmark-speed.md``.

Every verdict is computed here from the measured numbers with the thresholds below (and the
accuracy tolerance recorded in the JSON), so a different machine or a different code path gives
different verdicts. Numbers a result does not hold (an older JSON, a section not run) are
reported as "not measured". Torch-free: it only reads the JSON::

    .venv/bin/python benchmarks/speed_report.py [--json benchmarks/results/speed.json] [--out docs/benchmark-speed.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

SPEED_MARGIN = 0.05  # speed-ups within 1 ± this are "no measurable difference"
SAME_OUTPUT_NET = 1e-4  # max |Δ| on the network scale [-1, 1] below which two paths give the same output
BREAK_EVEN_SLICES = 300  # a whole-body CT: compilation must pay for itself within one volume
LINEAR_R2 = 0.99  # R² of the line t = a + b·n above which time is called linear in the slice count
# The goals of the speed work: translate vs RegGAN's loop (paper preset, real CT, refine none /
# overlap), and seconds for a 512×512×300 CT with the shipped (small) model.
GOAL_PAPER_NONE, GOAL_PAPER_OVERLAP, GOAL_SMALL_SECONDS, GOAL_SHAPE = 3.0, 2.0, 15.0, (512, 300)
NOT_MEASURED = "not measured"


def variant(row: dict[str, Any]) -> str:
    """The row's variant key (``ours``, ``bfloat16``, ``refiner``, ...)."""
    return row["variant"]


def rows_of(result: dict[str, Any], section: str) -> list[dict[str, Any]]:
    """The rows of one section (``G``, ``volume``, ``tolerance``, ``training``), in measurement order."""
    return [r for r in result.get("rows", []) if r["section"] == section]


def find(result: dict[str, Any], section: str, name: str, preset: str) -> dict[str, Any] | None:
    """The row of ``section`` with variant ``name`` for ``preset``, if it was measured."""
    return next((r for r in rows_of(result, section) if variant(r) == name and r["preset"] == preset), None)


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (integers from 100 on); "not measured" for None."""
    if value is None:
        return NOT_MEASURED
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.{digits}g}"


def pace(ratio: float | None) -> str:
    """``faster``, ``slower`` or ``no measurable difference`` for a speed-up (reference time / ours)."""
    if ratio is None:
        return NOT_MEASURED
    if ratio > 1 + SPEED_MARGIN:
        return "faster"
    if ratio < 1 - SPEED_MARGIN:
        return "slower"
    return "no measurable difference"


def record_of(result: dict[str, Any], preset: str) -> dict[str, Any] | None:
    """The precision record summary of the trained model of ``preset`` in the result, if any."""
    return result.get("precision_records", {}).get(preset)


def within_tolerance(extra: dict[str, float], tolerance: dict[str, float]) -> bool:
    """Whether the mean and the 99.9th percentile of |ΔSUV| in the body are within ``tolerance``."""
    return extra["mean_abs_suv_body"] <= tolerance["mean_abs_suv"] and extra["p999_abs_suv_body"] <= tolerance["p999_abs_suv"]


def same_output(row: dict[str, Any]) -> bool:
    """Whether the row's max |Δ| on the network scale is at float-rounding level (:data:`SAME_OUTPUT_NET`)."""
    return row["extra"]["max_abs_net"] <= SAME_OUTPUT_NET


def adoption(row: dict[str, Any], candidate: bool) -> str:
    """The verdict on a code path timed against another: ``adopted`` if faster with the same output.

    ``candidate``: an optional optimisation (else a path the code already takes, whose verdict says
    how it compares).
    """
    speed = pace(row["ratio"])
    if not same_output(row):
        verdict = f"output differs by up to {row['extra']['max_abs_net']:.1e}"
    elif speed == "faster":
        return "adopted"
    else:
        verdict = "slower than what it replaces" if speed == "slower" else "no measurable gain"
    return f"not adopted ({verdict})" if candidate else verdict


# --------------------------------------------------------------------------- verdicts


# Code paths timed against what they replace: (section, variant, title, compared with, optional candidate).
_SAME_OUTPUT_PATHS = (
    ("volume", "refiner", "Batched refiner windows", "one window per pass", False),
    ("G", "ours", "Batched G + inference mode", "the slice-by-slice reference loop for G alone", False),
    ("G", "channels_last", "channels_last on CPUs", "the contiguous layout (float32 G)", False),
)


def _batched_verdicts(result: dict[str, Any], presets: list[str]) -> Iterable[str]:
    for name in presets:
        for section, key, title, against, candidate in _SAME_OUTPUT_PATHS:
            if (r := find(result, section, key, name)) is not None:
                yield (
                    f"- **{title} — {adoption(r, candidate)}** ({name}): {fmt(r['ratio'], 2)}× {against}"
                    f" ({pace(r['ratio'])}), max |Δ| {r['extra']['max_abs_net']:.1e} on [-1, 1]."
                )


def _bfloat16_verdicts(result: dict[str, Any], presets: list[str]) -> Iterable[str]:
    if not result["machine"].get("native_bfloat16", True):
        yield (
            "- **bfloat16 autocast — not measured**: this CPU has no native bfloat16 (AVX512-BF16 or AMX); PyTorch "
            "emulates it tens of times slower, so `translate` refuses `--precision bfloat16` here."
        )
        return
    for name in presets:
        if (g := find(result, "G", "bfloat16", name)) is None:
            continue
        record = record_of(result, name)
        faster = pace(g["ratio"]) == "faster"
        reasons = [] if faster else [f"G is not faster ({fmt(g['ratio'], 2)}×)"]
        if record is None:
            accuracy = f"no precision record for a trained {name} model"
            reasons.append("accuracy not measured")
        else:
            w = record["worst"]
            accuracy = (
                f"{record['model']} on {sum(d['studies'] for d in record['datasets'].values())} real and phantom studies:"
                f" worst mean |ΔSUV| {w['mean_abs_suv_body']:.3f}, p99.9 {w['p999_abs_suv_body']:.2f}, paper metrics"
                f" {100 * w['paper_relative']:.2f} %"
            )
            if not record["adopted"]:
                reasons.append("outside the tolerance")
        if not reasons:
            verdict, tail = "the default where the model's record allows", "`--precision auto` uses it"
        else:
            verdict = "kept opt-in"
            tail = "; ".join(reasons) + ", so `--precision auto` stays float32 (`--precision bfloat16` for previews)"
        yield f"- **bfloat16 autocast — {verdict}** ({name}): G {fmt(g['ratio'], 2)}× float32; {accuracy}: {tail}."


def _compile_verdicts(result: dict[str, Any], presets: list[str]) -> Iterable[str]:
    for name in presets:
        if (r := find(result, "G", "compile", name)) is None:
            continue
        compile_s = r["extra"]["compile_and_first_call_s"]
        saved = r["reference_s"] - r["ours_s"]
        break_even = compile_s / saved if saved > 0 else None
        if not same_output(r) or pace(r["ratio"]) != "faster":
            verdict = adoption(r, candidate=True)
        elif break_even is None or break_even > BREAK_EVEN_SLICES:
            verdict = f"not adopted (pays back after more than {BREAK_EVEN_SLICES} slices)"
        else:
            verdict = "adopted where a C++ compiler is available"
        yield (
            f"- **torch.compile — {verdict}** ({name}): {fmt(r['ratio'], 2)}× eager after compiling; compiling takes"
            f" {compile_s:.0f} s, break-even after {fmt(break_even) if break_even else 'no'} slices per process."
        )


def _throughput_verdicts(result: dict[str, Any]) -> Iterable[str]:
    tolerance = result["tolerance"]
    for r in rows_of(result, "volume"):
        if not variant(r).startswith("translate"):
            continue
        e = r["extra"]
        if variant(r).endswith("float32"):
            agree = "agree" if within_tolerance(e, tolerance) else "differ"
            accuracy = f"outputs {agree} (mean |ΔSUV| {e['mean_abs_suv_body']:.1e}, p99.9 {e['p999_abs_suv_body']:.1e})"
        else:
            accuracy = f"mean |ΔSUV| {e['mean_abs_suv_body']:.2f} with these untrained weights (accuracy: the precision record)"
        speed = f"{fmt(r['ratio'], 2)}× the reference loops ({pace(r['ratio'])})"
        yield f"- **Translation** ({r['preset']}, {r['what']}): {speed}; {accuracy}."
    for r in rows_of(result, "training"):
        yield f"- **Training, {r['what']}** ({r['preset']}): {fmt(r['ratio'], 2)}× the reference steps ({pace(r['ratio'])})."
    for lin in result.get("linearity", []):
        shape = "linear" if lin["r2"] >= LINEAR_R2 else "not linear"
        yield (
            f"- **Time against slice count** ({lin['preset']}): {shape} (R² {lin['r2']:.4f}, threshold {LINEAR_R2};"
            f" log-log slope {lin['log_log_exponent']:.2f})."
        )


def _met(ok: bool) -> str:
    return "met" if ok else "missed"


def goal_lines(result: dict[str, Any]) -> list[str]:
    """One bullet per goal of the speed work, met or missed (and by how much), from the numbers."""
    record = record_of(result, "paper")
    bf16_ok = record is not None and record["adopted"]
    lines = []
    for refine, goal in (("none", GOAL_PAPER_NONE), ("overlap", GOAL_PAPER_OVERLAP)):
        candidates = [
            r
            for r in rows_of(result, "volume")
            if r["preset"] == "paper"
            and variant(r).startswith(f"translate-{refine}-")
            and r["note"].startswith("real")
            and (variant(r).endswith("float32") or bf16_ok)
        ]
        if not candidates:
            lines.append(f"- Paper preset, refine {refine}, real CT, ≥ {goal:g}× RegGAN's loop: {NOT_MEASURED}.")
            continue
        best = max(candidates, key=lambda r: r["ratio"])
        precision = variant(best).rsplit("-", 1)[1]
        ok = best["ratio"] >= goal
        by = "" if ok else f", by {goal - best['ratio']:.2f}×"
        within = f" (within the tolerance on the record of {record['model']})" if record and precision == "bfloat16" else ""
        lines.append(
            f"- Paper preset, refine {refine}, real CT ({best['what'].split(' → ')[0]}), ≥ {goal:g}× RegGAN's loop:"
            f" **{_met(ok)}** — {fmt(best['ratio'], 3)}× in {precision}{within}{by}."
        )
    mem = result.get("memory")
    size, slices = GOAL_SHAPE
    if mem and mem.get("shape_xyz") == f"{size}x{size}x{slices}":
        ok = mem["seconds"] < GOAL_SMALL_SECONDS
        by = "" if ok else f", by {mem['seconds'] - GOAL_SMALL_SECONDS:.1f} s"
        lines.append(
            f"- Shipped model, {size}×{size}×{slices} CT under {GOAL_SMALL_SECONDS:g} s: **{_met(ok)}** — {mem['seconds']} s"
            f" ({mem.get('precision', 'float32')}, {mem['torch_threads']} threads), peak RSS {mem['peak_rss_mib']} MiB{by}."
        )
    else:
        lines.append(f"- Shipped model, {size}×{size}×{slices} CT under {GOAL_SMALL_SECONDS:g} s: {NOT_MEASURED}.")
    float32 = [r for r in rows_of(result, "volume") if variant(r).startswith("translate") and variant(r).endswith("float32")]
    if float32:
        worst = min(float32, key=lambda r: r["ratio"])
        ok = worst["ratio"] >= 1.0
        lines.append(
            f"- float32 translation never slower than RegGAN's loop: **{_met(ok)}** — slowest case"
            f" {fmt(worst['ratio'], 3)}× ({worst['preset']}, {worst['what']})."
        )
    return lines


def verdicts(result: dict[str, Any]) -> list[str]:
    """One Markdown bullet per optimisation or comparison, each verdict computed from the numbers."""
    presets = list(dict.fromkeys(r["preset"] for r in result.get("rows", [])))
    threads = result["machine"]["torch_threads"]
    return [
        *_batched_verdicts(result, presets),
        *_bfloat16_verdicts(result, presets),
        *_compile_verdicts(result, presets),
        *_throughput_verdicts(result),
        f"- **Threads**: this run used {threads} torch thread{'s' if threads != 1 else ''}; translation uses torch's default"
        " (one per core), `--threads` lowers it when other jobs share the CPU.",
    ]


# --------------------------------------------------------------------------- tables


def _time(row: dict[str, Any], key: str) -> str:
    """Median seconds per unit with its interquartile range when recorded."""
    value, iqr = row.get(key), row.get(f"{key.removesuffix('_s')}_iqr_s")
    if value is None:
        return "—"
    return f"{fmt(value)} ± {fmt(iqr, 2)}" if iqr is not None else fmt(value)


def _row_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return [f"{NOT_MEASURED.capitalize()}."]
    unit = rows[0]["unit"]
    lines = [
        f"| preset | what | n | ours s/{unit} | compared with s/{unit} | speed-up | timed blocks | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        notes = ", ".join(f"{k} {fmt(v)}" for k, v in r["extra"].items())
        notes = f"{r['note']}; {notes}" if r["note"] and notes else r["note"] or notes
        lines.append(
            f"| {r['preset']} | {r['what']} | {r['count']} | {_time(r, 'ours_s')} | {_time(r, 'reference_s')} |"
            f" {fmt(r['ratio'], 2)}× | {r.get('samples', 1)} | {notes} |"
        )
    return lines


def _achieved(result: dict[str, Any]) -> list[str]:
    """G's achieved GFLOP/s per preset and precision against the measured GEMM peak."""
    peak = result.get("gemm_peak_gflop_per_s")
    if not peak:
        return [f"Achieved GFLOP/s against a GEMM peak: {NOT_MEASURED}.", ""]
    lines = [
        "Achieved throughput of G (FLOPs counted by torch's FlopCounterMode) against the measured peak of a"
        " 2048² matrix multiply in the same precision ("
        + ", ".join(f"{key} {value:.0f} GFLOP/s" for key, value in peak.items())
        + "):",
        "",
    ]
    for name in dict.fromkeys(r["preset"] for r in rows_of(result, "G")):
        for key, precision in (("ours", "float32"), ("bfloat16", "bfloat16")):
            row = find(result, "G", key, name)
            if row is None or "gflop_per_s" not in row["extra"] or precision not in peak:
                continue
            rate = row["extra"]["gflop_per_s"]
            lines.append(f"- {name}, {precision}: {rate:.0f} GFLOP/s, {100 * rate / peak[precision]:.0f} % of the GEMM peak.")
    return [*lines, ""]


def _tolerance_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| preset | candidate | compared with | slices | max \\|ΔSUV\\| body | mean \\|ΔSUV\\| body | p99.9 \\|ΔSUV\\| body"
        " | paper-scale MAE | speed-up | within tolerance |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows_of(result, "tolerance"):
        e = r["extra"]
        ok = "yes" if within_tolerance(e, result["tolerance"]) else "no"
        lines.append(
            f"| {r['preset']} | {r['what']} | {r['note']} | {r['count']} | {fmt(e['max_abs_suv_body'])} |"
            f" {fmt(e.get('mean_abs_suv_body'))} | {fmt(e.get('p999_abs_suv_body'))} | {fmt(e['mae_paper_units'])} |"
            f" {fmt(r['ratio'], 2)}× | {ok} |"
        )
    return lines


def _precision_records(result: dict[str, Any]) -> list[str]:
    records = result.get("precision_records", {})
    if not records:
        return ["No precision record for a trained model (`benchmarks/precision.py` writes them).", ""]
    lines: list[str] = []
    for preset, record in records.items():
        w, tol = record["worst"], record["tolerance"]
        lines += [
            f"Precision record of `{record['model']}` ({preset} preset, SHA-256 `{record['model_sha256'][:16]}…`, measured"
            f" {record['measured']['date']} on {record['measured']['processor']} by"
            f" `{record.get('command') or 'benchmarks/precision.py'}`): bfloat16 vs float32 on every study,"
            f" {'adopted' if record['adopted'] else 'not adopted'}.",
            "",
            "| dataset | studies | largest relative change of a paper metric |",
            "|---|---|---|",
            *(
                f"| {name} | {d['studies']} | {100 * max(d['paper_relative'].values()):.3f} % |"
                for name, d in record["datasets"].items()
            ),
            "",
            f"Worst study: mean |ΔSUV| in the body {w['mean_abs_suv_body']:.4f} (tolerance {tol['mean_abs_suv']}), 99.9th"
            f" percentile {w['p999_abs_suv_body']:.3f} (tolerance {tol['p999_abs_suv']}); paper metrics"
            f" {100 * w['paper_relative']:.3f} % (tolerance {100 * tol['paper_relative']:.1f} %).",
            "",
        ]
        if record["reasons"]:
            lines += ["Outside the tolerance: " + "; ".join(record["reasons"]) + ".", ""]
    return lines


def _training_table(result: dict[str, Any]) -> list[str]:
    lines = ["| preset | step | slices | ours slices/s | reference slices/s | speed-up |", "|---|---|---|---|---|---|"]
    for r in rows_of(result, "training"):
        ref = 1.0 / r["reference_s"] if r["reference_s"] else None
        lines.append(
            f"| {r['preset']} | {r['what']} | {r['count']} | {fmt(1.0 / r['ours_s'])} | {fmt(ref)} | {fmt(r['ratio'], 2)}× |"
        )
    return lines


def _linearity(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for lin in result.get("linearity", []):
        lines += [
            f"`{lin['preset']}` preset, CT {lin['ct_size']}×{lin['ct_size']}×n, overlap refinement:",
            "",
            "| slices | seconds | s/slice |",
            "|---|---|---|",
            *(f"| {n} | {t:.2f} | {t / n:.3f} |" for n, t in zip(lin["slices"], lin["seconds"])),
            "",
            f"Least-squares line: t = {lin['intercept_s']:.2f} s + {lin['slope_s_per_slice']:.3f} s × n,"
            f" R² = {lin['r2']:.4f}; log-log slope {lin['log_log_exponent']:.2f} (1.00 = linear).",
            "",
        ]
    return lines or [f"{NOT_MEASURED.capitalize()}.", ""]


def _memory(result: dict[str, Any]) -> list[str]:
    mem = result.get("memory")
    if not mem:
        return [f"{NOT_MEASURED.capitalize()} in this run (`benchmarks/speed.py --memory`).", ""]
    return [
        f"`benchmarks/memory_translate.py` (fresh process; model {mem.get('model', 'untrained small')}, overlap,"
        f" precision {mem.get('precision', 'float32')}, batch {mem.get('batch_size', 8)}; CT {mem['shape_xyz']}):",
        "",
        f"- peak RSS {mem['peak_rss_mib']} MiB; {mem['peak_minus_imports_mib']} MiB above imports + model;"
        f" {mem['peak_minus_ct_mib']} MiB above the loaded CT (CT {mem['ct_mib']} MiB int16,"
        f" PET {mem['pet_float32_mib']} MiB float32);",
        f"- translation time {mem['seconds']} s (threads: {mem['torch_threads']}).",
        "",
    ]


def _timing_method(result: dict[str, Any]) -> str:
    timing = result["timing"]
    return (
        f"Times are medians (± interquartile range) over the timed blocks of `Timer.blocked_autorange`"
        f" (at least {timing['min_run_time_s']} s per block set), {timing['rounds']} rounds in which the compared"
        " code paths take turns, so a change in machine load hits all of them."
    )


def render(result: dict[str, Any]) -> str:
    """The Markdown report of one benchmark result."""
    m, tol, args = result["machine"], result["tolerance"], result["args"]
    lines = [
        "# Speed and memory benchmark",
        "",
        "Measured by `benchmarks/speed.py` (numbers in `benchmarks/results/speed.json`), written by",
        "`benchmarks/speed_report.py`. Ours = the project's code path; reference = the same networks driven the",
        "way RegGAN's test and training code drive them (`benchmarks/speed_reference.py`: the same weights in",
        "PyTorch's InstanceNorm layers and the contiguous layout, one slice at a time, float32, refiner one window",
        "at a time, batch-1 training steps). Speed-up = reference time / our time.",
        _timing_method(result),
        "",
        f"- Command: `{result['command']}`",
        f"- Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']} "
        f"(threads: {m['torch_threads']}, CPU capability {m['cpu_capability']}, native bfloat16: {m['native_bfloat16']}), "
        f"Python {m['python']}; no GPU.",
        f"- Load: 1-minute load average {m['load_average_1min_at_start']} at the start.",
        f"- Total benchmark wall time: {result['total_seconds']:.0f} s.",
        f"- Thresholds of the verdicts: a speed-up within 1 ± {SPEED_MARGIN} is no measurable difference; two code paths"
        f" give the same output when they differ by at most {SAME_OUTPUT_NET:g} on [-1, 1]; an optimisation that changes"
        f" the output may be the default only if it is faster and keeps the PET, on real and phantom studies, within a"
        f" mean |ΔSUV| ≤ {tol['mean_abs_suv']} and a 99.9th percentile ≤ {tol['p999_abs_suv']} in the body of every study,"
        f" and the paper metrics within {100 * tol['paper_relative']:.1f} %; compilation must pay back within"
        f" {BREAK_EVEN_SLICES} slices; time is linear in the slice count when R² ≥ {LINEAR_R2}.",
        "",
        "## Goals",
        "",
        *goal_lines(result),
        "",
        "## Decisions",
        "",
        *verdicts(result),
        "",
        "## G alone (per slice)",
        "",
        *_row_table(rows_of(result, "G")),
        "",
        "The first row of each preset is timed against the reference loop, the variants against our float32 G;",
        "`max_abs_net` is the largest difference on the network scale [-1, 1] (1.0 = half the PET range).",
        "",
        *_achieved(result),
        "## Per-volume translation",
        "",
        *_row_table(rows_of(result, "volume")),
        "",
        f"The `paper` preset runs {args['paper_slices']} slices here (G alone: {max(2, int(args['g_slices']) // 8)}):"
        " one 256×256 slice of its G costs about 97 GFLOP. The |ΔSUV| notes compare with the reference loops'"
        " float32 PET, with untrained weights (how far bfloat16 moves a *trained* model's PET is in the precision"
        " records below).",
        "",
        "## Tolerance against float32",
        "",
        f"Weights: {result['tolerance_weights']}. Phantom volume; the MAE is over the whole volume, the |ΔSUV| figures"
        " inside the body.",
        "",
        *_tolerance_table(result),
        "",
        *_precision_records(result),
        "## Training throughput (slices per second)",
        "",
        *_training_table(result),
        "",
        "Stage 2 uses `refiner_target=misaligned` in both (the `registered` target adds one R pass per slice).",
        "",
        "## Time against slice count",
        "",
        *_linearity(result),
        "## Time and peak memory of a large CT",
        "",
        *_memory(result),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json", help="benchmark result")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmark-speed.md", help="Markdown report to write")
    args = parser.parse_args()
    args.out.write_text(render(json.loads(args.json.read_text(encoding="utf-8"))), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

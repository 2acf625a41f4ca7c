"""The shipped model's report card: every figure of ``docs/model-card.md``, measured in one run.

* **Sarcoma test patients** (real FDG PET/CT, the committed split): the model against the
  HU→SUV lookup table fitted on the split's training patients (``baselines.py``), pooled
  over the test patients (SUV MAE and bias inside the body, the paper's MAE/SSIM/PSNR,
  tumour SUVmax and SUVmean errors); and, as a bound, the table scaled per patient by the
  factor that fits that patient's real PET best (an oracle of the uptake level: a bound for
  any per-patient scaling of the table, not for a model); SUV MAE and
  bias away from the tumours (whose uptake a CT does not show).
* **Head-neck studies** (real): SUV bias in the body, the brain's mean SUV against the
  real PET's (brain: soft tissue inside the skull, found on the CT alone), the largest
  SUV outside the body.
* **Anatomy phantoms** (held out: a seed no training case used): mean SUV per organ against
  the phantom's aligned PET, as a fraction and as a difference.
* **Drawn phantoms** (held out, the same seed): mean SUV per organ, for the organs the
  labelled CT does not have (bladder, myocardium, brain), whose uptake is drawn per patient.
* **Drawn phantom** of ``regc2p demo`` (seed 2024): the paper's MAE and the organ means.

    .venv/bin/python benchmarks/model_card.py [--model FILE] [--real DIR_WITH_sts_AND_headneck] \\
        [--split benchmarks/splits/sts.json] [--anatomy Testing/data/totalseg_upper_abdomen] \\
        [--anatomy-cases 6] [--drawn-cases 10] [--json benchmarks/results/model-card.json]

It prints Markdown tables and writes the figures to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage

from RegC2PLib.body import body_mask
from RegC2PLib.data.anatomy_phantom import AnatomyMaker, AnatomyPhantomConfig
from RegC2PLib.data.phantom import PhantomConfig, case_seed, generate_case
from RegC2PLib.data.phantom_anatomy import Tissue
from RegC2PLib.data.split import read_manifest, select
from RegC2PLib.data.studies import MIN_COVERAGE, discover_studies, load_study
from RegC2PLib.evaluation import reference_pet, score_loaded, score_volume, scored_region, summarize
from RegC2PLib.inference import TranslationOptions, translate_volume
from RegC2PLib.model_file import bundled_model_path, file_sha256, load_model
from RegC2PLib.volume_io import array_view, image_like, resample_onto

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import HuLookup

ROOT = Path(__file__).resolve().parents[1]
# The card states float32 figures (on CPUs with native bfloat16, `auto` would run the model in bfloat16).
FLOAT32 = TranslationOptions(precision="float32")
# Organs of the anatomy and drawn phantoms reported per organ (Tissue numbering of organs.nii.gz).
ORGANS = (
    Tissue.LIVER, Tissue.SPLEEN, Tissue.KIDNEY, Tissue.BLADDER, Tissue.MYOCARDIUM, Tissue.BLOOD, Tissue.MUSCLE,
    Tissue.FAT, Tissue.LUNG, Tissue.BRAIN_GRAY, Tissue.BONE_MARROW,
)  # fmt: skip
# Held-out anatomy phantoms: far from the seeds (0..) that training datasets are made with.
HELD_OUT_SEED = 9_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=bundled_model_path(), help="model file (default: the shipped one)")
    p.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "data" / "real", help="sts/ and headneck/")
    p.add_argument("--split", type=Path, default=ROOT / "benchmarks" / "splits" / "sts.json", help="sts split manifest")
    p.add_argument("--anatomy", type=Path, default=ROOT / "Testing" / "data" / "totalseg_upper_abdomen")
    p.add_argument("--anatomy-cases", type=int, default=6, help="held-out anatomy phantoms")
    p.add_argument("--drawn-cases", type=int, default=10, help="held-out drawn phantoms")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "model-card.json")
    return p.parse_args(argv)


def sarcoma(model, real: Path, manifest: Path) -> dict[str, dict[str, float]]:
    """Pooled test-split figures of the model, of the lookup table fitted on the train split and
    of the oracle-scaled table; and the SUV MAE and bias of the model and the table in the body
    away from the tumours (see :func:`outside_tumours`)."""
    studies, _ = discover_studies(real / "sts")
    split = read_manifest(manifest)
    lookup = HuLookup.fit(select(studies, split, "train"))
    test = select(studies, split, "test")
    intensity = model.config.intensity
    scores: dict[str, list] = {"model": [], "lookup": [], "lookup_scaled": []}
    away: dict[str, list[tuple[float, float]]] = {"model": [], "lookup": []}
    for study in test:
        loaded = load_study(study)
        keep, body = scored_region(loaded)
        reference = reference_pet(loaded)  # what score_loaded scores against
        ref = np.asarray(array_view(reference))[keep]
        tumours = np.asarray(array_view(loaded.lesions))[keep] > 0 if loaded.lesions is not None else np.zeros_like(body)
        predictions = {"model": translate_volume(loaded.ct, model, FLOAT32), "lookup": lookup.predict(loaded.ct)}
        values = np.asarray(array_view(predictions["lookup"]))
        scale = best_scale(values[keep][body], ref[body])
        predictions["lookup_scaled"] = image_like(values * np.float32(scale), loaded.ct)
        for name, pred in predictions.items():
            scores[name].append(score_loaded(study.name, loaded, pred, intensity))
            if name in away:
                away[name].append(outside_tumours(np.asarray(array_view(pred))[keep], ref, body, tumours))
    result: dict[str, dict[str, float]] = {name: summarize(rows) for name, rows in scores.items()}
    for name, rows in away.items():
        result[name]["suv_mae_body_outside_tumours"] = float(np.mean([mae for mae, _ in rows]))
        result[name]["suv_bias_body_outside_tumours"] = float(np.mean([bias for _, bias in rows]))
    return {**result, "n_test": len(test)}


def outside_tumours(pred: np.ndarray, ref: np.ndarray, body: np.ndarray, tumours: np.ndarray) -> tuple[float, float]:
    """SUV MAE and bias (pred − ref) in ``body`` outside ``tumours`` grown by 3 voxels, where
    the tumour's own uptake and its PET blur are (arrays (z, y, x) on one grid)."""
    region = body & ~ndimage.binary_dilation(tumours, iterations=3)
    error = pred[region].astype(np.float64) - ref[region]
    return float(np.abs(error).mean()), float(error.mean())


def best_scale(pred: np.ndarray, ref: np.ndarray) -> float:
    """The factor ``a`` that minimises ``mean |a·pred − ref|`` (SUV arrays of one shape, pred ≥ 0).

    Σ|a·p − r| = Σ p·|a − r/p| (+ terms without ``a`` where p = 0), so ``a`` is the median of
    ``r/p`` weighted by ``p``."""
    p, r = pred.ravel().astype(np.float64), ref.ravel().astype(np.float64)
    keep = p > 0
    if not keep.any():
        return 1.0
    ratio, weight = r[keep] / p[keep], p[keep]
    order = np.argsort(ratio)
    cumulative = np.cumsum(weight[order])
    return float(ratio[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def intracranial(hu: np.ndarray) -> np.ndarray:
    """Brain on a head CT (z, y, x) in HU: soft tissue (0–80 HU) that bone (> 300 HU) encloses
    in its axial slice, eroded by two voxels (no skull, no partial volume)."""
    bone = hu > 300
    inside = np.zeros_like(bone)
    for z in range(hu.shape[0]):
        inside[z] = ndimage.binary_fill_holes(ndimage.binary_closing(bone[z], iterations=2)) & ~bone[z]
    return ndimage.binary_erosion(inside & (hu > 0) & (hu < 80), iterations=2)


def headneck(model, real: Path) -> dict[str, dict[str, float]]:
    """Per study: SUV bias in the body, brain mean SUV (model and real), largest SUV outside the body."""
    result = {}
    for study in discover_studies(real / "headneck")[0]:
        loaded = load_study(study)
        pred = translate_volume(loaded.ct, model, FLOAT32)
        hu = np.asarray(array_view(loaded.ct))
        body = body_mask(hu, loaded.ct.GetSpacing()[::-1])
        covered = loaded.coverage >= MIN_COVERAGE  # the slices score_study scores
        scores = score_volume(study.name, array_view(pred)[covered], array_view(loaded.pet)[covered], body[covered],
                              model.config.intensity)  # fmt: skip
        brain = intracranial(hu) & covered[:, None, None]
        voxel_ml = float(np.prod(loaded.ct.GetSpacing())) / 1000
        row = {"suv_bias_body": scores.suv.bias_body, "suv_mae_body": scores.suv.mae_body,
               "outside_body_max": float(np.asarray(array_view(pred))[~body].max(initial=0.0)),
               "brain_ml": float(brain.sum() * voxel_ml)}  # fmt: skip
        if row["brain_ml"] >= 100:  # a real part of a brain, not a sinus or the spinal canal
            row["brain_model"] = float(np.asarray(array_view(pred))[brain].mean())
            row["brain_real"] = float(np.asarray(array_view(loaded.pet))[brain].mean())
        result[study.name] = row
    return result


def organ_means(pred: np.ndarray, ref: np.ndarray, organs: np.ndarray, lesions: np.ndarray) -> dict[str, list[float]]:
    """Per organ: [mean model SUV, mean reference SUV] away from lesions (3 voxels)."""
    clear = ~ndimage.binary_dilation(lesions > 0, iterations=3)
    out = {}
    for tissue in ORGANS:
        mask = (organs == tissue) & clear
        if mask.sum() >= 20:
            out[tissue.name.lower()] = [float(pred[mask].mean()), float(ref[mask].mean())]
    return out


def held_out_organs(model, cases: Iterable) -> dict[str, list[float]]:
    """Per organ over phantom ``cases`` (anatomy or drawn): [mean model SUV, mean reference SUV,
    number of phantoms with the organ]; each a mean of the per-phantom organ means."""
    sums: dict[str, list[tuple[float, float]]] = {}
    for case in cases:
        pred = array_view(translate_volume(case.ct, model, FLOAT32))
        ref = array_view(resample_onto(case.pet_aligned, case.ct))
        for name, (m, r) in organ_means(pred, ref, array_view(case.organs), array_view(case.lesions)).items():
            sums.setdefault(name, []).append((m, r))
    return {name: [float(np.mean([m for m, _ in v])), float(np.mean([r for _, r in v])), len(v)] for name, v in sums.items()}


def anatomy_cases(anatomy: Path, cases: int) -> Iterator:
    """``cases`` held-out anatomy phantoms made from the labelled CT in ``anatomy``."""
    maker = AnatomyMaker(str(anatomy), AnatomyPhantomConfig())
    return (maker(i, case_seed(HELD_OUT_SEED, i)) for i in range(cases))


def drawn_cases(cases: int) -> Iterator:
    """``cases`` held-out drawn (whole-body) phantoms, with the organs the labelled CT lacks."""
    return (generate_case(PhantomConfig(), case_seed(HELD_OUT_SEED, i)) for i in range(cases))


def drawn_phantom(model) -> dict[str, object]:
    """``regc2p demo``'s phantom (seed 2024): paper MAE and SUV figures, organ means."""
    case = generate_case(PhantomConfig(), 2024)
    pred = array_view(translate_volume(case.ct, model, FLOAT32))
    ref = array_view(resample_onto(case.pet_aligned, case.ct))
    body = body_mask(array_view(case.ct), case.ct.GetSpacing()[::-1])
    scores = score_volume("demo", pred, ref, body, model.config.intensity, array_view(case.lesions))
    row = summarize([scores])
    return {"scores": row, "organs": organ_means(pred, ref, array_view(case.organs), array_view(case.lesions))}


def _organ_table(organs: dict[str, list[float]]) -> str:
    lines = ["| organ | model SUV | reference SUV | model / reference | difference |", "|---|---|---|---|---|"]
    for name, (m, r, *_) in organs.items():
        lines.append(f"| {name} | {m:.2f} | {r:.2f} | {m / r:.0%} | {m - r:+.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = load_model(args.model)
    record: dict[str, object] = {"model": str(args.model), "sha256": file_sha256(args.model)}
    if (args.real / "sts").is_dir():
        record["sarcoma_test"] = sts = sarcoma(model, args.real, args.split)
        m, lut = sts["model"], sts["lookup"]
        print(f"\n## Sarcoma test patients ({sts['n_test']})\n")
        print("| method | SUV MAE body | SUV bias body | paper MAE | SSIM | tumour SUVmax err | tumour SUVmean err |")
        print("|---|---|---|---|---|---|---|")
        oracle = sts["lookup_scaled"]
        rows = (("RegC2P (this model)", m), ("HU→SUV lookup", lut), ("lookup × best scale per patient (oracle)", oracle))
        for name, r in rows:
            print(f"| {name} | {r['suv_mae_body']:.3f} | {r['suv_bias_body']:+.3f} | {r['mae']:.1f} | {r['ssim']:.3f} | "
                  f"{r['lesion_suvmax_error']:.2f} | {r['lesion_suvmean_error']:.2f} |")  # fmt: skip
        print(f"\nSUV MAE {1 - m['suv_mae_body'] / lut['suv_mae_body']:+.0%} below the lookup table's")
        print(
            f"Away from the tumours (3 voxels around their outlines): SUV MAE / bias {m['suv_mae_body_outside_tumours']:.3f} / "
            f"{m['suv_bias_body_outside_tumours']:+.3f} (lookup {lut['suv_mae_body_outside_tumours']:.3f} / "
            f"{lut['suv_bias_body_outside_tumours']:+.3f})"
        )
    else:
        print(f"no real data at {args.real}: the real-patient figures are left out")
    if (args.real / "headneck").is_dir():
        record["headneck"] = hn = headneck(model, args.real)
        print("\n## Head-neck studies\n")
        print("| study | SUV bias body | SUV MAE body | brain SUV model / real | max SUV outside body |")
        print("|---|---|---|---|---|")
        for name, r in hn.items():
            brain = f"{r['brain_model']:.2f} / {r['brain_real']:.2f}" if "brain_model" in r else "no brain in the CT"
            print(f"| {name} | {r['suv_bias_body']:+.3f} | {r['suv_mae_body']:.3f} | {brain} | {r['outside_body_max']:.2f} |")
    record["anatomy_phantoms"] = anat = held_out_organs(model, anatomy_cases(args.anatomy, args.anatomy_cases))
    print(f"\n## Held-out anatomy phantoms ({args.anatomy_cases}, seed {HELD_OUT_SEED})\n")
    print(_organ_table(anat))
    record["drawn_phantoms"] = held = held_out_organs(model, drawn_cases(args.drawn_cases))
    print(f"\n## Held-out drawn phantoms ({args.drawn_cases}, seed {HELD_OUT_SEED})\n")
    print(_organ_table(held))
    record["drawn_phantom"] = drawn = drawn_phantom(model)
    print(f"\n## Demo phantom (seed 2024): paper MAE {drawn['scores']['mae']:.1f}\n")
    print(_organ_table(drawn["organs"]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1, default=float))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

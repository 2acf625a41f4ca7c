"""``regc2p demo`` end to end, with the shipped default model when the checkout has one."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from RegC2PLib import figures
from RegC2PLib.cli import main
from RegC2PLib.data.phantom_anatomy import Tissue
from RegC2PLib.model_file import bundled_model_path, load_model
from RegC2PLib.volume_io import array_view, read_image


def test_demo_writes_every_output(tmp_path: Path, small_model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "demo"
    drawn: list[list[int]] = []  # the figure's axial levels
    draw = figures.fused_figure
    monkeypatch.setattr(figures, "fused_figure", lambda *args, **kw: (drawn.append(args[3]), draw(*args, **kw)))
    assert (
        main(["demo", "--out", str(out), "--model", str(small_model_file), "--shape", "24", "48", "48", "--progress", "none"])
        == 0
    )
    for name in ("ct", "reference_pet", "lesions", "synthetic_pet"):
        assert read_image(out / f"{name}.nii.gz").GetSize() == (48, 48, 24)
    pet, ct = read_image(out / "synthetic_pet.nii.gz"), read_image(out / "ct.nii.gz")
    assert pet.GetSpacing() == ct.GetSpacing() and pet.GetOrigin() == ct.GetOrigin()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["paper"]["n_slices"] == 24 and metrics["suv"]["n_lesions"] >= 1
    assert (out / "fused.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lesions = array_view(read_image(out / "lesions.nii.gz"))
    assert any(lesions[z].any() for z in drawn[0]) and drawn[0] == sorted(drawn[0], reverse=True)  # a lesion, head first
    with zipfile.ZipFile(out / "demo.mrb") as bundle:
        names = bundle.namelist()
    assert any(n.endswith(".mrml") for n in names) and sum(n.endswith(".nrrd") for n in names) == 3


def test_demo_refuses_a_file_as_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    assert main(["demo", "--out", str(target), "--progress", "none"]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.skipif(bundled_model_path() is None, reason="no shipped default model in this checkout")
def test_shipped_model_gives_a_recognisable_pet() -> None:
    """Organ by organ on an unseen phantom: lungs dark, fat below muscle; brain and kidneys
    well above the liver, the bladder brightest, the heart wall above the blood pool; and
    lesions visible: the clearest lung nodule and the liver lesion stand out from what
    surrounds them, 2x (in this phantom's reference PET: 26x for the clearest lung nodule,
    3.3x for the liver lesion; a CT shows where a lesion is, not how avid it is; the
    shipped model: 2.8x and 2.4x).

    (Per-organ figures and lesion contrast of the shipped model: docs/model-card.md.)
    """
    from RegC2PLib.data.phantom import PhantomConfig, generate_case
    from RegC2PLib.inference import translate_volume

    case = generate_case(PhantomConfig(), seed=99)
    pet = array_view(translate_volume(case.ct, load_model(bundled_model_path())))
    organs = array_view(case.organs)

    def mean(tissue: Tissue) -> float:
        return float(np.mean(pet[organs == tissue]))

    liver = mean(Tissue.LIVER)
    assert 1.0 < liver < 3.5
    assert mean(Tissue.LUNG) < 0.4 * liver
    assert mean(Tissue.FAT) < mean(Tissue.MUSCLE)
    assert mean(Tissue.BRAIN_GRAY) > 2.0 * liver
    assert mean(Tissue.KIDNEY) > 1.8 * liver
    # The bladder brightest: in this phantom's reference PET 1.4x the grey matter, 1.9x the kidneys.
    assert mean(Tissue.BLADDER) > 1.2 * max(mean(Tissue.BRAIN_GRAY), mean(Tissue.KIDNEY))
    assert mean(Tissue.MYOCARDIUM) > 1.15 * mean(Tissue.BLOOD)

    lesions = array_view(case.lesions)

    def contrast(label: int) -> float:
        """SUVmax in the lesion over the mean SUV of a 1-3 voxel shell around it."""
        inside = lesions == label
        shell = ndimage.binary_dilation(inside, iterations=3) & ~ndimage.binary_dilation(inside) & (lesions == 0)
        return float(pet[inside].max() / pet[shell].mean())

    assert max(contrast(lesion.label) for lesion in case.lesion_list if lesion.kind == "lung") > 2.0
    assert max(contrast(lesion.label) for lesion in case.lesion_list if lesion.kind == "liver") > 2.0

"""The batch scripts as ``Slicer --no-main-window --python-script`` runs them.

Each script is run as ``__main__`` in this process with Slicer's real MRML scene
(slicer-core) standing in for ``slicer.mrmlScene`` — with colour tables but, as without a
main window, no layout manager and so no slice views — and stand-ins for ``slicer.app``
and ``slicer.util.exit`` (Slicer ends only when the script calls it). Every way a run can
end calls it once with the right status; the scene a translation saves shows the fusion.
"""

from __future__ import annotations

import runpy
import sys
import types
import zipfile
from pathlib import Path

import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

import RegC2PSlicer.processing  # noqa: E402
import RegC2PSlicer.training.job  # noqa: E402
from RegC2PLib.data.phantom import PhantomConfig, write_dataset  # noqa: E402
from RegC2PSlicer.headless import HeadlessScene  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRANSLATE = ROOT / "RegC2P" / "Resources" / "Scripts" / "RegC2PBatch.py"
TRAIN = ROOT / "RegC2PTraining" / "Resources" / "Scripts" / "RegC2PTrainingBatch.py"


@pytest.fixture
def slicer_app(monkeypatch):
    """A Slicer without a main window: its scene (no slice views) and the exit statuses the script asked for."""
    headless = HeadlessScene(views=())
    monkeypatch.setattr(slicer, "mrmlScene", headless.scene, raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(), raising=False)
    exits: list[int] = []
    monkeypatch.setattr(slicer.util, "exit", exits.append)
    yield types.SimpleNamespace(scene=headless.scene, exits=exits)
    headless.close()


def _run(script: Path, monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    runpy.run_path(str(script), run_name="__main__")


def _unzip_scene(path: Path, folder: Path) -> HeadlessScene:
    with zipfile.ZipFile(path) as bundle:
        bundle.extractall(folder)
    loaded = HeadlessScene(views=())
    loaded.scene.SetURL(str(next(folder.rglob("*.mrml"))))
    assert loaded.scene.Import()
    return loaded


@pytest.fixture
def ct_file(tmp_path, make_ct) -> Path:
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(make_ct((6, 32, 32)), str(path))
    return path


def test_scene_from_a_windowless_slicer_has_the_fusion_in_its_slice_views(
    slicer_app, monkeypatch, tmp_path, ct_file, small_model_file
):
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode") == 0
    scene = tmp_path / "fused.mrb"
    _run(TRANSLATE, monkeypatch, "--ct", str(ct_file), "--out", str(tmp_path / "pet.nii.gz"), "--scene", str(scene),
         "--model", str(small_model_file), "--opacity", "0.4")  # fmt: skip
    assert slicer_app.exits == [0]
    loaded = _unzip_scene(scene, tmp_path / "unzipped")
    try:
        ct, pet = loaded.scene.GetFirstNodeByName("ct"), loaded.scene.GetFirstNodeByName("ct synthetic PET")
        views = [
            loaded.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            for i in range(loaded.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))
        ]
        assert sorted(view.GetLayoutName() for view in views) == ["Green", "Red", "Yellow"]
        for view in views:
            assert (view.GetBackgroundVolumeID(), view.GetForegroundVolumeID()) == (ct.GetID(), pet.GetID())
            assert view.GetForegroundOpacity() == pytest.approx(0.4)
    finally:
        loaded.close()


def test_translation_script_ends_slicer_after_an_unexpected_error(
    slicer_app, monkeypatch, tmp_path, ct_file, small_model_file, capsys
):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(RegC2PSlicer.processing, "translate_volume", out_of_memory)
    _run(TRANSLATE, monkeypatch, "--ct", str(ct_file), "--out", str(tmp_path / "pet.nii.gz"), "--model", str(small_model_file))
    err = capsys.readouterr().err
    assert slicer_app.exits == [1]
    assert "Traceback (most recent call last)" in err and "CUDA out of memory" in err
    assert not (tmp_path / "pet.nii.gz").exists()


def test_translation_script_ends_slicer_on_bad_options_and_bad_input(slicer_app, monkeypatch, tmp_path, capsys):
    _run(TRANSLATE, monkeypatch, "--ct", str(tmp_path / "ct.nrrd"), "--out", str(tmp_path / "pet.nrrd"), "--refine", "cubic")
    _run(TRANSLATE, monkeypatch, "--ct", str(tmp_path / "missing.nrrd"), "--out", str(tmp_path / "pet.nrrd"))
    assert slicer_app.exits == [2, 2]
    assert "regc2p: error: " in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.slow
def test_training_script_ends_slicer_after_an_unexpected_error(slicer_app, monkeypatch, tmp_path, capsys):
    write_dataset(tmp_path / "data", 3, PhantomConfig(shape=(16, 48, 48)))

    def out_of_memory(*args, **kwargs):
        raise MemoryError("cannot allocate the training batch")

    monkeypatch.setattr(RegC2PSlicer.training.job, "train", out_of_memory)
    _run(TRAIN, monkeypatch, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--progress", "none")
    _run(TRAIN, monkeypatch, "--out", str(tmp_path / "run"), "--epochs", "many")
    err = capsys.readouterr().err
    assert slicer_app.exits == [1, 2]
    assert "Traceback (most recent call last)" in err and "MemoryError: cannot allocate the training batch" in err

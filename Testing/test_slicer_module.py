"""The Slicer module's scene handling, headless, against a real MRML scene (``slicer-core`` wheel).

CT node (oblique, under a study) in -> PET node out: identical IJK-to-RAS, SUV values
equal to RegC2PLib's, PET-Heat colours and 0-10 SUV window, CT as background and PET as
foreground in every slice view; the scene survives a .mrb round trip; Cancel (blocking
or background) leaves the scene as it was; the batch script translates two files.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
import types
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from RegC2PLib.errors import CancelledError, InputError, ModelFileError  # noqa: E402
from RegC2PLib.inference import TranslationOptions, translate_volume  # noqa: E402
from RegC2PLib.model_file import file_sha256, load_model, new_model, save_model  # noqa: E402
from RegC2PLib.progress import CancelToken  # noqa: E402
from RegC2PSlicer import models, output, processing, volumes  # noqa: E402
from RegC2PSlicer.dependencies import NEVER_PIP, requirements  # noqa: E402
from RegC2PSlicer.headless import SLICE_VIEWS, HeadlessScene  # noqa: E402
from RegC2PSlicer.processing import BackgroundTranslation, JobState, PetDisplay, RunSettings  # noqa: E402
from RegC2PSlicer.scene_state import SceneSnapshot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BATCH_SCRIPT = ROOT / "RegC2P" / "Resources" / "Scripts" / "RegC2PBatch.py"
SHAPE = (8, 40, 40)
HEAT = "vtkMRMLPETProceduralColorNodePET-Heat"


@pytest.fixture
def oblique_ct(make_ct, directions) -> sitk.Image:
    return make_ct(SHAPE, spacing=(0.9, 1.1, 2.5), direction=directions["OBLIQUE"], origin=(-30.0, 12.5, 104.0))


@pytest.fixture
def ct_node(headless, oblique_ct):
    """The oblique CT as a node under Patient/Study in the subject hierarchy."""
    node = volumes.add_volume_node(headless, oblique_ct, "CT")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(headless)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient 1")
    study = sh.CreateStudyItem(patient, "PET/CT study")
    sh.CreateItem(study, node)
    return node


@pytest.fixture
def settings(small_model_file) -> RunSettings:
    """The test model with a fixed batch: runs in this process and in workers compute the same PET bit for bit."""
    return RunSettings(model=str(small_model_file), translation=TranslationOptions(batch_size=BATCH))


BATCH = 4  # slices per generator pass in these tests


def matrix(node) -> np.ndarray:
    return volumes.node_ijk_to_ras(node)


def composites(scene) -> list:
    return [
        scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))
    ]


def study_of(node) -> str:
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    return sh.GetItemName(sh.GetItemParent(sh.GetItemByDataNode(node)))


# --------------------------------------------------------------------------- geometry


def test_ijk_to_ras_is_lps_flipped_direction_times_spacing(oblique_ct):
    expected = np.eye(4)
    flip = np.diag([-1.0, -1.0, 1.0])
    direction = np.asarray(oblique_ct.GetDirection()).reshape(3, 3)
    expected[:3, :3] = flip @ direction @ np.diag(oblique_ct.GetSpacing())
    expected[:3, 3] = flip @ np.asarray(oblique_ct.GetOrigin())
    np.testing.assert_allclose(volumes.ijk_to_ras(oblique_ct), expected, atol=1e-12)


def test_node_image_round_trip_keeps_geometry_and_voxels(ct_node, oblique_ct, assert_same_geometry):
    np.testing.assert_allclose(matrix(ct_node), volumes.ijk_to_ras(oblique_ct), atol=1e-9)
    back = volumes.image_from_volume_node(ct_node)
    assert_same_geometry(back, oblique_ct, tol=1e-9)
    assert back.GetPixelID() == oblique_ct.GetPixelID()
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(oblique_ct))
    # The voxel (k, j, i) of the node sits where SimpleITK puts index (i, j, k), RAS = LPS flipped.
    lps = np.asarray(oblique_ct.TransformIndexToPhysicalPoint((3, 5, 7)))
    ras = matrix(ct_node) @ np.array([3, 5, 7, 1.0])
    np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-9)


def test_label_maps_and_empty_nodes_are_refused(headless):
    label = headless.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    with pytest.raises(InputError, match="scalar volume"):
        volumes.check_scalar_volume(label)
    empty = headless.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="no voxels"):
        volumes.check_scalar_volume(empty)
    with pytest.raises(InputError, match="no CT volume selected"):
        volumes.check_scalar_volume(None)


# --------------------------------------------------------------------------- blocking process


def test_process_makes_fused_suv_pet_on_the_ct_grid(headless, ct_node, oblique_ct, settings, small_model_file):
    ct_before, ct_matrix = slicer.util.arrayFromVolume(ct_node).copy(), matrix(ct_node)
    pet_node = processing.process(ct_node, None, settings)

    # Geometry and values: exactly RegC2PLib's translation, on the CT's grid, in SUV.
    np.testing.assert_array_equal(matrix(pet_node), ct_matrix)
    expected = translate_volume(oblique_ct, load_model(small_model_file), TranslationOptions("overlap", batch_size=BATCH))
    pet = slicer.util.arrayFromVolume(pet_node)
    assert pet.dtype == np.float32 and pet.shape == SHAPE
    np.testing.assert_allclose(pet, sitk.GetArrayViewFromImage(expected), rtol=1e-5, atol=1e-5)
    assert pet_node.GetVoxelValueUnits().GetCodeValue() == "{SUVbw}g/ml"
    # Named after the CT, under the CT's study, provenance recorded.
    assert pet_node.GetName() == "CT synthetic PET"
    assert study_of(pet_node) == "PET/CT study"
    assert pet_node.GetAttribute("RegC2P.ModelSHA256") == file_sha256(small_model_file)
    assert pet_node.GetAttribute("RegC2P.Refine") == "overlap"
    assert pet_node.GetAttribute("RegC2P.Precision") == "float32"  # the test model has no precision record
    # Display: PET-Heat, SUV 0..10, fused over the CT in all three slice views.
    display = pet_node.GetDisplayNode()
    assert display.GetColorNodeID() == HEAT
    assert not display.GetAutoWindowLevel()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.0, 10.0))
    assert [c.GetLayoutName() for c in composites(headless)] == list(SLICE_VIEWS)
    for composite in composites(headless):
        assert composite.GetBackgroundVolumeID() == ct_node.GetID()
        assert composite.GetForegroundVolumeID() == pet_node.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.5)
    # The CT is untouched.
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(ct_node), ct_before)
    np.testing.assert_array_equal(matrix(ct_node), ct_matrix)


def test_running_twice_replaces_the_output_content_only(headless, ct_node, settings):
    first = processing.process(ct_node, None, settings)
    count = headless.GetNumberOfNodes()
    ct_before = slicer.util.arrayFromVolume(ct_node).copy()
    display = PetDisplay("PET-Rainbow2", (1.0, 6.0), opacity=0.8)
    second = processing.process(ct_node, first, RunSettings(settings.model, TranslationOptions("none"), display))
    assert second is first and headless.GetNumberOfNodes() == count
    assert first.GetAttribute("RegC2P.Refine") == "none"
    assert first.GetDisplayNode().GetColorNodeID() == "vtkMRMLPETProceduralColorNodePET-Rainbow2"
    assert all(c.GetForegroundOpacity() == pytest.approx(0.8) for c in composites(headless))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(ct_node), ct_before)


def test_output_cannot_be_the_ct_and_settings_are_checked_first(ct_node, settings):
    with pytest.raises(InputError, match="the CT itself"):
        processing.process(ct_node, ct_node, settings)
    with pytest.raises(InputError, match="SUV window"):
        processing.process(ct_node, None, RunSettings(settings.model, display=PetDisplay(suv_window=(5.0, 5.0))))
    with pytest.raises(InputError, match="PET colour"):
        processing.process(ct_node, None, RunSettings(settings.model, display=PetDisplay(color="Rainbow")))


def test_cancel_leaves_the_scene_exactly_as_it_was(headless, ct_node, settings):
    previous = processing.process(ct_node, None, settings)  # an existing output the run would overwrite
    previous_array, previous_matrix = slicer.util.arrayFromVolume(previous).copy(), matrix(previous)
    for composite in composites(headless):
        composite.SetForegroundVolumeID(None)
        composite.SetForegroundOpacity(0.2)
    count, ct_before, ct_matrix = headless.GetNumberOfNodes(), slicer.util.arrayFromVolume(ct_node).copy(), matrix(ct_node)

    token = CancelToken()

    def cancel_midway(fraction: float, message: str) -> None:
        if fraction > 0.3:
            token.cancel()

    with pytest.raises(CancelledError):
        unrefined = RunSettings(settings.model, TranslationOptions("none"))
        processing.process(ct_node, previous, unrefined, progress=cancel_midway, cancel=token)
    with pytest.raises(CancelledError):
        processing.process(ct_node, None, settings, progress=cancel_midway, cancel=token)  # would add a node
    assert headless.GetNumberOfNodes() == count
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(previous), previous_array)
    np.testing.assert_array_equal(matrix(previous), previous_matrix)
    assert previous.GetAttribute("RegC2P.Refine") == "overlap"
    assert all(c.GetForegroundVolumeID() is None and c.GetForegroundOpacity() == pytest.approx(0.2) for c in composites(headless))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(ct_node), ct_before)
    np.testing.assert_array_equal(matrix(ct_node), ct_matrix)


def test_snapshot_restores_a_replaced_output_and_removes_added_nodes(headless, ct_node, oblique_ct):
    target = volumes.add_volume_node(headless, oblique_ct, "old PET")
    before = (slicer.util.arrayFromVolume(target).copy(), matrix(target), target.GetName(), headless.GetNumberOfNodes())
    snapshot = SceneSnapshot.capture(headless, (target,))
    pet = sitk.Cast(oblique_ct, sitk.sitkFloat32) * 0.0 + 2.5
    output.store_pet(ct_node, pet, target)
    output.show_pet(ct_node, output.store_pet(ct_node, pet))
    snapshot.restore()
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(target), before[0])
    np.testing.assert_array_equal(matrix(target), before[1])
    assert (target.GetName(), headless.GetNumberOfNodes()) == before[2:]
    assert target.GetAttribute("RegC2P.SourceCT") is None


# --------------------------------------------------------------------------- saved scene


def _read_mrb(path: Path, folder: Path) -> HeadlessScene:
    with zipfile.ZipFile(path) as bundle:
        bundle.extractall(folder)
    mrml = next(folder.rglob("*.mrml"))
    loaded = HeadlessScene(views=())  # the bundle brings its own slice views
    loaded.scene.SetURL(str(mrml))
    assert loaded.scene.Import()
    return loaded


def test_scene_saved_as_mrb_reads_back_with_everything_in_place(headless, ct_node, settings, tmp_path):
    pet_node = processing.process(ct_node, None, RunSettings(settings.model, display=PetDisplay(opacity=0.35)))
    pet_values, ct_matrix = slicer.util.arrayFromVolume(pet_node).copy(), matrix(ct_node)
    for node in (ct_node, pet_node):
        node.AddDefaultStorageNode()
    assert headless.WriteToMRB(str(tmp_path / "fused.mrb"))

    loaded = _read_mrb(tmp_path / "fused.mrb", tmp_path / "unzipped")
    try:
        scene = loaded.scene
        ct2, pet2 = scene.GetFirstNodeByName("CT"), scene.GetFirstNodeByName("CT synthetic PET")
        np.testing.assert_allclose(matrix(pet2), ct_matrix, atol=1e-9)
        np.testing.assert_allclose(matrix(ct2), ct_matrix, atol=1e-9)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(pet2), pet_values)
        assert pet2.GetDisplayNode().GetColorNodeID() == HEAT
        assert (pet2.GetDisplayNode().GetWindowLevelMin(), pet2.GetDisplayNode().GetWindowLevelMax()) == pytest.approx((0, 10))
        assert pet2.GetAttribute("RegC2P.Model") == Path(settings.model).name
        assert study_of(pet2) == "PET/CT study" and study_of(ct2) == "PET/CT study"
        views = composites(scene)
        assert sorted(c.GetLayoutName() for c in views) == sorted(SLICE_VIEWS)
        for composite in views:
            assert (composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID()) == (ct2.GetID(), pet2.GetID())
            assert composite.GetForegroundOpacity() == pytest.approx(0.35)
    finally:
        loaded.close()


# --------------------------------------------------------------------------- background process


def test_background_job_cancel_then_run_to_completion(headless, ct_node, settings):
    count = headless.GetNumberOfNodes()
    job = BackgroundTranslation(ct_node, None, settings)
    job.start()
    workdir = job._workdir
    assert workdir is not None and (workdir / "ct.nrrd").is_file()
    job.cancel()
    assert job.poll().state == "cancelled"
    assert headless.GetNumberOfNodes() == count and not workdir.exists()

    job = BackgroundTranslation(ct_node, None, settings)
    job.start()
    seen: list[JobState] = []
    while not job.poll().finished:
        seen.append(job.poll())
        assert headless.GetNumberOfNodes() == count  # nothing changes while the worker runs
        time.sleep(0.05)
    state = job.wait(timeout=120)
    assert state.state == "succeeded", state.error
    pet_node = job.result_node
    np.testing.assert_array_equal(matrix(pet_node), matrix(ct_node))
    assert pet_node.GetDisplayNode().GetColorNodeID() == HEAT
    assert composites(headless)[0].GetForegroundVolumeID() == pet_node.GetID()
    reference = processing.process(ct_node, None, settings)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(pet_node), slicer.util.arrayFromVolume(reference), atol=1e-5)
    assert pet_node.GetAttribute("RegC2P.Precision") == "float32"  # read back from the worker's file


def _user_work(scene, ct_node) -> list:
    """What a user does while a run goes on: adds nodes, changes the slice views and the CT's window."""
    note = scene.AddNewNodeByClass("vtkMRMLTextNode", "my notes")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "my transform")
    mine = volumes.add_volume_node(scene, volumes.image_from_volume_node(ct_node), "my volume")
    for composite in composites(scene):
        composite.SetBackgroundVolumeID(mine.GetID())
        composite.SetForegroundVolumeID(None)
        composite.SetForegroundOpacity(0.3)
    ct_node.GetDisplayNode().SetAutoWindowLevel(False)
    ct_node.GetDisplayNode().SetWindowLevel(1500.0, -600.0)  # lung window
    return [note, transform, mine]


def _assert_user_work_kept(scene, ct_node, nodes) -> None:
    assert all(scene.GetNodeByID(node.GetID()) is node for node in nodes)
    for composite in composites(scene):
        assert (composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID()) == (nodes[2].GetID(), None)
        assert composite.GetForegroundOpacity() == pytest.approx(0.3)
    display = ct_node.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == pytest.approx((1500.0, -600.0))
    assert scene.GetFirstNodeByName("CT synthetic PET") is None


def test_cancel_keeps_what_the_user_did_during_the_run(headless, ct_node, settings):
    job = BackgroundTranslation(ct_node, None, settings)
    job.start()
    nodes = _user_work(headless, ct_node)
    count = headless.GetNumberOfNodes()
    job.cancel()
    assert job.poll().state == "cancelled"
    _assert_user_work_kept(headless, ct_node, nodes)
    assert headless.GetNumberOfNodes() == count


def test_a_failed_worker_keeps_what_the_user_did_during_the_run(headless, ct_node, settings):
    job = BackgroundTranslation(ct_node, None, RunSettings(settings.model, TranslationOptions(device="cuda")))
    job.start()
    nodes = _user_work(headless, ct_node)
    count = headless.GetNumberOfNodes()
    state = job.wait(timeout=120)
    if state.state == "succeeded":
        pytest.skip("this machine has CUDA, so the worker cannot be made to fail this way")
    assert state.state == "failed"
    _assert_user_work_kept(headless, ct_node, nodes)
    assert headless.GetNumberOfNodes() == count


def test_a_failed_write_is_undone_and_what_the_user_did_is_kept(headless, ct_node, settings, monkeypatch):
    def broken_display(*args, **kwargs):
        raise RuntimeError("display failed")

    monkeypatch.setattr(processing, "show_pet", broken_display)  # fails after the output node was made
    job = BackgroundTranslation(ct_node, None, settings)
    job.start()
    nodes = _user_work(headless, ct_node)
    count = headless.GetNumberOfNodes()
    state = job.wait(timeout=120)
    assert state.state == "failed" and state.error == "display failed"
    _assert_user_work_kept(headless, ct_node, nodes)
    assert headless.GetNumberOfNodes() == count


def test_background_job_reports_the_workers_one_line_error(headless, ct_node, settings):
    count = headless.GetNumberOfNodes()
    with pytest.raises(InputError, match="stride"):
        BackgroundTranslation(ct_node, None, RunSettings(settings.model, TranslationOptions(window=3, stride=5))).start()
    job = BackgroundTranslation(ct_node, None, RunSettings(settings.model, TranslationOptions(device="cuda")))
    job.start()
    state = job.wait(timeout=120)
    if state.state == "succeeded":
        pytest.skip("this machine has CUDA, so the device error cannot be provoked")
    assert state.state == "failed"
    assert "cuda" in state.error and "\n" not in state.error
    assert "regc2p: error:" in state.details
    assert headless.GetNumberOfNodes() == count


# --------------------------------------------------------------------------- models, devices, dependencies


def test_import_model_checks_the_file_and_reports_its_sha256(tmp_path, small_model_file, small_config):
    folder = tmp_path / "user models"
    imported = models.import_model(small_model_file, folder)
    assert imported.path == folder / small_model_file.name and not imported.already_present
    assert imported.sha256 == file_sha256(small_model_file) == file_sha256(imported.path)
    assert models.import_model(small_model_file, folder).already_present
    assert [c.path for c in models.available_models(folder, bundled_folder=tmp_path / "none")] == [imported.path]

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(small_model_file.read_bytes()[:-100])
    with pytest.raises(ModelFileError):
        models.import_model(broken, folder)
    assert not (folder / "broken.safetensors").exists()
    clash = tmp_path / "other" / small_model_file.name  # same name, other weights
    clash.parent.mkdir()
    save_model(clash, new_model(small_config, seed=7))
    with pytest.raises(InputError, match="different model"):
        models.import_model(clash, folder)
    assert file_sha256(imported.path) == imported.sha256


def test_default_model_is_bundled_first_then_user(tmp_path, small_model_file):
    bundled, user = tmp_path / "bundled", tmp_path / "user"
    bundled.mkdir()
    user.mkdir()
    assert models.default_model(user, bundled) is None
    (user / "mine.safetensors").write_bytes(small_model_file.read_bytes())
    assert models.default_model(user, bundled) == user / "mine.safetensors"
    for name in ("a.safetensors", "default.safetensors"):
        (bundled / name).write_bytes(small_model_file.read_bytes())
    assert models.default_model(user, bundled) == bundled / "default.safetensors"
    assert [c.bundled for c in models.available_models(user, bundled)] == [True, True, False]


def test_devices_are_found_by_a_worker_without_torch_in_this_process(tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", "import sys, time\n"
         "from RegC2PSlicer.background import wait_for\n"
         "from RegC2PSlicer.models import DeviceProbe\n"
         "probe = DeviceProbe(); probe.start(); state = wait_for(probe, timeout=120)\n"
         "print(state.state, 'torch' in sys.modules)\n"
         "for c in probe.choices: print(c.name, c.usable, c.reason)\n"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "succeeded False"  # found, and torch never imported into the asking process
    choices = {line.split(" ", 2)[0]: line.split(" ", 2)[1:] for line in lines[1:]}
    assert list(choices) == ["auto", "cpu", "cuda", "mps"]
    assert choices["auto"][0] == choices["cpu"][0] == "True"
    import torch

    assert (choices["cuda"][0] == "True") == torch.cuda.is_available()
    assert all(usable == "True" or reason.strip() for usable, reason in choices.values())


def test_a_model_path_saved_by_another_installation_is_found_by_name(tmp_path, small_model_file):
    bundled, user = tmp_path / "Resources" / "Models", tmp_path / "user"
    bundled.mkdir(parents=True)
    user.mkdir()
    (bundled / "default.safetensors").write_bytes(small_model_file.read_bytes())
    (user / "mine.safetensors").write_bytes(small_model_file.read_bytes())
    old_install = "/opt/Slicer-5.8.1/lib/Slicer-5.8/qt-scripted-modules/Resources/Models"
    resolve = functools.partial(models.resolve_model_path, user_folder=user, bundled_folder=bundled)
    assert resolve(None) == resolve("") == bundled / "default.safetensors"  # empty in the scene: the default
    assert resolve(f"{old_install}/default.safetensors") == bundled / "default.safetensors"
    assert resolve("/home/colleague/.regc2p/models/mine.safetensors") == user / "mine.safetensors"
    assert resolve(tmp_path / "gone.safetensors") == tmp_path / "gone.safetensors"  # unknown: reported when loaded


def test_the_panel_offers_a_ct_not_a_label_map_or_a_pet(headless, oblique_ct):
    ct_image = sitk.Cast(oblique_ct, sitk.sitkFloat32)
    assert volumes.first_ct_node(headless) is None
    labels = headless.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(labels, np.zeros(SHAPE, np.uint8))
    pet = volumes.add_volume_node(headless, ct_image * 0.0 + 2.0, "PET")
    pet.GetDisplayNode().SetAndObserveColorNodeID(HEAT)
    suv = volumes.add_volume_node(headless, ct_image * 0.0 + 1.0, "SUV")
    output.store_pet(volumes.add_volume_node(headless, ct_image, "other CT"), ct_image * 0.0 + 1.0, suv)  # SUV units
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(headless)

    def dicom_series(name: str, modality: str):  # as Slicer's DICOM module loads a series
        node = volumes.add_volume_node(headless, ct_image, name)
        sh.SetItemAttribute(sh.CreateItem(sh.GetSceneItemID(), node), "DICOM.Modality", modality)
        return node

    dicom_series("PT series", "PT")
    dicom_ct = dicom_series("CT series", "CT")
    assert volumes.first_ct_node(headless) is dicom_ct  # a CT series first
    headless.RemoveNode(dicom_ct)
    assert volumes.first_ct_node(headless).GetName() == "other CT"  # then the first that is no PET


def test_module_requirements_leave_out_what_slicer_and_the_pytorch_extension_provide():
    names = {r.split(">")[0].split("=")[0].strip().lower() for r in requirements()}
    assert "safetensors" in names and not {name.lower() for name in NEVER_PIP} & names


# --------------------------------------------------------------------------- batch script


def test_batch_script_translates_a_folder_of_two_cts(tmp_path, make_ct, directions, small_model_file, assert_same_geometry):
    cts = tmp_path / "cts"
    cts.mkdir()
    images = {
        "a": make_ct((8, 40, 40), direction=directions["OBLIQUE"], seed=1),
        "b": make_ct((9, 36, 44), direction=directions["RAS"], seed=2),
    }
    sitk.WriteImage(images["a"], str(cts / "a.nii.gz"))
    sitk.WriteImage(images["b"], str(cts / "b.nrrd"))
    args = ["--ct", str(cts), "--out", str(tmp_path / "pets"), "--scene", str(tmp_path / "scenes")]
    args += ["--model", str(small_model_file), "--refine", "non-overlap"]
    run = subprocess.run(
        [sys.executable, str(BATCH_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "2 of 2 translated" in run.stderr
    for name, image in images.items():
        pet = sitk.ReadImage(str(tmp_path / "pets" / f"{name}_synthetic_pet.nii.gz"))
        assert_same_geometry(pet, image, tol=1e-5)
        assert pet.GetPixelID() == sitk.sitkFloat32
        assert (tmp_path / "scenes" / f"{name}.mrb").is_file()
    loaded = _read_mrb(tmp_path / "scenes" / "a.mrb", tmp_path / "a_scene")
    try:
        pet_node = loaded.scene.GetFirstNodeByName("a synthetic PET")
        assert pet_node.GetDisplayNode().GetColorNodeID() == HEAT
        assert pet_node.GetAttribute("RegC2P.Refine") == "non-overlap"
    finally:
        loaded.close()


def test_batch_script_single_file_and_one_line_errors(tmp_path, make_ct, small_model_file, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("RegC2PBatch", BATCH_SCRIPT)
    batch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(batch)  # in-process: same code as the subprocess run above
    ct, pet, scene = tmp_path / "ct.nrrd", tmp_path / "pet.nrrd", tmp_path / "fused.mrb"
    sitk.WriteImage(make_ct((6, 32, 32)), str(ct))
    base = ["--model", str(small_model_file), "--ct", str(ct)]
    assert batch.main([*base, "--out", str(pet), "--scene", str(scene), "--refine", "none"]) == 0
    assert pet.is_file() and scene.is_file()
    assert batch.main([*base, "--out", str(ct)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("regc2p: error: --out is the input CT")
    assert batch.main([*base, "--out", str(tmp_path / "pet.nrrd"), "--scene", str(tmp_path / "fused.zip")]) == 2
    assert "must end in .mrb" in capsys.readouterr().err


# --------------------------------------------------------------------------- sample data


def test_sample_phantom_loads_under_a_study_and_translates(headless, settings):
    from RegC2PLib.volume_io import check_ct
    from RegC2PSlicer.sample_data import THUMBNAIL, load_phantom

    ct_node, pet_node = load_phantom(headless, size="tiny")
    check_ct(volumes.image_from_volume_node(ct_node))  # a plausible CT in HU
    assert pet_node.GetDisplayNode().GetColorNodeID() == HEAT
    assert float(slicer.util.arrayFromVolume(pet_node).max()) > 1.0  # SUV, with uptake
    assert study_of(ct_node) == study_of(pet_node) == "Synthetic PET/CT"
    synthetic = processing.process(ct_node, None, RunSettings(settings.model, TranslationOptions("none")))
    assert study_of(synthetic) == "Synthetic PET/CT"
    assert THUMBNAIL.is_file()


def test_sample_data_button_and_download_sample_load_the_phantom_through_its_reader(headless, monkeypatch, tmp_path):
    from RegC2PLib.volume_io import check_ct
    from RegC2PSlicer import sample_data

    registered: dict = {}
    logic = types.SimpleNamespace(registerCustomSampleDataSource=lambda **source: registered.update(source))
    monkeypatch.setitem(sys.modules, "SampleData", types.SimpleNamespace(SampleDataLogic=logic))
    sample_data.register_sample_data()
    assert "customDownloader" not in registered  # Sample Data would use it for its button only
    # What SampleDataLogic.downloadFromSource does for both: fetch each URI into the cache, then
    # load the file with the reader of the file type given (node name as the "name" property).
    cached = tmp_path / "cache" / registered["fileNames"][0]
    cached.parent.mkdir()
    urllib.request.urlretrieve(registered["uris"][0], cached)
    messages: list[str] = []
    parent = types.SimpleNamespace(
        loadedNodes=None, userMessages=lambda: types.SimpleNamespace(AddMessage=lambda kind, text: messages.append(text))
    )
    reader = sample_data.PhantomFileReader(parent)
    assert reader.fileType() == registered["loadFileTypes"][0]
    assert reader.load({"fileName": str(cached), "name": registered["nodeNames"][0]}) and not messages
    ct_node, pet_node = (headless.GetNodeByID(node_id) for node_id in parent.loadedNodes)
    assert ct_node.GetName() == registered["nodeNames"][0]  # the node downloadSample returns
    check_ct(volumes.image_from_volume_node(ct_node))
    assert slicer.util.arrayFromVolume(ct_node).shape == sample_data.SIZES["default"]
    assert pet_node.GetDisplayNode().GetColorNodeID() == HEAT
    cached.write_text('{"format": "regc2p-phantom", "version": 1, "size": "huge", "seed": 0}')
    assert not reader.load({"fileName": str(cached)}) and "unknown phantom size 'huge'" in messages[-1]


def test_display_changes_after_the_run_touch_only_the_pet(headless, ct_node, settings):
    pet_node = processing.process(ct_node, None, settings)
    other = volumes.add_volume_node(headless, volumes.image_from_volume_node(ct_node), "other")
    composites(headless)[0].SetForegroundVolumeID(other.GetID())
    output.set_fusion_opacity(pet_node, 0.9)
    output.update_pet_display(pet_node, "PET-DICOM", (2.0, 4.0))
    opacities = [c.GetForegroundOpacity() for c in composites(headless)]
    assert opacities == pytest.approx([0.5, 0.9, 0.9])
    display = pet_node.GetDisplayNode()
    assert display.GetColorNodeID() == "vtkMRMLPETProceduralColorNodePET-DICOM"
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((2.0, 4.0))
    with pytest.raises(InputError, match="SUV window"):
        output.update_pet_display(pet_node, "PET-Heat", (4.0, 2.0))


def test_model_card_is_read_from_the_file_header(tmp_path, tiny_config):
    """The panel's model info: the ``card`` a model file carries, read from the safetensors
    header by hand; the same text the file's own loader reports; a broken file gives none."""
    path = tmp_path / "carded.safetensors"
    card = "Trained on phantoms and 29 sarcoma patients; research use only, not for diagnosis."
    save_model(path, new_model(tiny_config, seed=0), {"card": card, "command": "regc2p train --data d"})
    assert models.model_info(path) == dict(load_model(path).info)
    assert models.model_info(path)["card"] == card
    data = bytearray(path.read_bytes())
    data[:8] = (2**62).to_bytes(8, "little")  # a header length no file has
    (tmp_path / "broken.safetensors").write_bytes(bytes(data))
    (tmp_path / "text.safetensors").write_text("not a model")
    assert models.model_info(tmp_path / "broken.safetensors") == {}
    assert models.model_info(tmp_path / "text.safetensors") == {}
    assert models.model_info(tmp_path / "missing.safetensors") == {}

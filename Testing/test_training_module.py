"""The RegC2P Training module's logic, headless, against a real MRML scene (``slicer-core`` wheel).

Three phantom CT/PET/aligned-PET node triples with oblique geometry (tilted directions,
anisotropic spacing) are written with exactly the nodes' geometry; training from them
in this process gives a model file RegC2PLib loads; the background worker reports
rising progress, stops cleanly on request (keeping its last checkpoint) and continues
to completion; the nodes are never modified; bad inputs give one-line errors; the
batch script trains from volume files loaded as nodes.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from RegC2PLib.config import DiscriminatorConfig, GeneratorConfig, RefinerConfig, RegistrationConfig, preset  # noqa: E402
from RegC2PLib.data.phantom import PhantomConfig, generate_case  # noqa: E402
from RegC2PLib.errors import InputError  # noqa: E402
from RegC2PLib.model_file import load_model, new_model, save_model  # noqa: E402
from RegC2PLib.training.config import TrainConfig  # noqa: E402
from RegC2PSlicer.training import TrainingJob, TrainingSettings, write_pairs  # noqa: E402
from RegC2PSlicer.volumes import add_volume_node, ijk_to_ras, image_from_volume_node, node_ijk_to_ras  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BATCH_SCRIPT = ROOT / "RegC2PTraining" / "Resources" / "Scripts" / "RegC2PTrainingBatch.py"
# The small preset at 64 px with thinner networks: a few training steps take seconds on two cores.
TINY = preset("small").with_changes(
    image_size=64,
    generator=GeneratorConfig(base_channels=8, n_downsampling=2, n_residual_blocks=2),
    registration=RegistrationConfig((8, 16, 16), (16, 16, 8), bottleneck_channels=16, n_bottleneck_blocks=1),
    discriminator=DiscriminatorConfig(base_channels=8, n_layers=2),
    refiner=RefinerConfig(channels=(4, 8, 8), window=4, stride=2),
)
BUDGET = TrainConfig(epochs=1, refiner_epochs=1, max_steps=4, checkpoint_every=2)
ROLES = ("ct", "pet", "pet_aligned")


def _tilt(degrees_x: float, degrees_z: float) -> np.ndarray:
    ax, az = np.radians(degrees_x), np.radians(degrees_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


def _oblique(image: sitk.Image, rotation: np.ndarray) -> sitk.Image:
    """The image rigidly rotated about the physical origin (voxels kept): a tilted grid."""
    out = sitk.Image(image)
    direction = rotation @ np.asarray(image.GetDirection()).reshape(3, 3)
    out.SetDirection(direction.ravel().tolist())
    out.SetOrigin((rotation @ np.asarray(image.GetOrigin())).tolist())
    return out


@pytest.fixture(scope="module")
def cases() -> list[dict[str, sitk.Image]]:
    """Three phantom studies (24 slices of 64×64, anisotropic), each tilted differently; CT int16 HU."""
    result = []
    for seed in range(3):
        case = generate_case(PhantomConfig(shape=(24, 64, 64)), seed)
        rotation = _tilt(8.0 + 3 * seed, 5.0 - 4 * seed)
        ct = sitk.Cast(sitk.Round(case.ct), sitk.sitkInt16)
        result.append({role: _oblique(image, rotation) for role, image in zip(ROLES, (ct, case.pet, case.pet_aligned))})
    return result


@pytest.fixture
def triples(headless, cases) -> list[tuple]:
    """(CT, PET, aligned PET) volume nodes of each study."""
    return [
        tuple(add_volume_node(headless, case[role], f"{role} {number}") for role in ROLES) for number, case in enumerate(cases, 1)
    ]


def _state(nodes) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Voxels, IJK-to-RAS and modification time of each node, to show they are untouched."""
    return [(slicer.util.arrayFromVolume(n).copy(), node_ijk_to_ras(n), n.GetMTime()) for n in nodes]


def _assert_unchanged(nodes, before) -> None:
    for node, (voxels, matrix, mtime) in zip(nodes, before):
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), voxels)
        np.testing.assert_array_equal(node_ijk_to_ras(node), matrix)
        assert node.GetMTime() == mtime, node.GetName()


def _steps(run: Path, stage: str) -> list[int]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if r["kind"] == "train" and r["stage"] == stage]


# --------------------------------------------------------------------------- conversion


def test_pairs_are_written_with_exactly_the_nodes_geometry(triples, cases, tmp_path):
    nodes = [node for triple in triples for node in triple]
    before = _state(nodes)
    folder = write_pairs(triples, tmp_path / "pairs")
    assert sorted(p.name for p in folder.iterdir()) == ["pair_01", "pair_02", "pair_03", "pairs.json"]
    for number, (triple, case) in enumerate(zip(triples, cases), 1):
        for role, node in zip(ROLES, triple):
            written = sitk.ReadImage(str(folder / f"pair_{number:02d}" / f"{role}.nrrd"))
            from_node = image_from_volume_node(node)
            # NRRD stores spacing × direction; splitting it again on reading may change the last bit.
            assert written.GetSize() == from_node.GetSize()
            for key in ("GetSpacing", "GetOrigin", "GetDirection"):
                np.testing.assert_allclose(getattr(written, key)(), getattr(from_node, key)(), rtol=0, atol=1e-12, err_msg=key)
            np.testing.assert_allclose(ijk_to_ras(written), node_ijk_to_ras(node), rtol=0, atol=1e-12)
            np.testing.assert_allclose(ijk_to_ras(written), ijk_to_ras(case[role]), atol=1e-9)
            assert written.GetPixelID() == case[role].GetPixelID()
            np.testing.assert_array_equal(sitk.GetArrayViewFromImage(written), sitk.GetArrayViewFromImage(case[role]))
        assert not np.allclose(np.asarray(written.GetDirection()).reshape(3, 3), np.eye(3), atol=0.05)  # really oblique
    record = json.loads((folder / "pairs.json").read_text())["pairs"]
    assert [r["ct"] for r in record] == ["ct 1", "ct 2", "ct 3"] and record[2]["pet_aligned_id"] == triples[2][2].GetID()
    _assert_unchanged(nodes, before)


# --------------------------------------------------------------------------- blocking training


def test_blocking_training_from_scene_nodes_gives_a_loadable_model(triples, tmp_path):
    nodes = [node for triple in triples for node in triple]
    before = _state(nodes)
    job = TrainingJob.from_nodes(triples, tmp_path / "run", TrainingSettings(TINY, BUDGET))
    data = job.data_folder
    assert (data / "pair_02" / "pet_aligned.nrrd").is_file()  # a temporary dataset folder
    seen: list[float] = []
    model_path = job.run(lambda fraction, message: seen.append(fraction))

    assert model_path == tmp_path / "run" / "model.safetensors" == job.model_path
    model = load_model(model_path)
    assert model.config == TINY and model.refiner is not None
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == ["pair_01", "pair_02", "pair_03"] and split["val"]
    assert _steps(tmp_path / "run", "stage1") == [1, 2, 3, 4] and _steps(tmp_path / "run", "stage2") == [1, 2, 3, 4]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["command"].startswith("RegC2PTraining: 3 CT/PET pairs")
    assert not data.exists()  # the temporary dataset folder is removed once the run is done
    _assert_unchanged(nodes, before)


def test_fine_tuning_from_scene_nodes_starts_from_the_model_file(triples, tmp_path):
    start = tmp_path / "start.safetensors"
    save_model(start, new_model(TINY, seed=3))
    settings = TrainingSettings.fine_tuning(start, epochs=1, refiner_epochs=1, max_steps=2, lr=0.0, refiner_lr=0.0)
    assert settings.model == TINY and settings.train.init_from == str(start.resolve())
    model = load_model(TrainingJob.from_nodes(triples, tmp_path / "run", settings).run())
    initial = load_model(start)
    for trained_net, initial_net in ((model.generator, initial.generator), (model.refiner, initial.refiner)):
        for (key, value), expected in zip(trained_net.state_dict().items(), initial_net.state_dict().values()):
            assert torch.equal(value, expected), key
    with pytest.raises(InputError, match="invalid training settings"):
        TrainingSettings.fine_tuning(start, epochs=0)


# --------------------------------------------------------------------------- background training


def test_background_training_stops_cleanly_and_continues_to_completion(triples, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nodes = [node for triple in triples for node in triple]
    before = _state(nodes)
    run = tmp_path / "run"
    settings = TrainingSettings(TINY, BUDGET.replace(stage="1"))
    job = TrainingJob.from_nodes(triples, run, settings, dataset_folder=tmp_path / "pairs")
    job.start()
    with pytest.raises(InputError, match="already training"):
        job.start()
    job.request_stop()  # before the worker has started: it removes STOP on start, the job puts it back
    state = job.wait(timeout=120)
    assert state.state == "stopped", (state.error, state.details)
    assert "stopped at stage1 step 1" in state.message and "start again" in state.message
    checkpoint = torch.load(run / "checkpoints" / "stage1_last.pt", weights_only=True)
    assert checkpoint["counters"]["step"] == 1 and not checkpoint["counters"]["completed"]
    assert job.model_path is None and not (run / "STOP").exists()

    job.start()  # continue the same run
    fractions: list[float] = []
    while not job.poll().finished:
        fractions.append(job.state.fraction)
        _assert_unchanged(nodes, before)  # the scene is not touched while the worker runs
        time.sleep(0.05)
    assert job.state.state == "succeeded", (job.state.error, job.state.details)
    assert fractions == sorted(fractions) and job.state.fraction == 1.0 and max(fractions) > 0.25
    assert _steps(run, "stage1") == [1, 2, 3, 4]  # resumed at step 2, none repeated
    model = load_model(job.model_path)
    assert model.config == TINY and model.refiner is None  # stage 1 only: the generator
    assert (tmp_path / "pairs" / "pair_01" / "ct.nrrd").is_file()  # a given dataset folder is kept
    _assert_unchanged(nodes, before)


@pytest.mark.slow
def test_training_as_two_processes_stops_cleanly_and_runs_to_completion(triples, tmp_path, monkeypatch):
    """``processes=2``: the worker runs torchrun with two ranks; a stop request ends both after
    the same step (the job reports "stopped", not a failure) and a blocking run continues it."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = tmp_path / "run"
    settings = TrainingSettings(TINY, BUDGET.replace(stage="1", batch_size=2), processes=2)
    job = TrainingJob.from_nodes(triples, run, settings, dataset_folder=tmp_path / "pairs")
    job.start()
    job.request_stop()
    state = job.wait(timeout=300)
    assert state.state == "stopped", (state.error, state.details)
    assert "stopped at stage1 step" in state.message and state.details.count("regc2p: stopped") == 1  # rank 0 reports
    checkpoint = torch.load(run / "checkpoints" / "stage1_last.pt", weights_only=True)
    assert 1 <= checkpoint["counters"]["step"] < 4 and job.model_path is None
    assert len(checkpoint["rng"]) == 2  # the RNG states of two ranks

    fractions: list[float] = []
    model = job.run(lambda fraction, message: fractions.append(fraction))
    assert load_model(model).config == TINY and fractions[-1] == 1.0
    assert _steps(run, "stage1") == [1, 2, 3, 4]
    assert [resume["processes"] for resume in json.loads((run / "run.json").read_text())["resumes"]] == [2, 2]


def test_background_worker_failure_is_one_line(triples, tmp_path):
    job = TrainingJob.from_nodes(triples, tmp_path / "run", TrainingSettings(TINY, BUDGET.replace(device="cuda")))
    job.start()
    state = job.wait(timeout=120)
    if state.state == "succeeded":
        pytest.skip("this machine has CUDA, so the device error cannot be provoked")
    assert state.state == "failed" and "cuda" in state.error.lower() and "\n" not in state.error
    assert "regc2p: error:" in state.details
    job.close()
    assert not job.data_folder.exists()
    with pytest.raises(InputError, match=r"dataset folder .* no longer exists"):
        TrainingJob.open(tmp_path / "run")


# --------------------------------------------------------------------------- errors


def test_bad_inputs_give_one_line_errors_and_leave_the_scene_alone(headless, triples, cases, tmp_path):
    nodes = [node for triple in triples for node in triple]
    before = _state(nodes)
    settings = TrainingSettings(TINY, BUDGET)

    def refused(pairs, match):
        count = headless.GetNumberOfNodes()
        with pytest.raises(InputError, match=match) as info:
            TrainingJob.from_nodes(pairs, tmp_path / "run", settings)
        assert "\n" not in str(info.value)
        assert not (tmp_path / "run").exists() and headless.GetNumberOfNodes() == count

    refused(triples[:2], "at least 3")
    label = headless.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    refused([triples[0], (triples[1][0], label), triples[2]], "pair_02: labels is a vtkMRMLLabelMapVolumeNode")
    refused([triples[0], (triples[1][0], None), triples[2]], "pair_02: no PET volume selected")
    refused([triples[0], (triples[1][0], triples[0][1]), triples[2]], "pair_02: volume 'pet 1' is already used in pair_01")
    refused([*triples, ("only a CT",)], "pair 4 is not")

    far = sitk.Image(cases[1]["pet"])
    far.SetOrigin([o + 5000.0 for o in far.GetOrigin()])
    far_node = add_volume_node(headless, far, "far PET")
    refused([triples[0], (triples[1][0], far_node), triples[2]], "pair_02: the CT and the PET do not overlap in space")
    becquerel = add_volume_node(headless, cases[1]["pet"] * 5000.0, "PET in Bq/ml")
    refused([triples[0], (triples[1][0], becquerel), triples[2]], "not a plausible SUV")
    scaled = add_volume_node(headless, sitk.Cast(cases[1]["ct"], sitk.sitkFloat32) / 2000.0 + 0.5, "normalised CT")
    refused([triples[0], (scaled, triples[1][1]), triples[2]], "pair_02: CT values .* are not plausible Hounsfield units")
    transform = headless.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    moved = add_volume_node(headless, cases[1]["pet"], "moved PET")
    moved.SetAndObserveTransformNodeID(transform.GetID())
    refused([triples[0], (triples[1][0], moved), triples[2]], "under another transform than CT 'ct 2'.*harden")

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="already exists and is not empty"):
        TrainingJob.from_nodes(triples, tmp_path / "run", settings)
    assert (tmp_path / "run" / "notes.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="not a RegC2P run folder"):
        TrainingJob.open(tmp_path / "run")
    write_pairs(triples[:1], tmp_path / "one")
    with pytest.raises(InputError, match="holds 1 study; training with validation needs at least 3"):
        TrainingJob.from_folder(tmp_path / "one", tmp_path / "r1", settings)
    assert TrainingJob.from_folder(tmp_path / "one", tmp_path / "r2", TrainingSettings(TINY, BUDGET, require_validation=False))
    with pytest.raises(InputError, match="does not exist"):
        TrainingJob.from_folder(tmp_path / "missing", tmp_path / "r3", settings)
    with pytest.raises(InputError, match="can only change"):
        TrainingJob.open(tmp_path / "r2", {"lr": 0.1})
    (tmp_path / "r2" / "run.json").write_text('{"model": {')  # cut short: was a JSONDecodeError traceback
    with pytest.raises(InputError, match=r"run\.json is not valid JSON .*restore it from a backup") as info:
        TrainingJob.open(tmp_path / "r2")
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="image_size"):
        TrainingSettings.from_preset("small", image_size=50)
    _assert_unchanged(nodes, before)


# --------------------------------------------------------------------------- batch script


def _batch_module():
    spec = importlib.util.spec_from_file_location("RegC2PTrainingBatch", BATCH_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # in-process: the same code Slicer's --python-script runs
    return module


def test_batch_script_trains_from_volume_files_and_reports_errors(cases, tmp_path, capsys):
    batch = _batch_module()
    files = tmp_path / "files"
    files.mkdir()
    pair_args = []
    for number, case in enumerate(cases, 1):
        names = []
        for role in ("ct", "pet"):
            path = files / f"{role}{number}.nii.gz"
            sitk.WriteImage(case[role], str(path))
            names.append(str(path))
        pair_args += ["--pair", *names]
    budget = ["--image-size", "64", "--stage", "1", "--max-steps", "1", "--epochs", "1"]
    run = tmp_path / "run"
    status = batch.main([*pair_args, "--out", str(run), "--pairs-folder", str(tmp_path / "pairs"), *budget])
    err = capsys.readouterr().err
    assert status == 0, err
    assert f"wrote {run / 'model.safetensors'}" in err
    assert load_model(run / "model.safetensors").config.image_size == 64
    written = sitk.ReadImage(str(tmp_path / "pairs" / "pair_02" / "ct.nrrd"))
    np.testing.assert_allclose(ijk_to_ras(written), ijk_to_ras(cases[1]["ct"]), atol=1e-6)  # via the NIfTI files

    # Fine-tuning that model: its 64 px network is used without --image-size.
    tuned = tmp_path / "tuned"
    fine_tune = ["--init-from", str(run / "model.safetensors"), "--stage", "1", "--max-steps", "1", "--epochs", "1"]
    assert batch.main(["--data", str(tmp_path / "pairs"), "--out", str(tuned), *fine_tune]) == 0, capsys.readouterr().err
    assert load_model(tuned / "model.safetensors").config.image_size == 64
    assert json.loads((tuned / "run.json").read_text())["init"]["from"] == str(run / "model.safetensors")
    assert batch.main(["--out", str(tuned), "--resume", "--keep", "last", "--max-steps", "2"]) == 0, capsys.readouterr().err
    assert json.loads((tuned / "run.json").read_text())["resumes"][-1]["overrides"] == {"max_steps": 2, "keep": "last"}
    # Two weighted dataset folders, as regc2p train takes them; a missing one is refused before anything is written.
    pairs = tmp_path / "pairs"
    mixed = tmp_path / "mixed"
    assert batch.main(["--data", f"a={pairs}", f"b={pairs}:3", "--out", str(mixed), *budget]) == 0, capsys.readouterr().err
    assert [(d["name"], d["weight"]) for d in json.loads((mixed / "run.json").read_text())["data"]] == [("a", 1.0), ("b", 3.0)]
    assert batch.main(["--data", str(pairs), str(tmp_path / "nowhere"), "--out", str(tmp_path / "m2"), *budget]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err and not (tmp_path / "m2").exists()
    assert batch.main(["--data", str(tmp_path / "pairs"), "--out", str(run), *budget]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("regc2p: error: run folder")
    assert batch.main(["--pair", pair_args[1], "--out", str(tmp_path / "r2")]) == 2
    assert "needs CT PET" in capsys.readouterr().err

"""RegC2P Training: train RegC2P models from CT/PET volumes in the scene or from a dataset folder.

A headless scripted module: the logic (:class:`RegC2PTrainingLogic`) is used from the
Python console and from ``Slicer --no-main-window --python-script
RegC2PTrainingBatch.py``; the panel only explains that. The work is done by
``RegC2PSlicer.training`` (installed with the RegC2P module); long runs go to a
background process so Slicer never freezes (see docs/slicer.md, "Training in Slicer").
"""

import logging

import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

CONSOLE_EXAMPLE = """import RegC2PTraining
logic = RegC2PTraining.RegC2PTrainingLogic()
pairs = [(slicer.util.getNode("CT 1"), slicer.util.getNode("PET 1")), ...]
job = logic.trainFromNodes(pairs, "/path/to/run", waitForCompletion=False)
job.state          # progress; job.stop() stops cleanly, job.start() continues"""


class RegC2PTraining(ScriptedLoadableModule):
    """Module description shown in Slicer's Help & Acknowledgement section."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("RegC2P Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Nuclear Medicine")]
        self.parent.dependencies = ["RegC2P"]
        self.parent.contributors = ["RegC2P contributors"]
        self.parent.helpText = _(
            "Trains RegC2P models (generator G with registration network R, then the 3D refiner F) from pairs of CT "
            "and PET (SUV) volumes loaded in the scene, or from a dataset folder. There is no training panel: use the "
            "module's logic from the Python console, or the <code>RegC2PTrainingBatch.py</code> script with "
            "<code>Slicer --no-main-window --python-script</code>. Training runs in a background process with "
            "progress and a clean stop, so Slicer stays responsive. Load the run's <code>model.safetensors</code> in "
            "the RegC2P module with <b>Import model…</b>. See docs/slicer.md, 'Training in Slicer'."
        )
        self.parent.acknowledgementText = _(
            "RegC2P implements: Nguyen Thanh Trung, Le Ke Hung, 'RegC2P: A registration-enhanced GAN for 3D "
            "CT-to-PET translation', Journal of Military Science and Technology 102 (2025) 125-132, "
            "doi:10.54939/1859-1043.j.mst.102.2025.125-132."
        )


class RegC2PTrainingWidget(ScriptedLoadableModuleWidget):
    """Explains how to train from the console or a batch script (there is no training panel)."""

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = RegC2PTrainingLogic()
        label = qt.QLabel(
            _("Train from the Python console (or with Resources/Scripts/RegC2PTrainingBatch.py; see docs/slicer.md):")
            + f"<pre>{CONSOLE_EXAMPLE}</pre>"
        )
        label.wordWrap = True
        label.textInteractionFlags = qt.Qt.TextSelectableByMouse
        self.layout.addWidget(label)
        self.layout.addStretch(1)

    def cleanup(self) -> None:
        """Ask the background runs started from this module to stop cleanly (checkpoints are kept)."""
        self.logic.stopAll()


class RegC2PTrainingLogic(ScriptedLoadableModuleLogic):
    """Training from the console and scripts; blocking or in a background process.

    Console use (blocking; returns the model file path)::

        import RegC2PTraining
        logic = RegC2PTraining.RegC2PTrainingLogic()
        pairs = [(slicer.util.getNode("CT 1"), slicer.util.getNode("PET 1")), ...]  # at least 3 studies
        modelPath = logic.trainFromNodes(pairs, "/path/to/run", logic.settings("small", imageSize=128, epochs=20))

    ``waitForCompletion=False`` returns the running :class:`RegC2PSlicer.training.TrainingJob`
    (``job.state``, ``job.stop()``, ``job.cancel()``, ``job.start()`` to continue);
    ``progress(fraction, message)`` and ``onFinished(jobState)`` are then called from a
    timer. Errors raise ``RegC2PLib.errors.RegC2PError`` subclasses with a one-line message.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.jobs = []  # background runs started by this logic and still running

    def ensureDependencies(self) -> None:
        """Install torch (PyTorch extension) and the pip requirements at first use, asking first (never under --testing)."""
        from RegC2PSlicer.dependencies import ensure_in_slicer

        ensure_in_slicer(_("RegC2P Training"))

    def settings(self, preset="small", imageSize=None, initFrom=None, **trainOptions):
        """TrainingSettings from a network preset, a slice size (pixels) and TrainConfig fields (epochs, max_steps, ...).

        ``initFrom``: a model file (e.g. the bundled default) to fine-tune; its network sizes are used.
        """
        self.ensureDependencies()
        from RegC2PSlicer.training import TrainingSettings

        if initFrom:
            return TrainingSettings.fine_tuning(initFrom, **trainOptions)
        return TrainingSettings.from_preset(preset, imageSize, **trainOptions)

    def trainFromNodes(
        self, pairs, runFolder, settings=None, datasetFolder=None, waitForCompletion=True, progress=None, onFinished=None
    ):
        """Train on (CT, PET[, aligned PET]) volume node pairs; they are written with their geometry
        to ``datasetFolder`` (default: a temporary folder) and only read."""
        self.ensureDependencies()
        from RegC2PSlicer.training import TrainingJob

        job = TrainingJob.from_nodes(pairs, runFolder, settings, datasetFolder)
        return self._go(job, waitForCompletion, progress, onFinished)

    def trainFromFolder(self, dataFolder, runFolder, settings=None, waitForCompletion=True, progress=None, onFinished=None):
        """Train on a dataset folder (one sub-folder per study with ct.* and pet.*, see docs/datasets.md)."""
        self.ensureDependencies()
        from RegC2PSlicer.training import TrainingJob

        job = TrainingJob.from_folder(dataFolder, runFolder, settings)
        return self._go(job, waitForCompletion, progress, onFinished)

    def resumeRun(self, run, waitForCompletion=True, progress=None, onFinished=None, **overrides):
        """Continue a stopped run: a job returned earlier (keeps its temporary pairs) or a run folder.

        ``overrides`` may change stage, epochs, refiner_epochs, max_steps or keep.
        """
        self.ensureDependencies()
        from RegC2PSlicer.training import TrainingJob

        if isinstance(run, TrainingJob):
            job = run
            job.set_overrides(overrides)
        else:
            job = TrainingJob.open(run, overrides)
        return self._go(job, waitForCompletion, progress, onFinished)

    def stopAll(self) -> None:
        """Ask every background run of this logic to stop after its current step."""
        for job in self.jobs:
            job.request_stop()

    def _go(self, job, waitForCompletion, progress, onFinished):
        if waitForCompletion:
            return job.run(progress)
        from RegC2PSlicer.jobs import job_poller, progress_reporter

        def finished(state):
            self.jobs.remove(job)
            if state.state == "failed":
                logging.error(f"RegC2P training of {job.out} failed: {state.error}\n{state.details}")
            if onFinished is not None:
                onFinished(state)

        job.start()
        self.jobs.append(job)
        # Not scene-bound: the run trains from files, so closing the scene does not stop it (quitting Slicer does).
        return job_poller().watch(job, progress_reporter(progress), finished)


class RegC2PTrainingTest(ScriptedLoadableModuleTest):
    """Trains a tiny model from three phantom CT/PET pairs in the scene, blocking and in the background.

    Installs nothing (skipped, with the reason, when PyTorch or a requirement is missing);
    every wait has a deadline.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from RegC2PSlicer.dependencies import missing_for_self_test

        reason = missing_for_self_test()
        if reason is not None:
            self.delayDisplay(f"RegC2P Training self-test skipped: {reason}")
            self.skipTest(reason)
        self.setUp()
        self.test_train_from_scene_nodes()
        self.setUp()
        self.test_background_stop_and_continue()

    def _pairs(self):
        from RegC2PLib.data.phantom import PhantomConfig, generate_case
        from RegC2PSlicer.volumes import add_volume_node

        pairs = []
        for seed in range(3):
            case = generate_case(PhantomConfig(shape=(24, 64, 64)), seed)
            pairs.append(
                (
                    add_volume_node(slicer.mrmlScene, case.ct, f"CT {seed + 1}"),
                    add_volume_node(slicer.mrmlScene, case.pet, f"PET {seed + 1}"),
                )
            )
        return pairs

    def test_train_from_scene_nodes(self):
        import tempfile
        from pathlib import Path

        from RegC2PLib.model_file import load_model

        logic = RegC2PTrainingLogic()
        pairs = self._pairs()
        run = Path(tempfile.mkdtemp(prefix="RegC2PTrainingTest-")) / "run"
        settings = logic.settings("small", imageSize=64, epochs=1, refiner_epochs=1, max_steps=2)
        modelPath = logic.trainFromNodes(pairs, run, settings)
        model = load_model(modelPath)
        self.assertEqual(model.config.image_size, 64)
        self.assertIsNotNone(model.refiner)
        self.delayDisplay("Trained a model from scene nodes")

    def test_background_stop_and_continue(self):
        import tempfile
        from pathlib import Path

        from RegC2PSlicer.jobs import process_events_until

        logic = RegC2PTrainingLogic()
        run = Path(tempfile.mkdtemp(prefix="RegC2PTrainingTest-")) / "run"
        settings = logic.settings("small", imageSize=64, stage="1", epochs=1, max_steps=3)
        finished = []
        job = logic.trainFromNodes(self._pairs(), run, settings, waitForCompletion=False, onFinished=finished.append)
        job.request_stop()
        self.assertTrue(process_events_until(lambda: finished, 300), "the stopped run did not end within 5 minutes")
        self.assertEqual(finished[-1].state, "stopped")
        self.assertTrue((run / "checkpoints" / "stage1_last.pt").is_file())
        logic.resumeRun(job, waitForCompletion=False, onFinished=finished.append)
        self.assertTrue(process_events_until(lambda: len(finished) == 2, 600), "the run did not finish within 10 minutes")
        self.assertEqual(finished[-1].state, "succeeded", finished[-1].error)
        self.delayDisplay("Stopped and continued a background run")

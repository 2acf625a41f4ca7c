"""RegC2P: synthetic PET from CT in 3D Slicer (module, parameter node, panel, logic, self-test).

This file stays thin: the translation lives in ``RegC2PLib`` (no Slicer imports) and the
scene handling in ``RegC2PSlicer`` (MRML only, testable without the application).
Packages that need torch are imported only after the dependency check, so the module
loads even before the PyTorch extension has installed torch.
"""

import logging
import pathlib
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from RegC2PLib.choices import DEVICE_CHOICES, REFINE_MODES
from RegC2PLib.errors import one_line
from RegC2PSlicer.jobs import job_poller, progress_reporter
from RegC2PSlicer.output import DEFAULT_OPACITY, DEFAULT_PET_COLOR, DEFAULT_SUV_WINDOW, PET_COLORS
from RegC2PSlicer.sample_data import PhantomFileReader

#
# RegC2P
#


class RegC2P(ScriptedLoadableModule):
    """Module description shown in Slicer's Help & Acknowledgement section."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("RegC2P Synthetic PET")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Nuclear Medicine")]
        self.parent.dependencies = []
        self.parent.contributors = ["RegC2P contributors"]
        self.parent.helpText = _(
            "Translates a CT volume (Hounsfield units) into a synthetic PET volume (SUV) on exactly the CT's grid and "
            "shows it fused over the CT. Each axial slice is translated by a GAN generator; a 3D U-Net then refines "
            "windows of s consecutive slices every k slices (overlap) so the volume is consistent between slices.<br>"
            "Pick a CT, press <b>Apply</b>; the work runs in a separate process so Slicer stays responsive, and "
            "you can keep working meanwhile: nothing is written into the scene until the PET is ready, and <b>Cancel</b> "
            "stops the work without touching the scene. A synthetic PET is a research tool, not a diagnosis.<br>"
            "Console: <code>RegC2P.RegC2PLogic().process(ctNode, None, model=path, refine='overlap')</code>."
        )
        self.parent.acknowledgementText = _(
            "RegC2P implements: Nguyen Thanh Trung, Le Ke Hung, 'RegC2P: A registration-enhanced GAN for 3D "
            "CT-to-PET translation', Journal of Military Science and Technology 102 (2025) 125-132, "
            "doi:10.54939/1859-1043.j.mst.102.2025.125-132. It builds on RegGAN (Kong et al., NeurIPS 2021)."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add the synthetic PET/CT phantom (generated locally, no download) to the Sample Data module."""
    from RegC2PSlicer.sample_data import register_sample_data

    register_sample_data()


class RegC2PFileReader(PhantomFileReader):
    """Slicer finds this reader by its name: it loads the phantom recipe Sample Data fetches (see sample_data)."""


#
# RegC2PParameterNode
#


@parameterNodeWrapper
class RegC2PParameterNode:
    """Panel state, saved with the scene.

    inputVolume - CT in HU (read only). outputVolume - synthetic PET in SUV (None: create).
    modelFile - model file (empty: default model). device - compute device.
    refine/window/stride - 3D refinement (0: the model's s or k).
    opacity - fusion opacity. petColor - PET colour table. suvMin/suvMax - SUV window.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    modelFile: pathlib.Path
    device: Annotated[str, Choice(list(DEVICE_CHOICES))] = "auto"
    refine: Annotated[str, Choice(list(REFINE_MODES))] = "overlap"
    window: Annotated[int, WithinRange(0, 512)] = 0
    stride: Annotated[int, WithinRange(0, 512)] = 0
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = DEFAULT_OPACITY
    petColor: Annotated[str, Choice(list(PET_COLORS))] = DEFAULT_PET_COLOR
    suvMin: Annotated[float, WithinRange(0.0, 100.0)] = DEFAULT_SUV_WINDOW[0]
    suvMax: Annotated[float, WithinRange(0.0, 100.0)] = DEFAULT_SUV_WINDOW[1]


#
# RegC2PWidget
#


class RegC2PWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: binds the .ui to the parameter node and runs jobs in the background."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._devices = None  # {name: DeviceChoice} once found
        self._deviceProbe = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RegC2P.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = RegC2PLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicom)
        self.ui.opacitySliderWidget.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.updateModelInfo)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        for job in (self._job, self._deviceProbe):
            if job is not None:
                job_poller().cancel(job)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onDisplayParameterChanged)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)  # a running translation is cancelled by the job poller

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """An empty model path means the default model: no absolute path of this installation goes into the scene."""
        from RegC2PSlicer.volumes import first_ct_node

        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            ctNode = first_ct_node(slicer.mrmlScene)  # not a label map, not a PET
            if ctNode:
                self._parameterNode.inputVolume = ctNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onDisplayParameterChanged)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onDisplayParameterChanged)
            self.updateDeviceList()
            self.updateModelInfo()
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        if self._job is not None:
            self.ui.applyButton.enabled = True
            return
        node = self._parameterNode
        if node and node.inputVolume:
            self.ui.applyButton.toolTip = _("Translate the CT into a synthetic PET and show it fused over the CT.")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.toolTip = _("Select a CT volume first.")
            self.ui.applyButton.enabled = False

    def updateDeviceList(self) -> None:
        """Grey out devices this computer lacks, with the reason as tooltip and below the box.

        The devices are found once, by a worker process (torch is never imported into Slicer's process).
        """
        if self._devices is None:
            if self.logic.torchMissing():
                self.ui.deviceInfoLabel.text = _("PyTorch is not installed yet; it is installed at the first Apply.")
            elif self._deviceProbe is None:
                self._deviceProbe = job_poller().watch(self.logic.probeDevices(), on_finished=self.onDevicesFound)
                self.ui.deviceInfoLabel.text = _("Checking the compute devices…")
            return
        choices = self._devices
        model = self.ui.deviceComboBox.model()
        missing = []
        for index, name in enumerate(DEVICE_CHOICES):
            choice = choices.get(name)
            usable = choice is not None and choice.usable
            reason = _("unknown device") if choice is None else choice.reason
            model.item(index).setEnabled(usable)
            self.ui.deviceComboBox.setItemData(index, "" if usable else reason, qt.Qt.ToolTipRole)
            if not usable:
                missing.append(f"{name}: {reason}")
        self.ui.deviceInfoLabel.text = "\n".join(missing)

    def onDevicesFound(self, state) -> None:
        probe, self._deviceProbe = self._deviceProbe, None
        if state.state != "succeeded":
            self.ui.deviceInfoLabel.text = _("Could not check the compute devices: {reason}").format(reason=state.error)
            return
        self._devices = {choice.name: choice for choice in probe.choices}
        self.updateDeviceList()

    def updateModelInfo(self, path=None) -> None:
        text = self.ui.modelPathLineEdit.currentPath
        if text:
            self.ui.modelInfoLabel.text = self.logic.describeModel(text)
        elif self.logic.defaultModelPath() is None:
            self.ui.modelInfoLabel.text = _("No model yet: use 'Import model…' to add a RegC2P .safetensors model.")
        else:
            self.ui.modelInfoLabel.text = _("Using the default model.")

    def onOpacityChanged(self, value) -> None:
        """Live fusion opacity for the current output."""
        node = self._parameterNode
        if node and node.outputVolume and self._job is None:
            from RegC2PSlicer.output import set_fusion_opacity

            set_fusion_opacity(node.outputVolume, value)

    def onDisplayParameterChanged(self, caller=None, event=None) -> None:
        """Live PET colours and SUV window for an output this module made."""
        node = self._parameterNode
        pet = node.outputVolume if node else None
        if pet is None or self._job is not None or pet.GetAttribute("RegC2P.SourceCT") is None:
            return
        if node.suvMin >= node.suvMax:
            return  # the user is still typing the window
        from RegC2PSlicer.output import update_pet_display

        update_pet_display(pet, node.petColor, (node.suvMin, node.suvMax))

    def onImportModel(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Import RegC2P model"), "", _("RegC2P model (*.safetensors)")
        )
        if not path:
            return
        try:
            self._ensureDependencies()
            with slicer.util.WaitCursor():
                imported = self.logic.importModel(path)
        except Exception as exc:
            self._showError(_("Model not imported"), exc)
            return
        self._parameterNode.modelFile = imported.path
        what = (
            _("already in your model folder")
            if imported.already_present
            else _("imported into {folder}").format(folder=imported.path.parent)
        )
        slicer.util.infoDisplay(
            _("{name} {what}.\nSHA-256: {sha}").format(name=imported.path.name, what=what, sha=imported.sha256),
            windowTitle=_("RegC2P model"),
        )
        self.updateModelInfo()

    def onExportDicom(self) -> None:
        """Write the output PET as a DICOM series in the CT's study, into a folder the user picks."""
        node = self._parameterNode
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Export the synthetic PET as DICOM into"))
        if not folder:
            return
        try:
            from RegC2PSlicer.dicom_export import export_pet_dicom

            with slicer.util.WaitCursor():
                written = export_pet_dicom(node.outputVolume, node.inputVolume, folder)
        except Exception as exc:
            self._showError(_("DICOM export failed"), exc)
            return
        self.ui.statusLabel.text = _("Wrote the DICOM series {folder}").format(folder=written)

    def onApplyButton(self) -> None:
        if self._job is not None:
            self.cancelJob()
            return
        node = self._parameterNode
        try:
            self._ensureDependencies()
            self.updateDeviceList()
            settings = self.logic.settingsFromParameterNode(node)
            self._job = self.logic.startBackground(node.inputVolume, node.outputVolume, settings)
        except Exception as exc:
            self._job = None
            self._showError(_("RegC2P could not start"), exc)
            return
        self.ui.applyButton.text = _("Cancel")
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Starting…")
        job_poller().watch(self._job, self.onJobProgress, self.onJobFinished, scene_bound=True)

    def cancelJob(self) -> None:
        job_poller().cancel(self._job)  # onJobFinished reports it

    def onJobProgress(self, state) -> None:
        self.ui.progressBar.value = round(state.fraction * 1000)
        left = f" ({_('about {s} s left').format(s=int(state.seconds_left))})" if state.seconds_left else ""
        self.ui.statusLabel.text = state.message + left

    def onJobFinished(self, state) -> None:
        job, self._job = self._job, None
        if state.state == "succeeded":
            if self._parameterNode:
                self._parameterNode.outputVolume = job.result_node
            self._jobEnded(_("Done: {name}").format(name=job.result_node.GetName()))
        elif state.state == "cancelled":
            self._jobEnded(_("Cancelled; nothing was written into the scene."))
        else:
            logging.error("RegC2P failed: %s\n%s", state.error, state.details)
            self._jobEnded(_("Failed: {reason}").format(reason=state.error))
            slicer.util.errorDisplay(state.error, windowTitle=_("RegC2P failed"), detailedText=state.details or state.error)

    def _ensureDependencies(self) -> None:
        """Install what is missing with Apply and Import disabled: installing pumps events, so they could be clicked."""
        buttons = (self.ui.applyButton, self.ui.importModelButton)
        for button in buttons:
            button.enabled = False
        try:
            self.logic.ensureDependencies()
        finally:
            self.ui.importModelButton.enabled = True
            self._checkCanApply()

    def _jobEnded(self, message: str) -> None:
        self.ui.applyButton.text = _("Apply")
        self.ui.statusLabel.text = message
        self._checkCanApply()

    def _showError(self, title: str, exc: Exception) -> None:
        import traceback

        reason = one_line(exc)
        logging.error("%s: %s\n%s", title, reason, traceback.format_exc())
        slicer.util.errorDisplay(reason, windowTitle=title, detailedText=traceback.format_exc())


#
# RegC2PLogic
#


class RegC2PLogic(ScriptedLoadableModuleLogic):
    """CT -> synthetic PET for the panel, the Python console and scripts (no widget needed).

    Console use (blocking by default; returns the PET node, SUV on the CT's grid)::

        import RegC2P
        ctNode = slicer.util.getNode("CT")
        petNode = RegC2P.RegC2PLogic().process(ctNode, None, model="/path/model.safetensors", refine="overlap")

    ``model=None`` uses the bundled default model (else the first in the user's model
    folder). ``waitForCompletion=False`` runs in a background process and returns the job;
    ``onFinished(jobState)`` is then called on completion. Errors raise
    ``RegC2PLib.errors.RegC2PError`` subclasses with a one-line message.
    """

    def getParameterNode(self):
        return RegC2PParameterNode(super().getParameterNode())

    def ensureDependencies(self) -> None:
        """Install torch (PyTorch extension) and the pip requirements at first use, asking first (never under --testing)."""
        from RegC2PSlicer.dependencies import ensure_in_slicer

        ensure_in_slicer(_("RegC2P"))

    def torchMissing(self) -> bool:
        from RegC2PSlicer.dependencies import torch_missing

        return torch_missing()

    def probeDevices(self):
        """Start finding the usable compute devices in a worker process; returns the job (``job.choices`` once done)."""
        from RegC2PSlicer.models import DeviceProbe

        probe = DeviceProbe()
        probe.start()
        return probe

    def defaultModelPath(self):
        """The bundled default model, else the user's first model, else None."""
        from RegC2PSlicer.models import default_model

        return default_model()

    def describeModel(self, path) -> str:
        """One line about a model file: bundled or user, size, or why it cannot be used."""
        path = pathlib.Path(path)
        if not path.is_file():
            return _("{path} does not exist.").format(path=path)
        from RegC2PSlicer.models import BUNDLED_MODEL_DIR

        where = _("bundled") if path.resolve().parent == BUNDLED_MODEL_DIR.resolve() else _("user model")
        return _("{name}: {where}, {size:.1f} MB").format(name=path.name, where=where, size=path.stat().st_size / 1e6)

    def importModel(self, path):
        """Check that the file loads, copy it into the user's model folder; returns ImportedModel (path, sha256)."""
        self.ensureDependencies()
        from RegC2PSlicer.models import import_model

        return import_model(path)

    def settingsFromParameterNode(self, node):
        model = str(node.modelFile) if str(node.modelFile) not in ("", ".") else None
        return self._settings(
            model, node.refine, node.window, node.stride, node.device, node.opacity, node.petColor, (node.suvMin, node.suvMax)
        )

    @staticmethod
    def _settings(model, refine, window, stride, device, opacity, petColor, suvWindow, showResult=True):
        """RunSettings from the panel's or the console's values (window/stride 0 or None: the model's)."""
        from RegC2PLib.inference import TranslationOptions
        from RegC2PSlicer.processing import PetDisplay, RunSettings

        return RunSettings(
            model=model,
            translation=TranslationOptions(refine=refine, window=window or None, stride=stride or None, device=device),
            display=PetDisplay(color=petColor, suv_window=tuple(suvWindow), opacity=opacity),
            show=showResult,
        )

    def startBackground(self, inputVolume, outputVolume, settings):
        """Start a background translation job (the caller polls ``job.poll()``)."""
        from RegC2PSlicer.processing import BackgroundTranslation

        job = BackgroundTranslation(inputVolume, outputVolume, settings)
        job.start()
        return job

    def process(
        self,
        inputVolume,
        outputVolume=None,
        model=None,
        refine="overlap",
        window=None,
        stride=None,
        device="auto",
        opacity=DEFAULT_OPACITY,
        petColor=DEFAULT_PET_COLOR,
        suvWindow=DEFAULT_SUV_WINDOW,
        showResult=True,
        waitForCompletion=True,
        progress=None,
        onFinished=None,
    ):
        """Translate ``inputVolume`` (CT, HU) into ``outputVolume`` (PET, SUV; None creates one).

        Blocking: returns the output node. ``waitForCompletion=False``: returns the running
        job (``job.cancel()`` stops it; the scene is only written once the PET is ready).
        """
        self.ensureDependencies()
        from RegC2PSlicer.processing import process

        settings = self._settings(model, refine, window, stride, device, opacity, petColor, suvWindow, showResult)
        if waitForCompletion:
            return process(inputVolume, outputVolume, settings, progress=progress)
        job = self.startBackground(inputVolume, outputVolume, settings)
        return job_poller().watch(job, progress_reporter(progress), onFinished, scene_bound=True)


#
# RegC2PTest
#


class RegC2PTest(ScriptedLoadableModuleTest):
    """Self-test in a running Slicer: phantom CT -> PET (blocking and background), cancel.

    Fit for the extensions factory: it installs nothing (under --testing nothing is
    installed) and is skipped, with the reason, when PyTorch or a requirement is missing;
    every wait has a deadline.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from RegC2PSlicer.dependencies import missing_for_self_test

        reason = missing_for_self_test()
        if reason is not None:
            self.delayDisplay(f"RegC2P self-test skipped: {reason}")
            self.skipTest(reason)
        self.setUp()
        self.test_RegC2P_blocking()
        self.setUp()
        self.test_RegC2P_background_and_cancel()

    def _inputs(self):
        import tempfile

        from RegC2PLib.config import preset
        from RegC2PLib.model_file import new_model, save_model
        from RegC2PSlicer.sample_data import load_phantom

        self.tempDir = tempfile.mkdtemp(prefix="RegC2PTest-")
        modelPath = pathlib.Path(self.tempDir) / "untrained-small-64px.safetensors"
        save_model(modelPath, new_model(preset("small").with_changes(image_size=64)))  # mechanics, not quality
        ctNode = load_phantom(slicer.mrmlScene, size="tiny")[0]
        return RegC2PLogic(), ctNode, modelPath

    def test_RegC2P_blocking(self):
        self.delayDisplay("Blocking translation of the phantom CT")
        import numpy as np

        logic, ctNode, modelPath = self._inputs()
        ctBefore = slicer.util.arrayFromVolume(ctNode).copy()
        petNode = logic.process(ctNode, None, model=modelPath, refine="overlap")
        ctMatrix, petMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        ctNode.GetIJKToRASMatrix(ctMatrix)
        petNode.GetIJKToRASMatrix(petMatrix)
        for r in range(4):
            for c in range(4):
                self.assertAlmostEqual(ctMatrix.GetElement(r, c), petMatrix.GetElement(r, c), places=6)
        self.assertEqual(slicer.util.arrayFromVolume(petNode).shape, ctBefore.shape)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(ctNode), ctBefore)
        self.assertEqual(petNode.GetDisplayNode().GetColorNodeID(), "vtkMRMLPETProceduralColorNodePET-Heat")
        composites = slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")
        self.assertTrue(composites)
        for composite in composites:
            self.assertEqual(composite.GetForegroundVolumeID(), petNode.GetID())
            self.assertEqual(composite.GetBackgroundVolumeID(), ctNode.GetID())
        self.delayDisplay("Blocking translation passed")

    def test_RegC2P_background_and_cancel(self):
        self.delayDisplay("Background translation, then cancel")
        from RegC2PSlicer.jobs import process_events_until

        logic, ctNode, modelPath = self._inputs()
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        cancelled = []
        job = logic.process(ctNode, None, model=modelPath, waitForCompletion=False, onFinished=cancelled.append)
        job.cancel()
        self.assertTrue(process_events_until(lambda: cancelled, 10), "the job poller did not report the cancel")
        self.assertEqual(cancelled[0].state, "cancelled")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)

        finished = []
        logic.process(ctNode, None, model=modelPath, waitForCompletion=False, onFinished=finished.append)
        self.assertTrue(process_events_until(lambda: finished, 300), "background translation did not finish within 5 minutes")
        self.assertEqual(finished[0].state, "succeeded", finished[0].error)
        self.delayDisplay("Background translation passed")

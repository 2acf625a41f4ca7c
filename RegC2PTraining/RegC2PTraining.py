"""RegC2P Training: the Slicer entry for training RegC2P models (command line for now).

Training runs outside Slicer with the ``regc2p train`` command of RegC2PLib (installed
with the RegC2P module); this module explains how and checks that the library loads.
"""

import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget

TRAIN_COMMAND = "regc2p train --data DATASET_FOLDER --out RUN_FOLDER"


class RegC2PTraining(ScriptedLoadableModule):
    """Module description shown in Slicer's Help & Acknowledgement section."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("RegC2P Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Nuclear Medicine")]
        self.parent.dependencies = ["RegC2P"]
        self.parent.contributors = ["RegC2P contributors"]
        self.parent.helpText = _(
            "Training RegC2P models (generator G with registration network R, then the 3D refiner F) is done with the "
            "<code>regc2p train</code> command line, outside the Slicer window, because it runs for hours. "
            "This module has no training panel. After training, load the run's <code>model.safetensors</code> in the "
            "RegC2P module with <b>Import model…</b>."
        )
        self.parent.acknowledgementText = _(
            "RegC2P implements: Nguyen Thanh Trung, Le Ke Hung, 'RegC2P: A registration-enhanced GAN for 3D "
            "CT-to-PET translation', Journal of Military Science and Technology 102 (2025) 125-132, "
            "doi:10.54939/1859-1043.j.mst.102.2025.125-132."
        )


class RegC2PTrainingWidget(ScriptedLoadableModuleWidget):
    """Shows how to train from the command line (there is no training panel)."""

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        label = qt.QLabel(
            _("Train in a terminal with the regc2p command line (pip-install the RegC2P repository; see docs/slicer.md):")
            + f"<pre>{TRAIN_COMMAND}</pre>"
        )
        label.wordWrap = True
        label.textInteractionFlags = qt.Qt.TextSelectableByMouse
        self.layout.addWidget(label)
        self.layout.addStretch(1)


class RegC2PTrainingTest(ScriptedLoadableModuleTest):
    """The training library shipped with RegC2P imports and builds a model configuration."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_library_loads()

    def test_library_loads(self):
        from RegC2PLib.config import preset

        config = preset("small")
        self.assertGreater(config.image_size, 0)
        self.delayDisplay("RegC2PLib training configuration loads")

"""The synthetic PET/CT phantom in Slicer's Sample Data module, generated locally (no download).

:func:`load_phantom` makes one phantom patient with :mod:`RegC2PLib.data.phantom` and
adds its CT (HU) and ground-truth PET (SUVbw, on the PET scanner's coarser grid) to a
scene, under a patient and study in the subject hierarchy, so the module's output lands
beside them.

Sample Data loads a sample by "downloading" its URI into a cache folder and reading the
file with the reader of the file type it names. The phantom's "file" is a small recipe
shipped with the module (``Resources/SampleData/RegC2PPhantom.regc2pphantom``: size and
seed), fetched through its ``file://`` URI, and :class:`PhantomFileReader` (Slicer finds it
as ``RegC2P.RegC2PFileReader``) generates the phantom it describes. So the Sample Data
button and ``SampleData.downloadSample("RegC2PPhantom")`` take the same path (a custom
downloader would serve the button only). :func:`register_sample_data` adds it (Slicer only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import slicer

from RegC2PLib.errors import InputError

from .output import DEFAULT_PET_COLOR, DEFAULT_SUV_WINDOW, pet_color_node_id
from .volumes import add_volume_node

SAMPLE_NAME = "RegC2PPhantom"
CATEGORY = "RegC2P"
RESOURCES = Path(__file__).resolve().parent.parent / "Resources"
THUMBNAIL = RESOURCES / "Icons" / "RegC2PPhantom.png"
RECIPE = RESOURCES / "SampleData" / "RegC2PPhantom.regc2pphantom"
RECIPE_FORMAT = "regc2p-phantom"
PHANTOM_FILE_TYPE = "RegC2PPhantomFile"
# (z, y, x) voxels: "default" for users (about 3 s), "tiny" for self-tests.
SIZES = {"default": (128, 160, 160), "tiny": (24, 48, 48)}
CT_NAME, PET_NAME = "RegC2PPhantom CT", "RegC2PPhantom PET (ground truth)"


def load_phantom(scene: slicer.vtkMRMLScene, size: str = "default", seed: int = 0) -> list[slicer.vtkMRMLScalarVolumeNode]:
    """Generate a phantom and add ``[CT node (HU), ground-truth PET node (SUV)]`` to ``scene``."""
    from RegC2PLib.data.phantom import PhantomConfig, generate_case

    if size not in SIZES:
        raise ValueError(f"unknown phantom size {size!r}; choose one of {', '.join(SIZES)}")
    case = generate_case(PhantomConfig(shape=SIZES[size]), seed)
    ct_node = add_volume_node(scene, case.ct, CT_NAME)
    ct_display = ct_node.GetDisplayNode()
    ct_display.AutoWindowLevelOff()
    ct_display.SetWindowLevel(400.0, 40.0)  # soft-tissue window, HU
    pet_node = add_volume_node(scene, case.pet_aligned, PET_NAME)
    pet_display = pet_node.GetDisplayNode()
    if scene.GetNodeByID(pet_color_node_id(DEFAULT_PET_COLOR)) is not None:
        pet_display.SetAndObserveColorNodeID(pet_color_node_id(DEFAULT_PET_COLOR))
    pet_display.AutoWindowLevelOff()
    pet_display.SetWindowLevelMinMax(*DEFAULT_SUV_WINDOW)
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), f"RegC2P phantom (seed {seed})")
    study = sh.CreateStudyItem(patient, "Synthetic PET/CT")
    for node in (ct_node, pet_node):
        item = sh.GetItemByDataNode(node)
        if item:
            sh.SetItemParent(item, study)
        else:
            sh.CreateItem(study, node)
    return [ct_node, pet_node]


def read_recipe(path: str | Path) -> tuple[str, int]:
    """(size name, seed) from a phantom recipe file; a one-line :class:`InputError` for anything else."""
    try:
        recipe = json.loads(Path(path).read_text(encoding="utf-8"))
        if recipe.get("format") != RECIPE_FORMAT:
            raise ValueError(f"not a {RECIPE_FORMAT} file")
        size, seed = recipe["size"], int(recipe["seed"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InputError(f"{Path(path).name} is not a RegC2P phantom recipe ({exc})") from None
    if size not in SIZES:
        raise InputError(f"{Path(path).name}: unknown phantom size {size!r}; choose one of {', '.join(SIZES)}")
    return size, seed


class PhantomFileReader:
    """Slicer's scripted file reader for phantom recipes (``*.regc2pphantom``): generates the phantom.

    ``parent`` is Slicer's ``qSlicerScriptedFileReader``: :meth:`load` sets its
    ``loadedNodes`` (CT first) or reports an error through its ``userMessages()``.
    """

    def __init__(self, parent: Any) -> None:
        self.parent = parent

    def description(self) -> str:
        return "RegC2P synthetic PET/CT phantom"

    def fileType(self) -> str:
        return PHANTOM_FILE_TYPE

    def extensions(self) -> list[str]:
        return ["RegC2P phantom recipe (*.regc2pphantom)"]

    def load(self, properties: dict[str, Any]) -> bool:
        try:
            size, seed = read_recipe(properties["fileName"])
            nodes = load_phantom(slicer.mrmlScene, size, seed)
        except Exception as exc:
            import vtk

            self.parent.userMessages().AddMessage(vtk.vtkCommand.ErrorEvent, f"Cannot load the RegC2P phantom: {exc}")
            return False
        if hasattr(slicer, "app") and slicer.app.layoutManager() is not None:
            slicer.util.setSliceViewerLayers(background=nodes[0], foreground=None, fit=True)
        self.parent.loadedNodes = [node.GetID() for node in nodes]
        return True


def register_sample_data() -> None:
    """Add the phantom to the Sample Data module (call after Slicer has started)."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=CATEGORY,
        sampleName=SAMPLE_NAME,
        uris=[RECIPE.as_uri()],
        fileNames=[RECIPE.name],
        nodeNames=[CT_NAME],
        loadFileTypes=[PHANTOM_FILE_TYPE],
        thumbnailFileName=str(THUMBNAIL),
    )

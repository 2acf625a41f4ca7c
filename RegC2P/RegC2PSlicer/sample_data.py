"""The synthetic PET/CT phantom in Slicer's Sample Data module, generated locally (no download).

:func:`load_phantom` makes one phantom patient with :mod:`RegC2PLib.data.phantom` and
adds its CT (HU) and ground-truth PET (SUVbw, on the PET scanner's coarser grid) to a
scene, under a patient and study in the subject hierarchy, so the module's output lands
beside them. :func:`register_sample_data` adds it to the Sample Data module (Slicer only).
"""

from __future__ import annotations

from pathlib import Path

import slicer

from .output import DEFAULT_PET_COLOR, DEFAULT_SUV_WINDOW, pet_color_node_id
from .volumes import add_volume_node

SAMPLE_NAME = "RegC2PPhantom"
CATEGORY = "RegC2P"
THUMBNAIL = Path(__file__).resolve().parent.parent / "Resources" / "Icons" / "RegC2PPhantom.png"
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


def _load_into_slicer(source: object = None) -> list[slicer.vtkMRMLScalarVolumeNode]:
    """Sample Data button: generate, load, show the CT in the slice views."""
    nodes = load_phantom(slicer.mrmlScene)
    slicer.util.setSliceViewerLayers(background=nodes[0], foreground=None, fit=True)
    return nodes


def register_sample_data() -> None:
    """Add the phantom to the Sample Data module (call after Slicer has started)."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=CATEGORY,
        sampleName=SAMPLE_NAME,
        # Nothing is downloaded: customDownloader generates the phantom; the URI only names it.
        uris=[f"regc2p-phantom://seed0/{SIZES['default'][0]}"],
        fileNames=[f"{SAMPLE_NAME}.nii.gz"],
        nodeNames=[CT_NAME],
        thumbnailFileName=str(THUMBNAIL),
        customDownloader=_load_into_slicer,
    )

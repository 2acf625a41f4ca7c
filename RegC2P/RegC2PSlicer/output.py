"""The output PET node: creation, content, provenance, subject hierarchy and fused display."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import slicer

from RegC2PLib.errors import InputError, RegC2PError

from .headless import add_slice_views
from .volumes import copy_geometry, ijk_to_ras, node_ijk_to_ras, update_volume_node_from_image

# PET colour tables Slicer's colour logic always creates (procedural, singleton IDs).
PET_COLORS = ("PET-Heat", "PET-Rainbow2", "PET-DICOM", "PET-HotMetalBlue", "PET-Rainbow", "PET-MaximumIntensityProjection")
DEFAULT_PET_COLOR = "PET-Heat"
DEFAULT_SUV_WINDOW = (0.0, 10.0)
DEFAULT_OPACITY = 0.5
OUTPUT_SUFFIX = " synthetic PET"
# Node attributes recording where a synthetic PET came from (saved with the scene).
ATTRIBUTE_PREFIX = "RegC2P."


def pet_color_node_id(name: str) -> str:
    """The MRML node ID of a PET colour table, e.g. ``vtkMRMLPETProceduralColorNodePET-Heat``."""
    if name not in PET_COLORS:
        raise InputError(f"unknown PET colour {name!r}; choose one of {', '.join(PET_COLORS)}")
    return f"vtkMRMLPETProceduralColorNode{name}"


def output_name(ct_node: slicer.vtkMRMLScalarVolumeNode) -> str:
    """The output's name: the CT's name plus ``synthetic PET``."""
    return f"{ct_node.GetName()}{OUTPUT_SUFFIX}"


def check_output_node(ct_node: slicer.vtkMRMLScalarVolumeNode, output_node: object) -> None:
    """Refuse an output that is the CT itself or not a scalar volume in the CT's scene."""
    if output_node is None:
        return
    if output_node is ct_node or output_node.GetID() == ct_node.GetID():
        raise InputError("the output volume is the CT itself; choose another output or 'Create new volume'")
    if not isinstance(output_node, slicer.vtkMRMLScalarVolumeNode) or isinstance(output_node, slicer.vtkMRMLLabelMapVolumeNode):
        raise InputError(f"the output {output_node.GetName()} is a {output_node.GetClassName()}; choose a scalar volume")
    if output_node.GetScene() is not ct_node.GetScene():
        raise InputError("the output volume is not in the CT's scene")


def store_pet(
    ct_node: slicer.vtkMRMLScalarVolumeNode,
    pet: sitk.Image,
    output_node: slicer.vtkMRMLScalarVolumeNode | None = None,
    provenance: dict[str, str] | None = None,
) -> slicer.vtkMRMLScalarVolumeNode:
    """Put a PET image (SUV, on the CT's grid) into ``output_node`` or a new node.

    The node gets exactly the CT's IJK-to-RAS matrix (the PET must be on the CT's grid).
    The node is named after the CT, keeps the CT's parent transform, is marked as SUV
    (body weight) and records ``provenance`` as ``RegC2P.*`` attributes. The CT is not
    modified.
    """
    check_output_node(ct_node, output_node)
    ct_size = ct_node.GetImageData().GetDimensions()
    if tuple(pet.GetSize()) != tuple(ct_size) or not np.allclose(ijk_to_ras(pet), node_ijk_to_ras(ct_node), atol=1e-4):
        raise RegC2PError(f"the PET ({pet.GetSize()}) is not on the CT's grid ({ct_size}); it cannot be stored")
    scene = ct_node.GetScene()
    node = output_node or scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", output_name(ct_node))
    with slicer.util.NodeModify(node):
        node.SetName(output_name(ct_node))
        update_volume_node_from_image(node, pet)
        copy_geometry(ct_node, node)  # the CT's own spacing, origin, directions: no rounding
        node.SetAndObserveTransformNodeID(ct_node.GetTransformNodeID())
        units = slicer.vtkCodedEntry()
        units.SetValueSchemeMeaning("{SUVbw}g/ml", "UCUM", "Standardized Uptake Value body weight")
        node.SetVoxelValueUnits(units)
        quantity = slicer.vtkCodedEntry()
        quantity.SetValueSchemeMeaning("126400", "DCM", "Standardized Uptake Value")
        node.SetVoxelValueQuantity(quantity)
        node.SetAttribute(ATTRIBUTE_PREFIX + "SourceCT", ct_node.GetName())
        for key, value in (provenance or {}).items():
            node.SetAttribute(ATTRIBUTE_PREFIX + key, str(value))
    place_in_subject_hierarchy(ct_node, node)
    return node


def place_in_subject_hierarchy(ct_node: slicer.vtkMRMLNode, pet_node: slicer.vtkMRMLNode) -> None:
    """Put the PET under the CT's study (or beside the CT when it belongs to no study)."""
    scene = ct_node.GetScene()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    ct_item = sh.GetItemByDataNode(ct_node)
    parent = sh.GetSceneItemID()
    if ct_item:
        study = sh.GetItemAncestorAtLevel(ct_item, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy())
        parent = study or sh.GetItemParent(ct_item)
    pet_item = sh.GetItemByDataNode(pet_node)
    if pet_item:
        sh.SetItemParent(pet_item, parent)
    else:
        sh.CreateItem(parent, pet_node)


@dataclass(frozen=True)
class PetDisplay:
    """How a synthetic PET is shown: PET colour table, SUV window (lower, upper), fusion opacity in [0, 1]."""

    color: str = DEFAULT_PET_COLOR
    suv_window: tuple[float, float] = DEFAULT_SUV_WINDOW
    opacity: float = DEFAULT_OPACITY

    def check(self) -> None:
        """Refuse an unknown colour table, an empty SUV window or an opacity outside 0..1 (one line each)."""
        pet_color_node_id(self.color)
        low, high = self.suv_window
        if not low < high:
            raise InputError(f"SUV window {low:g}..{high:g} is empty; the lower value must be below the upper one")
        if not 0.0 <= self.opacity <= 1.0:
            raise InputError(f"fusion opacity {self.opacity:g} is outside 0..1")


def show_pet(
    ct_node: slicer.vtkMRMLScalarVolumeNode, pet_node: slicer.vtkMRMLScalarVolumeNode, display: PetDisplay = PetDisplay()
) -> None:
    """PET colour table and SUV window on the PET; CT as background and PET as foreground in every slice view.

    A scene without slice views (Slicer without a main window has no layout manager)
    gets the three standard ones, so that a scene saved from a batch run opens fused.
    """
    display.check()
    scene = pet_node.GetScene()
    update_pet_display(pet_node, display.color, display.suv_window)
    if scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode") == 0:
        add_slice_views(scene)
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        with slicer.util.NodeModify(composite):
            composite.SetBackgroundVolumeID(ct_node.GetID())
            composite.SetForegroundVolumeID(pet_node.GetID())
            composite.SetForegroundOpacity(float(display.opacity))


def update_pet_display(pet_node: slicer.vtkMRMLScalarVolumeNode, color: str, suv_window: tuple[float, float]) -> None:
    """PET colour table and SUV window (lower, upper) on the PET's display node."""
    low, high = float(suv_window[0]), float(suv_window[1])
    if not low < high:
        raise InputError(f"SUV window {low:g}..{high:g} is empty; the lower value must be below the upper one")
    color_id = pet_color_node_id(color)
    if pet_node.GetScene().GetNodeByID(color_id) is None:
        raise InputError(f"the scene has no {color} colour table (Slicer's Colors module is not loaded)")
    if pet_node.GetDisplayNode() is None:
        pet_node.CreateDefaultDisplayNodes()
    display = pet_node.GetDisplayNode()
    with slicer.util.NodeModify(display):
        display.SetAndObserveColorNodeID(color_id)
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(low, high)
        display.SetInterpolate(True)


def set_fusion_opacity(pet_node: slicer.vtkMRMLScalarVolumeNode, opacity: float) -> None:
    """Opacity of ``pet_node`` in the slice views where it is the foreground (the panel's slider, live)."""
    scene = pet_node.GetScene()
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        if composite.GetForegroundVolumeID() == pet_node.GetID():
            composite.SetForegroundOpacity(float(opacity))

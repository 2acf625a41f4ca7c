"""MRML scalar volume nodes <-> SimpleITK images with exact geometry.

MRML works in RAS, SimpleITK (and DICOM/ITK files) in LPS. With ``F = diag(-1, -1, 1)``,
a volume's IJK-to-RAS matrix is ``F · direction · diag(spacing)`` with translation
``F · origin``; voxel arrays are ``(k, j, i) = (z, y, x)`` in both worlds.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from RegC2PLib.errors import InputError

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def ijk_to_ras(image: sitk.Image) -> np.ndarray:
    """The 4×4 IJK-to-RAS matrix (mm) of a 3D SimpleITK image."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = _LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=float)
    return matrix


def node_ijk_to_ras(node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """The node's 4×4 IJK-to-RAS matrix as a numpy array."""
    vmatrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(vmatrix)
    return np.array([[vmatrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    vmatrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            vmatrix.SetElement(r, c, float(matrix[r, c]))
    return vmatrix


def check_scalar_volume(node: object, what: str = "CT") -> slicer.vtkMRMLScalarVolumeNode:
    """Refuse anything but a scalar volume node (not a label map) holding voxels."""
    if node is None:
        raise InputError(f"no {what} volume selected; choose a {what} volume first")
    if not isinstance(node, slicer.vtkMRMLScalarVolumeNode) or isinstance(node, slicer.vtkMRMLLabelMapVolumeNode):
        raise InputError(f"{node.GetName()} is a {node.GetClassName()}; the {what} must be a scalar volume")
    image_data = node.GetImageData()
    if image_data is None or image_data.GetNumberOfPoints() == 0:
        raise InputError(f"{node.GetName()} holds no voxels; load the {what} again")
    if image_data.GetNumberOfScalarComponents() != 1:
        components = image_data.GetNumberOfScalarComponents()
        raise InputError(f"{node.GetName()} has {components} components per voxel; a scalar {what} is required")
    return node


def image_from_volume_node(node: slicer.vtkMRMLScalarVolumeNode) -> sitk.Image:
    """Copy a scalar volume node into a SimpleITK image (LPS geometry, voxel type kept).

    The node is only read. A parent transform is not applied (the PET goes under the
    same transform, see :func:`RegC2PSlicer.output.show_pet`).
    """
    check_scalar_volume(node)
    array = slicer.util.arrayFromVolume(node)  # (z, y, x) view on the node's voxels
    image = sitk.GetImageFromArray(np.array(array, copy=True))
    matrix = node_ijk_to_ras(node)
    lps = _LPS_TO_RAS @ matrix[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    if np.any(spacing <= 0):
        raise InputError(f"{node.GetName()} has a zero voxel spacing; fix its geometry in the Volumes module")
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps / spacing).ravel().tolist())
    image.SetOrigin((_LPS_TO_RAS @ matrix[:3, 3]).tolist())
    return image


def set_geometry(node: slicer.vtkMRMLVolumeNode, spacing, origin, directions: np.ndarray) -> None:
    """Set spacing, origin (RAS) and IJK-to-RAS directions exactly.

    vtkMRMLVolumeNode ignores a new spacing, origin or direction within a tiny tolerance
    of the old one, so each is first set to a clearly different value; setting the three separately (rather than one
    matrix) avoids re-deriving the spacing from column norms, which rounds.
    """
    node.SetSpacing(*(float(s) + 1.0 for s in spacing))
    node.SetSpacing(*(float(s) for s in spacing))
    node.SetOrigin(*(float(o) + 1.0 for o in origin))
    node.SetOrigin(*(float(o) for o in origin))
    matrix = np.eye(4)
    matrix[:3, :3] = -directions
    node.SetIJKToRASDirectionMatrix(_vtk_matrix(matrix))
    matrix[:3, :3] = directions
    node.SetIJKToRASDirectionMatrix(_vtk_matrix(matrix))


def copy_geometry(source: slicer.vtkMRMLVolumeNode, target: slicer.vtkMRMLVolumeNode) -> None:
    """Give ``target`` exactly ``source``'s spacing, origin and directions (identical IJK-to-RAS)."""
    directions = vtk.vtkMatrix4x4()
    source.GetIJKToRASDirectionMatrix(directions)
    matrix = np.array([[directions.GetElement(r, c) for c in range(3)] for r in range(3)])
    set_geometry(target, source.GetSpacing(), source.GetOrigin(), matrix)


def update_volume_node_from_image(node: slicer.vtkMRMLScalarVolumeNode, image: sitk.Image) -> None:
    """Replace the node's voxels and geometry with the image's (a deep copy)."""
    array = sitk.GetArrayFromImage(image)  # (z, y, x), a copy
    slicer.util.updateVolumeFromArray(node, array)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    origin = _LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=float)
    set_geometry(node, image.GetSpacing(), origin, _LPS_TO_RAS @ direction)


def add_volume_node(scene: slicer.vtkMRMLScene, image: sitk.Image, name: str) -> slicer.vtkMRMLScalarVolumeNode:
    """A new scalar volume node in ``scene`` holding a copy of ``image`` (with display node)."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    update_volume_node_from_image(node, image)
    node.CreateDefaultDisplayNodes()
    return node


# Hints that a scalar volume holds PET (or another emission image) rather than a CT.
_PET_UNITS = ("{SUVbw}g/ml", "Bq/ml")
_PET_MODALITIES = ("PT", "NM")
_PET_COLOR_PREFIX = "vtkMRMLPETProceduralColorNode"


def first_ct_node(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLScalarVolumeNode | None:
    """The volume the panel offers as CT: the first single-component scalar volume that is no label map and
    no PET (SUV or Bq/ml units — RegC2P's outputs have SUV —, a PT/NM DICOM series, a PET colour table), preferring
    one from a CT DICOM series; None when there is none."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    modality_attribute = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName()
    candidates = []
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        image = node.GetImageData()
        if isinstance(node, slicer.vtkMRMLLabelMapVolumeNode) or image is None or image.GetNumberOfScalarComponents() != 1:
            continue
        item = sh.GetItemByDataNode(node) if sh is not None else 0
        modality = sh.GetItemAttribute(item, modality_attribute) if item else ""
        units = node.GetVoxelValueUnits()
        display = node.GetDisplayNode()
        if (
            modality in _PET_MODALITIES
            or (units is not None and units.GetCodeValue() in _PET_UNITS)
            or (display is not None and (display.GetColorNodeID() or "").startswith(_PET_COLOR_PREFIX))
        ):
            continue
        candidates.append((modality != "CT", index, node))
    return min(candidates, key=lambda c: c[:2])[2] if candidates else None

"""Snapshot and restore of the scene parts that writing a result changes, so a failed write is undone.

Writing a result may add nodes (the output volume, its display node, subject hierarchy
items), replace an existing output volume's voxels, geometry, name and display, and
change the slice views' layers. :class:`SceneSnapshot` records exactly those just before
the write and :meth:`SceneSnapshot.restore` puts them back if it fails; the CT is never
written. Taken immediately before a write that runs without returning to the event
loop, the nodes added since the capture are the write's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import slicer
import vtk

from .volumes import set_geometry


def _coded_copy(entry: object) -> object:
    if entry is None:
        return None
    copy = slicer.vtkCodedEntry()
    copy.Copy(entry)
    return copy


@dataclass
class _DisplayState:
    node_id: str
    color_id: str | None
    auto_window_level: bool
    window: float
    level: float
    interpolate: bool


@dataclass
class _VolumeState:
    node_id: str
    name: str
    image: vtk.vtkImageData | None
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    directions: np.ndarray
    attributes: dict[str, str]
    transform_id: str | None
    units: object
    quantity: object
    display: _DisplayState | None
    sh_parent: int


@dataclass
class _CompositeState:
    node_id: str
    background: str | None
    foreground: str | None
    label: str | None
    foreground_opacity: float


@dataclass
class SceneSnapshot:
    """What a run may change in ``scene``; ``volumes`` are existing nodes it may overwrite."""

    scene: slicer.vtkMRMLScene
    node_ids: set[str]
    volumes: list[_VolumeState] = field(default_factory=list)
    composites: list[_CompositeState] = field(default_factory=list)

    @classmethod
    def capture(cls, scene: slicer.vtkMRMLScene, volumes: tuple[object, ...] = ()) -> SceneSnapshot:
        snapshot = cls(scene, set(_node_ids(scene)))
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        for node in volumes:
            if node is None:
                continue
            image = None
            if node.GetImageData() is not None:
                image = vtk.vtkImageData()
                image.DeepCopy(node.GetImageData())
            directions = vtk.vtkMatrix4x4()
            node.GetIJKToRASDirectionMatrix(directions)
            display = node.GetDisplayNode()
            display_state = None
            if display is not None:
                display_state = _DisplayState(
                    display.GetID(),
                    display.GetColorNodeID(),
                    bool(display.GetAutoWindowLevel()),
                    display.GetWindow(),
                    display.GetLevel(),
                    bool(display.GetInterpolate()),
                )
            item = sh.GetItemByDataNode(node)
            snapshot.volumes.append(
                _VolumeState(
                    node.GetID(),
                    node.GetName(),
                    image,
                    tuple(node.GetSpacing()),
                    tuple(node.GetOrigin()),
                    np.array([[directions.GetElement(r, c) for c in range(3)] for r in range(3)]),
                    {name: node.GetAttribute(name) for name in node.GetAttributeNames() or ()},
                    node.GetTransformNodeID(),
                    _coded_copy(node.GetVoxelValueUnits()),
                    _coded_copy(node.GetVoxelValueQuantity()),
                    display_state,
                    sh.GetItemParent(item) if item else 0,
                )
            )
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
            snapshot.composites.append(
                _CompositeState(
                    composite.GetID(),
                    composite.GetBackgroundVolumeID(),
                    composite.GetForegroundVolumeID(),
                    composite.GetLabelVolumeID(),
                    composite.GetForegroundOpacity(),
                )
            )
        return snapshot

    def restore(self) -> None:
        """Remove nodes added since the capture and put recorded nodes back as they were."""
        scene = self.scene
        for node_id in reversed([i for i in _node_ids(scene) if i not in self.node_ids]):
            node = scene.GetNodeByID(node_id)
            if node is not None:
                scene.RemoveNode(node)
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        for state in self.volumes:
            node = scene.GetNodeByID(state.node_id)
            if node is None:
                continue
            with slicer.util.NodeModify(node):
                node.SetName(state.name)
                node.SetAndObserveImageData(state.image)
                set_geometry(node, state.spacing, state.origin, state.directions)
                for name in node.GetAttributeNames() or ():
                    if name not in state.attributes:
                        node.RemoveAttribute(name)
                for name, value in state.attributes.items():
                    node.SetAttribute(name, value)
                node.SetAndObserveTransformNodeID(state.transform_id)
                node.SetVoxelValueUnits(state.units)
                node.SetVoxelValueQuantity(state.quantity)
            display = scene.GetNodeByID(state.display.node_id) if state.display else None
            if display is not None:
                with slicer.util.NodeModify(display):
                    display.SetAndObserveColorNodeID(state.display.color_id)
                    display.SetWindowLevel(state.display.window, state.display.level)
                    display.SetAutoWindowLevel(state.display.auto_window_level)
                    display.SetInterpolate(state.display.interpolate)
            item = sh.GetItemByDataNode(node)
            if item and state.sh_parent and sh.GetItemParent(item) != state.sh_parent:
                sh.SetItemParent(item, state.sh_parent)
        for state in self.composites:
            composite = scene.GetNodeByID(state.node_id)
            if composite is None:
                continue
            with slicer.util.NodeModify(composite):
                composite.SetBackgroundVolumeID(state.background)
                composite.SetForegroundVolumeID(state.foreground)
                composite.SetLabelVolumeID(state.label)
                composite.SetForegroundOpacity(state.foreground_opacity)


def _node_ids(scene: slicer.vtkMRMLScene) -> list[str]:
    nodes = scene.GetNodes()
    return [nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems())]

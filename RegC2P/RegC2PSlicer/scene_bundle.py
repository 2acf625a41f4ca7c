"""Saving scenes as ``.mrb`` bundles, and a fused CT + synthetic PET scene from images.

Works inside Slicer and headless (``slicer-core``); the bundle opens in Slicer with the
PET (PET colour table, SUV window) fused over the CT in every slice view.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import SimpleITK as sitk
import slicer

from RegC2PLib.errors import RegC2PError

from .headless import HeadlessScene
from .output import DEFAULT_PET_COLOR, DEFAULT_SUV_WINDOW, show_pet, store_pet, update_pet_display
from .volumes import add_volume_node


def write_scene(scene: slicer.vtkMRMLScene, path: Path) -> None:
    """Save ``scene`` as a .mrb bundle, atomically (written beside ``path``, then renamed)."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if node.GetStorageNode() is None:
            node.AddDefaultStorageNode()
    path = Path(path).resolve()
    folder = Path(tempfile.mkdtemp(prefix=".regc2p-scene-", dir=path.parent))
    try:
        if not scene.WriteToMRB(str(folder / path.name)):
            raise RegC2PError(f"could not write the scene {path}")
        os.replace(folder / path.name, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def save_fused_scene(
    ct: sitk.Image,
    pet: sitk.Image,
    path: Path,
    name: str,
    others: dict[str, sitk.Image] | None = None,
) -> None:
    """A headless scene with the CT (HU), the synthetic PET (SUV) fused over it in every
    slice view, and optional further PET volumes (e.g. the reference, with the PET colour
    table and SUV window), saved to ``path``."""
    with HeadlessScene() as scene:
        ct_node = add_volume_node(scene, ct, name)
        pet_node = store_pet(ct_node, pet)
        for other_name, image in (others or {}).items():
            update_pet_display(add_volume_node(scene, image, other_name), DEFAULT_PET_COLOR, DEFAULT_SUV_WINDOW)
        show_pet(ct_node, pet_node)
        write_scene(scene, path)

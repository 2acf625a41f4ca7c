"""Render the RegC2P module's result as Slicer's three slice views draw it, headless, to a PNG.

What it shows: the demo phantom's CT (seed 2024, 96×128×128 voxels, as ``regc2p demo``)
with the synthetic PET that the shipped default model makes from it fused over it, as
the module leaves a scene after Apply — PET-Heat, SUV 0–10, 50 % opacity over the CT in a
soft-tissue window (W 400, L 40) — in the Red (axial), Yellow (sagittal) and Green
(coronal) views, all three through the largest lesion. The pixels come from Slicer's own
slice pipeline (``vtkMRMLSliceLogic``: reslicing, colour tables, layer blending) run on the
``slicer-core`` wheel, so they are what those views display; the window around them
(panel, toolbars, 3D view) is not drawn. The extension catalog shows this image
(``EXTENSION_SCREENSHOTURLS``); docs/slicer.md says what it is.

    .venv/bin/python scripts/slicer_views.py [--out Resources/Screenshots/RegC2P-fused-views.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
from vtk.util.numpy_support import vtk_to_numpy

from RegC2PLib.data.phantom import PhantomConfig, generate_case
from RegC2PLib.inference import TranslationOptions, translate_volume
from RegC2PLib.model_file import load_model, require_bundled_model
from RegC2PSlicer.headless import HeadlessScene
from RegC2PSlicer.output import show_pet, store_pet
from RegC2PSlicer.volumes import add_volume_node

ROOT = Path(__file__).resolve().parents[1]
VIEWS = (("Red", "Axial", (240, 80, 80)), ("Yellow", "Sagittal", (230, 210, 80)), ("Green", "Coronal", (100, 190, 100)))
SIZE = 420  # pixels per view
BAR = 6  # the view's colour, as Slicer marks its slice views


def render(out: Path) -> None:
    case = generate_case(PhantomConfig(), 2024)  # the demo's phantom
    pet = translate_volume(case.ct, load_model(require_bundled_model()), TranslationOptions())
    lesions = sitk.GetArrayViewFromImage(case.lesions)
    largest = np.bincount(lesions.ravel())[1:].argmax() + 1
    center_index = np.argwhere(lesions == largest).mean(axis=0)[::-1]  # (i, j, k)
    lps = case.ct.TransformContinuousIndexToPhysicalPoint(center_index.tolist())
    ras = (-lps[0], -lps[1], lps[2])

    headless = HeadlessScene(views=())
    logics = []
    try:
        scene = headless.scene
        for name, orientation, _ in VIEWS:
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLApplicationLogic(headless.app_logic)
            logic.SetMRMLScene(scene)
            slice_node = logic.AddSliceNode(name)
            slice_node.SetOrientation(orientation)
            slice_node.SetDimensions(SIZE, SIZE, 1)
            logics.append(logic)
        ct_node = add_volume_node(scene, case.ct, "demo CT")
        ct_node.GetDisplayNode().AutoWindowLevelOff()
        ct_node.GetDisplayNode().SetWindowLevel(400.0, 40.0)
        show_pet(ct_node, store_pet(ct_node, pet))  # what Apply leaves: PET-Heat, SUV 0-10, 50 %
        panels = []
        for logic, (_, _, colour) in zip(logics, VIEWS):
            logic.FitSliceToAll()
            logic.GetSliceNode().JumpSliceByOffsetting(*ras)
            logic.UpdatePipeline()
            producer = logic.GetImageDataConnection().GetProducer()
            producer.Update()
            image = producer.GetOutputDataObject(0)
            width, height, _ = image.GetDimensions()
            rgba = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, 4)[::-1].astype(np.float32)
            rgb = np.round(rgba[..., :3] * rgba[..., 3:] / 255.0).astype(np.uint8)  # over the views' black background
            bar = np.broadcast_to(np.array(colour, np.uint8), (BAR, width, 3))
            panels.append(np.concatenate([bar, rgb]))
        gap = np.zeros((panels[0].shape[0], 4, 3), np.uint8)
        picture = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
        out.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(picture), isVector=True), str(out))
    finally:
        for logic in logics:
            logic.SetMRMLScene(None)
        headless.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "Resources" / "Screenshots" / "RegC2P-fused-views.png")
    render(parser.parse_args().out)


if __name__ == "__main__":
    main()

"""A MRML scene without the Slicer application (``slicer-core`` wheel), for scripts and tests.

It adds what Slicer would provide: the application and colour logics (so the PET colour
tables exist) and one slice composite node per slice view (Red, Yellow, Green), so a
saved scene opens with the fused display. :meth:`HeadlessScene.close` tears the logics
down in order, which avoids crashes at interpreter exit.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import slicer

SLICE_VIEWS = ("Red", "Yellow", "Green")


def add_slice_views(scene: slicer.vtkMRMLScene, views: tuple[str, ...] = SLICE_VIEWS) -> None:
    """One slice composite node per view, as Slicer's layout manager makes them (a singleton per view name).

    Slicer without a main window (batch runs) has no layout manager and so none of these;
    a scene saved from there needs them to open with the fused display.
    """
    for name in views:
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(name)
        composite.SetSingletonTag(name)
        scene.AddNode(composite)


class HeadlessScene:
    """``with HeadlessScene() as scene: ...`` — a scene with colour tables and slice views."""

    def __init__(self, views: tuple[str, ...] = SLICE_VIEWS) -> None:
        self.scene = slicer.vtkMRMLScene()
        # The colour logic looks for colour files under <home>/<share>/ColorFiles; an empty
        # folder keeps it quiet (the procedural PET tables need no files).
        self._home = Path(tempfile.mkdtemp(prefix="RegC2P-home-"))
        (self._home / "share" / "ColorFiles").mkdir(parents=True)
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetHomeDirectory(str(self._home))
        self.app_logic.SetShareDirectory("share")
        self.app_logic.SetMRMLScene(self.scene)
        self.color_logic = slicer.vtkSlicerColorLogic()
        self.color_logic.SetMRMLApplicationLogic(self.app_logic)
        self.color_logic.SetMRMLScene(self.scene)
        add_slice_views(self.scene, views)

    def close(self) -> None:
        """Detach the logics, empty the scene and remove the temporary folder."""
        if self.scene is None:
            return
        if getattr(slicer, "mrmlScene", None) is self.scene:
            slicer.mrmlScene = None
        self.color_logic.SetMRMLScene(None)
        self.app_logic.SetMRMLScene(None)
        self.scene.Clear(True)
        self.scene = None
        shutil.rmtree(self._home, ignore_errors=True)

    def __enter__(self) -> slicer.vtkMRMLScene:
        return self.scene

    def __exit__(self, *exc_info: object) -> None:
        self.close()

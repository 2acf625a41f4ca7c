"""Slicer glue for RegC2P: MRML nodes <-> SimpleITK images, the output PET node and its display.

This package may import ``slicer`` and ``vtk`` (the real MRML scene, also available
without the application through the ``slicer-core`` wheel) but never ``qt`` or ``ctk``
at module level, so everything here runs headless in tests and batch scripts. The
translation itself happens in :mod:`RegC2PLib`, which never imports ``slicer``.

Modules: ``volumes`` (node <-> image with exact geometry), ``output`` (output node,
PET colours, subject hierarchy, fused slice views), ``scene_state`` (snapshot and
restore around writing a result), ``models`` (bundled and user model files, import, devices),
``processing`` (blocking ``process`` and the background job the panel polls),
``background`` (a ``python -m RegC2PLib.worker`` process tree with JSON-lines progress,
ended as a whole), ``jobs`` (the one poller of every background job, ended with the
scene or the application), ``training`` (training from scene nodes or a dataset folder,
blocking or in the background),
``scene_bundle`` (saving ``.mrb`` scenes, a fused CT + PET scene from images),
``batch`` (what the two batch scripts share: always ending Slicer, the scene to work in),
``dependencies`` (torch via PyTorchUtils, the rest via pip at first use),
``headless`` (a scene with colour tables and slice views without the application) and
``sample_data`` (the synthetic PET/CT phantom in the Sample Data module).
"""

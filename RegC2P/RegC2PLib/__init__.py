"""RegC2P core: CT-to-PET translation networks, inference, data and metrics.

Pure Python (torch, numpy, SimpleITK); never imports ``slicer`` or ``qt``, so the
Slicer modules, the ``regc2p`` command line and the tests share it.
Layout, in pipeline order: ``data`` (phantoms, studies, samples) -> ``networks``
(G, R, D, F) -> ``training`` -> ``inference`` -> ``model_file`` / ``cli``.
"""

__version__ = "0.1.0"

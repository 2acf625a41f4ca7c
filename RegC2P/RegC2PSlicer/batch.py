"""What the two batch scripts share: ending the process in every case, and the scene they work in.

``Slicer --no-main-window --python-script SCRIPT`` exits only when the script calls
``slicer.util.exit`` (or raises SystemExit); after an uncaught exception a headless
Slicer would run forever. :func:`run_script` calls the script's ``main(argv)`` and always
ends with a status: ``main``'s own, argparse's (2 for bad options), 2 with a one-line
``regc2p: error:`` when torch (or another package) is missing, 130 on Ctrl-C, and 1 with
the traceback on stderr for anything else (e.g. out of memory). The same scripts run in a
plain Python with the ``slicer-core`` wheel, where :func:`work_scene` gives a scene with
what Slicer would provide.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import slicer

from .headless import HeadlessScene

TORCH_HINT = "in Slicer, install the PyTorch extension (and open the RegC2P module once to install the rest)"


def in_slicer() -> bool:
    """Whether this runs inside the Slicer application (not a plain Python with slicer-core)."""
    return hasattr(slicer, "app")


def run_script(main: Callable[[Sequence[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` (default: the command-line arguments) and end the process with its status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        status = int(main(argv) or 0)
    except SystemExit as exc:  # argparse: --help (0) or bad options (2)
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ModuleNotFoundError as exc:
        print(f"regc2p: error: {exc}; {TORCH_HINT}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("regc2p: interrupted", file=sys.stderr)
        status = 130
    except BaseException:
        traceback.print_exc()
        status = 1
    sys.stderr.flush()
    if in_slicer():
        slicer.util.exit(status)  # Slicer then ends once pending events are processed
    else:
        sys.exit(status)
    return status


@contextmanager
def work_scene(clear: bool = False) -> Iterator[slicer.vtkMRMLScene]:
    """Slicer's scene inside Slicer (emptied first when ``clear``), else a headless scene with colour tables."""
    if in_slicer():
        if clear:
            slicer.mrmlScene.Clear(False)
        yield slicer.mrmlScene
        return
    with HeadlessScene() as scene:
        yield scene

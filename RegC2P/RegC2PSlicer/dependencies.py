"""Python packages the module needs inside Slicer, installed at first use with the user's consent.

* ``torch`` comes from Slicer's PyTorch extension (``PyTorchUtils``), which picks the
  build for the computer's GPU; it is never pip-installed here.
* What Slicer bundles (:data:`SLICER_BUNDLED`) is never pip-installed.
* The rest (``Resources/requirements.txt``: safetensors, tqdm) is installed with
  ``slicer.pydeps.pip_ensure`` (Slicer ≥ 5.11) or ``slicer.util.pip_install``.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

from RegC2PLib.errors import CancelledError, RegC2PError, one_line

REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"
TORCH_REQUIREMENT = ">=2.2"
# The Python packages Slicer 5.8 and 5.10 ship with (their SuperBuild); code that runs inside
# Slicer may use these, torch (PyTorch extension) and Resources/requirements.txt, nothing else.
SLICER_BUNDLED = ("numpy", "scipy", "SimpleITK", "pydicom", "packaging", "requests")
# Provided by Slicer or by the PyTorch extension: never pip-install these into Slicer.
NEVER_PIP = ("torch", *SLICER_BUNDLED)

Confirm = Callable[[str], bool]


class DependencyError(RegC2PError):
    """A package the module needs is missing and could not be installed."""


def requirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement lines of ``requirements.txt`` (comments and blank lines dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def _module_name(requirement: str) -> str:
    name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
    return name.replace("-", "_").lower()


def missing_requirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirements whose package cannot be imported here."""
    return [r for r in requirements(path) if importlib.util.find_spec(_module_name(r)) is None]


def torch_missing() -> bool:
    return importlib.util.find_spec("torch") is None


def ensure_dependencies(confirm: Confirm) -> None:
    """Install what is missing (torch through PyTorchUtils, the rest through pip), asking first.

    ``confirm(question)`` returns True to go ahead. Raises :class:`CancelledError` when the
    user declines and :class:`DependencyError` when installing fails.
    """
    if torch_missing():
        try:
            import PyTorchUtils
        except ImportError as exc:
            raise DependencyError(
                "RegC2P needs PyTorch: install the 'PyTorch' extension from the Extensions Manager, restart Slicer and try again"
            ) from exc
        logic = PyTorchUtils.PyTorchUtilsLogic()
        if not logic.torchInstalled():
            if not confirm("RegC2P needs PyTorch, which is not installed yet. Install it now (a download of up to a few GB)?"):
                raise CancelledError("PyTorch is not installed; RegC2P cannot run without it")
            if logic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT) is None:
                raise DependencyError("PyTorch could not be installed; see the Python console for the reason")
    missing = missing_requirements()
    if not missing:
        return
    if not confirm(f"RegC2P needs these Python packages: {', '.join(missing)}. Install them now?"):
        raise CancelledError(f"{', '.join(missing)} not installed; RegC2P cannot run without them")
    try:
        import slicer.pydeps as pydeps
    except ImportError:
        pydeps = None
    try:
        if pydeps is not None and hasattr(pydeps, "pip_ensure"):
            pydeps.pip_ensure(pydeps.load_requirements(str(REQUIREMENTS_FILE)), skip_packages=list(NEVER_PIP), requester="RegC2P")
        else:
            import slicer

            slicer.util.pip_install(missing)
    except Exception as exc:
        raise DependencyError(f"installing {', '.join(missing)} failed: {one_line(exc)}") from exc
    importlib.invalidate_caches()
    still = missing_requirements()
    if still:
        raise DependencyError(f"{', '.join(still)} still cannot be imported after installing; restart Slicer and try again")

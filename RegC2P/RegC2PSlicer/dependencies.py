"""Python packages the module needs inside Slicer, installed at first use with the user's consent.

* ``torch`` comes from Slicer's PyTorch extension (``PyTorchUtils``), which picks the
  build for the computer's GPU; it is never pip-installed here. Its installer also
  installs torchvision (it offers no way not to); RegC2P does not use it.
* What Slicer bundles (:data:`SLICER_BUNDLED`) is never pip-installed.
* The rest (``Resources/requirements.txt``: safetensors, tqdm) is installed with
  ``slicer.packaging.pip_ensure`` (Slicer 5.12 and later) or ``slicer.util.pip_install``
  (Slicer 5.8 and 5.10).

Installing pumps Qt events, so a second request could start while one is running: that
is refused. Self-tests (Slicer's ``--testing``) never install: ``may_install=False``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
_installing = False


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


def missing_for_self_test() -> str | None:
    """Why a self-test cannot run here (self-tests install nothing), or None when everything is importable."""
    if torch_missing():
        return "PyTorch is not installed (install it with the PyTorch extension; self-tests install nothing)"
    missing = missing_requirements()
    if missing:
        return f"{', '.join(missing)} not installed (open the RegC2P module once to install it; self-tests install nothing)"
    return None


def ensure_dependencies(confirm: Confirm, may_install: bool = True) -> None:
    """Install what is missing (torch through PyTorchUtils, the rest through pip), asking first.

    ``confirm(question)`` returns True to go ahead. Raises :class:`CancelledError` when the
    user declines and :class:`DependencyError` when installing fails, when an install is
    already running, or when something is missing and ``may_install`` is False.
    """
    with _one_install_at_a_time():
        if torch_missing():
            _install_torch(confirm, may_install)
        missing = missing_requirements()
        if missing:
            _install_requirements(missing, confirm, may_install)


def ensure_in_slicer(title: str) -> None:
    """:func:`ensure_dependencies` with Slicer's confirmation dialog (titled ``title``); no installs under ``--testing``."""
    import slicer

    def confirm(question: str) -> bool:
        return slicer.util.confirmOkCancelDisplay(question, windowTitle=title)

    ensure_dependencies(confirm, may_install=not slicer.app.testingEnabled())


@contextmanager
def _one_install_at_a_time() -> Iterator[None]:
    global _installing
    if _installing:
        raise DependencyError("RegC2P is already installing the packages it needs; wait until that has finished")
    _installing = True
    try:
        yield
    finally:
        _installing = False


def _install_torch(confirm: Confirm, may_install: bool) -> None:
    try:
        import PyTorchUtils
    except ImportError as exc:
        raise DependencyError(
            "RegC2P needs PyTorch: install the 'PyTorch' extension from the Extensions Manager, restart Slicer and try again"
        ) from exc
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if logic.torchInstalled():
        return
    if not may_install:
        raise DependencyError("PyTorch is not installed, and it is not installed here (Slicer runs in testing mode)")
    if not confirm("RegC2P needs PyTorch, which is not installed yet. Install it now (a download of up to a few GB)?"):
        raise CancelledError("PyTorch is not installed; RegC2P cannot run without it")
    try:  # raises when it fails (it returns None only when it asked and was declined, which it is not asked to)
        logic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT)
    except Exception as exc:
        raise DependencyError(f"PyTorch could not be installed: {one_line(exc)}") from exc
    importlib.invalidate_caches()
    if torch_missing():
        raise DependencyError("PyTorch still cannot be imported after installing; restart Slicer and try again")


def _install_requirements(missing: list[str], confirm: Confirm, may_install: bool) -> None:
    names = ", ".join(missing)
    if not may_install:
        raise DependencyError(f"{names} not installed, and not installed here (Slicer runs in testing mode)")
    if not confirm(f"RegC2P needs these Python packages: {names}. Install them now?"):
        raise CancelledError(f"{names} not installed; RegC2P cannot run without them")
    import slicer

    try:
        if importlib.util.find_spec("slicer.packaging") is not None:  # Slicer 5.12 and later
            packaging = importlib.import_module("slicer.packaging")
            packaging.pip_ensure(packaging.load_requirements(REQUIREMENTS_FILE), prompt_install=False, requester="RegC2P")
        else:
            slicer.util.pip_install(missing)
    except Exception as exc:
        raise DependencyError(f"installing {names} failed: {one_line(exc)}") from exc
    importlib.invalidate_caches()
    still = missing_requirements()
    if still:
        raise DependencyError(f"{', '.join(still)} still cannot be imported after installing; restart Slicer and try again")

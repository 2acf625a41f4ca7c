"""Installing what the module needs inside Slicer, with stand-ins for Slicer's installers.

Slicer 5.12+ has ``slicer.packaging.pip_ensure``; 5.8 and 5.10 only ``slicer.util.pip_install``
(the ``slicer-core`` wheel, like them, has no ``slicer.packaging``). PyTorchUtils'
``installTorch(askConfirmation=False)`` raises when it fails. Installing pumps Qt events, so
a second request may arrive meanwhile; under ``--testing`` nothing is installed.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from RegC2PLib.errors import CancelledError  # noqa: E402
from RegC2PSlicer import dependencies  # noqa: E402
from RegC2PSlicer.dependencies import DependencyError, ensure_dependencies  # noqa: E402

MISSING = ["safetensors>=0.4"]


@pytest.fixture
def missing_until_installed(monkeypatch):
    """``safetensors`` counts as missing until an installer ran (``installed`` lists the calls)."""
    installed: list[object] = []
    monkeypatch.setattr(dependencies, "torch_missing", lambda: False)
    monkeypatch.setattr(dependencies, "missing_requirements", lambda: [] if installed else list(MISSING))
    return installed


def _yes(question: str) -> bool:
    return True


def test_slicer_5_8_and_5_10_install_with_pip_install(monkeypatch, missing_until_installed):
    assert importlib.util.find_spec("slicer.packaging") is None  # as in Slicer 5.8 and 5.10
    monkeypatch.setattr(slicer.util, "pip_install", missing_until_installed.append)
    ensure_dependencies(_yes)
    assert missing_until_installed == [MISSING]


def test_slicer_5_12_installs_with_pip_ensure_without_asking_twice(monkeypatch, missing_until_installed):
    packaging = types.ModuleType("slicer.packaging")
    packaging.__spec__ = importlib.machinery.ModuleSpec("slicer.packaging", None)
    packaging.load_requirements = lambda path: [line for line in dependencies.requirements(path)]
    packaging.pip_ensure = lambda requirements, **options: missing_until_installed.append((requirements, options))
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    monkeypatch.setattr(slicer.util, "pip_install", lambda *args: pytest.fail("pip_install used where pip_ensure exists"))
    ensure_dependencies(_yes)
    [(requirements, options)] = missing_until_installed
    assert requirements == dependencies.requirements() and options["prompt_install"] is False


def test_declining_or_a_failed_install_is_one_line(monkeypatch, missing_until_installed):
    with pytest.raises(CancelledError, match=r"safetensors>=0\.4 not installed"):
        ensure_dependencies(lambda question: False)

    def broken(requirements):
        raise RuntimeError("pip: no matching distribution\nfull pip log ...")

    monkeypatch.setattr(slicer.util, "pip_install", broken)
    with pytest.raises(DependencyError, match=r"^installing safetensors>=0.4 failed: pip: no matching distribution$"):
        ensure_dependencies(_yes)


def test_a_second_request_while_installing_is_refused(monkeypatch, missing_until_installed):
    refused: list[str] = []

    def install_pumping_events(requirements):  # meanwhile the user clicks Apply again
        with pytest.raises(DependencyError, match="already installing") as info:
            ensure_dependencies(_yes)
        refused.append(str(info.value))
        missing_until_installed.append(requirements)

    monkeypatch.setattr(slicer.util, "pip_install", install_pumping_events)
    ensure_dependencies(_yes)
    assert len(refused) == 1 and missing_until_installed == [MISSING]
    ensure_dependencies(_yes)  # and later requests go through again


def test_testing_mode_installs_nothing(monkeypatch, missing_until_installed):
    asked: list[str] = []
    monkeypatch.setattr(slicer.util, "pip_install", missing_until_installed.append)
    with pytest.raises(DependencyError, match="testing mode"):
        ensure_dependencies(asked.append, may_install=False)
    assert asked == [] and missing_until_installed == []


@pytest.fixture
def pytorch_utils(monkeypatch):
    """A stand-in PyTorch extension: ``installTorch`` records its options, and raises ``failure`` when one is set."""
    utils = types.SimpleNamespace(calls=[], failure=None, installed=False)

    class Logic:
        def torchInstalled(self) -> bool:
            return False

        def installTorch(self, **options):
            utils.calls.append(options)
            if utils.failure is not None:
                raise utils.failure
            utils.installed = True
            return types.ModuleType("torch")

    utils.PyTorchUtilsLogic = Logic
    monkeypatch.setitem(sys.modules, "PyTorchUtils", utils)
    monkeypatch.setattr(dependencies, "missing_requirements", lambda: [])
    monkeypatch.setattr(dependencies, "torch_missing", lambda: not utils.installed)
    return utils


def test_torch_comes_from_the_pytorch_extension_and_its_failure_is_reported(pytorch_utils):
    pytorch_utils.failure = RuntimeError("light-the-torch: no matching distribution for torch>=2.2\n(log)")
    with pytest.raises(DependencyError, match=r"^PyTorch could not be installed: light-the-torch: no matching"):
        ensure_dependencies(_yes)
    pytorch_utils.failure = None
    ensure_dependencies(_yes)
    expected = {"askConfirmation": False, "torchVersionRequirement": dependencies.TORCH_REQUIREMENT}
    assert pytorch_utils.calls == [expected, expected]


def test_testing_mode_does_not_install_torch(pytorch_utils):
    with pytest.raises(DependencyError, match="testing mode"):
        ensure_dependencies(_yes, may_install=False)
    assert pytorch_utils.calls == []

"""The modules' own self-tests (what the extensions factory runs under ``--testing``), run here.

The module files are loaded with Slicer's real MRML scene (slicer-core) and stand-ins for
what only the application has: ``qt`` (a timer the stand-in ``slicer.app.processEvents``
fires), ``slicer.ScriptedLoadableModule`` (the test base is ``unittest.TestCase``),
``slicer.parameterNodeWrapper``, ``slicer.i18n`` and ``slicer.app`` in testing mode. The
self-tests pass here, install nothing, and are skipped with the reason when PyTorch is
missing.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import unittest
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from RegC2PSlicer import dependencies, jobs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class _Timer:
    """qt.QTimer as jobs.job_poller uses it; fired by the stand-in slicer.app.processEvents."""

    def setInterval(self, interval_ms) -> None:
        pass

    def connect(self, signal, slot) -> None:
        self.slot = slot

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


class _Base:
    def __init__(self, *args, **kwargs) -> None:
        pass


class _SelfTestBase(unittest.TestCase):
    def delayDisplay(self, message, msec=None) -> None:
        import time

        print(f"{time.monotonic():.1f} {message}")


@pytest.fixture
def slicer_stand_ins(headless, monkeypatch):
    """Stand-ins for the parts of Slicer the module files need beyond MRML; returns the install attempts."""
    timers: list[_Timer] = []

    def process_events() -> None:
        for timer in timers:
            if getattr(timer, "active", False):
                timer.slot()

    def new_timer() -> _Timer:
        timers.append(_Timer())
        return timers[-1]

    app = types.SimpleNamespace(
        processEvents=process_events, testingEnabled=lambda: True, connect=lambda signal, slot: None, layoutManager=lambda: None
    )
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setitem(sys.modules, "qt", _module("qt", QTimer=new_timer))
    monkeypatch.setitem(sys.modules, "ctk", _module("ctk"))
    monkeypatch.setitem(
        sys.modules,
        "slicer.ScriptedLoadableModule",
        _module(
            "slicer.ScriptedLoadableModule",
            ScriptedLoadableModule=_Base,
            ScriptedLoadableModuleWidget=_Base,
            ScriptedLoadableModuleLogic=_Base,
            ScriptedLoadableModuleTest=_SelfTestBase,
        ),
    )
    monkeypatch.setitem(
        sys.modules,
        "slicer.parameterNodeWrapper",
        _module("slicer.parameterNodeWrapper", parameterNodeWrapper=lambda cls: cls, Choice=_Base, WithinRange=_Base),
    )
    monkeypatch.setitem(sys.modules, "slicer.i18n", _module("slicer.i18n", tr=str, translate=lambda context, text: text))
    monkeypatch.setattr(jobs, "_SHARED", None)
    installs: list[str] = []
    monkeypatch.setattr(slicer.util, "pip_install", installs.append, raising=False)
    never = _module("PyTorchUtils", PyTorchUtilsLogic=lambda: pytest.fail("the self-test installs torch"))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", never)
    return installs


def _load(relative: str) -> types.ModuleType:
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(test: unittest.TestCase) -> unittest.TestResult:
    result = unittest.TestResult()
    test.run(result)
    return result


@pytest.mark.slow
def test_translation_self_test_passes_in_testing_mode(slicer_stand_ins):
    module = _load("RegC2P/RegC2P.py")
    result = _run(module.RegC2PTest("runTest"))
    assert result.wasSuccessful() and not result.skipped, result.errors + result.failures
    assert slicer_stand_ins == []  # nothing installed


@pytest.mark.slow
def test_training_self_test_passes_in_testing_mode(slicer_stand_ins, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    module = _load("RegC2PTraining/RegC2PTraining.py")
    result = _run(module.RegC2PTrainingTest("runTest"))
    assert result.wasSuccessful() and not result.skipped, result.errors + result.failures
    assert slicer_stand_ins == []


@pytest.mark.parametrize("module_file", ["RegC2P/RegC2P.py", "RegC2PTraining/RegC2PTraining.py"])
def test_self_tests_are_skipped_with_the_reason_without_torch(slicer_stand_ins, monkeypatch, module_file):
    monkeypatch.setattr(dependencies, "torch_missing", lambda: True)
    module = _load(module_file)
    test_class = getattr(module, Path(module_file).stem + "Test")
    result = _run(test_class("runTest"))
    [(_, reason)] = result.skipped
    assert "PyTorch is not installed" in reason and "install nothing" in reason
    assert slicer_stand_ins == []

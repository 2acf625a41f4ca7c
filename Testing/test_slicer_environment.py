"""What runs inside Slicer works with what a stock Slicer offers.

The background worker (translation and training) runs in a child process that can
import only Slicer's bundled packages, torch and ``requirements.txt`` (``slicer_like_site``):
matplotlib, scikit-image, slicer-core and the test tools are missing there, as in Slicer.
Drawing never changes the host application's plotting backend.

Slicer 5.8 runs Python 3.9. Where ``REGC2P_PYTHON39`` names a Python 3.9 that has torch and
Slicer's packages only (docs/slicer.md, "Checking Python 3.9"), the worker also runs on it
and every module (library, Slicer glue, module files, batch scripts) is imported on it,
with stand-ins for Slicer's own ``slicer``/``vtk``/``qt``/``ctk``. Without it those cases
are skipped and ``vermin`` (scripts/test.sh) is the 3.9 check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from RegC2PLib.data.phantom import PhantomConfig, write_dataset  # noqa: E402
from RegC2PLib.training.config import TrainConfig  # noqa: E402
from RegC2PLib.training.curves import NO_MATPLOTLIB  # noqa: E402
from RegC2PSlicer.processing import BackgroundTranslation, RunSettings  # noqa: E402
from RegC2PSlicer.training import TrainingJob, TrainingSettings  # noqa: E402
from RegC2PSlicer.volumes import add_volume_node  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PYTHON39 = os.environ.get("REGC2P_PYTHON39")


def _python(code: str, env: dict[str, str] | None = None, python: str | None = None) -> subprocess.CompletedProcess:
    command = [python or sys.executable, "-c", textwrap.dedent(code)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def _python39() -> str:
    if not PYTHON39:
        pytest.skip("set REGC2P_PYTHON39 to a Python 3.9 with torch and Slicer's packages to run this on Slicer 5.8's Python")
    return PYTHON39


@pytest.fixture(params=["this Python", "Python 3.9"])
def worker_python(request, slicer_like_site, monkeypatch) -> str | None:
    """The interpreter the worker runs on (None: this one, limited to Slicer's packages by ``slicer_like_site``)."""
    if request.param == "Python 3.9":
        monkeypatch.setenv("PYTHONPATH", str(ROOT / "RegC2P"))
        return _python39()
    monkeypatch.setenv("PYTHONPATH", str(slicer_like_site))
    return None


@pytest.mark.slow
def test_worker_translates_and_trains_with_only_slicers_packages(
    headless, worker_python, monkeypatch, tmp_path, make_ct, small_model_file, tiny_config
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    probe = _python("import matplotlib", dict(os.environ), worker_python)
    assert probe.returncode != 0 and "No module named 'matplotlib'" in probe.stderr  # really not there
    assert _python("import torch, safetensors, SimpleITK, RegC2PLib", dict(os.environ), worker_python).returncode == 0

    ct_node = add_volume_node(headless, make_ct((6, 32, 32)), "CT")
    job = BackgroundTranslation(ct_node, None, RunSettings(model=str(small_model_file)), python=worker_python)
    job.start()
    state = job.wait(timeout=120)
    assert state.state == "succeeded", (state.error, state.details)

    write_dataset(tmp_path / "data", 3, PhantomConfig(shape=(16, 48, 48)))
    budget = TrainConfig(stage="1", epochs=1, max_steps=2, checkpoint_every=2)
    settings = TrainingSettings(tiny_config, budget)
    job = TrainingJob.from_folder(tmp_path / "data", tmp_path / "run", settings, python=worker_python)
    job.start()
    state = job.wait(timeout=240)
    assert state.state == "succeeded", (state.error, state.details)
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert not (tmp_path / "run" / "curves.png").exists()
    assert state.details.count(NO_MATPLOTLIB) == 1  # said once


def test_building_the_command_line_imports_neither_torch_nor_matplotlib():
    run = _python(
        """
        import sys
        from RegC2PLib.cli import build_parser
        build_parser()
        print(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "matplotlib", "SimpleITK", "tqdm"}))
        """
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_drawing_leaves_the_plotting_backend_alone(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text(
        "\n".join(
            f'{{"stage": "stage1", "kind": "train", "step": {i}, "loss_g": {1.0 / i}, "l_corr": 0.5, "loss_d": 0.2}}'
            for i in range(1, 40)
        )
        + '\n{"stage": "stage1", "kind": "val", "step": 39, "mae": 900.0, "ssim": 0.8, "psnr": 25.0, "suv_mae_body": 0.3}\n'
    )
    run = _python(
        f"""
        import sys
        import matplotlib
        matplotlib.use("svg")  # the host's choice (Slicer uses its own)
        import numpy as np
        from pathlib import Path
        from RegC2PLib.figures import fused_figure
        from RegC2PLib.training.curves import plot_curves
        plot_curves(Path({str(log)!r}), Path({str(tmp_path / "curves.png")!r}))
        ct = np.zeros((4, 8, 8)); pet = np.ones((4, 8, 8))
        fused_figure(ct, {{"PET": pet}}, (2.0, 1.0, 1.0), [1, 2], Path({str(tmp_path / "fused.png")!r}))
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
        """
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["svg", "False"]
    for name in ("curves.png", "fused.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Stand-ins for the modules only Slicer has: any attribute is a class (so it can be called,
# subclassed or used as a decorator), any submodule a package of the same kind.
_STAND_INS = """
import importlib.abc, importlib.machinery, sys, types

class _Module(types.ModuleType):
    __path__ = []
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = type(name, (), {"__init__": lambda self, *args, **kwargs: None})
        setattr(self, name, value)
        return value

class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("slicer", "vtk", "qt", "ctk"):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None
    def create_module(self, spec):
        return _Module(spec.name)
    def exec_module(self, module):
        pass

sys.meta_path.insert(0, _Finder())
"""


def test_every_module_imports_on_python_39():
    run = _python(
        _STAND_INS
        + f"""
import importlib, importlib.util, pkgutil, sys
assert sys.version_info[:2] == (3, 9), sys.version
root = {str(ROOT)!r}
sys.path.insert(0, root + "/RegC2P")
imported = 0
for package in ("RegC2PLib", "RegC2PSlicer"):
    importlib.import_module(package)
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        if not info.name.endswith(".__main__"):  # that one runs the command line
            importlib.import_module(info.name)
            imported += 1
scripts = ["RegC2P/RegC2P.py", "RegC2PTraining/RegC2PTraining.py", "RegC2P/Resources/Scripts/RegC2PBatch.py",
           "RegC2PTraining/Resources/Scripts/RegC2PTrainingBatch.py"]
for number, script in enumerate(scripts):
    spec = importlib.util.spec_from_file_location(f"script{{number}}", root + "/" + script)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(imported, len(scripts))
""",
        python=_python39(),
    )
    assert run.returncode == 0, run.stderr
    modules, scripts = map(int, run.stdout.split())
    assert modules > 60 and scripts == 4

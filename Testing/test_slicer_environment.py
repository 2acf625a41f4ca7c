"""What runs inside Slicer works with what a stock Slicer offers.

The background worker (translation and training) runs in a child process that can
import only Slicer's bundled packages, torch and ``requirements.txt`` (``slicer_like_site``):
matplotlib, scikit-image, slicer-core and the test tools are missing there, as in Slicer.
Drawing never changes the host application's plotting backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from RegC2PLib.data.phantom import PhantomConfig, write_dataset  # noqa: E402
from RegC2PLib.training.config import TrainConfig  # noqa: E402
from RegC2PLib.training.curves import NO_MATPLOTLIB  # noqa: E402
from RegC2PSlicer.processing import BackgroundTranslation, RunSettings  # noqa: E402
from RegC2PSlicer.training import TrainingJob, TrainingSettings  # noqa: E402
from RegC2PSlicer.volumes import add_volume_node  # noqa: E402


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.slow
def test_worker_translates_and_trains_with_only_slicers_packages(
    headless, slicer_like_site, monkeypatch, tmp_path, make_ct, small_model_file, tiny_config
):
    monkeypatch.setenv("PYTHONPATH", str(slicer_like_site))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    probe = _python("import matplotlib", dict(os.environ))
    assert probe.returncode != 0 and "No module named 'matplotlib'" in probe.stderr  # the site really hides it
    assert _python("import torch, safetensors, SimpleITK, RegC2PLib", dict(os.environ)).returncode == 0

    ct_node = add_volume_node(headless, make_ct((6, 32, 32)), "CT")
    job = BackgroundTranslation(ct_node, None, RunSettings(model=str(small_model_file)))
    job.start()
    state = job.wait(timeout=120)
    assert state.state == "succeeded", (state.error, state.details)

    write_dataset(tmp_path / "data", 3, PhantomConfig(shape=(16, 48, 48)))
    budget = TrainConfig(stage="1", epochs=1, max_steps=2, checkpoint_every=2)
    job = TrainingJob.from_folder(tmp_path / "data", tmp_path / "run", TrainingSettings(tiny_config, budget))
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

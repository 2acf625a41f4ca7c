"""Background workers behind a launcher like Slicer's ``PythonSlicer``.

``PythonSlicer`` is a CTKAppLauncher: it runs the real Python as its child, forwards no
signals, and reports a child killed by a signal as exit status 1. The tests start the
real worker through such a launcher (``launcher`` fixture) and show that Cancel ends the
whole process tree within 2 s, that the reason a job failed comes from the work's own
exit status, that translation also stops cooperatively through its stop file, and that
non-ASCII error text survives a console with another encoding.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from RegC2PLib.cli import main  # noqa: E402
from RegC2PLib.data.phantom import PhantomConfig, write_dataset  # noqa: E402
from RegC2PLib.training.config import TrainConfig  # noqa: E402
from RegC2PSlicer.background import WorkerProcess  # noqa: E402
from RegC2PSlicer.processing import BackgroundTranslation, RunSettings  # noqa: E402
from RegC2PSlicer.training import TrainingJob, TrainingSettings  # noqa: E402
from RegC2PSlicer.volumes import add_volume_node  # noqa: E402

needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc (Linux)")

LAUNCHER = '''#!{python}
"""Like PythonSlicer: Python as a child, no signal forwarded, a killed child reported as exit status 1."""
import subprocess, sys
child = subprocess.Popen([sys.executable, *sys.argv[1:]])
status = child.wait()
if status < 0:
    print(f"[{{sys.executable}}] exit abnormally - Report the problem.", file=sys.stderr)
    sys.exit(1)
sys.exit(status)
'''


@pytest.fixture
def launcher(tmp_path) -> str:
    path = tmp_path / "PythonSlicerLike"
    path.write_text(LAUNCHER.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie has ended; only its exit status is left


def _descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None and stat[0] != "Z":
            parents[int(entry.name)] = stat[1]
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        todo += children
    return found


def _work_process(launcher_pid: int, deadline_s: float = 60.0) -> int:
    """The process doing the work (``python -m RegC2PLib ...``), two levels below the launcher."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for pid in _descendants(launcher_pid):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if b"RegC2PLib" in command and b"RegC2PLib.worker" not in command:
                return pid
        time.sleep(0.05)
    raise AssertionError("the worker did not start within a minute")


def _assert_tree_gone_within(pids: list[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [pid for pid in pids if _alive(pid)], "processes of the worker tree survived Cancel"


@pytest.fixture
def ct_node(headless, make_ct):
    return add_volume_node(headless, make_ct((40, 64, 64)), "CT")


@needs_proc
@pytest.mark.slow
def test_cancel_ends_the_translation_tree_below_a_launcher(ct_node, small_model_file, launcher):
    job = BackgroundTranslation(ct_node, None, RunSettings(model=str(small_model_file)), python=launcher)
    job.start()
    launcher_pid = job._worker.pid
    work = _work_process(launcher_pid)
    tree = [launcher_pid, *_descendants(launcher_pid)]
    assert work in tree and len(tree) >= 3  # launcher -> RegC2PLib.worker -> regc2p translate
    start = time.monotonic()
    job.cancel()
    _assert_tree_gone_within(tree, 2.0 - (time.monotonic() - start))
    assert job.poll().state == "cancelled"


@needs_proc
@pytest.mark.slow
def test_a_killed_worker_is_reported_from_its_own_status_not_the_launchers(ct_node, small_model_file, launcher):
    job = BackgroundTranslation(ct_node, None, RunSettings(model=str(small_model_file)), python=launcher)
    job.start()
    os.kill(_work_process(job._worker.pid), signal.SIGKILL)  # as the out-of-memory killer does
    state = job.wait(timeout=60)
    assert state.state == "failed"
    assert job._worker.poll() > 0  # the launcher itself ended normally: its status names no signal
    assert job._worker.worker_exit == -signal.SIGKILL
    assert state.error.startswith("the translation process was killed (signal 9)")


@needs_proc
def test_a_launcher_that_dies_leaves_no_worker_behind(ct_node, small_model_file, launcher):
    job = BackgroundTranslation(ct_node, None, RunSettings(model=str(small_model_file)), python=launcher)
    job.start()
    launcher_pid = job._worker.pid
    _work_process(launcher_pid)
    tree = _descendants(launcher_pid)
    os.kill(launcher_pid, signal.SIGKILL)  # the launcher crashes; its child would run on, orphaned
    start = time.monotonic()
    assert job.wait(timeout=10).state == "failed"
    _assert_tree_gone_within(tree, 2.0 - (time.monotonic() - start))


@needs_proc
@pytest.mark.slow
def test_cancel_ends_the_training_tree_and_one_folder_trains_once(tmp_path, tiny_config, launcher):
    write_dataset(tmp_path / "data", 3, PhantomConfig(shape=(16, 48, 48)))
    settings = TrainingSettings(tiny_config, TrainConfig(stage="1", epochs=50, checkpoint_every=1))
    job = TrainingJob.from_folder(tmp_path / "data", tmp_path / "run", settings, python=launcher)
    job.start()
    with pytest.raises(Exception, match="already training"):
        TrainingJob.open(tmp_path / "run").start()  # a second trainer on the same run folder
    launcher_pid = job._worker.pid
    work = _work_process(launcher_pid)
    tree = [launcher_pid, *_descendants(launcher_pid)]
    assert work in tree and job.poll().state == "running", job.state.details
    start = time.monotonic()
    job.cancel()
    _assert_tree_gone_within(tree, 2.0 - (time.monotonic() - start))
    written = _files(tmp_path / "run")
    time.sleep(1.0)
    assert _files(tmp_path / "run") == written  # nothing trains on: no checkpoint or log is written any more


def _files(folder: Path) -> dict[str, int]:
    return {str(path): path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


def test_translation_stops_cleanly_when_its_stop_file_appears_or_its_folder_goes(tmp_path, make_ct, small_model_file, capsys):
    ct = tmp_path / "ct.nrrd"
    sitk.WriteImage(make_ct((6, 32, 32)), str(ct))
    job = tmp_path / "job"
    job.mkdir()
    (job / "STOP").touch()
    base = ["translate", "--ct", str(ct), "--model", str(small_model_file), "--progress", "none"]
    assert main([*base, "--out", str(tmp_path / "pet.nrrd"), "--stop-file", str(job / "STOP")]) == 2
    assert "cancelled" in capsys.readouterr().err and not (tmp_path / "pet.nrrd").exists()
    assert main([*base, "--out", str(tmp_path / "pet.nrrd"), "--stop-file", str(tmp_path / "gone" / "STOP")]) == 2
    assert not (tmp_path / "pet.nrrd").exists()
    assert main([*base, "--out", str(tmp_path / "pet.nrrd"), "--stop-file", str(tmp_path / "job" / "NOT-YET")]) == 0
    assert (tmp_path / "pet.nrrd").is_file()


def test_worker_error_text_is_utf8_whatever_the_console_encoding(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONIOENCODING", "ascii")  # like a Windows console's code page
    missing = tmp_path / "Patiënt – CT…"
    worker = WorkerProcess(["translate", "--ct", str(missing), "--out", str(tmp_path / "pet.nrrd")], tmp_path, "translation")
    worker.start()
    deadline = time.monotonic() + 60
    while (status := worker.poll()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status == 2 and worker.worker_exit == 2
    assert "Patiënt – CT…" in worker.error_line(status)

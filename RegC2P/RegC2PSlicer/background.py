"""A ``python -m RegC2PLib.worker ...`` process tree with JSON-lines progress, polled without blocking.

Long jobs (translation, training) run in separate processes so Slicer stays responsive:
``PythonSlicer`` inside Slicer (Slicer's own Python), else this interpreter, with the
module folder on ``PYTHONPATH``. ``PythonSlicer`` is a launcher that runs the real
Python as its child and forwards no signals, so the worker is started in a process
group of its own (a new session on POSIX, a new process group on Windows) and
:meth:`WorkerProcess.terminate` ends the whole tree (``killpg``; ``taskkill /T`` on
Windows). Below the launcher, :mod:`RegC2PLib.worker` runs the work and reports its
exit status itself (the launcher turns a killed child into a plain exit status 1).

The work prints ``{"fraction": f, "message": m}`` lines on stdout (``--progress jsonl``)
and ``regc2p: error: ...`` on stderr; reader threads collect both, and
:meth:`WorkerProcess.poll` (called from a timer) turns them into the latest
:class:`JobState` fields without ever waiting. Output is UTF-8 whatever the console's
encoding (Windows consoles default to a code page).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import slicer

# Folder that holds RegC2PLib and RegC2PSlicer (the module folder); goes on the worker's path.
MODULE_DIR = Path(__file__).resolve().parent.parent
ERROR_PREFIX = "regc2p: error: "
WORKER_MODULE = "RegC2PLib.worker"
# The worker's environment: unbuffered UTF-8 output, whatever this process's console uses.
WORKER_ENV = {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", "PYTHONUTF8": "1"}
# After asking the worker tree to end (SIGTERM), how long before it is killed outright.
TERMINATE_GRACE_S = 1.0


@dataclass
class JobState:
    """What a panel shows: ``state`` is running, succeeded, failed, stopped or cancelled.

    ``fraction`` in [0, 1]; ``message`` the latest progress text; ``error`` a one-line
    reason (failed); ``details`` the worker's full error output for the log;
    ``seconds_left`` an estimate from the progress so far (None until it means something).
    """

    state: str = "running"
    fraction: float = 0.0
    message: str = "starting"
    error: str | None = None
    details: str = ""
    seconds_left: float | None = None

    @property
    def finished(self) -> bool:
        return self.state != "running"


def python_executable() -> str:
    """``PythonSlicer`` inside Slicer (Slicer's own Python), else this interpreter."""
    if hasattr(slicer, "app"):
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


class WorkerProcess:
    """``<python> -m RegC2PLib.worker <arguments>`` started in ``cwd``, in a process group of its own.

    ``what`` names the job in crash messages ("the training process was killed ...").
    ``env`` adds to (or overrides) this process's environment. ``python`` is the
    interpreter or launcher to run (default: :func:`python_executable`).
    """

    def __init__(
        self,
        arguments: Sequence[str],
        cwd: Path,
        what: str,
        python: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.command = [python or python_executable(), "-m", WORKER_MODULE, *arguments]
        self.cwd = Path(cwd)
        self.what = what
        self.fraction = 0.0
        self.message = "starting"
        self.seconds_left: float | None = None
        self.worker_exit: int | None = None  # the work's own exit status, reported by RegC2PLib.worker
        self.records: list[dict] = []  # other JSON objects the work printed (e.g. regc2p devices --json)
        self._env = dict(env or {})
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._stderr: list[str] = []
        self._readers: list[threading.Thread] = []
        self._started = 0.0
        self._returncode: int | None = None

    def start(self) -> None:
        """Start the process tree (returns at once)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(MODULE_DIR), *filter(None, [env.get("PYTHONPATH")])])
        env.update(WORKER_ENV)
        env.update(self._env)
        if sys.platform == "win32":
            group = {"creationflags": subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP}
        else:
            group = {"start_new_session": True}
        self._process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
            cwd=str(self.cwd),
            **group,
        )
        self._started = time.monotonic()
        for stream, sink in ((self._process.stdout, self._lines.put), (self._process.stderr, self._stderr.append)):
            reader = threading.Thread(target=_pump, args=(stream, sink), daemon=True)
            reader.start()
            self._readers.append(reader)

    @property
    def pid(self) -> int | None:
        """The process started (the launcher inside Slicer), the leader of the worker's process group."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._returncode is None and self._process.poll() is None

    @property
    def stderr(self) -> str:
        """Everything the worker wrote on stderr so far, stripped."""
        return "".join(self._stderr).strip()

    def poll(self) -> int | None:
        """Take in the progress lines that arrived; the exit status once the worker has ended, else None."""
        if self._process is None:
            raise RuntimeError("the worker process was not started")
        if self._returncode is not None:
            return self._returncode
        self._drain()
        if not _exited(self._process):
            return None
        if sys.platform != "win32":
            # A launcher that died (killed, crashed) leaves the work running below it: end that too.
            _signal_group(self._process.pid, signal.SIGKILL)
        self._process.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        self._drain()
        self._returncode = self._process.returncode
        return self._returncode

    def terminate(self, grace: float = TERMINATE_GRACE_S) -> None:
        """End the whole worker tree now (ask, then kill after ``grace`` s), also what a dead launcher left running."""
        process = self._process
        if process is None:
            return
        if sys.platform == "win32":
            if process.poll() is None:
                # taskkill /T ends the launcher and every process it started (a Job Object would need ctypes).
                subprocess.run(
                    ["taskkill", "/T", "/F", "/PID", str(process.pid)],
                    capture_output=True,
                    creationflags=subprocess.CREATE_NO_WINDOW,
                    check=False,
                )
                process.wait()
            return
        group = process.pid  # the session leader's pid is the process group id
        if not _exited(process):
            _signal_group(group, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while not _exited(process) and time.monotonic() < deadline:
                time.sleep(0.02)
        # The launcher may be gone while the work below it is not (it forwards no signals); the
        # launcher, not yet reaped, keeps the group id reserved until this kill has been sent.
        _signal_group(group, signal.SIGKILL)
        process.wait()

    def error_line(self, returncode: int) -> str:
        """The worker's one-line ``regc2p: error: ...`` reason, or how the work itself ended."""
        stderr = self.stderr
        for line in reversed(stderr.splitlines()):
            if line.startswith(ERROR_PREFIX):
                return line[len(ERROR_PREFIX) :].strip()
        status = self.worker_exit if self.worker_exit is not None else returncode
        if status < 0:
            return f"the {self.what} process was killed (signal {-status}); if memory ran out, use a smaller batch size"
        last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
        reason = f"the {self.what} process failed (exit status {status})"
        return f"{reason}: {last}" if last else reason

    def _drain(self) -> None:
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return
            self._progress_line(line)

    def _progress_line(self, line: str) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            return  # not a JSON record (e.g. a library's warning)
        if isinstance(record, dict) and isinstance(record.get("worker_exit"), int):
            self.worker_exit = record["worker_exit"]
            return
        try:
            fraction, message = float(record["fraction"]), str(record["message"])
        except (KeyError, TypeError, ValueError):
            if isinstance(record, dict):
                self.records.append(record)
            return
        elapsed = time.monotonic() - self._started
        self.fraction = min(max(fraction, 0.0), 1.0)
        self.message = message
        self.seconds_left = elapsed * (1 - fraction) / fraction if fraction > 0.02 else None


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has ended
        os.killpg(group, signum)


def _exited(process: subprocess.Popen) -> bool:
    """Whether ``process`` has ended, without reaping it where the platform allows (its pid stays reserved)."""
    if not hasattr(os, "waitid"):
        return process.poll() is not None
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # already reaped


def _pump(stream, sink) -> None:
    for line in stream:
        sink(line)
    stream.close()


class PolledJob(Protocol):
    def poll(self) -> JobState: ...

    def cancel(self) -> None: ...


def wait_for(job: PolledJob, timeout: float | None = None, interval: float = 0.1) -> JobState:
    """Poll ``job`` until it ends (scripts, tests); cancel it after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not (state := job.poll()).finished:
        if deadline is not None and time.monotonic() > deadline:
            job.cancel()
            return job.poll()
        time.sleep(interval)
    return state

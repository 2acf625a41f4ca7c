"""A ``python -m RegC2PLib ...`` worker process with JSON-lines progress, polled without blocking.

Long jobs (translation, training) run in a separate process so Slicer stays responsive:
``PythonSlicer`` inside Slicer (Slicer's own Python), else this interpreter, with the
module folder on ``PYTHONPATH``. The worker prints ``{"fraction": f, "message": m}``
lines on stdout (``--progress jsonl``) and ``regc2p: error: ...`` on stderr; reader
threads collect both, and :meth:`WorkerProcess.poll` (called from a timer) turns them
into the latest :class:`JobState` fields without ever waiting.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
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
    """``<python> -m RegC2PLib <arguments>`` started in ``cwd``; progress and stderr collected by threads.

    ``what`` names the job in crash messages ("the training process was killed ...").
    ``env`` adds to (or overrides) this process's environment.
    """

    def __init__(
        self,
        arguments: Sequence[str],
        cwd: Path,
        what: str,
        python: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.command = [python or python_executable(), "-m", "RegC2PLib", *arguments]
        self.cwd = Path(cwd)
        self.what = what
        self.fraction = 0.0
        self.message = "starting"
        self.seconds_left: float | None = None
        self._env = dict(env or {})
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._stderr: list[str] = []
        self._readers: list[threading.Thread] = []
        self._started = 0.0
        self._returncode: int | None = None

    def start(self) -> None:
        """Start the process (returns at once)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(MODULE_DIR), *filter(None, [env.get("PYTHONPATH")])])
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self._env)
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
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )
        self._started = time.monotonic()
        for stream, sink in ((self._process.stdout, self._lines.put), (self._process.stderr, self._stderr.append)):
            reader = threading.Thread(target=_pump, args=(stream, sink), daemon=True)
            reader.start()
            self._readers.append(reader)

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
        if self._process.poll() is None:
            return None
        for reader in self._readers:
            reader.join(timeout=5)
        self._drain()
        self._returncode = self._process.returncode
        return self._returncode

    def terminate(self, timeout: float = 5.0) -> None:
        """End the worker now (terminate, then kill after ``timeout`` s); no-op when it has ended."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def error_line(self, returncode: int) -> str:
        """The worker's one-line ``regc2p: error: ...`` reason, or a description of the crash."""
        stderr = self.stderr
        for line in reversed(stderr.splitlines()):
            if line.startswith(ERROR_PREFIX):
                return line[len(ERROR_PREFIX) :].strip()
        if returncode < 0:
            return f"the {self.what} process was killed (signal {-returncode}); if memory ran out, use a smaller batch size"
        last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
        reason = f"the {self.what} process failed (exit status {returncode})"
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
            fraction, message = float(record["fraction"]), str(record["message"])
        except (ValueError, KeyError, TypeError):
            return  # not a progress record (e.g. a library's warning)
        elapsed = time.monotonic() - self._started
        self.fraction = min(max(fraction, 0.0), 1.0)
        self.message = message
        self.seconds_left = elapsed * (1 - fraction) / fraction if fraction > 0.02 else None


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

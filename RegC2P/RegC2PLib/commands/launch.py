"""``regc2p train --processes N``: the same command as N processes on this machine, through torchrun.

It runs ``python -m torch.distributed.run --standalone --nproc_per_node N -m RegC2PLib
train ...`` (the ``torchrun`` launcher; ``--standalone`` finds a free port, so several
runs can share a machine) with the other options unchanged, waits for it and reports
like the one-process command: 0 when the run finished, 130 when it stopped cleanly
(Ctrl-C or ``RUN/STOP``), else the launcher's failure status. On a CPU-only run each
process gets an even share of the cores (``OMP_NUM_THREADS``) unless that is set.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError

PROCESSES_FLAG = "--processes"
MODEL_FILE = "model.safetensors"  # what a finished run writes last (RegC2PLib.training.runner.MODEL_FILE)


def torchrun_command(python: str, processes: int, arguments: Sequence[str]) -> list[str]:
    """The command that runs ``regc2p ARGUMENTS`` as ``processes`` processes on this machine."""
    launcher = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return [*launcher, "-m", "RegC2PLib", *arguments]


def under_torchrun() -> bool:
    """Whether torchrun's agent started this process."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def without_processes(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--processes N`` (or ``--processes=N``)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == PROCESSES_FLAG:
            skip = True
        elif not arg.startswith(PROCESSES_FLAG + "="):
            out.append(arg)
    return out


def launch(processes: int, argv: Sequence[str], out: Path) -> int:
    """Run ``regc2p ARGV`` (without ``--processes``) as ``processes`` torchrun workers and wait.

    SIGTERM is passed on to torchrun, which ends its workers; Ctrl-C reaches the workers
    directly (the terminal signals the whole process group) and they stop cleanly.
    """
    if under_torchrun():
        raise InputError(f"{PROCESSES_FLAG} starts torchrun itself; leave it out when torchrun launches regc2p")
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))  # used on the CPU only
    before = _identity(out / MODEL_FILE)
    child = subprocess.Popen(torchrun_command(sys.executable, processes, without_processes(argv)), env=env)
    interrupted: list[int] = []
    handlers = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: child.terminate()),
        # The workers got the interrupt too and stop after their step; wait for them.
        signal.SIGINT: signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum)),
    }
    try:
        status = child.wait()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    after = _identity(out / MODEL_FILE)
    if status == 0 and after is not None and after != before:
        return 0
    # A clean stop ends torchrun's workers with status 0 (so its agent restarts nothing) and no new model file.
    return 130 if status == 0 or interrupted else status


def _identity(path: Path) -> tuple[int, int] | None:
    """(inode, modification time in ns) of ``path``, None when absent: an atomic rewrite changes it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns

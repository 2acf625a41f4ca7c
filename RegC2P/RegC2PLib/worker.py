"""``python -m RegC2PLib.worker ARGS``: run ``regc2p ARGS`` in a child process and report how it ended.

GUIs start long jobs through a launcher: Slicer's ``PythonSlicer`` is a CTKAppLauncher
that runs the real Python as its own child and reports a child killed by a signal (the
out-of-memory killer, a crash) as a plain exit status 1. This small parent sits below
such a launcher, next to the work: it runs ``python -m RegC2PLib ARGS`` with the same
interpreter and environment, the child writing straight to the same stdout and stderr,
and when the child has ended prints one JSON line ``{"worker_exit": status}`` on stdout
(``status`` as :attr:`subprocess.Popen.returncode`: negative for a POSIX signal) and
exits with that status (128 + N for signal N). It imports nothing but the standard
library, so it costs a few MB beside the work.

Ctrl-C reaches the whole foreground process group; the child handles it (training
stops cleanly) and this parent keeps waiting for it.
"""

from __future__ import annotations

import json
import subprocess
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    child = subprocess.Popen([sys.executable, "-m", "RegC2PLib", *argv])
    while True:
        try:
            status = child.wait()
            break
        except KeyboardInterrupt:
            continue  # the child got the same interrupt and decides how to end
    print(json.dumps({"worker_exit": status}), flush=True)
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main())

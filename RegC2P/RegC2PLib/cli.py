"""The ``regc2p`` command line: one sub-command per module in ``commands/``.

Every sub-command module exposes ``register(subparsers)``, which adds its parser and
sets ``func(args) -> int``. A :class:`~RegC2PLib.errors.RegC2PError` becomes a one-line
``regc2p: error: ...`` message and exit status 2 (so does an unforeseen ``OSError`` or
``MemoryError``, the machine's answer rather than a bug); Ctrl-C exits with 130, also
while the start-up imports run.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import RegC2PError, one_line

# Sub-command modules, in the order the help lists them (pipeline order).
COMMANDS = ("demo", "phantom", "train", "translate", "evaluate", "devices")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regc2p",
        description="Synthetic PET from CT: slice-wise GAN translation with 3D refinement (RegC2P).",
    )
    parser.add_argument("--version", action="version", version=f"regc2p {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:  # each command imports torch and SimpleITK when it runs (seconds): Ctrl-C may come then too
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # for commands that start themselves again
        return int(args.func(args) or 0)
    except RegC2PError as exc:
        print(f"regc2p: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused something no check foresaw (a disk filling up meanwhile, ...)
        print(f"regc2p: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("regc2p: error: out of memory; use a smaller volume or batch size, or a machine with more memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("regc2p: interrupted", file=sys.stderr)
        return 130

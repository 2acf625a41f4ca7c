"""Terminal progress for sub-commands: a tqdm bar, JSON lines for other programs, or nothing."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ..progress import ProgressCallback, no_progress

PROGRESS_MODES = ("bar", "jsonl", "none")


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="bar",
        help="bar: a progress bar on stderr; jsonl: one {'fraction', 'message'} JSON object per line on stdout "
        "(for GUIs such as the Slicer module); none: quiet",
    )


@contextmanager
def progress_display(mode: str, description: str) -> Iterator[ProgressCallback]:
    """Yield a :data:`ProgressCallback` that renders in ``mode``."""
    if mode == "none":
        yield no_progress
    elif mode == "jsonl":

        def emit(fraction: float, message: str) -> None:
            print(json.dumps({"fraction": round(fraction, 4), "message": message}), flush=True)

        yield emit
    else:
        from tqdm import tqdm

        bars: list[tqdm] = []  # made at the first report: a job refused before any work draws no bar

        def update(fraction: float, message: str) -> None:
            if not bars:
                bar_format = "{l_bar}{bar}| {elapsed}<{remaining} {postfix}"
                bars.append(tqdm(total=1000, desc=description, unit="‰", file=sys.stderr, bar_format=bar_format))
            bars[0].update(round(fraction * 1000) - bars[0].n)
            bars[0].set_postfix_str(message, refresh=False)

        try:
            yield update
        finally:
            for bar in bars:
                bar.close()

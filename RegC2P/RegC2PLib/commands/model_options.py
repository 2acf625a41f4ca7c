"""``--sha256``: the expected SHA-256 of the ``--model`` file, for commands that load one."""

from __future__ import annotations

import argparse


def add_sha256_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sha256",
        metavar="HEX",
        help="expected SHA-256 of the model file, from a source you trust (where you got the file); "
        "the file is refused if it differs. The shipped default model is always checked against its published digest",
    )

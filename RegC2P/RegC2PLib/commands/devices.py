"""``regc2p devices``: the compute devices this installation can use, with the reason for the others."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "devices",
        help="list the compute devices (cpu, cuda, mps) this installation can use",
        description="List cpu, cuda and mps: usable, or why not (no GPU, a torch build without CUDA, ...).",
    )
    p.add_argument("--json", action="store_true", help='print one JSON object {"devices": {name: null or reason}} (for GUIs)')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference.device import available_devices

    reasons = available_devices()
    if args.json:
        print(json.dumps({"devices": reasons}), flush=True)
    else:
        for name, reason in reasons.items():
            print(f"{name:<5} {'usable' if reason is None else 'not usable: ' + reason}")
    return 0

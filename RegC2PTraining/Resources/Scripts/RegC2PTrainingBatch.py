"""Train a RegC2P model with the RegC2P Training module's logic, in Slicer or plain Python.

In Slicer (no window)::

    Slicer --no-splash --no-main-window --python-script RegC2PTrainingBatch.py \\
        --data DATASET_FOLDER --out RUN_FOLDER [--image-size 128] [--epochs 80]

In a plain Python with the ``slicer-core`` wheel and torch (same arguments)::

    python RegC2PTrainingBatch.py --data DATASET_FOLDER --out RUN_FOLDER

It takes every option of ``regc2p train``, with the same defaults (``regc2p train
--help``), plus: ``--pair CT PET [ALIGNED_PET]`` (repeatable) instead of ``--data`` trains
on volume files loaded into the scene as CT/PET volume nodes, converted with their
geometry (``--pairs-folder`` keeps them); ``--no-validation`` allows fewer than 3
studies; ``--background`` trains in a worker process (as the module does inside Slicer).
``--resume`` continues a stopped run (``--out`` only). Ctrl-C, or creating
RUN_FOLDER/STOP, stops cleanly after the current step. Exit status: 0 done, 130 stopped
(continue with --resume), 2 error (one ``regc2p: error: ...`` line on stderr), 1 with a
traceback for an unexpected error; the script always ends Slicer.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

# The folder holding RegC2PLib and RegC2PSlicer: two levels up in an installed extension
# (<modules>/Resources/Scripts/), the RegC2P module folder in the source tree.
# Everything else is imported inside functions, so that any failure ends in run_script's handling.
SCRIPT = Path(globals().get("__file__") or sys.argv[0]).resolve()
sys.path[:0] = [str(p) for p in (SCRIPT.parents[2], SCRIPT.parents[3] / "RegC2P") if (p / "RegC2PSlicer").is_dir()][:1]

STOPPED = 130


def build_parser() -> argparse.ArgumentParser:
    from RegC2PLib.commands import train as train_command

    p = argparse.ArgumentParser(prog="RegC2PTrainingBatch.py", description=__doc__.split("\n\n")[0])
    train_command.add_options(p)
    p.add_argument(
        "--pair", nargs="+", action="append", metavar="FILE", help="CT PET [ALIGNED_PET] volume files of one study (repeat)"
    )
    p.add_argument("--pairs-folder", type=Path, help="with --pair: keep the converted pairs here (default: temporary)")
    p.add_argument("--no-validation", action="store_true", help="allow fewer than 3 studies (no validation split)")
    p.add_argument("--background", action="store_true", help="train in a worker process (as the module does in Slicer)")
    return p


def make_job(args: argparse.Namespace, scene):
    """The training job the arguments ask for (a new run on --data or --pair, or --resume)."""
    from RegC2PLib.commands import train as train_command
    from RegC2PLib.errors import InputError
    from RegC2PLib.volume_io import read_image
    from RegC2PSlicer.training import TrainingJob, TrainingSettings
    from RegC2PSlicer.volumes import add_volume_node

    options = train_command.run_options(args, "")
    if options.resume:
        return TrainingJob.open(args.out, options.resume_overrides)
    if args.pair and options.data:
        raise InputError("give either --data DATASET_FOLDER or --pair CT PET (repeatable), not both")
    settings = TrainingSettings(options.model, options.train, require_validation=not args.no_validation)
    if options.data:
        return TrainingJob.from_folder(options.data, args.out, settings)
    if not args.pair:
        raise InputError("give --data DATASET_FOLDER, --pair CT PET (repeatable) or --resume")
    pairs = []
    for number, files in enumerate(args.pair, 1):
        if len(files) not in (2, 3):
            raise InputError(f"--pair {number} needs CT PET [ALIGNED_PET] files, got {len(files)}")
        roles = ("CT", "PET", "aligned PET")
        pairs.append(tuple(add_volume_node(scene, read_image(f), f"{roles[i]} {number}") for i, f in enumerate(files)))
    return TrainingJob.from_nodes(pairs, args.out, settings, args.pairs_folder)


def run_in_background(job, progress) -> int:
    """Start the worker, show its progress, stop it cleanly on Ctrl-C."""
    job.start()
    previous = signal.signal(signal.SIGINT, lambda *_: job.request_stop())
    try:
        while not job.poll().finished:
            progress(job.state.fraction, job.state.message)
            time.sleep(0.2)
    finally:
        signal.signal(signal.SIGINT, previous)
    state = job.state
    if state.state == "stopped":
        print(f"regc2p: {state.message}", file=sys.stderr)
        return STOPPED
    if state.state != "succeeded":
        print(f"regc2p: error: {state.error or state.message}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from RegC2PLib.commands.progress_display import progress_display
    from RegC2PLib.errors import RegC2PError
    from RegC2PLib.training.loop import StopRequest, TrainingStopped
    from RegC2PSlicer.batch import work_scene

    try:
        with work_scene() as scene, progress_display(args.progress, "train") as progress:
            job = make_job(args, scene)
            print(f"training into {job.out} (data: {', '.join(map(str, job.data_folders))})", file=sys.stderr, flush=True)
            if args.background:
                status = run_in_background(job, progress)
                if status:
                    return status
            else:
                stop = StopRequest(job.out / "STOP")
                previous = signal.signal(signal.SIGINT, lambda *_: setattr(stop, "flag", True))
                try:
                    job.run(progress, stop, notify=lambda text: print(text, file=sys.stderr))
                finally:
                    signal.signal(signal.SIGINT, previous)
    except TrainingStopped as exc:
        print(f"regc2p: {exc}", file=sys.stderr)
        return STOPPED
    except (RegC2PError, OSError) as exc:
        print(f"regc2p: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {job.model_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        from RegC2PSlicer.batch import run_script
    except ImportError:
        if hasattr(sys.modules.get("slicer"), "app"):  # inside Slicer: end it, or it would wait forever
            sys.modules["slicer"].util.exit(1)
        raise
    run_script(main)

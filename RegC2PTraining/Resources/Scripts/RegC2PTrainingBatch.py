"""Train a RegC2P model with the RegC2P Training module's logic, in Slicer or plain Python.

In Slicer (no window)::

    Slicer --no-splash --no-main-window --python-script RegC2PTrainingBatch.py \\
        --data DATASET_FOLDER --out RUN_FOLDER [--image-size 128] [--epochs 80]

In a plain Python with the ``slicer-core`` wheel and torch (same arguments)::

    python RegC2PTrainingBatch.py --data DATASET_FOLDER --out RUN_FOLDER

``--data`` is a dataset folder (one sub-folder per study with ``ct.*`` and ``pet.*``,
see docs/datasets.md); ``--pair CT PET`` (repeatable) instead trains on volume files
loaded into the scene as CT/PET volume nodes, converted with their geometry. The run
folder receives run.json, split.json, checkpoints/, metrics.jsonl, curves.png and
model.safetensors. ``--resume`` continues a stopped run (``--out`` only). Training runs
in this process, or with ``--background`` in a worker process whose progress is shown
(as the module does inside Slicer); ``--processes N`` trains in the background as N
processes, one per GPU (docs/training-at-scale.md). Ctrl-C, or creating RUN_FOLDER/STOP, stops cleanly
after the current step. Exit status: 0 done, 130 stopped (continue with --resume),
2 error (one ``regc2p: error: ...`` line on stderr).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

# The folder holding RegC2PLib and RegC2PSlicer: the RegC2P module folder beside this
# module's folder in the source tree; the shared scripted-modules folder (two levels up,
# <modules>/Resources/Scripts/RegC2PTrainingBatch.py) in an installed extension.
SCRIPT = Path(globals().get("__file__") or sys.argv[0]).resolve()
for candidate in (SCRIPT.parents[3] / "RegC2P", SCRIPT.parents[2]):
    if (candidate / "RegC2PSlicer").is_dir() and str(candidate) not in sys.path:
        sys.path.insert(0, str(candidate))
        break

import slicer  # noqa: E402

from RegC2PLib.errors import RegC2PError  # noqa: E402
from RegC2PLib.volume_io import read_image  # noqa: E402
from RegC2PSlicer.headless import HeadlessScene  # noqa: E402
from RegC2PSlicer.volumes import add_volume_node  # noqa: E402

try:  # torch: inside Slicer it comes from the PyTorch extension
    from RegC2PLib.commands.train import add_training_options, run_options
    from RegC2PLib.training.loop import StopRequest, TrainingStopped
    from RegC2PSlicer.training import TrainingJob, TrainingSettings
except ImportError as exc:
    print(f"regc2p: error: {exc}; in Slicer, install the PyTorch extension (and open the RegC2P module once)", file=sys.stderr)
    if hasattr(slicer, "app"):
        slicer.util.exit(2)
    sys.exit(2)

STOPPED = 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="RegC2PTrainingBatch.py", description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, help="dataset folder (one sub-folder per study)")
    source.add_argument(
        "--pair", nargs="+", action="append", metavar="FILE", help="CT PET [ALIGNED_PET] volume files of one study (repeat)"
    )
    p.add_argument("--out", required=True, type=Path, help="run folder (new, or an existing one with --resume)")
    p.add_argument("--pairs-folder", type=Path, help="with --pair: keep the converted pairs here (default: temporary)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-validation", action="store_true", help="allow fewer than 3 studies (no validation split)")
    p.add_argument("--background", action="store_true", help="train in a worker process (as the module does in Slicer)")
    p.add_argument(
        "--processes", type=int, default=1, metavar="N", help="train as N processes, one per GPU (torchrun; in the background)"
    )
    add_training_options(p)  # the same network and training options as `regc2p train`
    return p


def make_job(args: argparse.Namespace, scene: slicer.vtkMRMLScene) -> TrainingJob:
    """The training job the arguments ask for (a new run on --data or --pair, or --resume)."""
    options = run_options(args, "")
    if options.resume:
        return TrainingJob.open(args.out, options.resume_overrides, processes=args.processes)
    settings = TrainingSettings(options.model, options.train, not args.no_validation, args.processes)
    if args.data is not None:
        return TrainingJob.from_folder(args.data, args.out, settings)
    if not args.pair:
        raise RegC2PError("give --data DATASET_FOLDER, --pair CT PET (repeatable) or --resume")
    pairs = []
    for number, files in enumerate(args.pair, 1):
        if len(files) not in (2, 3):
            raise RegC2PError(f"--pair {number} needs CT PET [ALIGNED_PET] files, got {len(files)}")
        roles = ("CT", "PET", "aligned PET")
        pairs.append(tuple(add_volume_node(scene, read_image(f), f"{roles[i]} {number}") for i, f in enumerate(files)))
    return TrainingJob.from_nodes(pairs, args.out, settings, args.pairs_folder)


class Reporter:
    """Progress lines on stderr: every whole percent, at most one every two seconds."""

    def __init__(self) -> None:
        self.shown, self.last = -1, 0.0

    def __call__(self, fraction: float, message: str) -> None:
        percent = int(fraction * 100)
        if percent != self.shown and (time.monotonic() - self.last > 2.0 or percent == 100):
            self.shown, self.last = percent, time.monotonic()
            print(f"  {percent:3d}% {message}", file=sys.stderr, flush=True)


def run_in_background(job: TrainingJob, report: Reporter) -> int:
    """Start the worker, show its progress, stop it cleanly on Ctrl-C."""
    job.start()
    previous = signal.signal(signal.SIGINT, lambda *_: job.request_stop())
    try:
        while not job.poll().finished:
            report(job.state.fraction, job.state.message)
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
    in_slicer = hasattr(slicer, "app")
    headless = None if in_slicer else HeadlessScene()
    scene = slicer.mrmlScene if in_slicer else headless.scene
    job = None
    try:
        job = make_job(args, scene)
        print(f"training into {job.out} (data: {job.data_folder})", file=sys.stderr, flush=True)
        report = Reporter()
        if args.background or job.processes > 1:
            status = run_in_background(job, report)
            if status:
                return status
        else:
            stop = StopRequest(job.out / "STOP")
            previous = signal.signal(signal.SIGINT, lambda *_: setattr(stop, "flag", True))
            try:
                job.run(report, stop, notify=lambda text: print(text, file=sys.stderr))
            finally:
                signal.signal(signal.SIGINT, previous)
    except TrainingStopped as exc:
        print(f"regc2p: {exc}", file=sys.stderr)
        return STOPPED
    except (RegC2PError, OSError) as exc:
        print(f"regc2p: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if headless is not None:
            headless.close()
    print(f"wrote {job.model_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    status = main(sys.argv[1:])
    if hasattr(slicer, "app"):
        slicer.util.exit(status)
    else:
        sys.exit(status)

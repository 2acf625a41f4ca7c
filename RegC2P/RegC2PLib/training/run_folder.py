"""The run-folder validator: everything a resume will read, checked before anything runs.

A damaged or edited run folder is refused with one line naming the file and the field,
instead of a traceback later, a segmentation fault in the warp's backward pass (NaN
weights), or — worst — a run that silently continues with other settings:

* ``run.json``: valid JSON with ``model``, ``train``, ``data`` (the dataset folders) and
  ``command`` of the right types, and configurations that validate;
* each checkpoint: the structure the training loop reads, the networks' tensor names
  and shapes, finite weights and optimiser moments, and the run configuration it was
  written with equal to ``run.json``'s (except :data:`RESUME_OVERRIDES`, which a resume
  may change) — an edit to ``lr``, ``image_size`` or ``seed`` would otherwise be
  ignored or applied mid-run;
* ``metrics.jsonl``: one JSON record per line; a last line cut short by a kill is dropped.

A new run that fails before it starts training leaves nothing (:func:`discard_new_run`),
so the retry is not told to ``--resume`` a run that never began.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import InputError, ModelFileError, RegC2PError, one_line
from ..networks import Discriminator, Generator, Refiner, RegistrationNet
from .checkpoint import load_checkpoint
from .config import RESUME_OVERRIDES, TrainConfig
from .sources import DataSource, sources_from_json

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_STAGES = ("stage1", "stage2")
# Everything a run writes into its folder (what a failed new run removes again), besides split-NAME.json of mixed runs.
RUN_ENTRIES = (RUN_FILE, "split.json", "cache", "checkpoints", METRICS_FILE, "curves.png", "init.safetensors", "STOP")
_COUNTERS = {"epoch": int, "step_in_epoch": int, "step": int, "best_score": float, "validated_step": int, "completed": bool}
_RESTORE = "restore it from a backup, or start a new run"
_JSON_KIND = {dict: "object", str: "string", list: "array", (list, str): "array"}


@dataclass(frozen=True)
class RunRecord:
    """A validated ``run.json``: configs (``train`` with the resume's overrides applied), dataset folders, the raw object."""

    model: ModelConfig
    train: TrainConfig
    sources: tuple[DataSource, ...]
    raw: dict[str, Any]


def config_record(model: ModelConfig, train: TrainConfig) -> dict[str, Any]:
    """What a checkpoint stores of the run's configuration, to be compared with ``run.json`` on resume."""
    return {"model": model.to_dict(), "train": train.to_dict()}


def validate_run_folder(out: Path, overrides: dict[str, Any]) -> RunRecord:
    """``run.json``, every checkpoint and ``metrics.jsonl`` of run folder ``out``, checked
    (:class:`InputError` with the reason); returns ``run.json`` with ``overrides`` applied."""
    record = read_run_record(out)
    try:
        train = record.train.replace(**overrides)
    except (TypeError, ValueError) as exc:
        raise InputError(f"invalid training options: {one_line(exc)}") from exc
    for stage in CHECKPOINT_STAGES:
        for kind in ("last", "best"):
            path = out / "checkpoints" / f"{stage}_{kind}.pt"
            if path.exists():
                check_checkpoint(path, stage, kind, record.model, record.train)
    if (out / METRICS_FILE).exists():
        read_metrics(out / METRICS_FILE)
    return dataclasses.replace(record, train=train)


def read_run_record(out: Path) -> RunRecord:
    """The validated ``run.json`` of run folder ``out``."""
    path = out / RUN_FILE
    if not path.is_file():
        raise InputError(f"{out} is not a RegC2P run folder (no run.json); start a new run without --resume")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not valid JSON ({one_line(exc)}); {_RESTORE}") from exc
    if not isinstance(raw, dict):
        raise InputError(f"{path} does not hold a JSON object; {_RESTORE}")
    # "data": a list of dataset folders (a plain path in runs of one folder made before mixed training)
    keys = (("model", dict), ("train", dict), ("data", (list, str)), ("command", str), ("resumes", list), ("init", dict))
    for key, kind in keys:
        if key not in raw and key not in ("resumes", "init"):
            raise InputError(f"{path} lacks {key!r}; {_RESTORE}")
        if key in raw and not isinstance(raw[key], kind):
            raise InputError(f"{path}: {key!r} must be a JSON {_JSON_KIND[kind]}, not {type(raw[key]).__name__}; {_RESTORE}")
    try:
        model = ModelConfig.from_dict(raw["model"])
    except ModelFileError as exc:
        raise InputError(f"{path}: the model configuration is invalid ({one_line(exc.__cause__ or exc)}); {_RESTORE}") from exc
    try:
        train = TrainConfig.from_dict(raw["train"])
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: the training configuration is invalid ({one_line(exc)}); {_RESTORE}") from exc
    try:
        sources = sources_from_json(raw["data"])
    except InputError as exc:
        raise InputError(f"{path}: {one_line(exc)}; {_RESTORE}") from exc
    return RunRecord(model, train, sources, raw)


def _stage_modules(stage: str, model: ModelConfig, train: TrainConfig) -> dict[str, nn.Module]:
    """The networks a checkpoint of ``stage`` holds, built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        if stage == "stage2":
            return {"refiner": Refiner(model.refiner)}
        modules: dict[str, nn.Module] = {"generator": Generator(model.generator)}
        modules["discriminator"] = Discriminator(model.discriminator)
        if train.mode == "regc2p":
            modules["registration"] = RegistrationNet(model.registration)
        return modules


def check_checkpoint(path: Path, stage: str, kind: str, model: ModelConfig, train: TrainConfig) -> None:
    """Refuse a checkpoint the loop could not use as it is: wrong structure, networks that
    are not the run's, non-finite tensors, or a run configuration other than ``run.json``'s."""
    try:
        state = load_checkpoint(path)
    except RegC2PError as exc:
        raise InputError(one_line(exc)) from exc

    def refuse(reason: str) -> InputError:
        return InputError(f"checkpoint {path} {reason}; delete it to restart {stage} (or {_RESTORE})")

    needed = ("modules", "counters") if kind == "best" else ("stage", "modules", "optimizers", "schedulers", "counters", "rng")
    if not isinstance(state, dict) or any(key not in state for key in needed):
        missing = [key for key in needed if not isinstance(state, dict) or key not in state]
        raise refuse(f"is incomplete (no {', '.join(missing)})")
    if kind == "last" and state["stage"] != stage:
        raise refuse(f"is for {state['stage']!r}, not {stage!r}")
    counters = state["counters"]
    if not isinstance(counters, dict) or any(not isinstance(counters.get(k), t) for k, t in _COUNTERS.items()):
        raise refuse("has malformed counters")
    modules = state["modules"]
    for name, net in _stage_modules(stage, model, train).items():
        weights = modules.get(name) if isinstance(modules, dict) else None
        if not isinstance(weights, dict):
            raise refuse(f"holds no {name} weights")
        expected = {key: tuple(value.shape) for key, value in net.state_dict().items()}
        found = {key: tuple(value.shape) for key, value in weights.items() if isinstance(value, torch.Tensor)}
        if found != expected:
            raise refuse(f"holds {name} weights of another network than run.json describes")
    for where, tensor in _tensors(state.get("modules"), "modules") + _tensors(state.get("optimizers"), "optimizers"):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise refuse(f"holds NaN or infinite values in {where}")
    if kind == "last" and "config" in state:  # checkpoints of older versions hold no config
        _compare_config(path, state["config"], config_record(model, train))


def _tensors(tree: Any, where: str) -> list[tuple[str, torch.Tensor]]:
    """Every tensor in nested dicts/lists, with its path."""
    if isinstance(tree, torch.Tensor):
        return [(where, tree)]
    if isinstance(tree, dict):
        return [found for key, value in tree.items() for found in _tensors(value, f"{where}.{key}")]
    if isinstance(tree, (list, tuple)):
        return [found for i, value in enumerate(tree) for found in _tensors(value, f"{where}[{i}]")]
    return []


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def _compare_config(path: Path, stored: Any, current: dict[str, Any]) -> None:
    """Refuse a run.json whose configuration differs from the one ``path`` was written with, naming the field."""
    ignored = {f"train.{name}" for name in RESUME_OVERRIDES}
    theirs, ours = _flatten(stored), _flatten(current)
    for field in sorted((set(theirs) | set(ours)) - ignored):
        if theirs.get(field) != ours.get(field):
            raise InputError(
                f"run.json disagrees with checkpoint {path.name}: {field} is {ours.get(field)!r} in run.json but "
                f"{theirs.get(field)!r} in the checkpoint; undo the edit (a run's settings cannot change mid-run — start "
                "a new run, e.g. with --init-from, for other settings)"
            )


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``; a last line cut short by a kill (not JSON) is left out."""
    try:
        lines = path.read_text().split("\n")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is unreadable ({one_line(exc)}); delete it to start a new log") from exc
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):  # the last line, without its newline: a write interrupted by a kill
                continue
            raise InputError(f"{path} line {number} is not a JSON record; delete that line to continue") from None
        if not isinstance(record, dict) or not isinstance(record.get("stage"), str) or not isinstance(record.get("step"), int):
            raise InputError(f"{path} line {number} is not a RegC2P metrics record; delete that line to continue")
        if record.get("kind") not in ("train", "val"):
            raise InputError(f"{path} line {number} has no kind train or val; delete that line to continue")
        records.append(record)
    return records


def discard_new_run(out: Path, created: bool) -> None:
    """Remove what a new run wrote into ``out`` before it failed (and ``out`` itself if ``created``)."""
    for entry in [*(out / name for name in RUN_ENTRIES), *out.glob("split-*.json")]:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if created:
        with contextlib.suppress(OSError):  # something else is in it now: leave it
            out.rmdir()

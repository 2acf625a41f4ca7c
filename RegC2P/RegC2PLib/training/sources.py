"""The dataset folders a run trains on, with their weights and split manifests.

A run may mix several folders — real studies, anatomy phantoms, whole-body phantoms —
each given on the command line as ``[NAME=]DIR[:WEIGHT]``: NAME labels the folder's
validation figures and its split manifest (default: the folder's name), WEIGHT its share
of each training epoch (relative to the others; default 1). Each folder is split by study
on its own (``RUN/split.json`` for a run of one folder, ``RUN/split-NAME.json`` for each
folder of a mixed run), or takes a given manifest (``--split [NAME=]MANIFEST``).

Torch-free: the command line builds these before any training code is imported.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class DataSource:
    """One dataset folder of a run: ``path``; ``name`` (default: the folder's name);
    ``weight``, its share of each epoch relative to the other folders'; ``split``, a split
    manifest to use instead of a seeded split by study."""

    path: Path
    name: str = ""
    weight: float = 1.0
    split: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if not self.name:
            object.__setattr__(self, "name", self.path.resolve().name or "data")
        if not _NAME.match(self.name):
            raise InputError(f"dataset name {self.name!r} must be letters, digits, '_', '-' or '.'; name it with NAME=DIR")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise InputError(f"dataset {self.name}: weight {self.weight} must be a positive number")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "weight": self.weight}


def parse_source(spec: str) -> DataSource:
    """``[NAME=]DIR[:WEIGHT]`` -> a :class:`DataSource`. NAME is what precedes the first '=' when it
    is a plain name (no path separator); a ':' is a weight only when a number follows it."""
    name, sep, rest = spec.partition("=")
    if not sep or not _NAME.match(name):
        name, rest = "", spec
    path, weight = rest, 1.0
    head, sep, tail = rest.rpartition(":")
    if sep and head:
        try:
            weight = float(tail)
            path = head
        except ValueError:
            pass  # a ':' in the path itself
    return DataSource(Path(path), name, weight)


def with_splits(sources: Sequence[DataSource], specs: Sequence[str]) -> tuple[DataSource, ...]:
    """``sources`` with the manifests ``[NAME=]MANIFEST`` of ``specs`` (no NAME: the only source)."""
    result = {s.name: s for s in sources}
    if len(result) != len(sources):
        raise InputError("two datasets have the same name; name them with NAME=DIR")
    for spec in specs:
        name, _, manifest = spec.rpartition("=")
        if not name:
            if len(sources) != 1:
                raise InputError(f"--split {spec}: say which dataset it splits (NAME=MANIFEST); the run has {len(sources)}")
            name = sources[0].name
        if name not in result:
            raise InputError(f"--split {spec}: no dataset is named {name!r} (the datasets: {', '.join(result)})")
        result[name] = DataSource(result[name].path, name, result[name].weight, Path(manifest))
    return tuple(result.values())


def manifest_path(run: Path, source: DataSource, n_sources: int) -> Path:
    """Where a run keeps ``source``'s split: ``split.json`` for a run of one folder, else ``split-NAME.json``."""
    return run / ("split.json" if n_sources == 1 else f"split-{source.name}.json")


def sources_from_json(data: Any) -> tuple[DataSource, ...]:
    """The sources recorded in ``run.json`` (a list of objects; a plain path from runs of one folder)."""
    if isinstance(data, str):
        return (DataSource(Path(data)),)
    try:
        return tuple(DataSource(Path(d["path"]), str(d["name"]), float(d["weight"])) for d in data)
    except (TypeError, KeyError, ValueError) as exc:
        raise InputError(f"run.json lists its datasets in a form this version cannot read ({exc})") from exc

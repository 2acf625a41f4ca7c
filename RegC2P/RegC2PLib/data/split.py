"""Train/validation/test split by study (never by slice), seeded, kept in a JSON manifest.

All slices of a study land in one subset, so no patient is seen in training and in
testing. The manifest records the seed, the fractions and the study names of each
subset, so a run can be repeated on exactly the same studies.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import values
from ..atomic import atomic_path
from ..choices import SUBSETS
from ..errors import InputError, one_line
from .studies import Study

MANIFEST_FORMAT = "regc2p-split"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Split:
    """Study names per subset (each sorted), with the seed and fractions that made them."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    seed: int
    fractions: tuple[float, float, float]

    def subset(self, name: str) -> tuple[str, ...]:
        if name not in SUBSETS:
            raise InputError(f"unknown subset {name!r}; choose one of {', '.join(SUBSETS)}")
        return getattr(self, name)

    def to_dict(self) -> dict[str, object]:
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "seed": self.seed,
            "fractions": list(self.fractions),
            **{name: list(self.subset(name)) for name in SUBSETS},
        }


def check_seed(seed: int) -> None:
    """Refuse a split seed NumPy cannot take (:class:`InputError`)."""
    try:
        values.seed("the split seed", seed)
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def split_studies(names: Iterable[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Split study names into train/val/test.

    Counts: ``round(n * fraction)`` for val and test, at least one each when its fraction
    is positive and there are at least three studies; train gets the rest (at least
    one). The result depends only on the set of names, the fractions and the seed.
    """
    check_seed(seed)
    names = list(names)
    unique = sorted(set(names))
    if len(unique) != len(names):
        raise InputError("two studies have the same name; study names must be unique")
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) < 0 or fr[0] <= 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise InputError(f"split fractions {list(fractions)} must be three non-negative numbers summing to 1, train > 0")
    n = len(unique)
    if n == 0:
        raise InputError("no studies to split; check the dataset folder")
    counts = [round(n * f) for f in fr[1:]]
    if n >= 3:
        counts = [max(c, 1) if f > 0 else 0 for c, f in zip(counts, fr[1:])]
    while n - sum(counts) < 1:
        i = int(np.argmax(counts))
        counts[i] -= 1
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [unique[i] for i in order]
    n_val, n_test = counts
    val = shuffled[:n_val]
    test = shuffled[n_val : n_val + n_test]
    train = shuffled[n_val + n_test :]
    return Split(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)), int(seed), fr)  # type: ignore[arg-type]


def write_manifest(path: str | os.PathLike[str], split: Split) -> None:
    """Write the split as JSON, atomically."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"folder {path.parent} does not exist; create it before writing the split manifest")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(split.to_dict(), indent=1) + "\n")


def read_manifest(path: str | os.PathLike[str]) -> Split:
    """Read a manifest written by :func:`write_manifest`; refuses a study in two subsets."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"split manifest {path} does not exist; create one with a new split") from None
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not text at all (UnicodeDecodeError)
        raise InputError(f"split manifest {path} is not readable JSON ({one_line(exc)}); remove it to make a new split") from exc
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{path} is not a RegC2P split manifest; remove it to make a new split")
    if data.get("version") != MANIFEST_VERSION:
        raise InputError(
            f"split manifest {path} has version {data.get('version')} (expected {MANIFEST_VERSION}); make a new split"
        )
    try:
        subsets = {name: tuple(sorted(str(s) for s in data[name])) for name in SUBSETS}
        split = Split(**subsets, seed=int(data["seed"]), fractions=tuple(float(f) for f in data["fractions"]))  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"split manifest {path} is incomplete ({exc}); remove it to make a new split") from exc
    seen: dict[str, str] = {}
    for name in SUBSETS:
        for study in split.subset(name):
            if study in seen:
                raise InputError(f"split manifest {path} puts study {study} in both {seen[study]} and {name}; fix or remove it")
            seen[study] = name
    return split


def select(studies: Sequence[Study], split: Split, subset: str) -> list[Study]:
    """The studies of ``subset``; refuses a manifest naming a study that is not in ``studies``."""
    by_name = {s.name: s for s in studies}
    wanted = split.subset(subset)
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise InputError(
            f"the split manifest lists {len(missing)} {subset} stud{'y' if len(missing) == 1 else 'ies'} not found "
            f"or skipped in the dataset ({', '.join(missing[:5])}); restore them or make a new split"
        )
    return [by_name[n] for n in wanted]

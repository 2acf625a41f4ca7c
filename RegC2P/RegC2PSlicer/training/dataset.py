"""Training data from the scene: CT/PET volume node pairs written as a dataset folder, and dataset checks.

Each (CT node, PET node[, aligned PET node]) pair is checked and written with its exact
geometry into a dataset folder (``pair_01/ct.nrrd``, ``pet.nrrd``, ``pet_aligned.nrrd``,
plus ``pairs.json`` naming the nodes); the nodes are only read. A dataset folder given
directly is checked for enough usable studies (layout in ``docs/datasets.md``).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import SimpleITK as sitk
import slicer

from RegC2PLib.data.studies import check_overlap, check_pet_suv, discover_studies
from RegC2PLib.errors import InputError
from RegC2PLib.training.data_access import is_slice_layout
from RegC2PLib.volume_io import check_ct

from ..volumes import check_scalar_volume, image_from_volume_node
from .settings import TrainingSettings

# The split gives validation and test one study each only from three studies on
# (RegC2PLib.data.split.split_studies); with fewer, every study trains and nothing validates.
MIN_STUDIES_WITH_VALIDATION = 3
ROLE_FILES = {"ct": "ct.nrrd", "pet": "pet.nrrd", "pet_aligned": "pet_aligned.nrrd"}
PAIRS_FILE = "pairs.json"
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class TrainingPair:
    """One study from the scene: CT (HU), PET (SUVbw, may be misaligned), optional aligned PET (SUVbw).

    ``name`` is the study folder name (default ``pair_01``, ``pair_02``, ...).
    """

    ct: slicer.vtkMRMLScalarVolumeNode
    pet: slicer.vtkMRMLScalarVolumeNode
    pet_aligned: slicer.vtkMRMLScalarVolumeNode | None = None
    name: str | None = None

    def nodes(self) -> dict[str, slicer.vtkMRMLScalarVolumeNode]:
        """{role: node} for the roles present."""
        found = {"ct": self.ct, "pet": self.pet, "pet_aligned": self.pet_aligned}
        return {role: node for role, node in found.items() if node is not None or role != "pet_aligned"}


# typing.Union: this alias is evaluated at import, and Slicer 5.8's Python 3.9 has no `X | Y` for types.
PairLike = Union[TrainingPair, Sequence[Any]]


def as_pairs(pairs: Iterable[PairLike]) -> list[TrainingPair]:
    """Pairs from :class:`TrainingPair` objects or ``(ct, pet[, pet_aligned])`` tuples, named and checked.

    Refuses (one line, naming the pair) anything but scalar volumes, a node used twice,
    a PET under another transform than its CT, and duplicate or unusable names.
    """
    result: list[TrainingPair] = []
    items = list(pairs)
    width = max(2, len(str(len(items))))
    for number, item in enumerate(items, 1):
        if not isinstance(item, TrainingPair):
            if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or not 2 <= len(item) <= 3:
                raise InputError(f"pair {number} is not (CT, PET) or (CT, PET, aligned PET) volume nodes")
            item = TrainingPair(*item)
        name = item.name or f"pair_{number:0{width}d}"
        if not _STUDY_NAME.match(name):
            raise InputError(f"pair {number}: study name {name!r} must be letters, digits, '_', '-' or '.'")
        result.append(TrainingPair(item.ct, item.pet, item.pet_aligned, name))
    if not result:
        raise InputError("no CT/PET pairs given; select at least one CT volume and its PET")
    names = [pair.name for pair in result]
    if len(set(names)) != len(names):
        raise InputError(f"two pairs have the same study name ({', '.join(sorted({n for n in names if names.count(n) > 1}))})")
    seen: dict[str, str] = {}
    for pair in result:
        for role, node in pair.nodes().items():
            what = {"ct": "CT", "pet": "PET", "pet_aligned": "aligned PET"}[role]
            try:
                check_scalar_volume(node, what)
            except InputError as exc:
                raise InputError(f"{pair.name}: {exc}") from None
            if node.GetID() in seen:
                raise InputError(
                    f"{pair.name}: volume {node.GetName()!r} is already used in {seen[node.GetID()]}; "
                    "each volume belongs to one pair"
                )
            seen[node.GetID()] = pair.name
            if role != "ct" and _transform_id(node) != _transform_id(pair.ct):
                raise InputError(
                    f"{pair.name}: {what} {node.GetName()!r} is under another transform than CT {pair.ct.GetName()!r}; "
                    "harden the transforms first (Data module: right-click, Harden transform)"
                )
    return result


def _transform_id(node: slicer.vtkMRMLScalarVolumeNode) -> str | None:
    parent = node.GetParentTransformNode()
    return parent.GetID() if parent is not None else None


def write_pairs(pairs: Iterable[PairLike], folder: str | Path) -> Path:
    """Write the pairs as a dataset folder (one study folder each) with the nodes' exact geometry.

    ``folder`` must be new or empty. Each study gets ``ct.nrrd`` (CT voxel type kept),
    ``pet.nrrd`` and optionally ``pet_aligned.nrrd`` (voxel type kept), in LPS with the
    nodes' spacing (mm), origin and directions; ``pairs.json`` records which nodes
    made which study. Everything is checked before anything is written.
    """
    checked = as_pairs(pairs)
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"dataset folder {folder} already exists and is not empty; choose a new or empty folder")
    for pair in checked:  # cheap checks of every pair first, so nothing is half written
        _check_pair_images(pair)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    record = []
    try:
        for pair in checked:
            study = folder / pair.name
            study.mkdir()
            entry: dict[str, str] = {"study": pair.name}
            for role, node in pair.nodes().items():
                image = image_from_volume_node(node)
                sitk.WriteImage(image, str(study / ROLE_FILES[role]), False)
                entry[role] = node.GetName()
                entry[f"{role}_id"] = node.GetID()
            record.append(entry)
        (folder / PAIRS_FILE).write_text(json.dumps({"pairs": record}, indent=1) + "\n")
    except BaseException:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            for child in folder.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise
    return folder


def _check_pair_images(pair: TrainingPair) -> None:
    try:
        ct = image_from_volume_node(pair.ct)
        check_ct(ct)
        for role, node in pair.nodes().items():
            if role == "ct":
                continue
            what = "PET" if role == "pet" else "aligned PET"
            image = image_from_volume_node(node)
            check_pet_suv(image, what)
            check_overlap(ct, image, what)
    except InputError as exc:
        raise InputError(f"{pair.name}: {exc}") from None


def check_study_count(count: int, settings: TrainingSettings, where: str) -> None:
    """Refuse too few studies for a train/validation/test split (when ``require_validation``)."""
    if count < 1:
        raise InputError(f"{where} holds no usable study; each study needs a CT and a PET")
    if settings.require_validation and count < MIN_STUDIES_WITH_VALIDATION:
        raise InputError(
            f"{where} holds {count} stud{'y' if count == 1 else 'ies'}; training with validation needs at least "
            f"{MIN_STUDIES_WITH_VALIDATION} (train, validation and test by study): add pairs, or set "
            "require_validation=False to train on all of them without validation"
        )


def check_dataset(data: str | Path, settings: TrainingSettings) -> Path:
    """The dataset folder, after checking it holds enough usable studies (or is a slice layout)."""
    data = Path(data)
    if not data.is_dir():
        raise InputError(f"dataset folder {data} does not exist")
    if is_slice_layout(data):
        return data
    studies, skipped = discover_studies(data)
    if not studies and skipped:
        raise InputError(f"dataset folder {data} holds no usable study ({skipped[0].name}: {skipped[0].reason})")
    check_study_count(len(studies), settings, f"dataset folder {data}")
    return data

"""The panel's "Export as DICOM series": the synthetic PET node written as a DICOM PET
series in its CT's study, by :func:`RegC2PLib.dicom_output.write_pet_series` (the same
writer as ``regc2p translate --format dicom``; Slicer's own DICOM export cannot write a
PET's Units).

The CT must have been loaded through Slicer's DICOM module: its loader records the
slices' SOP Instance UIDs in the node attribute ``DICOM.instanceUIDs``, and the DICOM
database gives their files, whose headers supply the study, frame of reference and
slice geometry.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import slicer

from RegC2PLib.data.dicom_series import DicomSeries, series_from_files
from RegC2PLib.dicom_output import SyntheticSource, write_pet_series
from RegC2PLib.errors import InputError

from .output import ATTRIBUTE_PREFIX
from .volumes import check_scalar_volume, image_from_volume_node

INSTANCE_UIDS = "DICOM.instanceUIDs"  # set by Slicer's DICOM scalar volume loader


def ct_dicom_series(
    ct_node: slicer.vtkMRMLScalarVolumeNode, file_for_instance: Callable[[str], str] | None = None
) -> DicomSeries:
    """The DICOM series the CT node was loaded from. ``file_for_instance`` maps a SOP
    Instance UID to its file (default: Slicer's DICOM database)."""
    check_scalar_volume(ct_node)
    uids = (ct_node.GetAttribute(INSTANCE_UIDS) or "").split()
    if not uids:
        raise InputError(
            f"{ct_node.GetName()} was not loaded from DICOM, so there is no study to put the PET in; load the CT "
            "with the DICOM module, or save the PET as a volume file (File > Save)"
        )
    lookup = file_for_instance or _database_lookup()
    files = [lookup(uid) or "" for uid in uids]
    missing = sum(1 for f in files if not f or not Path(f).is_file())
    if missing:
        raise InputError(
            f"{missing} of the {len(uids)} DICOM files of {ct_node.GetName()} are no longer in Slicer's DICOM database; "
            "import the CT's folder into the DICOM database again"
        )
    found = series_from_files(files)
    if len(found) != 1:
        raise InputError(f"the DICOM files of {ct_node.GetName()} form {len(found)} series, not one; load the CT again")
    return found[0]


def _database_lookup() -> Callable[[str], str]:
    database = getattr(slicer, "dicomDatabase", None)
    if database is None or not database.isOpen:
        raise InputError("Slicer's DICOM database is not open; open the DICOM module once and try again")
    return database.fileForInstance


def export_pet_dicom(
    pet_node: slicer.vtkMRMLScalarVolumeNode | None,
    ct_node: slicer.vtkMRMLScalarVolumeNode,
    folder: str | os.PathLike[str],
    file_for_instance: Callable[[str], str] | None = None,
) -> Path:
    """Write the synthetic PET node into a new sub-folder of ``folder`` named after it; returns that sub-folder."""
    if pet_node is None or pet_node.GetAttribute(ATTRIBUTE_PREFIX + "SourceCT") is None:
        raise InputError("there is no synthetic PET to export yet; press Apply first")
    series = ct_dicom_series(ct_node, file_for_instance)
    source = SyntheticSource(
        pet_node.GetAttribute(ATTRIBUTE_PREFIX + "Model") or "unknown model",
        pet_node.GetAttribute(ATTRIBUTE_PREFIX + "ModelSHA256") or "unknown",
    )
    return write_pet_series(image_from_volume_node(pet_node), series, new_folder(Path(folder), pet_node.GetName()), source)


def new_folder(parent: Path, name: str) -> Path:
    """``parent/<name>`` made safe for file systems, with `` (2)``, `` (3)``... when taken."""
    if not parent.is_dir():
        raise InputError(f"{parent} is not a folder; choose an existing folder")
    safe = re.sub(r"[^\w\- ]+", "_", name).strip(" _") or "synthetic PET"
    candidate, number = parent / safe, 1
    while candidate.exists():
        number += 1
        candidate = parent / f"{safe} ({number})"
    return candidate

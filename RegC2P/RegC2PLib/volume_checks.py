"""The checks every volume passes before use: a complete file, a usable grid, finite values.

* **Complete file.** ITK reads a truncated NIfTI without a word (missing voxels come
  back as 0), reads NaN voxels of a NIfTI as 0, and does not verify the zlib checksum of
  a compressed MetaImage, so :func:`check_file_complete` reads such files to the end
  itself: a ``.nii``/``.nii.gz`` must hold the header's ``vox_offset`` plus every voxel
  its dimensions and ``bitpix`` call for (a gzip stream is decompressed fully, which also
  verifies its CRC) and no NaN among floating-point voxels; a compressed ``.mha``/``.mhd``
  must decompress to the end of its zlib stream, a gzip/bzip2 NRRD to the end of its
  stream (teem does not check the CRC either). Uncompressed NRRD and MetaImage readers
  refuse short data themselves; nothing can see a flipped byte in uncompressed data.
  Written volumes are checked the same way before they are renamed into place.
* **Grid.** Spacing finite and within :data:`SPACING_RANGE_MM`, origin finite, axes
  perpendicular (a sheared grid cannot be written back unchanged by every format).
* **Values.** No NaN or infinite voxel: NaN would pass range checks (min/max skip it)
  and spread through resampling into half the synthetic PET, or into training.
"""

from __future__ import annotations

import bz2
import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

SPACING_RANGE_MM = (0.01, 100.0)  # micro-CT to the coarsest clinical slice; outside: wrong units
DIRECTION_TOLERANCE = 1e-4  # |DᵀD - I| allowed for rounding in stored direction cosines
_CHUNK = 1 << 20  # bytes per read when streaming a file
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_META_SUFFIXES = (".mha", ".mhd")
_NRRD_SUFFIXES = (".nrrd", ".nhdr")


# --------------------------------------------------------------------------- files


def check_file_complete(path: str | os.PathLike[str]) -> None:
    """Refuse a NIfTI file shorter than its header says or holding NaN voxels, or a compressed
    MetaImage whose data stream is cut or corrupt (:class:`InputError` naming the file); other
    formats are left to their readers, which refuse short data."""
    problem = file_problem(path)
    if problem:
        remedy = "give those voxels real values where it was made" if problem.startswith("holds") else "copy or export it again"
        raise InputError(f"cannot read {path}: it {problem}; {remedy}")


def file_problem(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with the NIfTI or compressed MetaImage file ``path`` ("is truncated: ...",
    "holds 2 NaN ..."), or None."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(_NIFTI_SUFFIXES):
            return _nifti_problem(path)
        if name.endswith(_META_SUFFIXES):
            return _metaimage_problem(path)
        if name.endswith(_NRRD_SUFFIXES):
            return _nrrd_problem(path)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        return f"is truncated or corrupt ({exc})"
    return None


@dataclass
class _NiftiData:
    """Where a single-file NIfTI-1/2 keeps its voxels, and a running count of non-finite
    floating-point voxels (ITK's NIfTI reader turns NaN into 0 without a word)."""

    offset: int
    length: int
    dtype: np.dtype | None  # floating-point voxels are scanned; None: integers, nothing to scan
    non_finite: int = 0
    carry: bytes = b""

    def scan(self, chunk: bytes, start: int) -> None:
        """Count the non-finite voxels in ``chunk``, which starts at byte ``start`` of the (decompressed) file."""
        low, high = max(self.offset - start, 0), min(self.offset + self.length - start, len(chunk))
        if self.dtype is None or high <= low:
            return
        data = self.carry + chunk[low:high]
        usable = len(data) - len(data) % self.dtype.itemsize
        self.non_finite += int(np.count_nonzero(~np.isfinite(np.frombuffer(data[:usable], self.dtype))))
        self.carry = data[usable:]


_NIFTI_FLOATS = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 and float64


def _nifti_data(header: bytes) -> _NiftiData | None:
    """The voxel layout of a single-file NIfTI-1 (348-byte) or NIfTI-2 (540-byte) header, else None."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348 and header[344:347] == b"n+1":
            dims = struct.unpack(order + "8h", header[40:56])
            datatype, bitpix = struct.unpack(order + "2h", header[70:74])
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540 and header[4:7] == b"n+2":
            datatype, bitpix = struct.unpack(order + "2h", header[12:16])
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        return None
    if not 1 <= dims[0] <= 7 or bitpix < 1 or offset < 0:
        return None
    voxels = math.prod(max(int(d), 1) for d in dims[1 : dims[0] + 1])
    dtype = np.dtype(order + _NIFTI_FLOATS[datatype]) if datatype in _NIFTI_FLOATS else None
    return _NiftiData(offset, voxels * bitpix // 8, dtype)


def _nifti_problem(path: Path) -> str | None:
    """Read to the end (a gzip stream's CRC and length are checked there): shorter than
    vox_offset + voxels × bitpix / 8, or NaN among floating-point voxels."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        chunk = f.read(540)
        data, total = _nifti_data(chunk), 0
        while chunk:
            if data is not None:
                data.scan(chunk, total)
            total += len(chunk)
            chunk = f.read(_CHUNK)
    if data is None:
        return f"is truncated: {total} bytes, shorter than a NIfTI header" if total < 348 else None
    if total < data.offset + data.length:
        return f"is truncated: it holds {total} bytes (decompressed) of the {data.offset + data.length} its header describes"
    if data.non_finite:
        plural = "s" if data.non_finite > 1 else ""
        return f"holds {data.non_finite} NaN or infinite voxel{plural} (which would be read as 0 without a word)"
    return None


def _metaimage_problem(path: Path) -> str | None:
    """A compressed MetaImage's zlib stream must decompress to its end (which verifies its checksum)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    fields, data_start = {}, None
    position = 0
    for line in head.splitlines(keepends=True):
        position += len(line)
        key, _, value = line.decode("latin-1").partition("=")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":  # always the last header field
            data_start = position
            break
    if data_start is None or fields.get("CompressedData", "False").lower() != "true":
        return None
    source = fields["ElementDataFile"]
    if source == "LOCAL":
        data_path, skip = path, data_start
    elif "%" in source or source.startswith("LIST") or " " in source:
        return None  # multi-file data sets: left to the reader
    else:
        data_path, skip = path.parent / source, 0
    stream = zlib.decompressobj()
    with open(data_path, "rb") as f:
        f.seek(skip)
        while chunk := f.read(_CHUNK):
            stream.decompress(chunk, 0)
            if stream.eof:
                break
    return None if stream.eof else "is truncated: its compressed data ends early"


def _nrrd_problem(path: Path) -> str | None:
    """A gzip- or bzip2-encoded NRRD must decompress to the end of its stream, which checks
    its CRC (teem reads the voxels it needs and never looks at the CRC)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"\n\n")
    if not head.startswith(b"NRRD") or end < 0:
        return None  # not NRRD, or a header too long to scan here: the reader decides
    fields = {}
    for line in head[:end].decode("latin-1").splitlines()[1:]:
        key, separator, value = line.partition(":")
        if separator and not line.startswith("#") and not value.startswith("="):  # "key:=value" pairs are free text
            fields[key.strip().lower()] = value.strip()
    openers = {"gzip": gzip.GzipFile, "gz": gzip.GzipFile, "bzip2": bz2.BZ2File, "bz2": bz2.BZ2File}
    opener = openers.get(fields.get("encoding", "raw").lower())
    source = fields.get("data file", fields.get("datafile"))
    if opener is None or "line skip" in fields or "byte skip" in fields:
        return None
    if source is not None and ("%" in source or source.startswith("LIST") or " " in source):
        return None  # multi-file data sets: left to the reader
    with open(path.parent / source if source else path, "rb") as raw:
        raw.seek(0 if source else end + 2)
        with opener(fileobj=raw) as stream:
            while stream.read(_CHUNK):
                pass
    return None


# --------------------------------------------------------------------------- images


def check_grid(image: sitk.Image, what: str) -> None:
    """Refuse non-finite or implausible spacing, a non-finite origin and sheared axes."""
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    low, high = SPACING_RANGE_MM
    if not np.all(np.isfinite(spacing)) or spacing.min() < low or spacing.max() > high:
        shown = " x ".join(f"{s:g}" for s in spacing)
        raise InputError(
            f"the {what}'s voxel spacing {shown} mm is not plausible (each must be within {low:g}..{high:g} mm); "
            "fix the spacing in the file's header (is it in metres or micrometres?)"
        )
    if not np.all(np.isfinite(image.GetOrigin())):
        raise InputError(f"the {what}'s origin {image.GetOrigin()} is not a finite position; fix the file's header")
    n = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(n, n)
    if not np.all(np.isfinite(direction)) or np.abs(direction.T @ direction - np.eye(n)).max() > DIRECTION_TOLERANCE:
        raise InputError(
            f"the {what}'s axes are not perpendicular unit vectors (sheared direction cosines, e.g. a tilted gantry); "
            "resample it onto an orthogonal grid first"
        )


def count_non_finite(array: np.ndarray) -> tuple[int, tuple[int, ...] | None]:
    """How many NaN or infinite values ``array`` (z, y, x) holds and the (x, y, z) index of the first,
    a few slices at a time (bounded extra memory)."""
    if array.dtype.kind != "f":
        return 0, None  # integer voxels are always finite
    count, first = 0, None
    step = max(1, _CHUNK // max(1, array[0].size)) if array.ndim > 1 else max(1, array.size)
    for start in range(0, array.shape[0], step):
        bad = ~np.isfinite(array[start : start + step])
        n_bad = int(np.count_nonzero(bad))
        if n_bad and first is None:
            index = np.unravel_index(int(np.argmax(bad)), bad.shape)
            first = (start + int(index[0]), *map(int, index[1:]))[::-1]  # (x, y, z): ITK's index order
        count += n_bad
    return count, first


def check_finite(image: sitk.Image, what: str) -> None:
    """Refuse a volume with NaN or infinite voxels, naming how many and the first."""
    count, first = count_non_finite(sitk.GetArrayViewFromImage(image))
    if count:
        raise InputError(
            f"the {what} holds {count} NaN or infinite voxel{'s' if count > 1 else ''} (the first at index {first}); "
            f"replace {'them' if count > 1 else 'it'} with real values where the volume was made (never guessed here)"
        )

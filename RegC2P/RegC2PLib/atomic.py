"""Atomic, verified file writes: a file appears complete under its name, or not at all.

A writer writes into a fresh temporary folder beside the target, under the target's
own name (so a header that names its data file, ``.mhd``/``.nhdr``, names the final
one, and a long file name never grows longer); a ``check`` may read the result back;
then every file is flushed to disk and renamed into place, the named file last. A
crash, a kill, a full disk or an exception leaves the old file (or none) and at most a
temporary folder of our naming, which the next write into that folder removes once its
process is gone. Used for volumes, model files, checkpoints, JSON and figures.

Write failures (full disk, read-only folder, name too long, a writer's own error)
become one-line :class:`~RegC2PLib.errors.OutputError`\\ s.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import InputError, OutputError, RegC2PError, one_line

# Temporaries are named TEMP_PREFIX + "<host>-<pid>-<random>"; nothing else is ever removed.
TEMP_PREFIX = ".regc2p-tmp-"
STALE_AFTER_S = 24 * 3600  # any temporary this old is stale, whoever made it (a write takes seconds)


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _process_gone(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows: let age decide there
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        return False
    return False


def _is_stale(entry: Path) -> bool:
    parts = entry.name[len(TEMP_PREFIX) :].split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    try:
        age = time.time() - entry.lstat().st_mtime
    except OSError:
        return False
    return age > STALE_AFTER_S or (parts[0] == _host() and _process_gone(int(parts[1])))


def clean_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of our naming in ``folder`` whose writer died (kill -9, power loss); returns them."""
    try:
        entries = [e for e in Path(folder).iterdir() if e.name.startswith(TEMP_PREFIX)]
    except OSError:
        return []
    removed = []
    for entry in entries:
        if _is_stale(entry):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows) or not answered
        return 255


def check_output_place(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, an output path that cannot be created: a missing or
    read-only folder, a name longer than the file system allows."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} does not exist; create it first")
    length, limit = len(os.fsencode(path.name)), _name_max(path.parent)
    if length > limit:
        raise InputError(f"output file name {path.name[:32]}… is {length} bytes long, more than the {limit} allowed there")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise InputError(f"output folder {path.parent} is not writable; choose another folder or change its permissions")
    return path


def check_output_file(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, an output file path that cannot be written: a folder, or a
    place :func:`check_output_place` refuses."""
    path = check_output_place(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the name of the file to write (inside it, for example)")
    return path


@contextmanager
def write_errors(what: str, folder: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a writer's failure in the block (OSError, RuntimeError, a library's own error
    type: a full disk looks different to each) into a one-line :class:`OutputError`."""
    try:
        yield
    except RegC2PError:
        raise
    except Exception as exc:
        raise OutputError(f"cannot write {what} ({one_line(exc)}); check the free space and permissions of {folder}") from exc


@contextmanager
def temporary_folder(parent: str | os.PathLike[str]) -> Iterator[Path]:
    """A new empty folder of our naming in ``parent`` (stale ones there are removed first),
    removed on exit with whatever is still in it."""
    parent = Path(parent)
    clean_stale_temporaries(parent)
    folder = parent / f"{TEMP_PREFIX}{_host()}-{os.getpid()}-{secrets.token_hex(4)}"
    with write_errors(f"into {parent}", parent):
        folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _fsync(path: Path, directory: bool = False) -> None:
    if directory and os.name != "posix":
        return  # folders cannot be opened for fsync on Windows
    fd = os.open(path, os.O_RDONLY if directory else os.O_RDWR)
    try:
        os.fsync(fd)
    except OSError:
        if not directory:  # some file systems cannot fsync a folder; a file must be flushed
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, check: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path with ``path``'s name; when the block succeeds, ``check(tmp)``
    (if given) verifies what was written, and the file — with any files the writer put
    beside it — is flushed to disk and renamed into ``path``'s folder, ``path`` last.

    Any failure leaves the previous ``path`` (or none); write errors become one-line
    :class:`OutputError`\\ s.
    """
    path = Path(path)
    with temporary_folder(path.parent) as folder:
        tmp = folder / path.name
        with write_errors(str(path), path.parent):
            yield tmp
            if not tmp.is_file():
                raise OutputError(f"cannot write {path}: the writer produced no file")
            if check is not None:
                check(tmp)
            companions = sorted(p for p in folder.iterdir() if p != tmp)
            for file in [*companions, tmp]:
                _fsync(file)
                os.replace(file, path.parent / file.name)
            _fsync(path.parent, directory=True)


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and ±inf replaced by None (JSON null), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def write_json(path: str | os.PathLike[str], record: Any, indent: int = 2) -> None:
    """Write ``record`` as strict JSON, atomically: undefined figures (NaN, ±inf) become
    ``null``, so every reader can parse the file."""
    text = json.dumps(_json_safe(record), indent=indent, allow_nan=False) + "\n"
    with atomic_path(path, check=lambda tmp: _same_text(tmp, text)) as tmp:
        tmp.write_text(text)


def _same_text(path: Path, text: str) -> None:
    if path.read_text() != text:
        raise OutputError(f"cannot write {path.name}: it reads back with other contents; check the free space and the disk")

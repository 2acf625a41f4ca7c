"""Exceptions with one-line, user-facing messages.

Every message says what was wrong and what to do about it; the command line prints
``regc2p: error: <message>`` and exits non-zero, the Slicer module shows it in a box.
"""


class RegC2PError(Exception):
    """Base class: anything the user can fix, with a one-line message."""


class InputError(RegC2PError):
    """An input image, folder or option is missing, unreadable or implausible."""


class ModelFileError(RegC2PError):
    """A model file is missing, corrupt, tampered with or for another architecture."""


class OutputError(RegC2PError):
    """An output cannot be written completely: disk full, folder read-only, name too long, ..."""


class ResourceError(RegC2PError):
    """A job would need more memory than the machine has available; refused before allocating."""


class DeviceError(RegC2PError):
    """The requested compute device is not available in this torch build/machine."""


class CancelledError(RegC2PError):
    """The user cancelled a running job; nothing was written."""


def one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, else its type name (for one-line reports)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__

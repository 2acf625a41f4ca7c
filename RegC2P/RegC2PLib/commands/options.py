"""Command-line options generated from config dataclass fields.

A field becomes an option when its ``metadata`` has ``help``: ``--field-name`` (or
``metadata["flag"]``), typed like its default (``bool`` fields become ``--x/--no-x``;
a ``None`` default needs ``metadata["type"]``), with ``choices`` and ``metavar`` from the
metadata and the field's default shown in the help. Options left out on the command line
are absent from the parsed namespace (``argparse.SUPPRESS``), so :func:`given_options`
tells what the user actually set — a resumed run may change only some fields, and the
dataclass keeps one source of defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any


def _is_option(f: dataclasses.Field) -> bool:
    return "help" in f.metadata


def add_config_options(parser: argparse.ArgumentParser, cls: type, exclude: tuple[str, ...] = ()) -> None:
    """Add one option per documented field of dataclass ``cls`` (except ``exclude``)."""
    for f in dataclasses.fields(cls):
        if not _is_option(f) or f.name in exclude:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kind = f.metadata.get("type", type(default))
        shown = "" if default in ("", None) else f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": f"{f.metadata['help']}{shown}"}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            for key in ("choices", "metavar"):
                if key in f.metadata:
                    kwargs[key] = f.metadata[key]
        parser.add_argument(f.metadata.get("flag", "--" + f.name.replace("_", "-")), **kwargs)


def given_options(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that were given on the command line, with their values."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if _is_option(f) and hasattr(args, f.name)}


def as_arguments(config: Any) -> list[str]:
    """The command-line arguments that give ``config`` (a dataclass of options) its values:
    every documented field that is not ``None`` (``--x``/``--no-x`` for booleans)."""
    arguments: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not _is_option(f) or value is None:
            continue
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        arguments += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    return arguments


def option_flag(cls: type, name: str) -> str:
    """The command-line spelling of field ``name`` of ``cls`` (for messages)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.metadata.get("flag", "--" + name.replace("_", "-"))

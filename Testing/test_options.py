"""Command-line options generated from the config dataclasses: every field is reachable,
typed, and a resumed run refuses the options it cannot change."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from RegC2PLib.cli import build_parser, main
from RegC2PLib.commands.options import option_flag
from RegC2PLib.commands.train import run_options
from RegC2PLib.inference import TranslationOptions
from RegC2PLib.training.config import RESUME_OVERRIDES, TrainConfig


def _other_value(f: dataclasses.Field) -> str:
    """A valid command-line value for field ``f`` that differs from its default."""
    if "choices" in f.metadata:
        return next(c for c in f.metadata["choices"] if c != f.default)
    if isinstance(f.default, bool):
        raise AssertionError("booleans are flags")
    if isinstance(f.default, float):
        return str(f.default / 2 if f.default else 0.25)
    if isinstance(f.default, int) or f.metadata.get("type") is int:
        return str((f.default or 1) + 2)
    return "some-model.safetensors"


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", "--out", "run", *argv])


@pytest.mark.parametrize("f", dataclasses.fields(TrainConfig), ids=lambda f: f.name)
def test_every_training_field_is_an_option_that_reaches_the_config(f: dataclasses.Field) -> None:
    flag = option_flag(TrainConfig, f.name)
    argv = [flag if not f.default else "--no-" + flag[2:]] if isinstance(f.default, bool) else [flag, _other_value(f)]
    if f.name == "refiner_target":  # "registered" needs R: pair the non-default target with regc2p's default
        argv = [flag, "misaligned"]
    if f.name == "init_from":
        argv += ["--preset", "small"]  # the network then comes from the preset, not the (absent) file
    train = run_options(_parse("--data", "d", *argv), "test").train
    assert train is not None
    parsed = getattr(train, f.name)
    default = TrainConfig()
    assert parsed != getattr(default, f.name), f"{flag} did not change {f.name}"
    assert type(parsed) is type(getattr(default, f.name))
    follows = {"mode": {"refiner_target"}}.get(f.name, set())  # pix2pix has no R: its refiner target follows
    unchanged = [
        g.name
        for g in dataclasses.fields(TrainConfig)
        if g.name != f.name and g.name not in follows and getattr(train, g.name) != getattr(default, g.name)
    ]
    assert unchanged == [], unchanged


@pytest.mark.parametrize("f", dataclasses.fields(TranslationOptions), ids=lambda f: f.name)
def test_every_translation_field_is_an_option_of_translate(f: dataclasses.Field) -> None:
    if isinstance(f.default, bool):
        flag = option_flag(TranslationOptions, f.name)
        negated = "--no-" + flag[2:] if f.default else flag
        args = build_parser().parse_args(["translate", "--ct", "ct.nii.gz", "--out", "pet.nii.gz", negated])
        assert getattr(args, f.name) is (not f.default)
        return
    args = build_parser().parse_args(
        ["translate", "--ct", "ct.nii.gz", "--out", "pet.nii.gz", option_flag(TranslationOptions, f.name), _other_value(f)]
    )
    assert getattr(args, f.name) == type(getattr(TranslationOptions(), f.name) or 0)(_other_value(f))


def test_left_out_options_take_the_dataclass_defaults() -> None:
    options = run_options(_parse("--data", "d"), "cmd")
    assert options.train == TrainConfig() and options.command == "cmd"


def test_a_resume_takes_only_the_options_it_may_change(capsys, tmp_path: Path) -> None:
    options = run_options(_parse("--resume", "--max-steps", "7", "--keep", "last"), "cmd")
    assert options.resume and options.train is None and options.model is None
    assert options.resume_overrides == {"max_steps": 7, "keep": "last"}
    assert set(options.resume_overrides) <= set(RESUME_OVERRIDES)

    (tmp_path / "run").mkdir()
    code = main(["train", "--out", str(tmp_path / "run"), "--resume", "--lr", "0.1", "--image-size", "64", "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("regc2p: error: --lr, --image-size cannot change when a run is continued")
    assert list((tmp_path / "run").iterdir()) == []  # nothing written


def test_invalid_training_values_are_one_line_errors(capsys, tmp_path: Path) -> None:
    code = main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--epochs", "0", "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["regc2p: error: invalid training options: epochs must be between 1 and 1000000000 (got 0)"]
    assert not (tmp_path / "run").exists()

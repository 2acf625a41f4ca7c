"""Training on several dataset folders: the data specs, the weighted epochs, each folder's
own split (or a given manifest), validation figures per folder, and what a resume keeps."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from RegC2PLib.cli import main
from RegC2PLib.data.phantom import PhantomConfig, write_dataset
from RegC2PLib.data.split import read_manifest, split_studies, write_manifest
from RegC2PLib.errors import InputError
from RegC2PLib.training.data_access import prepare_data
from RegC2PLib.training.sampling import EpochSampler
from RegC2PLib.training.sources import DataSource, parse_source, with_splits


def test_data_specs_give_name_folder_and_weight(tmp_path: Path) -> None:
    assert parse_source("real=/data/sts:2.5") == DataSource(Path("/data/sts"), "real", 2.5)
    assert parse_source("/data/sts") == DataSource(Path("/data/sts"), "sts", 1.0)
    assert parse_source("/data/a=b/sts:3") == DataSource(Path("/data/a=b/sts"), "sts", 3.0)  # '=' inside the path
    assert parse_source("/data/run:2024") == DataSource(Path("/data/run"), "run", 2024.0)
    assert parse_source("d=/data/x:y") == DataSource(Path("/data/x:y"), "d", 1.0)  # ':' without a number: the path's
    with pytest.raises(InputError, match="name it with NAME=DIR"):
        parse_source("/data/x:y")  # 'x:y' cannot be a name
    with pytest.raises(InputError, match=r"weight -1\.0 must be a positive number"):
        parse_source("a=/data/sts:-1")
    with pytest.raises(InputError, match="weight nan must be a positive number"):
        parse_source("a=/data/sts:nan")
    sources = with_splits([parse_source("a=/x"), parse_source("b=/y")], ["b=/m.json"])
    assert [s.split for s in sources] == [None, Path("/m.json")]
    with pytest.raises(InputError, match="say which dataset it splits"):
        with_splits(sources, ["/m.json"])
    with pytest.raises(InputError, match="no dataset is named 'c'"):
        with_splits(sources, ["c=/m.json"])
    with pytest.raises(InputError, match="two datasets have the same name"):
        with_splits([parse_source("/x/d"), parse_source("/y/d")], [])


def test_each_source_fills_its_weights_share_and_is_seen_whole_over_epochs() -> None:
    """Sources of 10 and 30 samples with equal weights: epochs of 40, 20 from each; the small
    source repeated evenly (each sample twice), the large one seen whole every 3 epochs."""
    sampler = EpochSampler([10, 30], [1.0, 1.0], seed=3, stage="stage1")
    assert sampler.length == 40
    epochs = [sampler.indices(e) for e in range(3)]
    for order in epochs:
        assert len(order) == 40
        small = Counter(i for i in order if i < 10)
        assert sum(small.values()) == 20 and set(small.values()) == {2}
        assert sum(1 for i in order if i >= 10) == 20
    large = Counter(i for order in epochs for i in order if i >= 10)
    assert set(large) == set(range(10, 40)) and set(large.values()) == {2}
    assert sampler.indices(1) == EpochSampler([10, 30], [1.0, 1.0], seed=3, stage="stage1").indices(1)  # a pure function
    assert sampler.indices(1) != sampler.indices(2)
    weighted = EpochSampler([10, 30], [3.0, 1.0], seed=3, stage="stage1").indices(0)
    assert sum(1 for i in weighted if i < 10) == 30  # three quarters of 40


def test_one_source_is_a_shuffle_of_every_sample() -> None:
    order = EpochSampler([25], [1.0], seed=0, stage="stage2").indices(4)
    assert sorted(order) == list(range(25))


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mixed")
    write_dataset(root / "wide", 4, PhantomConfig(shape=(16, 48, 48), lesions=(0, 1)), seed=1)
    write_dataset(root / "narrow", 3, PhantomConfig(shape=(12, 48, 48), lesions=(0, 1)), seed=2)
    return root / "wide", root / "narrow"


def test_mixed_run_splits_each_folder_and_reports_validation_per_folder(
    folders: tuple[Path, Path], tmp_path: Path, tiny_model_file: Path, capsys
) -> None:
    wide, narrow = folders
    given = tmp_path / "given.json"
    write_manifest(given, split_studies(["case_0000", "case_0001", "case_0002"], (0.34, 0.33, 0.33), seed=5))
    run = tmp_path / "run"
    argv = ["train", "--data", f"w={wide}:3", f"n={narrow}:1", "--split", f"n={given}", "--out", str(run)]
    argv += ["--init-from", str(tiny_model_file), "--stage", "1", "--max-steps", "2", "--batch-size", "2", "--progress", "none"]
    assert main(argv) == 0
    record = json.loads((run / "run.json").read_text())
    assert [(d["name"], Path(d["path"]), d["weight"]) for d in record["data"]] == [("w", wide, 3.0), ("n", narrow, 1.0)]
    assert read_manifest(run / "split-n.json") == read_manifest(given)  # the given split, copied into the run
    assert (run / "split-w.json").is_file() and not (run / "split.json").exists()
    validation = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    assert validation and {"mae@w", "mae@n", "suv_mae_body@n"} <= set(validation[-1])
    capsys.readouterr()

    # The epoch draws three quarters of its samples from w, a quarter from n.
    from RegC2PLib.config import preset

    data = prepare_data([DataSource(wide, "w", 3.0), DataSource(narrow, "n", 1.0)], run, preset("small"), 0, False)
    n_wide = len(data.slices.dataset.datasets[0])
    order = np.asarray(data.slice_sampler.indices(0))
    assert (order < n_wide).mean() == pytest.approx(0.75, abs=0.02)

    # A resume keeps the datasets: --data cannot change.
    code = main(["train", "--out", str(run), "--resume", "--data", str(wide), "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        "regc2p: error: --data and --split cannot change when a run is continued (run.json keeps its datasets)"
    ]

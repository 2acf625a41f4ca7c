"""Model files: exact round trip, and every kind of wrong file refused with a reason."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from RegC2PLib import model_file
from RegC2PLib.config import ModelConfig, preset
from RegC2PLib.errors import InputError, ModelFileError, OutputError
from RegC2PLib.inference import TranslationOptions, translate_volume
from RegC2PLib.model_file import LoadedModel, load_model, new_model, read_config, save_model


def _read_all(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())  # noqa: SIM118


def _data_offset(path: Path) -> int:
    """safetensors layout: 8-byte little-endian header length, JSON header, then tensor data."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
    return 8 + header_len


def _copy(src: Path, tmp_path: Path, name: str = "model.safetensors") -> Path:
    dst = tmp_path / name
    shutil.copyfile(src, dst)
    return dst


# --------------------------------------------------------------------------- round trip


def test_round_trip(tmp_path: Path, small_model: LoadedModel) -> None:
    path = tmp_path / "m.safetensors"
    digest = save_model(path, small_model, info={"note": "round trip"})
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_model(path)
    assert loaded.sha256 == digest and loaded.path == path
    assert loaded.config == small_model.config
    assert read_config(path) == small_model.config
    assert loaded.info == {"note": "round trip"}
    for net_name in ("generator", "refiner"):
        ours = getattr(small_model, net_name).state_dict()
        theirs = getattr(loaded, net_name).state_dict()
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), f"{net_name}.{key}"
    assert not loaded.generator.training and not loaded.refiner.training
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        # Same weights; the shared model may hold them channels_last (translate does on CPUs),
        # whose kernels round differently in the last bits.
        torch.testing.assert_close(loaded.generator(x), small_model.generator(x), atol=1e-5, rtol=0)


def test_config_json_round_trip() -> None:
    for name in ("small", "paper"):
        cfg = preset(name)
        assert ModelConfig.from_json(cfg.to_json()) == cfg
        assert ModelConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_file_holds_only_raw_tensors_and_config(small_model_file: Path) -> None:
    tensors, metadata = _read_all(small_model_file)
    assert all(k.split(".", 1)[0] in ("generator", "refiner") for k in tensors)
    assert ModelConfig.from_json(metadata["regc2p_config"]) == preset("small")
    assert len(metadata["regc2p_tensors_sha256"]) == 64


# --------------------------------------------------------------------------- tampering


def test_flipped_weight_byte_fails_integrity(tmp_path: Path, small_model_file: Path) -> None:
    path = _copy(small_model_file, tmp_path)
    data = bytearray(path.read_bytes())
    offset = _data_offset(path)
    position = offset + (len(data) - offset) // 2
    data[position] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="integrity"):
        load_model(path)


def test_edited_weights_refused(tmp_path: Path, small_model_file: Path) -> None:
    tensors, metadata = _read_all(small_model_file)
    tensors["generator.1.bias"] = tensors["generator.1.bias"] + 1.0  # re-saved with the old digest
    path = tmp_path / "edited.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ModelFileError, match="integrity"):
        load_model(path)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_file_refused(tmp_path: Path, small_model_file: Path, keep: float) -> None:
    data = small_model_file.read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelFileError):
        load_model(path)


def test_truncated_inside_header_refused(tmp_path: Path, small_model_file: Path) -> None:
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(small_model_file.read_bytes()[:20])
    with pytest.raises(ModelFileError):
        load_model(path)


def test_paper_config_with_small_tensors_refused(tmp_path: Path, small_model_file: Path) -> None:
    """Only the config was changed (the digest still matches the tensors): the shapes do not."""
    tensors, metadata = _read_all(small_model_file)
    metadata["regc2p_config"] = preset("paper").to_json()
    path = tmp_path / "wrong_arch.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ModelFileError, match=r"does not match its config: generator\.\S+ has shape"):
        load_model(path)


def test_small_config_with_paper_tensors_refused(tmp_path: Path) -> None:
    """A paper-sized generator whose file claims to be the small preset."""
    paper = tmp_path / "paper.safetensors"
    save_model(paper, new_model(preset("paper"), with_refiner=False))
    tensors, metadata = _read_all(paper)
    metadata["regc2p_config"] = preset("small").to_json()
    path = tmp_path / "claims_small.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ModelFileError, match=r"generator\.\S+ has shape \(64, 1, 7, 7\).*expected \(16, 1, 7, 7\)"):
        load_model(path)


def test_config_with_fewer_blocks_refused(tmp_path: Path, small_model_file: Path) -> None:
    tensors, metadata = _read_all(small_model_file)
    config = json.loads(metadata["regc2p_config"])
    config["generator"]["n_residual_blocks"] -= 1
    metadata["regc2p_config"] = json.dumps(config)
    path = tmp_path / "edited_config.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ModelFileError, match="does not match its config"):
        load_model(path)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("intensity", "pet_suv_max", 10.0), ("intensity", "ct_hu_min", -1000.0), ("refiner", "stride", 2)],
)
def test_config_edit_keeping_shapes_fails_integrity(tmp_path: Path, small_model_file: Path, section, key, value) -> None:
    """Edits that keep every tensor shape (SUV range, HU range, default stride) are still caught."""
    tensors, metadata = _read_all(small_model_file)
    config = json.loads(metadata["regc2p_config"])
    assert config[section][key] != value
    config[section][key] = value
    metadata["regc2p_config"] = json.dumps(config, sort_keys=True)
    path = tmp_path / "edited_intensity.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ModelFileError, match="integrity"):
        load_model(path)


def test_digest_without_the_config_is_refused(tmp_path: Path, small_model_file: Path) -> None:
    """A digest over the tensors alone (config left out, so it could be edited freely) fails the check."""
    tensors, metadata = _read_all(small_model_file)
    metadata["regc2p_tensors_sha256"] = model_file.integrity_digest(tensors, "")
    path = tmp_path / "tensors_only.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ModelFileError, match="integrity"):
        load_model(path)


@pytest.mark.parametrize("bad_config", ['{"preset": "small"', '{"no_such_key": 1}', '{"image_size": 30}', "[]"])
def test_invalid_config_json_refused(tmp_path: Path, small_model_file: Path, bad_config: str) -> None:
    tensors, metadata = _read_all(small_model_file)
    metadata["regc2p_config"] = bad_config
    path = tmp_path / "bad_config.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ModelFileError, match="configuration"):
        load_model(path)


def test_extra_tensor_refused(tmp_path: Path, small_model_file: Path) -> None:
    tensors, metadata = _read_all(small_model_file)
    tensors["discriminator.0.weight"] = torch.zeros(3)
    metadata["regc2p_tensors_sha256"] = model_file.integrity_digest(tensors, metadata["regc2p_config"])
    path = tmp_path / "extra.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ModelFileError, match="discriminator"):
        load_model(path)


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, bytes(range(256)) * 40, b"RegC2P model, honest"])
def test_garbage_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=r"garbage\.safetensors"):
        load_model(path)


def test_missing_file_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(ModelFileError):
        load_model(tmp_path)  # a folder


def test_plain_safetensors_without_metadata_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"generator.1.weight": torch.zeros(16, 1, 7, 7)}, str(path))
    with pytest.raises(ModelFileError, match="not a RegC2P model"):
        load_model(path)


class _Payload:
    """Unpickling this writes a marker file: proof that a loader executed the pickle."""

    marker: Path

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def test_torch_pickle_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    payload = _Payload()
    payload.marker = marker
    path = tmp_path / "model.safetensors"
    torch.save({"generator": new_model(preset("small"), with_refiner=False).generator.state_dict(), "x": payload}, path)
    # sanity: the file really is a pickle that would run code
    with open(path, "rb") as f:
        assert f.read(2) == b"PK"
    assert not marker.exists()
    with pytest.raises(ModelFileError):
        load_model(path)
    assert not marker.exists()
    path2 = tmp_path / "raw.safetensors"
    path2.write_bytes(pickle.dumps(payload))
    with pytest.raises(ModelFileError):
        load_model(path2)
    assert not marker.exists()


# --------------------------------------------------------------------------- atomic save


def test_failing_save_leaves_existing_file(tmp_path: Path, small_model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _copy(small_model_file, tmp_path)
    before = path.read_bytes()

    def failing_save_file(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        Path(filename).write_bytes(b"half a model")
        raise OSError("disk full")

    monkeypatch.setattr(model_file, "save_file", failing_save_file)
    with pytest.raises(OutputError, match="disk full"):
        save_model(path, new_model(preset("small"), seed=3))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_save_into_missing_folder_refused(tmp_path: Path, small_model: LoadedModel) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        save_model(tmp_path / "missing" / "m.safetensors", small_model)


def test_save_overwrites_atomically(tmp_path: Path, small_model: LoadedModel) -> None:
    path = tmp_path / "m.safetensors"
    save_model(path, new_model(preset("small"), seed=5, with_refiner=False))
    save_model(path, small_model)
    assert load_model(path).refiner is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


# --------------------------------------------------------------------------- generator-only


def test_model_without_refiner(small_model_file_no_refiner: Path, make_ct) -> None:
    model = load_model(small_model_file_no_refiner)
    assert model.refiner is None
    ct = make_ct((3, 20, 24))
    pet = translate_volume(ct, model, TranslationOptions(refine="none", device="cpu"))
    assert pet.GetSize() == ct.GetSize()
    assert pet.GetPixelID() == sitk.sitkFloat32
    for refine in ("overlap", "non-overlap"):
        with pytest.raises(InputError, match="no refiner"):
            translate_volume(ct, model, TranslationOptions(refine=refine, device="cpu"))


def test_new_model_is_deterministic_per_seed() -> None:
    a = new_model(preset("small"), seed=4)
    b = new_model(preset("small"), seed=4)
    c = new_model(preset("small"), seed=5)
    key = "1.weight"
    assert torch.equal(a.generator.state_dict()[key], b.generator.state_dict()[key])
    assert not torch.equal(a.generator.state_dict()[key], c.generator.state_dict()[key])

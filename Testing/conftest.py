"""Shared pytest fixtures and helpers for the RegC2P test suite.

Everything is tiny (tens of voxels per side) so the suite stays fast on two CPU cores.
Helpers are offered as fixtures that return the helper function (``make_ct``,
``rotation_direction``, ``assert_same_geometry``), so test modules never import this file.
"""

from __future__ import annotations

import importlib.metadata
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from hypothesis import HealthCheck, settings

from RegC2PLib.config import DiscriminatorConfig, GeneratorConfig, ModelConfig, RefinerConfig, RegistrationConfig, preset
from RegC2PLib.model_file import LoadedModel, new_model, save_model

# --------------------------------------------------------------------------- Hypothesis profiles

# The property suite (test_properties.py) runs the "ci" profile unless pytest is given
# --hypothesis-profile: few, fixed (derandomized) examples, so CI is fast and repeatable;
# "thorough" explores many random examples for local runs and keeps failures in .hypothesis/.
_PROPERTY_CHECKS = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=12, derandomize=True, database=None, print_blob=True, **_PROPERTY_CHECKS)
settings.register_profile("thorough", max_examples=300, **_PROPERTY_CHECKS)
settings.load_profile("ci")


# --------------------------------------------------------------------------- geometry

# Direction cosines, row-major as SimpleITK takes them (column j = image axis j in LPS).
LPS = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# x towards patient right, y towards anterior (the "RAS" storage order of NIfTI tools).
RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
# A sagittal acquisition: columns run posterior, rows run inferior, slices run left.
SAGITTAL = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


def _rotation_direction(degrees: float, axis: Sequence[float] = (1.0, 0.0, 0.0)) -> tuple[float, ...]:
    """Row-major 3×3 direction cosines of a rotation by ``degrees`` about ``axis`` (Rodrigues)."""
    k = np.asarray(axis, dtype=float)
    k = k / np.linalg.norm(k)
    theta = math.radians(degrees)
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    rot = np.eye(3) + math.sin(theta) * cross + (1.0 - math.cos(theta)) * cross @ cross
    return tuple(float(v) for v in rot.ravel())


def _geometry(image: sitk.Image) -> dict[str, tuple]:
    """Size, spacing, origin and direction of an image, for comparisons."""
    return {
        "size": tuple(image.GetSize()),
        "spacing": tuple(image.GetSpacing()),
        "origin": tuple(image.GetOrigin()),
        "direction": tuple(image.GetDirection()),
    }


def _assert_same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 0.0) -> None:
    """Geometry of ``a`` equals ``b``'s exactly (``tol=0``) or to ``tol`` (absolute)."""
    ga, gb = _geometry(a), _geometry(b)
    assert ga["size"] == gb["size"]
    for key in ("spacing", "origin", "direction"):
        if tol == 0.0:
            assert ga[key] == gb[key], key
        else:
            np.testing.assert_allclose(ga[key], gb[key], atol=tol, rtol=0, err_msg=key)


# --------------------------------------------------------------------------- images


def _ct_array(shape_zyx: Sequence[int] = (10, 40, 48), seed: int = 0) -> np.ndarray:
    """A CT-like int16 array in HU: air outside an elliptic body (~40 HU), two lungs
    (~-850 HU), a spine (~700 HU) and mild noise. The body is off-centre and the
    slices differ, so flips, transposes and slice reordering change the array."""
    nz, ny, nx = (int(n) for n in shape_zyx)
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    cy, cx = 0.52 * ny, 0.47 * nx
    ry, rx = 0.36 * ny, 0.42 * nx
    body = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0
    lung_r = 0.18 * rx * (1.0 + 0.3 * z / max(nz - 1, 1))  # lungs grow along z
    lungs = (((y - cy + 0.1 * ry) / (0.45 * ry)) ** 2 + ((np.abs(x - cx) - 0.45 * rx) / lung_r) ** 2) <= 1.0
    spine = ((y - cy - 0.6 * ry) / (0.15 * ry)) ** 2 + ((x - cx) / (0.12 * rx)) ** 2 <= 1.0
    hu = np.full((nz, ny, nx), -1000.0)
    hu[body] = 40.0
    hu[body & lungs] = -850.0
    hu[body & spine] = 700.0
    hu += rng.normal(0.0, 10.0, hu.shape)
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16)


# Two translations of one CT with the same model agree to this (SUV): on CPUs the batch size
# (measured per process unless fixed) picks other channels_last convolution kernels, whose
# float32 rounding differs by ~1e-6 on [-1, 1]; the untrained test networks' normalisation of
# near-constant channels magnifies that (measured: max 0.007 SUV; 0.003 with the shipped model).
SAME_PET_MAX_SUV, SAME_PET_MEAN_SUV = 0.02, 1e-3


def _assert_same_pet(a: np.ndarray, b: np.ndarray) -> None:
    diff = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    assert diff.max() <= SAME_PET_MAX_SUV and diff.mean() <= SAME_PET_MEAN_SUV, (diff.max(), diff.mean())


def _make_ct(
    shape_zyx: Sequence[int] = (10, 40, 48),
    spacing: Sequence[float] = (0.9, 0.8, 2.5),
    direction: Sequence[float] = LPS,
    origin: Sequence[float] = (-20.0, -15.0, 100.0),
    seed: int = 0,
    pixel_type: int = sitk.sitkInt16,
) -> sitk.Image:
    """A CT-like SimpleITK image in HU with the given geometry (spacing/origin in x, y, z)."""
    image = sitk.GetImageFromArray(_ct_array(shape_zyx, seed))
    if pixel_type != sitk.sitkInt16:
        image = sitk.Cast(image, pixel_type)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(float(d) for d in direction))
    return image


@pytest.fixture(scope="session")
def make_ct() -> Callable[..., sitk.Image]:
    """Factory: ``make_ct(shape_zyx, spacing, direction, origin, seed, pixel_type)`` -> CT image in HU."""
    return _make_ct


@pytest.fixture(scope="session")
def ct_array() -> Callable[..., np.ndarray]:
    """Factory: ``ct_array(shape_zyx, seed)`` -> CT-like int16 (z, y, x) array in HU."""
    return _ct_array


@pytest.fixture(scope="session")
def rotation_direction() -> Callable[..., tuple[float, ...]]:
    """``rotation_direction(degrees, axis)`` -> row-major direction cosines of that rotation."""
    return _rotation_direction


@pytest.fixture(scope="session")
def assert_same_pet() -> Callable[..., None]:
    """``assert_same_pet(a, b)``: two PET arrays (SUV) of one CT and model agree up to kernel rounding."""
    return _assert_same_pet


@pytest.fixture(scope="session")
def assert_same_geometry() -> Callable[..., None]:
    """``assert_same_geometry(a, b, tol=0.0)``: size equal; spacing, origin, direction equal (or within tol)."""
    return _assert_same_geometry


@pytest.fixture(scope="session")
def directions() -> dict[str, tuple[float, ...]]:
    """Named direction matrices: ``LPS``, ``RAS``, ``SAGITTAL``, ``OBLIQUE`` (20° about x then 10° about z)."""
    oblique = np.array(_rotation_direction(10.0, (0, 0, 1))).reshape(3, 3) @ np.array(
        _rotation_direction(20.0, (1, 0, 0))
    ).reshape(3, 3)
    return {"LPS": LPS, "RAS": RAS, "SAGITTAL": SAGITTAL, "OBLIQUE": tuple(float(v) for v in oblique.ravel())}


@pytest.fixture
def ct_image() -> sitk.Image:
    """A fresh tiny CT (10 slices of 40×48, LPS, anisotropic spacing)."""
    return _make_ct()


# --------------------------------------------------------------------------- models


def _perturb_refiner(model: LoadedModel, scale: float = 0.05, seed: int = 1) -> LoadedModel:
    """Give a fresh refiner's zero-initialised last layer small random weights, so the
    refiner is no longer the identity and refinement visibly changes the result."""
    assert model.refiner is not None
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = model.refiner.out.weight
        weight.copy_(torch.randn(weight.shape, generator=generator) * scale)
        model.refiner.out.bias.fill_(0.01)
    return model


@pytest.fixture(scope="session")
def small_config() -> ModelConfig:
    return preset("small")


# Networks far narrower than ``small`` (about 6x faster per training step): for tests of
# mechanics (resume, checkpoints, processes, data flow), not of learning.
TINY = preset("small").with_changes(
    image_size=64,
    generator=GeneratorConfig(base_channels=8, n_downsampling=2, n_residual_blocks=2),
    registration=RegistrationConfig((8, 16, 16), (16, 16, 8), bottleneck_channels=16, n_bottleneck_blocks=1),
    discriminator=DiscriminatorConfig(base_channels=8, n_layers=2),
    refiner=RefinerConfig(channels=(4, 8, 8), window=4, stride=2),
)


@pytest.fixture(scope="session")
def tiny_config() -> ModelConfig:
    """A model config with tiny networks and 64 px slices (see ``TINY``)."""
    return TINY


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained ``TINY`` model file: ``regc2p train --init-from`` it to train tiny networks from the command line."""
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_model(path, new_model(TINY, seed=0))
    return path


@pytest.fixture(scope="session")
def tiny_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three phantom studies of 16x64x64 voxels (read-only for tests; copy before changing)."""
    from RegC2PLib.data.phantom import PhantomConfig, write_dataset

    root = tmp_path_factory.mktemp("phantoms") / "data"
    write_dataset(root, 3, PhantomConfig(shape=(16, 64, 64)), seed=11)
    return root


@pytest.fixture(scope="session")
def small_model(small_config: ModelConfig) -> LoadedModel:
    """An untrained ``small`` model whose refiner is not the identity.

    Shared by the whole session: tests must not modify it (load a copy from
    ``small_model_file`` instead).
    """
    return _perturb_refiner(new_model(small_config, seed=0, with_refiner=True))


@pytest.fixture(scope="session")
def small_model_file(tmp_path_factory: pytest.TempPathFactory, small_model: LoadedModel) -> Path:
    """``small_model`` saved as a ``.safetensors`` model file (read-only for tests)."""
    path = tmp_path_factory.mktemp("models") / "small.safetensors"
    save_model(path, small_model, info={"purpose": "tests"})
    return path


@pytest.fixture(scope="session")
def small_model_file_no_refiner(tmp_path_factory: pytest.TempPathFactory, small_config: ModelConfig) -> Path:
    """A ``small`` model file holding only the generator (stage 1 only)."""
    path = tmp_path_factory.mktemp("models") / "small_g_only.safetensors"
    save_model(path, new_model(small_config, seed=0, with_refiner=False))
    return path


@pytest.fixture
def ct_file(tmp_path: Path, ct_image: sitk.Image) -> Path:
    """``ct_image`` written as ``ct.nrrd`` in a fresh temporary folder."""
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image, str(path))
    return path


# --------------------------------------------------------------------------- Slicer scene


# Real, anonymised PET/CT beside the repository (read-only; absent on some machines).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real-data folder; the test is skipped with the reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def headless():
    """A fresh MRML scene with colour tables and three slice views, set as ``slicer.mrmlScene``
    (``slicer-core`` wheel; tests using it are skipped without it)."""
    slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
    from RegC2PSlicer.headless import HeadlessScene

    scene = HeadlessScene()
    slicer.mrmlScene = scene.scene
    yield scene.scene
    scene.close()


# --------------------------------------------------------------------------- Slicer's Python


def _required_distributions(names: Sequence[str]) -> set[str]:
    """The installed distributions ``names`` and everything they require (extras left out), by name."""
    found: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here (e.g. requests): nothing to offer the worker
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in found:
            continue
        found.add(key)
        todo += [re.split(r"[<>=!~;\[ (]", r, maxsplit=1)[0] for r in dist.requires or () if "extra ==" not in r]
    return found


@pytest.fixture(scope="session")
def slicer_like_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that, put on a child process's PYTHONPATH, leaves it only the packages a stock Slicer offers.

    Those are Slicer's bundled packages, torch (the PyTorch extension), the module's
    ``requirements.txt`` and what they require; every other installed package (matplotlib,
    scikit-image, slicer-core, pytest, ...) becomes unimportable. The folder holds links to
    the allowed packages and a ``sitecustomize`` that drops this interpreter's
    site-packages from ``sys.path`` (inherited by grandchildren through PYTHONPATH).
    """
    from RegC2PSlicer.dependencies import SLICER_BUNDLED, requirements

    site_dir = tmp_path_factory.mktemp("slicer-site")
    allowed = _required_distributions([*SLICER_BUNDLED, "torch", *(re.split(r"[<>=!~;\[ ]", r)[0] for r in requirements())])
    for name in allowed:
        dist = importlib.metadata.distribution(name)
        for top in {f.parts[0] for f in dist.files or () if f.parts[0] not in ("..", "__pycache__")}:
            link = site_dir / top
            if not link.exists():
                link.symlink_to(Path(dist.locate_file(top)))
    (site_dir / "sitecustomize.py").write_text(
        "import site, sys\n"
        "_dropped = {*site.getsitepackages(), site.getusersitepackages()}\n"
        "sys.path[:] = [p for p in sys.path if p not in _dropped]\n"
    )
    return site_dir

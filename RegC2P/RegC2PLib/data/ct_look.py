"""How a real CT is made to look like another scan: contrast phase, organ density, kernel, noise.

:func:`draw_ct_look` draws one patient's acquisition: a contrast phase (non-contrast,
arterial or portal venous: each enhancing organ's mean HU is moved to the phase's range,
its texture kept), a fatty liver now and then, a reconstruction kernel (smooth, standard
or sharp) and extra quantum noise. :func:`apply_phase` changes organ densities from the
voxel roles; :func:`apply_kernel_and_noise` is the last step, after lesions are painted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .anatomy_roles import ENHANCES_LIKE, PHASE_HU, PHASES, WALL_ENHANCEMENT, Role
from .pet_physics import noise_field

KERNELS = ("smooth", "standard", "sharp")
HU_RANGE = (-1024.0, 3071.0)
_STEATOSIS_P = 0.2
_STEATOSIS_HU = (10.0, 35.0)  # liver density drop of a fatty liver
_CALIBRATION_HU = 4.0  # ± scanner-to-scanner offset of soft tissue
_WALL_HU = (-20.0, 100.0)  # voxels of a hollow organ that are wall or fluid, not gas, fat or oral contrast


@dataclass(frozen=True)
class CtLook:
    """One drawn CT appearance. ``targets`` is the mean HU each enhancing role is moved to,
    ``walls`` the HU added to hollow-organ walls, ``kernel_amount`` the smoothing sigma in mm
    (smooth) or the unsharp-mask gain (sharp), ``noise_hu`` the added noise SD."""

    phase: str
    kernel: str
    kernel_amount: float
    noise_hu: float
    calibration_hu: float
    steatosis_hu: float
    targets: dict[str, float] = field(default_factory=dict)
    walls: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_choices(phases: tuple[str, ...], kernels: tuple[str, ...]) -> None:
    """Refuse unknown or empty phase and kernel choices."""
    if not phases or set(phases) - set(PHASES):
        raise InputError(f"contrast phases {phases} are not usable; choose among {', '.join(PHASES)}")
    if not kernels or set(kernels) - set(KERNELS):
        raise InputError(f"CT kernels {kernels} are not usable; choose among {', '.join(KERNELS)}")


def draw_ct_look(
    rng: np.random.Generator, phases: tuple[str, ...], kernels: tuple[str, ...], noise_hu: tuple[float, float]
) -> CtLook:
    """Draw a phase and a kernel (uniformly among the given ones), densities and noise."""
    phase = str(phases[int(rng.integers(len(phases)))])
    kernel = str(kernels[int(rng.integers(len(kernels)))])
    amount = {"smooth": rng.uniform(0.6, 1.6), "standard": 0.0, "sharp": rng.uniform(0.3, 1.0)}[kernel]
    targets = {role.name.lower(): float(rng.uniform(*ranges[phase])) for role, ranges in PHASE_HU.items()}
    walls = {role.name.lower(): float(rng.uniform(*ranges[phase])) for role, ranges in WALL_ENHANCEMENT.items()}
    steatosis = float(rng.uniform(*_STEATOSIS_HU)) if rng.uniform() < _STEATOSIS_P else 0.0
    return CtLook(
        phase=phase,
        kernel=kernel,
        kernel_amount=float(amount),
        noise_hu=float(rng.uniform(*noise_hu)),
        calibration_hu=float(rng.uniform(-_CALIBRATION_HU, _CALIBRATION_HU)),
        steatosis_hu=steatosis,
        targets=targets,
        walls=walls,
    )


def apply_phase(hu: np.ndarray, roles: np.ndarray, source_median: dict[Role, float], look: CtLook) -> None:
    """Move each enhancing role's density to ``look``'s target, in place.

    ``source_median`` is each role's median HU in the source CT: a voxel keeps its
    difference from it (texture, vessels, partial volume), so a source CT of any phase works.
    """
    for role in PHASE_HU:
        if role in source_median:
            target = look.targets[role.name.lower()] - (look.steatosis_hu if role == Role.LIVER else 0.0)
            _shift(hu, roles == role, target - source_median[role])
    for role, like in ENHANCES_LIKE.items():
        if like in source_median:
            _shift(hu, roles == role, look.targets[like.name.lower()] - source_median[like])
    for name, amount in look.walls.items():
        mask = (roles == Role[name.upper()]) & (hu >= _WALL_HU[0]) & (hu <= _WALL_HU[1])
        _shift(hu, mask, amount)
    body = (roles != Role.OUTSIDE) & (roles != Role.GAS) & (roles != Role.LUNG)
    _shift(hu, body, look.calibration_hu)


def _shift(hu: np.ndarray, mask: np.ndarray, amount: float) -> None:
    if amount:
        hu[mask] += np.float32(amount)


def apply_kernel_and_noise(
    hu: np.ndarray, spacing: tuple[float, float, float], look: CtLook, rng: np.random.Generator
) -> np.ndarray:
    """The CT through ``look``'s reconstruction kernel plus its noise (HU, float32, clipped to -1024..3071).

    Smooth: Gaussian of ``kernel_amount`` mm and noise correlated over about a voxel;
    sharp: unsharp mask of gain ``kernel_amount`` (edges and grain enhanced) and white noise.
    """
    if look.kernel == "smooth":
        out = ndimage.gaussian_filter(hu, [look.kernel_amount / s for s in spacing], mode="nearest")
        sigma = 0.8
    elif look.kernel == "sharp":
        out = hu + np.float32(look.kernel_amount) * (hu - ndimage.gaussian_filter(hu, 1.0, mode="nearest"))
        sigma = 0.0
    else:
        out = hu.copy()
        sigma = 0.5
    if look.noise_hu > 0:
        out += np.float32(look.noise_hu) * noise_field(rng, hu.shape, sigma)
    return np.clip(out, *HU_RANGE).astype(np.float32, copy=False)

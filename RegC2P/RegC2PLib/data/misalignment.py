"""Misalignment between the CT and the PET of a phantom (applied to the PET only).

Two parts, composed into one backward mapping from a PET voxel to the point of the
aligned activity it shows:

* **Respiratory motion** (smooth, elastic): the CT is a breath-hold scan, the PET an
  average over minutes of free breathing, so in the PET the diaphragm, liver dome,
  spleen and lung bases sit higher or lower (default: up to 10 mm, mostly higher, as
  at expiration) and the ribcage is narrower. The shift is largest at the diaphragm,
  fades towards the lung apex and the pelvis, and spares the spine.
* **RegGAN's random affine** of noise level ``L`` (docs/method.md §2): rotation ±L degrees,
  translation ±2·L % of the field of view, scale 1 ± 2·L %. RegGAN draws it per 2D slice;
  here it is drawn **once per volume** and applied in-plane to every slice (a rigid
  patient movement between the two scans), so the misaligned PET stays a coherent 3D
  volume that the 3D refiner can also train on. Outside the field of view the PET is
  empty (SUV 0, RegGAN fills with the minimum).

:func:`misalign_image` moves a real study's PET the same way where the anatomy is not
known: RegGAN's affine plus a smooth random elastic displacement in place of the breathing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class Misalignment:
    """One drawn misalignment. Lengths in mm, depths below the vertex."""

    level: float
    rotation_deg: float
    translation_mm: tuple[float, float]  # (y, x)
    scale: float
    breathing_mm: float  # diaphragm shift; > 0: higher in the PET than in the CT
    expansion: float  # relative in-plane ribcage contraction in the PET
    center_yx_mm: tuple[float, float]
    apex_mm: float
    dome_mm: float
    spine_y_mm: float

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        level: float,
        breathing_mm: float,
        fov_yx_mm: tuple[float, float],
        center_yx_mm: tuple[float, float],
        apex_mm: float,
        dome_mm: float,
        spine_y_mm: float,
    ) -> Misalignment:
        """Draw a misalignment; the same random numbers are consumed whatever the level."""
        u = rng.uniform(-1.0, 1.0, size=4)
        amplitude = rng.uniform(0.3, 1.0) * breathing_mm
        sign = 1.0 if rng.uniform() < 0.8 else -1.0
        return cls(
            level=float(level),
            rotation_deg=float(u[0] * level),
            translation_mm=(float(u[1] * 0.02 * level * fov_yx_mm[0]), float(u[2] * 0.02 * level * fov_yx_mm[1])),
            scale=float(1.0 + u[3] * 0.02 * level),
            breathing_mm=float(sign * amplitude),
            expansion=float(sign * amplitude / 300.0),
            center_yx_mm=(float(center_yx_mm[0]), float(center_yx_mm[1])),
            apex_mm=float(apex_mm),
            dome_mm=float(dome_mm),
            spine_y_mm=float(spine_y_mm),
        )

    @property
    def is_identity(self) -> bool:
        return self.rotation_deg == 0.0 and self.translation_mm == (0.0, 0.0) and self.scale == 1.0 and self.breathing_mm == 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def respiratory_weight(self, depth: np.ndarray) -> np.ndarray:
        """Fraction of the diaphragm shift at each depth (0 at the apex and pelvis, 1 at the dome)."""
        rise = _smoothstep((depth - self.apex_mm) / max(self.dome_mm - self.apex_mm, 1.0))
        fall = _smoothstep((depth - self.dome_mm - 60.0) / 240.0)
        return rise * (1.0 - fall)

    def source_points(self, depth: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For PET points (depth, y, x) mm (broadcast arrays), the aligned points they show."""
        cy, cx = self.center_yx_mm
        c, s = np.cos(np.radians(self.rotation_deg)), np.sin(np.radians(self.rotation_deg))
        ry, rx = (y - cy) / self.scale, (x - cx) / self.scale
        ya = cy + c * ry - s * rx - self.translation_mm[0]
        xa = cx + s * ry + c * rx - self.translation_mm[1]
        if self.breathing_mm == 0.0:
            return np.broadcast_to(depth, np.broadcast_shapes(np.shape(depth), np.shape(ya))), ya, xa
        w = self.respiratory_weight(depth)
        spine = 1.0 - 0.85 * np.exp(-(xa**2 + (ya - self.spine_y_mm) ** 2) / (2.0 * 30.0**2))
        depth_src = depth + self.breathing_mm * w * spine
        chest = _smoothstep((depth - self.apex_mm) / max(self.dome_mm - self.apex_mm, 1.0)) * (
            1.0 - _smoothstep((depth - self.dome_mm) / 150.0)
        )
        grow = 1.0 + self.expansion * chest
        return depth_src, ya * grow, xa * grow  # the body is centred on y = x = 0


def misalign_image(
    image: sitk.Image, rng: np.random.Generator, level: float, elastic_mm: float, correlation_mm: float = 80.0
) -> tuple[sitk.Image, dict[str, object]]:
    """``image`` (a PET in SUV, any orientation) moved as a PET moves against its CT, for
    volumes whose anatomy is not known (real studies): RegGAN's affine of noise level ``level``
    applied in the axial plane about the centre of the field of view (rotation ±L degrees,
    translation ±2·L % of the field of view, scale 1 ± 2·L %), composed with a smooth random
    displacement of up to ``elastic_mm`` (a cubic B-spline with control points every
    ``correlation_mm``), which stands in for the breathing the phantoms model organ by organ.
    Resampled linearly onto the image's own grid; outside the moved field of view the PET is 0.
    Returns the moved image and the drawn parameters (for the record).
    """
    u = rng.uniform(-1.0, 1.0, size=4)
    size, spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    extent = size * spacing
    centre = image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2.0).tolist())
    angle, scale = np.radians(u[0] * level), 1.0 + u[3] * 0.02 * level
    shift = (u[1] * 0.02 * level * extent[0], u[2] * 0.02 * level * extent[1])
    affine = sitk.AffineTransform(3)
    affine.SetCenter(centre)
    c, s = np.cos(angle), np.sin(angle)
    affine.SetMatrix((scale * c, -scale * s, 0.0, scale * s, scale * c, 0.0, 0.0, 0.0, 1.0))
    affine.SetTranslation((float(shift[0]), float(shift[1]), 0.0))
    amplitude = float(elastic_mm * rng.uniform(0.3, 1.0)) if elastic_mm > 0 else 0.0
    mesh = [max(1, int(np.rint(e / correlation_mm))) for e in extent]
    bspline = sitk.BSplineTransformInitializer(image, mesh, order=3)
    coefficients = rng.uniform(-1.0, 1.0, size=len(bspline.GetParameters())) * amplitude
    bspline.SetParameters(coefficients.tolist())
    moved = sitk.Resample(image, image, sitk.CompositeTransform([affine, bspline]), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    record = {
        "level": float(level),
        "rotation_deg": float(np.degrees(angle)),
        "translation_mm": [float(t) for t in shift],
        "scale": float(scale),
        "elastic_mm": amplitude,
    }
    return moved, record

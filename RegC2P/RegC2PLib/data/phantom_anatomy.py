"""Whole-body anatomy of a synthetic PET/CT patient, head to upper thigh, as tissue labels.

The anatomy is written in mm in the frame of :mod:`.phantom_grid` (depth below the
vertex, posterior, left) for a standard adult and stretched per patient: body length,
width and depth, subcutaneous fat, organ positions and sizes are drawn from a numpy
``Generator``. :func:`paint_anatomy` paints tissue labels in painter's order (later
structures overwrite earlier ones, restricted to the tissues they may displace).
:func:`tissue_values` draws each patient's CT numbers (HU) and FDG uptake (SUVbw).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from .phantom_grid import Canvas, Grid


class Tissue(IntEnum):
    """Labels of the organ map (uint8)."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    ABDOMEN = 3  # bowel and other abdominal soft tissue
    BRAIN_GRAY = 4
    BRAIN_WHITE = 5
    LUNG = 6
    MYOCARDIUM = 7
    BLOOD = 8  # heart chambers, aorta, vena cava
    LIVER = 9
    SPLEEN = 10
    KIDNEY = 11
    KIDNEY_PELVIS = 12  # collecting system, excreted tracer
    BLADDER = 13
    BONE_CORTEX = 14
    BONE_MARROW = 15
    CSF = 16
    AIRWAY = 17
    TABLE = 18  # the couch's carbon-fibre skins: in the CT, not in the PET
    FOAM = 19  # the mattress and the couch's foam core
    BLANKET = 20


# In the CT but not the patient: no activity, outside the body.
EQUIPMENT = (Tissue.TABLE, Tissue.FOAM, Tissue.BLANKET)


SOFT = (Tissue.FAT, Tissue.MUSCLE, Tissue.ABDOMEN)
BONE = (Tissue.BONE_CORTEX, Tissue.BONE_MARROW)

# Template body outline (standard adult): depth (mm below vertex) -> half width, half depth.
_OUTLINE_D = np.array([170, 200, 250, 280, 310, 350, 450, 540, 620, 700, 780, 860, 960, 1200], float)
_OUTLINE_A = np.array([52, 55, 60, 120, 160, 168, 165, 155, 150, 152, 165, 172, 160, 150], float)
_OUTLINE_B = np.array([55, 55, 58, 80, 102, 108, 112, 112, 114, 118, 115, 110, 95, 90], float)
_FAT_PROFILE_D = np.array([170, 280, 450, 620, 800, 1200], float)
_FAT_PROFILE = np.array([0.5, 0.8, 1.0, 1.4, 1.3, 1.0], float)


@dataclass
class BodyPlan:
    """One patient's body parameters (mm, template depths already scaled)."""

    length: float  # height scale of all depths
    width: float  # lateral scale of the outline
    depth_ap: float  # antero-posterior scale of the outline
    fat_mm: float  # subcutaneous fat at the chest
    head: float  # head size scale
    apex: float  # lung apex depth
    dome_right: float  # right diaphragm dome depth
    dome_left: float  # left diaphragm dome depth
    bladder_fill: float
    offsets: dict[str, np.ndarray] = field(default_factory=dict)  # per-organ (d, y, x) jitter mm
    sizes: dict[str, float] = field(default_factory=dict)  # per-organ size scale
    mattress_mm: float = 30.0  # foam between the back and the couch board
    board_mm: float = 30.0  # the board's foam core between its two 2.5 mm skins
    blanket_mm: float = 0.0  # 0: no blanket
    blanket_gap_mm: float = 0.0  # air between the skin and the blanket
    blanket_from: float = 400.0  # depth (mm) where the blanket starts, down to the feet

    def outline(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Body half width ``a`` and half depth ``b`` (mm) at depths ``d``; 0 above the neck."""
        t = d / self.length
        a = np.interp(t, _OUTLINE_D, _OUTLINE_A) * self.width
        b = np.interp(t, _OUTLINE_D, _OUTLINE_B) * self.depth_ap
        above = t < _OUTLINE_D[0]
        return np.where(above, 0.0, a), np.where(above, 0.0, b)

    def fat(self, d: np.ndarray) -> np.ndarray:
        return np.interp(d / self.length, _FAT_PROFILE_D, _FAT_PROFILE) * self.fat_mm

    def cavity(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inner (thoracic/abdominal) cavity: half width, half depth, centre y (mm)."""
        a, b = self.outline(d)
        inner_a = a - self.fat(d) - 16.0  # muscle and ribs of the wall
        inner_b = b - self.fat(d) - 16.0
        anterior, posterior = -inner_b, inner_b - 25.0  # paraspinal muscles behind the cavity
        a_c = np.maximum(inner_a, 0.0)
        b_c = np.maximum((posterior - anterior) / 2.0, 0.0)
        return a_c, b_c, (posterior + anterior) / 2.0

    def cavity_at(self, depth: float) -> tuple[float, float, float]:
        """:meth:`cavity` at one depth, as floats."""
        a_c, b_c, y_c = self.cavity(np.array([depth]))
        return float(a_c[0]), float(b_c[0]), float(y_c[0])

    def outline_at(self, depth: float) -> tuple[float, float]:
        """:meth:`outline` at one depth, as floats."""
        a, b = self.outline(np.array([depth]))
        return float(a[0]), float(b[0])

    def spine_y(self, d: np.ndarray) -> np.ndarray:
        """Centre of the vertebral bodies (mm posterior)."""
        _, b = self.outline(d)
        frac = np.interp(d / self.length, [170, 280, 330], [0.22, 0.3, 0.42])
        return frac * b

    def vertebra_radius(self, d: np.ndarray) -> np.ndarray:
        return np.interp(d / self.length, [180, 300, 500, 750], [9.0, 13.0, 17.0, 21.0])

    def diaphragm(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Depth of the diaphragm surface under each (y, x) position (mm)."""
        a_c, b_c, y_c = self.cavity_at(self.dome_right)
        dome = self.dome_right + (self.dome_left - self.dome_right) / (1.0 + np.exp(-x / 20.0))
        xh, xw = 0.45 * a_c, 0.5 * a_c
        yn = (y - y_c) / max(b_c, 1.0)
        return dome + 30.0 * ((np.abs(x) - xh) / xw) ** 2 + 20.0 * yn + 20.0 * yn**2


def draw_body_plan(rng: np.random.Generator) -> BodyPlan:
    """Draw one patient's body parameters."""
    length = rng.uniform(0.92, 1.08)
    width = rng.uniform(0.85, 1.2)
    plan = BodyPlan(
        length=length,
        width=width,
        depth_ap=width * rng.uniform(0.92, 1.05),
        fat_mm=rng.uniform(6.0, 14.0) * width**2,
        head=rng.uniform(0.93, 1.07),
        apex=300.0 * length + rng.normal(0, 5),
        dome_right=520.0 * length + rng.normal(0, 10),
        dome_left=0.0,
        bladder_fill=rng.uniform(0.6, 1.2),
    )
    plan.dome_left = plan.dome_right + rng.uniform(8.0, 22.0)
    for organ in ("heart", "liver", "spleen", "kidney_r", "kidney_l", "bladder", "aorta"):
        plan.offsets[organ] = rng.normal(0.0, [6.0, 4.0, 4.0])
        plan.sizes[organ] = rng.uniform(0.88, 1.12)
    plan.mattress_mm = rng.uniform(8.0, 40.0)
    plan.board_mm = rng.uniform(20.0, 45.0)
    plan.blanket_mm = rng.uniform(3.0, 8.0) if rng.uniform() < 0.6 else 0.0
    plan.blanket_gap_mm = rng.uniform(0.0, 4.0)
    plan.blanket_from = rng.uniform(330.0, 650.0) * length
    return plan


def paint_anatomy(grid: Grid, plan: BodyPlan) -> np.ndarray:
    """Tissue labels (uint8, (z, y, x)) of the patient ``plan`` on ``grid``."""
    cv = Canvas(grid)
    d, y, x = cv.d[:, None, None], cv.y[None, :, None], cv.x[None, None, :]
    _paint_couch(cv, plan)
    _paint_trunk(cv, plan, d, y, x)
    _paint_head(cv, plan)
    _paint_thorax(cv, plan, d, y, x)
    _paint_abdomen(cv, plan)
    _paint_spine(cv, plan, y, x)
    _paint_ribs(cv, plan, y, x)
    _paint_pelvis(cv, plan)
    _paint_blanket(cv, plan, d, y, x)
    return cv.labels


def _paint_couch(cv: Canvas, plan: BodyPlan) -> None:
    """The patient lies on a foam mattress on a carbon-fibre board (two dense skins of 2.5 mm,
    or one grid row, around a foam core), as a PET/CT couch. Painted first: the trunk overwrites the mattress
    where the back sinks into it."""
    _, b = plan.outline(np.linspace(300, 900, 7) * plan.length)
    back = float(b.max())  # the lowest point of the back, mm posterior
    board = back + plan.mattress_mm
    skin = max(2.5, cv.grid.spacing[1])  # 2.5 mm, but at least one row of the grid
    layers = (
        (back - 40.0, board, 250.0, Tissue.FOAM),  # the mattress, up around the sides of the back
        (board, board + skin, 230.0, Tissue.TABLE),
        (board + skin, board + skin + plan.board_mm, 230.0, Tissue.FOAM),
        (board + skin + plan.board_mm, board + 2 * skin + plan.board_mm, 230.0, Tissue.TABLE),
    )
    for low, high, half_width, label in layers:
        block = cv.block((-1e9, low, -half_width), (1e9, high, half_width))
        if block is not None:
            sl, _, yy, xx = block
            cv.paint(sl, np.ones(np.broadcast_shapes(yy.shape, xx.shape), dtype=bool), label)


def _paint_blanket(cv: Canvas, plan: BodyPlan, d: np.ndarray, y: np.ndarray, x: np.ndarray) -> None:
    """A blanket over the front and sides of the body from ``blanket_from`` down, resting on
    the skin or a few mm off it (in the air only)."""
    if plan.blanket_mm <= 0:
        return
    a, b = plan.outline(cv.d)
    a, b = a[:, None, None], b[:, None, None]
    inner, outer = plan.blanket_gap_mm, plan.blanket_gap_mm + plan.blanket_mm
    r_in = (x / np.maximum(a + inner, 1e-3)) ** 2 + (y / np.maximum(b + inner, 1e-3)) ** 2
    r_out = (x / np.maximum(a + outer, 1e-3)) ** 2 + (y / np.maximum(b + outer, 1e-3)) ** 2
    shell = (r_out <= 1.0) & (r_in > 1.0) & (y < 0.3 * b) & (a > 0) & (d >= plan.blanket_from)
    cv.paint((slice(None), slice(None), slice(None)), shell, Tissue.BLANKET, over=[Tissue.AIR])


def _paint_trunk(cv: Canvas, plan: BodyPlan, d: np.ndarray, y: np.ndarray, x: np.ndarray) -> None:
    a, b = plan.outline(cv.d)
    f = plan.fat(cv.d)
    a, b, f = a[:, None, None], b[:, None, None], f[:, None, None]
    r_out = (x / np.maximum(a, 1e-3)) ** 2 + (y / np.maximum(b, 1e-3)) ** 2
    r_in = (x / np.maximum(a - f, 1e-3)) ** 2 + (y / np.maximum(b - f, 1e-3)) ** 2
    cv.labels[(r_out <= 1.0) & (a > 0)] = Tissue.FAT
    cv.labels[(r_in <= 1.0) & (a > f)] = Tissue.MUSCLE
    a_c, b_c, y_c = (v[:, None, None] for v in plan.cavity(cv.d))
    in_cavity = ((x / np.maximum(a_c, 1e-3)) ** 2 + ((y - y_c) / np.maximum(b_c, 1e-3)) ** 2 <= 1.0) & (a_c > 0)
    in_cavity &= (d >= plan.apex - 15.0) & (d <= 930.0 * plan.length)
    below = d > plan.diaphragm(y, x)
    cv.labels[in_cavity & ~below] = Tissue.FAT  # mediastinum; lungs and heart are painted over it
    cv.labels[in_cavity & below] = Tissue.ABDOMEN


def _paint_head(cv: Canvas, plan: BodyPlan) -> None:
    h, L = plan.head, plan.length
    cv.ellipsoid((175 * L, -40.0, 0.0), (45 * h, 50 * h, 55 * h), Tissue.MUSCLE, over=[Tissue.AIR, Tissue.FAT])  # face
    cv.ellipsoid((100 * L, 8.0, 0.0), (100 * h, 98 * h, 80 * h), Tissue.MUSCLE, over=[Tissue.AIR, Tissue.FAT, Tissue.MUSCLE])
    cv.ellipsoid((100 * L, 8.0, 0.0), (90 * h, 91 * h, 74 * h), Tissue.BONE_CORTEX, shell=(6.0, Tissue.BONE_MARROW))
    cv.ellipsoid((150 * L, 42.0, 0.0), (30 * h, 38 * h, 56 * h), Tissue.BONE_CORTEX, over=[Tissue.MUSCLE])
    # Cortex: a real cortex is 2.5-3 mm thick but folded, so an adult brain holds somewhat more
    # grey matter than white (about 1.2-1.5 : 1 by volume). A smooth 15-mm shell makes grey
    # matter about half of the brain (1 : 1, with the deep grey nuclei); the 7-mm shell used
    # before held a quarter, and a model trained on it gave real brains about 60 % of their uptake.
    cv.ellipsoid((100 * L, 8.0, 0.0), (83 * h, 84 * h, 67 * h), Tissue.BRAIN_GRAY, shell=(15.0, Tissue.BRAIN_WHITE))
    cv.ellipsoid((150 * L, 42.0, 0.0), (22 * h, 30 * h, 48 * h), Tissue.BRAIN_GRAY, over=[Tissue.BONE_CORTEX, Tissue.MUSCLE])
    for side in (-1, 1):
        cv.ellipsoid((92 * L, 2.0, side * 12 * h), (20 * h, 30 * h, 6 * h), Tissue.CSF, over=[Tissue.BRAIN_WHITE])
        cv.ellipsoid((105 * L, 4.0, side * 24 * h), (14 * h, 18 * h, 9 * h), Tissue.BRAIN_GRAY, over=[Tissue.BRAIN_WHITE])
        # Mandible: a bony arc in the lower face.
        cv.tube([(205 * L, -20.0, side * 50.0), (210 * L, -75.0, side * 25.0), (212 * L, -85.0, 0.0)], 6.0, Tissue.BONE_CORTEX)


def _paint_thorax(cv: Canvas, plan: BodyPlan, d: np.ndarray, y: np.ndarray, x: np.ndarray) -> None:
    L = plan.length
    dome = plan.dome_right
    a_c, b_c, y_c = (v[:, None, None] for v in plan.cavity(cv.d))
    taper = np.sqrt(np.clip((d - plan.apex) / 60.0, 0.0, 1.0))
    m = 14.0 + 26.0 * np.clip(-(y - y_c) / np.maximum(b_c, 1.0), 0.0, 1.0)  # mediastinum, wider anteriorly
    above = d < plan.diaphragm(y, x)
    for side in (-1, 1):
        # Each lung: a rounded-square (superellipse) half of the cavity, tapering to the apex.
        xc = side * 0.5 * (a_c + 14.0)
        ax = np.maximum(0.55 * (a_c - 14.0), 1.0) * taper + 1e-3
        by = np.maximum(b_c, 1.0) * taper + 1e-3
        lung = np.abs((x - xc) / ax) ** 2.6 + np.abs((y - y_c) / by) ** 2.6 <= 1.0
        lung &= (side * x > m) & above & (d >= plan.apex)
        cv.labels[lung & (cv.labels == Tissue.FAT)] = Tissue.LUNG
    # Airways: trachea to the carina, main bronchi into each lung.
    carina = 410.0 * L
    cv.tube([(170 * L, -18.0, 0.0), (300 * L, -8.0, 0.0), (carina, 0.0, 0.0)], 8.5, Tissue.AIRWAY)
    for side in (-1, 1):
        cv.tube([(carina, 0.0, 0.0), (carina + 30, 8.0, side * 45.0)], [6.5, 4.5], Tissue.AIRWAY)
    # Heart with epicardial fat, chambers of blood, left-ventricular myocardium.
    off, s = plan.offsets["heart"], plan.sizes["heart"]
    ac, bc, yc = plan.cavity_at(dome - 40.0)
    center = (dome - 45.0 + off[0], yc - 0.32 * bc + off[1], 0.2 * ac + off[2])
    radii = (55.0 * s, 0.42 * bc * s, 0.36 * ac * s)
    heart_over = [Tissue.FAT, Tissue.LUNG, Tissue.ABDOMEN]
    limit = d < plan.diaphragm(y, x) + 8.0
    cv.ellipsoid(center, tuple(r + 6.0 for r in radii), Tissue.FAT, angle_deg=-35.0, over=heart_over, where=limit)
    cv.ellipsoid(center, radii, Tissue.BLOOD, angle_deg=-35.0, over=heart_over, where=limit)
    lv = (center[0] + 10.0, center[1] + 0.15 * radii[1], center[2] + 0.35 * radii[2])
    cv.ellipsoid(
        lv, (0.7 * radii[0], 0.62 * radii[1], 0.6 * radii[2]), Tissue.MYOCARDIUM, angle_deg=-35.0, shell=(11.0, Tissue.BLOOD)
    )
    # Aorta: ascending, arch, descending beside the spine, bifurcation; vena cava on the right.
    off = plan.offsets["aorta"]

    def spine_front(depth: float, dx: float) -> tuple[float, float, float]:
        yy = float(plan.spine_y(np.array([depth]))[0] - plan.vertebra_radius(np.array([depth]))[0]) - 12.0
        return (depth, yy + off[1], dx + off[2])

    arch = 360.0 * L + off[0]
    aorta = [
        (center[0] - 25.0, center[1] + 5.0, 8.0 + off[2]),
        (arch + 10.0, center[1] - 5.0, 2.0 + off[2]),
        (arch, -5.0 + off[1], 12.0 + off[2]),
        spine_front(arch + 15.0, 22.0),
        spine_front(dome + 20.0, 18.0),
        spine_front(790.0 * L, 10.0),
    ]
    vessel_over = [Tissue.FAT, Tissue.LUNG, Tissue.ABDOMEN, Tissue.MUSCLE, Tissue.BLOOD]
    cv.tube(aorta, [15.0, 15.0, 13.0, 12.0, 11.0, 9.0], Tissue.BLOOD, over=vessel_over)
    for side in (-1, 1):
        cv.tube([aorta[-1], (880.0 * L, aorta[-1][1] - 20.0, side * 70.0)], [6.0, 5.5], Tissue.BLOOD, over=vessel_over)
    ivc = [(center[0] - 5.0, center[1] + 25.0, -25.0), spine_front(dome + 60.0, -25.0), spine_front(790.0 * L, -18.0)]
    cv.tube(ivc, 10.0, Tissue.BLOOD, over=[*vessel_over, Tissue.LIVER])


def _paint_abdomen(cv: Canvas, plan: BodyPlan) -> None:
    L = plan.length
    dome_r, dome_l = plan.dome_right, plan.dome_left
    ac, bc, yc = plan.cavity_at(dome_r + 60.0)
    d3, y3, x3 = cv.d[:, None, None], cv.y[None, :, None], cv.x[None, None, :]
    under = d3 > plan.diaphragm(y3, x3) + 3.0
    soft_cavity = [Tissue.ABDOMEN, Tissue.FAT]
    off, s = plan.offsets["liver"], plan.sizes["liver"]
    cv.ellipsoid(
        (dome_r + 80.0 + off[0], yc + off[1], -0.42 * ac + off[2]),
        (100.0 * s, 0.9 * bc * s, 0.58 * ac * s),
        Tissue.LIVER,
        over=soft_cavity,
        where=under,
    )
    cv.ellipsoid(
        (dome_r + 40.0 + off[0], yc - 0.45 * bc + off[1], 0.1 * ac + off[2]),
        (42.0 * s, 0.38 * bc * s, 0.42 * ac * s),
        Tissue.LIVER,
        over=soft_cavity,
        where=under,
    )
    off, s = plan.offsets["spleen"], plan.sizes["spleen"]
    cv.ellipsoid(
        (dome_l + 55.0 + off[0], yc + 0.5 * bc + off[1], 0.7 * ac + off[2]),
        (50.0 * s, 30.0 * s, 22.0 * s),
        Tissue.SPLEEN,
        angle_deg=40.0,
        over=soft_cavity,
        where=under,
    )
    for side, name, top in ((-1, "kidney_r", dome_r + 140.0), (1, "kidney_l", dome_l + 115.0)):
        off, s = plan.offsets[name], plan.sizes[name]
        yk = float(plan.spine_y(np.array([top]))[0]) + 5.0
        center = (top + off[0], yk + off[1], side * (0.36 * ac + 18.0) + off[2])
        radii = (50.0 * s, 26.0 * s, 24.0 * s)
        fat = (radii[0] + 14.0, radii[1] + 14.0, radii[2] + 14.0)  # perirenal fat outlines the kidney on CT
        cv.ellipsoid(center, fat, Tissue.FAT, angle_deg=side * 25.0, over=[Tissue.ABDOMEN, Tissue.MUSCLE])
        cv.ellipsoid(center, radii, Tissue.KIDNEY, angle_deg=side * 25.0, over=[*soft_cavity, Tissue.MUSCLE])
        pelvis = (center[0] + 5.0, center[1], center[2] - side * 9.0)
        cv.ellipsoid(pelvis, (18.0 * s, 10.0 * s, 9.0 * s), Tissue.KIDNEY_PELVIS, over=[Tissue.KIDNEY])
        cv.tube([pelvis, (870.0 * L, yk - 30.0, side * 35.0)], 2.5, Tissue.KIDNEY_PELVIS, over=soft_cavity)  # ureter
    off, s = plan.offsets["bladder"], plan.bladder_fill
    _, bb, ybc = plan.cavity_at(880.0 * L)
    center = (885.0 * L + off[0], ybc - 0.35 * bb + off[1], off[2])
    radii = (32.0 * s, 30.0 * s, 42.0 * s)
    # Perivesical fat: on CT the bladder is a homogeneous water-density oval set in fat.
    fat = (radii[0] + 10.0, radii[1] + 10.0, radii[2] + 10.0)
    cv.ellipsoid(center, fat, Tissue.FAT, over=[Tissue.ABDOMEN, Tissue.MUSCLE])
    cv.ellipsoid(center, radii, Tissue.BLADDER, over=[*soft_cavity, Tissue.MUSCLE])


def _paint_spine(cv: Canvas, plan: BodyPlan, y: np.ndarray, x: np.ndarray) -> None:
    L = plan.length
    top, bottom = 185.0 * L, 770.0 * L
    zsel = (cv.d >= top) & (cv.d <= bottom)
    if not zsel.any():
        return
    k = np.nonzero(zsel)[0]
    sl = (slice(k[0], k[-1] + 1), slice(None), slice(None))
    dd = cv.d[sl[0]][:, None, None]
    ys = plan.spine_y(dd)
    rv = plan.vertebra_radius(dd)
    # Vertebrae and discs: phase advances by one per vertebra (18 mm cervical .. 30 mm lumbar).
    fine = np.linspace(top, bottom, 512)
    period = np.interp(fine / L, [180, 300, 750], [18.0, 24.0, 30.0]) * L
    phase = np.interp(dd, fine, np.concatenate([[0.0], np.cumsum(np.diff(fine) / period[1:])]))
    bone = (phase % 1.0) < 0.8
    r2 = (x / (1.15 * rv)) ** 2 + ((y - ys) / rv) ** 2
    body = r2 <= 1.0
    cortex = body & (r2 >= ((rv - 3.0) / rv) ** 2)
    canal_y = ys + rv + 8.0
    canal = (x**2 + (y - canal_y) ** 2) <= 7.5**2
    arch = ((x**2 + (y - canal_y) ** 2) <= 12.5**2) & ~canal & (y >= canal_y - 4.0)
    spinous = (x / 5.0) ** 2 + ((y - canal_y - 20.0) / 11.0) ** 2 <= 1.0
    transverse = (np.abs(x) <= 1.5 * rv + 12.0) & (np.abs(y - (ys + rv + 4.0)) <= 4.0)
    labels = cv.labels[sl]
    inside = labels != Tissue.AIR
    body &= inside
    cortex &= inside
    canal &= inside
    posterior = (arch | spinous | transverse) & bone & inside
    labels[body & ~bone] = Tissue.MUSCLE  # intervertebral disc
    labels[body & bone] = Tissue.BONE_MARROW
    labels[cortex & bone] = Tissue.BONE_CORTEX
    labels[posterior & ~body] = Tissue.BONE_CORTEX
    labels[canal] = Tissue.CSF
    # Sacrum.
    ys_s = float(plan.spine_y(np.array([800.0 * L]))[0])
    cv.ellipsoid((810.0 * L, ys_s + 8.0, 0.0), (50.0, 18.0, 45.0), Tissue.BONE_CORTEX, shell=(3.0, Tissue.BONE_MARROW))


def _paint_ribs(cv: Canvas, plan: BodyPlan, y: np.ndarray, x: np.ndarray) -> None:
    L = plan.length
    top, bottom = plan.apex + 5.0, plan.dome_right + 110.0
    zsel = (cv.d >= top - 40.0) & (cv.d <= bottom)
    if zsel.any():
        k = np.nonzero(zsel)[0]
        sl = (slice(k[0], k[-1] + 1), slice(None), slice(None))
        dd = cv.d[sl[0]][:, None, None]
        a_c, b_c, y_c = (v[sl[0]][:, None, None] for v in plan.cavity(cv.d))
        a_c = np.maximum(a_c, 1.0)
        b_c = np.maximum(b_c, 1.0)
        rc = np.sqrt((x / a_c) ** 2 + ((y - y_c) / b_c) ** 2)
        yn = np.clip((y - y_c) / b_c, -1.0, 1.0)
        band = (rc >= 1.0) & (rc <= 1.0 + 9.0 / a_c)
        phase = (dd - top - 35.0 * (1.0 - yn) / 2.0) / (25.0 * L)
        rib = band & ((phase % 1.0) < 0.36) & (phase >= 0.0) & (phase < 12.0)
        rib &= ~((yn < -0.55) & (np.abs(x) < 0.3 * a_c))  # costal cartilage / sternum gap
        labels = cv.labels[sl]
        labels[rib & np.isin(labels, SOFT)] = Tissue.BONE_CORTEX
    _, bc, yc = plan.cavity_at(plan.apex + 100.0)
    a_out, _ = plan.outline_at(plan.apex + 60.0)
    sternum_y = yc - bc - 7.0
    cv.tube(
        [(plan.apex + 25.0, sternum_y, 0.0), (plan.dome_right - 15.0, sternum_y + 5.0, 0.0)],
        7.0,
        Tissue.BONE_CORTEX,
        over=SOFT,
        shell=(2.5, Tissue.BONE_MARROW),
    )
    for side in (-1, 1):
        cv.tube(
            [(plan.apex + 20.0, sternum_y + 4.0, side * 18.0), (plan.apex - 8.0, yc - 0.3 * bc, side * 0.85 * a_out)],
            7.0,
            Tissue.BONE_CORTEX,
            over=SOFT,
        )
        cv.ellipsoid(
            (plan.apex + 70.0 * L, yc + bc + 26.0, side * 0.62 * a_out),
            (70.0 * L, 6.0, 42.0),
            Tissue.BONE_CORTEX,
            angle_deg=-side * 25.0,
            over=SOFT,
        )


def _paint_pelvis(cv: Canvas, plan: BodyPlan) -> None:
    L = plan.length
    ac, bc, yc = plan.cavity_at(800.0 * L)
    over = [*SOFT, Tissue.BLOOD, Tissue.KIDNEY_PELVIS]
    for side in (-1, 1):
        cv.ellipsoid(
            (790.0 * L, yc + 0.35 * bc, side * 0.72 * ac),
            (58.0 * L, 0.55 * bc, 13.0),
            Tissue.BONE_CORTEX,
            angle_deg=side * 35.0,
            over=over,
            shell=(4.0, Tissue.BONE_MARROW),
        )
        head = (885.0 * L, yc - 0.05 * bc, side * 0.66 * ac)
        cv.ellipsoid(head, (24.0, 24.0, 24.0), Tissue.BONE_CORTEX, over=over, shell=(3.5, Tissue.BONE_MARROW))
        trochanter = (905.0 * L, yc, side * (0.66 * ac + 32.0))
        cv.tube([head, trochanter], 13.0, Tissue.BONE_CORTEX, over=over, shell=(3.5, Tissue.BONE_MARROW))
        cv.tube(
            [trochanter, (1400.0 * L, yc - 10.0, side * (0.66 * ac + 10.0))],
            15.0,
            Tissue.BONE_CORTEX,
            over=over,
            shell=(5.0, Tissue.BONE_MARROW),
        )
        cv.ellipsoid(
            (912.0 * L, yc - 0.62 * bc, side * 0.22 * ac),
            (16.0, 12.0, 30.0),
            Tissue.BONE_CORTEX,
            angle_deg=-side * 20.0,
            over=over,
            shell=(3.0, Tissue.BONE_MARROW),
        )
        cv.ellipsoid(
            (925.0 * L, yc + 0.2 * bc, side * 0.38 * ac),
            (25.0, 22.0, 12.0),
            Tissue.BONE_CORTEX,
            over=over,
            shell=(3.0, Tissue.BONE_MARROW),
        )


@dataclass(frozen=True)
class TissueValues:
    """Per-label lookup tables (index = :class:`Tissue` value): CT in HU, FDG uptake in SUVbw."""

    hu: np.ndarray  # float32 (256,)
    suv: np.ndarray  # float32 (256,)


def tissue_values(rng: np.random.Generator) -> TissueValues:
    """Draw one patient's CT numbers and FDG uptake per tissue.

    Ranges follow clinical FDG PET/CT: brain 6-10, myocardium 1.5-8 (fasting state varies
    a lot between patients), blood pool 1.5-2, liver 2-2.5, spleen about 1.8, kidneys
    4-8, bladder 10-40, muscle about 0.7, fat about 0.3, lung about 0.4, cortical bone
    about 0.5, red marrow about 1.2.
    """
    hu = np.zeros(256, np.float32)
    suv = np.zeros(256, np.float32)
    u = rng.uniform
    table = {
        Tissue.AIR: (-1000.0, 0.0),
        Tissue.FAT: (u(-110, -90), u(0.25, 0.38)),
        Tissue.MUSCLE: (u(40, 55), u(0.55, 0.9)),
        Tissue.ABDOMEN: (u(20, 35), u(0.9, 1.4)),
        Tissue.BRAIN_GRAY: (u(36, 44), u(6.0, 10.0)),
        Tissue.BRAIN_WHITE: (u(24, 30), 0.0),
        Tissue.LUNG: (u(-880, -820), u(0.3, 0.5)),
        Tissue.MYOCARDIUM: (u(40, 50), float(np.exp(u(np.log(1.5), np.log(8.0))))),
        Tissue.BLOOD: (u(35, 45), u(1.5, 2.0)),
        Tissue.LIVER: (u(50, 65), u(2.0, 2.5)),
        Tissue.SPLEEN: (u(42, 52), u(1.6, 2.0)),
        Tissue.KIDNEY: (u(28, 38), u(4.0, 8.0)),
        Tissue.KIDNEY_PELVIS: (u(5, 15), 0.0),
        Tissue.BLADDER: (u(0, 12), u(10.0, 40.0)),
        Tissue.BONE_CORTEX: (u(750, 1000), u(0.4, 0.6)),
        Tissue.BONE_MARROW: (u(180, 300), u(1.0, 1.5)),
        Tissue.CSF: (u(4, 12), u(0.15, 0.3)),
        Tissue.AIRWAY: (-1000.0, u(0.05, 0.15)),
        Tissue.TABLE: (u(150, 450), 0.0),
    }
    table[Tissue.FOAM] = (u(-930, -780), 0.0)
    table[Tissue.BLANKET] = (u(-850, -650), 0.0)  # folds are denser: see the phantom's CT texture
    for label, (h, s) in table.items():
        hu[label], suv[label] = h, s
    suv[Tissue.BRAIN_WHITE] = suv[Tissue.BRAIN_GRAY] * u(0.35, 0.45)
    suv[Tissue.KIDNEY_PELVIS] = min(suv[Tissue.KIDNEY] * u(1.5, 3.0), 40.0)
    return TissueValues(hu, suv)

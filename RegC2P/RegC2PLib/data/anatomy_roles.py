"""What each voxel of a labelled real CT is, for FDG: roles, their uptake and their contrast enhancement.

A *role* (uint8) is what the anatomy phantom paints PET activity and CT contrast from.
Labelled structures get a role from their name (:func:`role_of_name`: TotalSegmentator
class names, v1 and v2); voxels no label claims get one from their CT number
(:func:`role_from_hu`: gas, lung, fat, soft tissue, marrow, cortical bone), so an
incomplete label set still gives a plausible PET. Each role maps to a :class:`Tissue` of
the project's organ map (``organs.nii.gz``).

Uptake: the roles of the whole-body phantom's tissues take that phantom's per-patient draw
(:func:`~.phantom_anatomy.tissue_values`: liver 2–2.5, renal pelvis, bladder 10–40, …);
organs that phantom does not have, and the renal parenchyma, take typical physiological
FDG ranges of clinical PET (:data:`EXTRA_SUV`).
"""

from __future__ import annotations

from enum import IntEnum
from fnmatch import fnmatchcase

import numpy as np

from .phantom_anatomy import Tissue, TissueValues


class Role(IntEnum):
    """Voxel roles of an anatomy phantom (uint8)."""

    OUTSIDE = 0  # air around the patient
    COUCH = 1  # not air but outside the body: couch, blanket, clothes (CT only, no activity)
    GAS = 2  # gas inside the body: bowel, stomach
    FAT = 3
    SOFT = 4  # soft tissue no label claims (mostly muscle)
    MUSCLE = 5
    BONE_CORTEX = 6
    BONE_MARROW = 7
    CARTILAGE = 8
    LUNG = 9
    AIRWAY = 10
    BRAIN_GRAY = 11
    BRAIN_WHITE = 12
    CSF = 13
    SPINAL_CORD = 14
    MYOCARDIUM = 15
    HEART_BLOOD = 16  # heart chambers
    ARTERY = 17
    VEIN = 18
    PORTAL_VEIN = 19
    LIVER = 20
    SPLEEN = 21
    KIDNEY = 22
    RENAL_PELVIS = 23  # collecting system: excreted tracer
    KIDNEY_CYST = 24
    BLADDER = 25
    GALLBLADDER = 26
    STOMACH = 27
    PANCREAS = 28
    ADRENAL = 29
    SMALL_BOWEL = 30
    COLON = 31
    ESOPHAGUS = 32
    THYROID = 33
    PROSTATE = 34


BODY_ROLES = tuple(r for r in Role if r not in (Role.OUTSIDE, Role.COUCH))
BONE_ROLES = (Role.BONE_CORTEX, Role.BONE_MARROW)
VESSEL_ROLES = (Role.ARTERY, Role.VEIN, Role.PORTAL_VEIN)
BOWEL_ROLES = (Role.SMALL_BOWEL, Role.COLON, Role.STOMACH)

# Structure names (TotalSegmentator "total" v1/v2 and its heart/lung sub-tasks) -> role.
# First match wins; patterns are fnmatch-style. "bone" and "heart"/"brain" are refined
# later from the CT (cortex/marrow by density, myocardium/chambers, grey/white/CSF).
_NAME_RULES: tuple[tuple[str, Role], ...] = (
    ("spleen", Role.SPLEEN),
    ("kidney_cyst*", Role.KIDNEY_CYST),
    ("kidney*", Role.KIDNEY),
    ("gallbladder", Role.GALLBLADDER),
    ("liver", Role.LIVER),
    ("stomach", Role.STOMACH),
    ("pancreas", Role.PANCREAS),
    ("adrenal_gland*", Role.ADRENAL),
    ("lung_trachea_bronchia", Role.AIRWAY),
    ("trachea", Role.AIRWAY),
    ("lung*", Role.LUNG),
    ("esophagus", Role.ESOPHAGUS),
    ("thyroid*", Role.THYROID),
    ("small_bowel", Role.SMALL_BOWEL),
    ("duodenum", Role.SMALL_BOWEL),
    ("colon", Role.COLON),
    ("urinary_bladder", Role.BLADDER),
    ("prostate", Role.PROSTATE),
    ("costal_cartilages", Role.CARTILAGE),
    ("sacrum", Role.BONE_MARROW),
    ("vertebrae*", Role.BONE_MARROW),
    ("hip*", Role.BONE_MARROW),
    ("femur*", Role.BONE_MARROW),
    ("humerus*", Role.BONE_MARROW),
    ("scapula*", Role.BONE_MARROW),
    ("clavicula*", Role.BONE_MARROW),
    ("rib*", Role.BONE_MARROW),
    ("sternum", Role.BONE_MARROW),
    ("skull", Role.BONE_MARROW),
    ("heart_myocardium", Role.MYOCARDIUM),
    ("myocardium", Role.MYOCARDIUM),
    ("heart_atrium*", Role.HEART_BLOOD),
    ("heart_ventricle*", Role.HEART_BLOOD),
    ("atrial_appendage*", Role.HEART_BLOOD),
    ("heart", Role.MYOCARDIUM),  # whole heart: split into wall and chambers from its shape
    ("portal_vein*", Role.PORTAL_VEIN),
    ("aorta", Role.ARTERY),
    ("pulmonary_artery", Role.ARTERY),
    ("brachiocephalic_trunk", Role.ARTERY),
    ("*arter*", Role.ARTERY),
    ("*vena*", Role.VEIN),
    ("*vein*", Role.VEIN),
    ("spinal_cord", Role.SPINAL_CORD),
    ("brain", Role.BRAIN_GRAY),  # split into grey, white matter and CSF from the CT
    ("gluteus*", Role.MUSCLE),
    ("autochthon*", Role.MUSCLE),
    ("iliopsoas*", Role.MUSCLE),
    ("*muscle*", Role.MUSCLE),
)

WHOLE_HEART = "heart"
WHOLE_BRAIN = "brain"


def role_of_name(name: str) -> Role | None:
    """Role of a labelled structure from its (TotalSegmentator) name; None if unknown."""
    key = name.strip().lower()
    for pattern, role in _NAME_RULES:
        if fnmatchcase(key, pattern):
            return role
    return None


# CT-number classes (HU, lower bounds) for voxels no label claims, and for density
# checks inside labels: labels are model output and include gas in the bowel, renal
# sinus fat, partial-volume edges.
GAS_BELOW_HU = -900.0  # bowel gas; lung parenchyma is about -850..-700
LUNG_BELOW_HU = -400.0
FAT_BELOW_HU = -40.0
MARROW_FROM_HU = 150.0  # unlabelled: bone from here (contrast-filled bowel is labelled bowel)
CORTEX_FROM_HU = 350.0


def role_from_hu(hu: np.ndarray, lungs_labelled: bool) -> np.ndarray:
    """Roles (uint8) of body voxels from their CT number alone.

    Air-like voxels are lung when the label set has no lungs (else they are gas: the
    labelled lungs are already lung); -900 HU and below is gas either way.
    """
    roles = np.full(hu.shape, Role.SOFT, np.uint8)
    roles[hu < FAT_BELOW_HU] = Role.FAT
    roles[hu < LUNG_BELOW_HU] = Role.GAS if lungs_labelled else Role.LUNG
    roles[hu < GAS_BELOW_HU] = Role.GAS
    roles[hu >= MARROW_FROM_HU] = Role.BONE_MARROW
    roles[hu >= CORTEX_FROM_HU] = Role.BONE_CORTEX
    return roles


# Role -> organ-map tissue (Tissue numbering of the whole-body phantom).
TISSUE_OF_ROLE: dict[Role, Tissue] = {
    Role.OUTSIDE: Tissue.AIR,
    Role.COUCH: Tissue.TABLE,
    Role.GAS: Tissue.AIR,
    Role.FAT: Tissue.FAT,
    Role.SOFT: Tissue.MUSCLE,
    Role.MUSCLE: Tissue.MUSCLE,
    Role.BONE_CORTEX: Tissue.BONE_CORTEX,
    Role.BONE_MARROW: Tissue.BONE_MARROW,
    Role.CARTILAGE: Tissue.MUSCLE,
    Role.LUNG: Tissue.LUNG,
    Role.AIRWAY: Tissue.AIRWAY,
    Role.BRAIN_GRAY: Tissue.BRAIN_GRAY,
    Role.BRAIN_WHITE: Tissue.BRAIN_WHITE,
    Role.CSF: Tissue.CSF,
    Role.SPINAL_CORD: Tissue.CSF,  # the spinal canal of the whole-body phantom
    Role.MYOCARDIUM: Tissue.MYOCARDIUM,
    Role.HEART_BLOOD: Tissue.BLOOD,
    Role.ARTERY: Tissue.BLOOD,
    Role.VEIN: Tissue.BLOOD,
    Role.PORTAL_VEIN: Tissue.BLOOD,
    Role.LIVER: Tissue.LIVER,
    Role.SPLEEN: Tissue.SPLEEN,
    Role.KIDNEY: Tissue.KIDNEY,
    Role.RENAL_PELVIS: Tissue.KIDNEY_PELVIS,
    Role.KIDNEY_CYST: Tissue.ABDOMEN,
    Role.BLADDER: Tissue.BLADDER,
    Role.GALLBLADDER: Tissue.ABDOMEN,
    Role.STOMACH: Tissue.ABDOMEN,
    Role.PANCREAS: Tissue.ABDOMEN,
    Role.ADRENAL: Tissue.ABDOMEN,
    Role.SMALL_BOWEL: Tissue.ABDOMEN,
    Role.COLON: Tissue.ABDOMEN,
    Role.ESOPHAGUS: Tissue.ABDOMEN,
    Role.THYROID: Tissue.ABDOMEN,
    Role.PROSTATE: Tissue.ABDOMEN,
}

# Typical physiological FDG uptake (SUVbw, per-patient uniform draw) of organs the
# whole-body phantom does not model separately.
EXTRA_SUV: dict[Role, tuple[float, float]] = {
    # Renal parenchyma. The whole-body phantom's 4-8 is the kidney with its calyces blurred in;
    # here the collecting system is painted apart (with that phantom's renal-pelvis draw), and
    # the parenchyma of a real FDG scan is about 2-4 (HN-CHUS-052 of Head-Neck-PET-CT: 2-2.5).
    Role.KIDNEY: (2.0, 4.5),
    Role.CARTILAGE: (0.4, 0.7),
    Role.SPINAL_CORD: (1.2, 2.0),
    Role.GALLBLADDER: (0.3, 0.8),  # bile: below the liver
    Role.STOMACH: (1.2, 2.5),  # gastric wall, varies with distension
    Role.PANCREAS: (1.1, 1.8),
    Role.ADRENAL: (1.0, 1.8),
    Role.ESOPHAGUS: (1.2, 2.2),
    Role.THYROID: (0.9, 2.0),
    Role.PROSTATE: (1.2, 2.2),
}
COLON_FACTOR = (0.7, 3.0)  # colon uptake x the bowel draw: physiological colonic uptake varies most

# Relative smooth variation of uptake within an organ (standard deviation of a 30 mm field).
TEXTURE: dict[Role, float] = {
    Role.LIVER: 0.06,
    Role.SPLEEN: 0.06,
    Role.MUSCLE: 0.12,
    Role.SOFT: 0.12,
    Role.BONE_MARROW: 0.1,
    Role.KIDNEY: 0.1,
    Role.STOMACH: 0.3,
    Role.SMALL_BOWEL: 0.45,
    Role.COLON: 0.45,
}


def draw_role_suv(values: TissueValues, rng: np.random.Generator) -> np.ndarray:
    """Per-role SUVbw lookup table (float32, (256,)) of one patient: the draw for the role's organ-map
    tissue unless :data:`EXTRA_SUV` gives the role its own range; 0 for air, gas and the couch."""
    table = np.zeros(256, np.float32)
    for role, tissue in TISSUE_OF_ROLE.items():
        table[role] = values.suv[tissue]
    table[Role.KIDNEY_CYST] = values.suv[Tissue.CSF]  # fluid
    for role, (low, high) in EXTRA_SUV.items():
        table[role] = rng.uniform(low, high)
    table[Role.COLON] = values.suv[Tissue.ABDOMEN] * rng.uniform(*COLON_FACTOR)
    return table


def tissue_lookup() -> np.ndarray:
    """Role -> :class:`Tissue` lookup table (uint8, (256,))."""
    table = np.zeros(256, np.uint8)
    for role, tissue in TISSUE_OF_ROLE.items():
        table[role] = tissue
    return table


# Contrast phases: mean HU of enhancing roles (per-patient uniform draw). Values are the
# usual ranges of abdominal CT: non-contrast, late arterial (~35 s) and portal venous (~70 s).
PHASES = ("native", "arterial", "venous")
PHASE_HU: dict[Role, dict[str, tuple[float, float]]] = {
    Role.ARTERY: {"native": (35, 50), "arterial": (250, 400), "venous": (140, 200)},
    Role.HEART_BLOOD: {"native": (35, 50), "arterial": (200, 350), "venous": (130, 180)},
    Role.VEIN: {"native": (35, 50), "arterial": (60, 110), "venous": (120, 170)},
    Role.PORTAL_VEIN: {"native": (35, 50), "arterial": (80, 140), "venous": (150, 200)},
    Role.LIVER: {"native": (50, 65), "arterial": (60, 80), "venous": (95, 125)},
    Role.SPLEEN: {"native": (40, 50), "arterial": (90, 130), "venous": (105, 130)},
    Role.KIDNEY: {"native": (28, 38), "arterial": (140, 200), "venous": (140, 190)},
    Role.PANCREAS: {"native": (35, 45), "arterial": (90, 130), "venous": (80, 110)},
    Role.ADRENAL: {"native": (25, 40), "arterial": (50, 80), "venous": (50, 80)},
    Role.MYOCARDIUM: {"native": (40, 50), "arterial": (90, 130), "venous": (90, 120)},
    Role.MUSCLE: {"native": (30, 55), "arterial": (35, 60), "venous": (40, 65)},  # fatty infiltration lowers it
}
# Roles without labels of their own that enhance like a labelled one (unlabelled soft tissue is mostly muscle).
ENHANCES_LIKE: dict[Role, Role] = {Role.SOFT: Role.MUSCLE}
# Walls of hollow organs enhance on top of whatever fills them: HU added to their soft-tissue voxels.
WALL_ENHANCEMENT: dict[Role, dict[str, tuple[float, float]]] = {
    role: {"native": (0, 0), "arterial": (20, 40), "venous": (25, 45)} for role in (*BOWEL_ROLES, Role.ESOPHAGUS)
}

"""How to run a translation: :class:`TranslationOptions`, the one typed config of the
``translate``, ``evaluate`` and ``demo`` options and of the Slicer module.

Torch-free, so building the command line (and the Slicer panel) imports no network code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import values
from ..choices import DEVICE_CHOICES, PRECISIONS, REFINE_MODES
from ..config import MAX_WINDOW, ModelConfig
from ..errors import InputError

MAX_BATCH = 4096  # slices per G pass
# Refiner windows per pass when the G batch is chosen by timing (docs/benchmark-speed.md: four
# windows per pass were 1.2-2.2x one at a time; one window sends the small refiner's 3x3x3
# convolutions to PyTorch's slow non-oneDNN path).
WINDOWS_PER_BATCH = 4


@dataclass(frozen=True)
class TranslationOptions:
    """How to run a translation (the ``translate``, ``evaluate`` and ``demo`` options and the Slicer panel's).

    ``batch_size`` is the number of slices per G pass (F runs ``max(1, batch_size // 2)``
    windows per pass); None: chosen by timing on this machine (:mod:`.batching`).
    ``precision`` ``auto`` is bfloat16 where the device has it natively and the model's
    precision record says it stays within tolerance of float32, else float32 (see :mod:`.acceleration`).
    """

    refine: str = field(
        default="overlap",
        metadata={"help": "3D refinement: overlap (stride < window, averaged), non-overlap or none", "choices": REFINE_MODES},
    )
    window: int | None = field(default=None, metadata={"help": "slices per refiner window s (default: the model's)", "type": int})
    stride: int | None = field(
        default=None, metadata={"help": "window offset k (default: the model's; non-overlap uses k = s)", "type": int}
    )
    device: str = field(default="auto", metadata={"help": "compute device", "choices": DEVICE_CHOICES})
    batch_size: int | None = field(
        default=None,
        metadata={"help": "slices per generator pass (default: the fastest, measured on the first slices)", "type": int},
    )
    body_mask: bool = field(
        default=True,
        metadata={"help": "set the PET to 0 outside the patient's body found on the CT (couch, blankets, air)"},
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "auto: bfloat16 on GPUs and CPUs with native bfloat16 when the model's precision record shows it "
            "within tolerance of float32 on real studies, else float32; or float32; or bfloat16 (autocast)",
            "choices": PRECISIONS,
        },
    )

    def __post_init__(self) -> None:
        try:
            values.one_of("refinement", self.refine, REFINE_MODES)
            values.one_of("precision", self.precision, PRECISIONS)
            values.flag("body mask", self.body_mask)
            if self.batch_size is not None:
                values.whole("batch size", self.batch_size, 1, MAX_BATCH)
            for name in ("window", "stride"):
                if getattr(self, name) is not None:
                    values.whole(name, getattr(self, name), 1, MAX_WINDOW)
        except ValueError as exc:
            raise InputError(str(exc)) from exc

    @property
    def windows_per_batch(self) -> int:
        """Refiner windows per forward pass."""
        return WINDOWS_PER_BATCH if self.batch_size is None else max(1, self.batch_size // 2)

    def validate(self, config: ModelConfig) -> tuple[int, int]:
        """Check the refinement options against a model of ``config`` (each value alone is
        checked on construction; one-line :class:`InputError`s); returns the refiner window
        and stride (s, k) to use."""
        window = self.window if self.window is not None else config.refiner.window
        if self.refine == "non-overlap":
            if self.stride is not None and self.stride != window:
                raise InputError(f"non-overlap refinement uses stride = window ({window}); drop --stride or use --refine overlap")
            return window, window
        stride = self.stride if self.stride is not None else min(config.refiner.stride, max(window - 1, 1))
        if self.refine == "overlap" and not 1 <= stride < window:
            raise InputError(f"overlap refinement needs 1 <= stride < window (got stride {stride}, window {window})")
        return window, stride

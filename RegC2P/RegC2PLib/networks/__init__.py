"""The four networks of RegC2P: G (slice translation), R (registration, training only),
D (discriminator, training only) and F (3D refiner), built from a :class:`ModelConfig`."""

from .discriminator import Discriminator
from .generator import Generator
from .refiner import Refiner
from .registration import RegistrationNet, invert_field, smoothness_loss, warp

__all__ = ["Discriminator", "Generator", "Refiner", "RegistrationNet", "invert_field", "smoothness_loss", "warp"]

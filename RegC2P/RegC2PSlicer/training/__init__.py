"""Training RegC2P from Slicer: CT/PET volume nodes in the scene, or a dataset folder.

* :mod:`.settings` — :class:`TrainingSettings` (model and training configs);
* :mod:`.dataset` — scene pairs (:class:`TrainingPair`) written as a dataset folder
  (:func:`write_pairs`), dataset checks;
* :mod:`.job` — :class:`TrainingJob`: one run folder, trained blocking or in a
  background worker process.

Volume nodes are only read.
"""

from .dataset import MIN_STUDIES_WITH_VALIDATION, TrainingPair, as_pairs, check_dataset, check_study_count, write_pairs
from .job import TrainingJob
from .settings import TrainingSettings

__all__ = [
    "MIN_STUDIES_WITH_VALIDATION",
    "TrainingJob",
    "TrainingPair",
    "TrainingSettings",
    "as_pairs",
    "check_dataset",
    "check_study_count",
    "write_pairs",
]

"""Option values shared by the library, the command line and the Slicer modules.

Torch-free on purpose: the Slicer module files and batch scripts import these names
before PyTorch is installed, so they must not pull in ``torch``.
"""

REFINE_MODES = ("overlap", "non-overlap", "none")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "float32", "bfloat16")
MODEL_SUFFIX = ".safetensors"
SUBSETS = ("train", "val", "test")  # the parts of a dataset split, by study

"""Training: stage 1 (G + R + D, or pix2pix without R) and stage 2 (the 3D refiner F),
run by one generic loop with checkpoints, resume and validation (see ``runner.py``)."""

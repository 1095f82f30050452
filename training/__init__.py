"""Training, evaluation, calibration and export (needs the `train` extra: torch, timm, albumentations).

Nothing here is imported by ``wildlife_vision`` at import time; modules import torch lazily so that the
CLI can explain a missing extra instead of failing with an ImportError.
"""

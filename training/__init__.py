"""The trainer, installed as ``wildlife_vision_train``: training, export and the benchmark (the `train` extra:
torch, timm, albumentations).

It depends on the runtime ``wildlife_vision`` only, and the runtime never imports it: its commands reach the CLI
as entry-point plugins, and command modules import torch inside their functions so that ``--help`` works and a
missing extra is explained instead of failing with an ImportError.
"""

"""Train-only augmentation for marketplace listing photos (albumentations on HWC uint8 RGB numpy arrays).

Listing photos are re-shot, cropped, re-lit and re-compressed many times: random resized crops, flips, colour
and lighting changes, slight blur, JPEG recompression and small perspective changes cover most of that.
Normalisation is *not* done here: the training dataset calls ``wildlife_vision.preprocess.normalize`` so that
train and eval scale pixels with the same code. Eval-time preprocessing never uses this module.
"""

from __future__ import annotations

from typing import Any

from wildlife_vision_train.config import AugCfg


def build_train_transform(image_size: int, cfg: AugCfg, interpolation: str = "bicubic") -> Any:
    """The albumentations pipeline producing ``image_size`` x ``image_size`` uint8 RGB arrays."""
    import albumentations as A
    import cv2

    interp = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
              "lanczos": cv2.INTER_LANCZOS4, "box": cv2.INTER_AREA}.get(interpolation, cv2.INTER_CUBIC)
    ops = [
        A.RandomResizedCrop(size=(image_size, image_size), scale=(cfg.scale_min, 1.0), ratio=(3 / 4, 4 / 3),
                            interpolation=interp, p=1.0),
        A.HorizontalFlip(p=cfg.hflip),
    ]
    if cfg.perspective > 0:
        ops.append(A.Perspective(scale=(0.02, 0.06), keep_size=True, fit_output=False, p=cfg.perspective))
    if cfg.color > 0:
        ops.append(A.OneOf([
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03, p=1.0),
            A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=1.0),
            A.RandomGamma(gamma_limit=(75, 130), p=1.0),
            A.ToGray(p=1.0),
        ], p=cfg.color))
    if cfg.blur > 0:
        ops.append(A.OneOf([
            A.GaussianBlur(blur_limit=(3, 5), p=1.0),
            A.MotionBlur(blur_limit=(3, 7), p=1.0),
            A.Downscale(scale_range=(0.5, 0.8), p=1.0),
        ], p=cfg.blur))
    if cfg.jpeg > 0:
        ops.append(A.ImageCompression(quality_range=(35, 95), p=cfg.jpeg))
    return A.Compose(ops)

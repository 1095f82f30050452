"""The resolved training configuration: small frozen dataclasses, one per concern.

A run's configuration is saved as ``RUN_DIR/config.yaml`` and, as plain JSON-compatible data, inside every
checkpoint (so ``torch.load(..., weights_only=True)`` can read it back). Its SHA-256 goes into the exported
model's metadata. No torch import here: the CLI builds a config before the train extra is needed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Type, TypeVar, Union

LOSSES = ("bce", "asl", "focal")
DEVICES = ("auto", "cpu", "cuda")
CALIBRATION_TARGETS = ("precision", "recall")

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the flag and the accepted values."""


@dataclass(frozen=True)
class DataCfg:
    manifest: str
    labels: Tuple[str, ...] = ()          # () = the labels present in the manifest, in taxonomy order
    image_size: int = 224
    crop_pct: Optional[float] = None      # None = the backbone's pretrained crop_pct
    interpolation: Optional[str] = None   # None = the backbone's pretrained interpolation
    batch_size: int = 32
    workers: int = 2
    val_fraction: float = 0.15            # used only when the manifest has no validation rows
    max_train_images: Optional[int] = None
    max_val_images: Optional[int] = None
    # evaluation, calibration and export (timm's test_input_size / test_crop_pct); None = image_size / crop_pct
    test_image_size: Optional[int] = None
    test_crop_pct: Optional[float] = None

    def validate(self) -> None:
        if not 16 <= self.image_size <= 2048:
            raise ConfigError(f"--image-size must be between 16 and 2048 pixels, got {self.image_size}")
        if self.test_image_size is not None and not 16 <= self.test_image_size <= 2048:
            raise ConfigError(f"--test-image-size must be between 16 and 2048 pixels, got {self.test_image_size}")
        for name in ("crop_pct", "test_crop_pct"):
            v = getattr(self, name)
            if v is not None and not 0.1 <= v <= 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0.1, 1], got {v}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers}")
        if not 0.0 < self.val_fraction < 0.9:
            raise ConfigError(f"--val-fraction must be in (0, 0.9), got {self.val_fraction}")
        for name in ("max_train_images", "max_val_images"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {v}")


@dataclass(frozen=True)
class ModelCfg:
    name: str = "tf_efficientnet_lite0"
    pretrained: str = "auto"              # auto | none | PATH (.pth/.pt/.safetensors) | hub
    drop_rate: float = 0.2
    drop_path_rate: float = 0.1
    input_lowpass: float = 0.0            # sigma (px) of a Gaussian in front of the first conv; 0 = none

    def validate(self) -> None:
        if not 0.0 <= self.input_lowpass <= 4.0:
            raise ConfigError(f"--input-lowpass must be a sigma in pixels in [0, 4] (0 = off), got "
                              f"{self.input_lowpass}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ConfigError(f"--drop-rate must be in [0, 1), got {self.drop_rate}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"--drop-path-rate must be in [0, 1), got {self.drop_path_rate}")


@dataclass(frozen=True)
class OptimCfg:
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01            # cosine decays to lr * min_lr_ratio
    freeze_epochs: int = 0                # train only the classifier for this many epochs first
    ema: bool = False
    ema_decay: float = 0.998
    patience: int = 5                     # early stopping on validation macro-AP; 0 = off
    grad_clip: float = 5.0                # max gradient norm; 0 = off

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"--lr must be in (0, 1), got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"--weight-decay must be 0 or more, got {self.weight_decay}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"--warmup-epochs must be 0 or more, got {self.warmup_epochs}")
        if self.freeze_epochs < 0:
            raise ConfigError(f"--freeze-epochs must be 0 or more, got {self.freeze_epochs}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"--ema-decay must be in (0, 1), got {self.ema_decay}")
        if self.patience < 0:
            raise ConfigError(f"--patience must be 0 (off) or more, got {self.patience}")


@dataclass(frozen=True)
class LossCfg:
    kind: str = "bce"                     # bce | asl | focal
    pos_weight: str = "none"              # auto | none
    focal_gamma: float = 2.0
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05

    def validate(self) -> None:
        if self.kind not in LOSSES:
            raise ConfigError(f"--loss must be one of {', '.join(LOSSES)}, got {self.kind!r}")
        if self.pos_weight not in ("auto", "none"):
            raise ConfigError(f"--pos-weight must be 'auto' or 'none', got {self.pos_weight!r}")


@dataclass(frozen=True)
class AugCfg:
    """Train-only augmentation for listing photos (see training/augment.py)."""

    scale_min: float = 0.35               # RandomResizedCrop area range (scale_min, 1)
    hflip: float = 0.5
    color: float = 0.8                    # probability of colour / lighting jitter
    blur: float = 0.15
    jpeg: float = 0.3                     # JPEG recompression (quality 35..95)
    perspective: float = 0.2
    mixup: float = 0.0                    # Mixup Beta(alpha, alpha); 0 = off (training/mixing.py)
    cutmix: float = 0.0                   # CutMix Beta(alpha, alpha); 0 = off
    mixup_prob: float = 1.0               # share of batches mixed when either is on
    consistency: float = 0.0              # weight of the edit-consistency loss (training/consistency.py); 0 = off
    consistency_fraction: float = 0.5     # share of each batch given an edited twin when consistency is on
    consistency_edits: Tuple[str, ...] = ()  # the twins' edits, drawn uniformly; () = all of them
    consistency_teacher: str = ""         # a run's best.pt: pull both views to its mean score instead (JS if empty)

    def validate(self) -> None:
        if self.consistency_edits:
            from wildlife_vision.evaluation.robustness import resolve_edits

            try:
                resolve_edits(list(self.consistency_edits))
            except ValueError as e:
                raise ConfigError(f"--consistency-edits: {e}") from None
        if not 0.05 <= self.scale_min <= 1.0:
            raise ConfigError(f"--aug-scale-min must be in [0.05, 1], got {self.scale_min}")
        for name in ("mixup", "cutmix"):
            if not 0.0 <= getattr(self, name) <= 10.0:
                raise ConfigError(f"--{name} (a Beta distribution's alpha) must be in [0, 10], got "
                                  f"{getattr(self, name)}")
        if not 0.0 <= self.mixup_prob <= 1.0:
            raise ConfigError(f"--mixup-prob must be in [0, 1], got {self.mixup_prob}")
        if not 0.0 <= self.consistency <= 100.0:
            raise ConfigError(f"--consistency must be in [0, 100], got {self.consistency}")
        if not 0.0 < self.consistency_fraction <= 1.0:
            raise ConfigError(f"--consistency-fraction must be in (0, 1], got {self.consistency_fraction}")
        for name in ("hflip", "color", "blur", "jpeg", "perspective"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"augmentation probability {name} must be in [0, 1], got {v}")


@dataclass(frozen=True)
class CalibCfg:
    target: str = "precision"             # precision | recall
    value: float = 0.95
    review_recall: float = 0.95           # the review band reaches down to the score catching this recall

    def validate(self) -> None:
        if self.target not in CALIBRATION_TARGETS:
            raise ConfigError(f"calibration target must be one of {CALIBRATION_TARGETS}, got {self.target!r}")
        if not 0.0 < self.value <= 1.0:
            raise ConfigError(f"--calibrate-{self.target} must be in (0, 1], got {self.value}")
        if not 0.0 < self.review_recall <= 1.0:
            raise ConfigError(f"--review-recall must be in (0, 1], got {self.review_recall}")


@dataclass(frozen=True)
class RunCfg:
    output: str = "runs/train"
    seed: int = 42
    device: str = "auto"                  # auto | cpu | cuda
    amp: Optional[bool] = None            # None = on for CUDA, off on CPU
    channels_last: Optional[bool] = None  # None = on for CPU
    keep_freed_memory: Optional[bool] = None  # None = on for CPU (see wildlife_vision_train.runtime)
    # processes training together (torchrun's WORLD_SIZE; set by train, not a flag): recorded, not hashed, since
    # --batch-size is the global batch and each process takes its share (wildlife_vision_train.distributed)
    world_size: int = 1

    def validate(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.world_size < 1:
            raise ConfigError(f"world_size must be at least 1, got {self.world_size}")


@dataclass(frozen=True)
class TrainConfig:
    data: DataCfg
    model: ModelCfg = field(default_factory=ModelCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    loss: LossCfg = field(default_factory=LossCfg)
    aug: AugCfg = field(default_factory=AugCfg)
    calib: CalibCfg = field(default_factory=CalibCfg)
    run: RunCfg = field(default_factory=RunCfg)

    def validate(self) -> "TrainConfig":
        for section in (self.data, self.model, self.optim, self.loss, self.aug, self.calib, self.run):
            section.validate()
        if self.optim.freeze_epochs > self.optim.epochs:
            raise ConfigError(f"--freeze-epochs ({self.optim.freeze_epochs}) is more than --epochs "
                              f"({self.optim.epochs}); equal to it keeps the backbone frozen throughout (only the "
                              "classifier and the BatchNorm statistics train)")
        return self

    def replace(self, section: str, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **changes)})

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["data"]["labels"] = list(self.data.labels)
        d["aug"]["consistency_edits"] = list(self.aug.consistency_edits)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        if not isinstance(d, dict) or "data" not in d:
            raise ConfigError("a training config must be a mapping with at least a 'data' section")
        kwargs = {}
        for name, kind in SECTIONS.items():
            if name in d:
                kwargs[name] = _section(kind, d[name], name)
        return cls(**kwargs)

    def sha256(self) -> str:
        """Hash of what determines the trained weights (output folder, worker and process counts excluded)."""
        d = self.to_dict()
        d["run"].pop("output", None)
        d["data"].pop("workers", None)
        d["run"].pop("keep_freed_memory", None)  # speed only
        d["run"].pop("world_size", None)  # the same global batches over 1 or N processes (docs/distributed-training.md)
        d["data"].pop("test_image_size", None)  # evaluation only
        d["data"].pop("test_crop_pct", None)
        for key, default in (("mixup", 0.0), ("cutmix", 0.0), ("mixup_prob", 1.0), ("consistency", 0.0),
                             ("consistency_fraction", 0.5)):  # added later: hashes of
            if d["aug"].get(key) == default:                                         # older configs stay valid
                d["aug"].pop(key, None)
        for key in ("consistency_edits", "consistency_teacher"):
            if not d["aug"].get(key):
                d["aug"].pop(key, None)
        if not d["model"].get("input_lowpass"):
            d["model"].pop("input_lowpass", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode("utf-8")).hexdigest()

    def save_yaml(self, path: Path) -> None:
        import yaml

        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    @classmethod
    def load_yaml(cls, path: Path) -> "TrainConfig":
        import yaml

        return cls.from_dict(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


SECTIONS: Dict[str, Type[Any]] = {"data": DataCfg, "model": ModelCfg, "optim": OptimCfg, "loss": LossCfg,
                                  "aug": AugCfg, "calib": CalibCfg, "run": RunCfg}
#: recipe keys that never come from a recipe file: where this run goes (``--output``), and how many processes
#: train it (torchrun's WORLD_SIZE); both are set for each run
RECIPE_IGNORED = ("run.output", "run.world_size")


def read_recipe(path: Path) -> Dict[str, Dict[str, Any]]:
    """A training recipe (``train --config RECIPE.yaml``): YAML in the schema of a run's ``config.yaml``, all of
    it (the resolved ``config.yaml`` of an earlier run is a recipe) or any part of it.

    Returns ``{section: {key: value}}`` with only the keys the file sets. Unknown sections and keys are refused
    with the valid ones named; each value is checked against its field's type and converted the way the
    command line would (``5`` for a float field becomes ``5.0``, YAML's string ``1e-3`` becomes ``0.001``), so a
    recipe that writes a value differently still hashes the same. A relative ``data.manifest`` is taken relative
    to the recipe's own folder. ``run.output`` and ``run.world_size`` are dropped (:data:`RECIPE_IGNORED`).
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path}: not valid YAML ({' '.join(str(e).split())})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: a recipe is a mapping of sections ({', '.join(SECTIONS)}), got "
                          f"{type(raw).__name__}")
    unknown = [str(k) for k in raw if k not in SECTIONS]
    if unknown:
        raise ConfigError(f"--config {path}: unknown section(s) {', '.join(repr(k) for k in unknown)}; valid "
                          f"sections: {', '.join(SECTIONS)}")
    out: Dict[str, Dict[str, Any]] = {}
    for name, values in raw.items():
        kind = SECTIONS[name]
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"--config {path}: section '{name}' must be a mapping of keys, got "
                              f"{type(values).__name__}")
        hints = typing.get_type_hints(kind)
        known = [f.name for f in dataclasses.fields(kind)]
        for key in values:
            if key not in hints:
                raise ConfigError(f"--config {path}: unknown key '{name}.{key}'; valid keys in '{name}': "
                                  f"{', '.join(known)}")
        section = {key: _coerce(value, hints[key], f"--config {path}: {name}.{key}")
                   for key, value in values.items() if f"{name}.{key}" not in RECIPE_IGNORED}
        if section.get("manifest"):
            manifest = Path(section["manifest"]).expanduser()
            section["manifest"] = str(manifest if manifest.is_absolute() else (path.parent / manifest).resolve())
        out[name] = section
    return out


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the field type ``hint`` (bool, int, float, str, Optional of them, Tuple[str, ...])."""
    if typing.get_origin(hint) is Union:
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be a whole number, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}" + (
            " (YAML reads yes/no/on/off as true/false: quote the word)" if isinstance(value, bool) else ""))
    if typing.get_origin(hint) is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, (list, tuple)) and all(isinstance(v, str) for v in items):
            return tuple(v.strip() for v in items if v.strip())
        raise ConfigError(f"{where} must be a list of names, got {value!r}")
    raise ConfigError(f"{where}: a field of type {hint} cannot be set from a recipe")  # pragma: no cover


def merge_recipe(base: Dict[str, Any], recipe: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """``base`` (a :meth:`TrainConfig.to_dict`) with the recipe's values laid over it, section by section."""
    return {name: {**base.get(name, {}), **recipe.get(name, {})} for name in SECTIONS}


def _section(kind: Type[T], raw: Any, name: str) -> T:
    if not isinstance(raw, dict):
        raise ConfigError(f"config section '{name}' must be a mapping, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"config section '{name}' has unknown key(s) {unknown}; known: {sorted(known)}")
    values = dict(raw)
    for key in ("labels", "consistency_edits"):
        if key in values:
            values[key] = tuple(values[key] or ())
    return kind(**values)

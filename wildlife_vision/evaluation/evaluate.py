"""Evaluation reports: per-class and averaged metrics, slices by manifest column, PR curves and confusion plots.

``evaluate_onnx`` scores a manifest split with an exported model through ``wildlife_vision.load_model`` (so
decoding and preprocessing are the inference library's own); training evaluates its torch model on the same
``wildlife_vision.preprocess`` inputs and writes the same report with :func:`write_report`. Needs numpy and
matplotlib only (no torch).

Outputs in the report folder: ``report.json`` (schema below), ``report.md``, ``pr_curves.png``,
``confusion.png``, ``reliability.png`` (reliability diagram), and when the images are known ``predictions.csv``
(one row per scored image: its manifest columns, and per label the truth, the score and whether it is flagged at
the threshold) and ``errors.png`` (the most confident mistakes per label: flagged negatives with the highest
scores, missed positives with the lowest).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from wildlife_vision.data.manifest import Sample, file_sha256, read_manifest, targets_for
from wildlife_vision.evaluation import operating
from wildlife_vision.evaluation.bootstrap import DEFAULT_RESAMPLES, label_intervals, resample_indices
from wildlife_vision.evaluation.metrics import multilabel_report, precision_recall_curve
from wildlife_vision.evaluation.probability import plot_reliability

log = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = 1
PREDICTIONS_SCHEMA_VERSION = 1
MAX_SLICE_VALUES = 20
ERRORS_PER_ROW = 6


def default_slice_columns(samples: Sequence[Sample], columns: Sequence[str]) -> List[str]:
    """Extra columns worth slicing by: between 2 and MAX_SLICE_VALUES distinct values."""
    out = []
    for col in columns:
        values = {s.extra.get(col, "") for s in samples}
        if 2 <= len(values) <= MAX_SLICE_VALUES:
            out.append(col)
    return out


#: manifest column whose values tie near-duplicate photos together (resampled whole by the bootstrap)
GROUP_COLUMN = "group"


def group_ids(samples: Sequence[Sample]) -> Optional[List[str]]:
    """The bootstrap unit of each sample: its manifest ``group`` (a photo without one is a group of its own), or
    None when the manifest has no ``group`` column (then photos are resampled)."""
    if not any(GROUP_COLUMN in s.extra for s in samples):
        return None
    return [s.extra.get(GROUP_COLUMN) or f"row{i}" for i, s in enumerate(samples)]


def with_intervals(report: Dict[str, Any], y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str],
                   thresholds: Mapping[str, float], groups: Optional[Sequence[str]], resamples: int,
                   seed: int = 0) -> Dict[str, Any]:
    """Add each label's false-positive and flag rates and the 95% bootstrap intervals (``ci95``) of its AP,
    precision, recall, false-positive rate and flag rate to a :func:`multilabel_report` result, in place."""
    draws = resample_indices(len(y_true), groups, resamples, seed) if resamples else []
    for j, lab in enumerate(labels):
        m = report["per_class"][lab]
        negatives = m["fp"] + m["tn"]
        m["negatives"] = negatives
        m["fpr"] = m["fp"] / negatives if negatives else None
        m["flag_rate"] = (m["tp"] + m["fp"]) / len(y_true) if len(y_true) else None
        if not m["support"]:  # precision and recall say nothing without positives
            m["precision"] = m["recall"] = m["f1"] = None
        ci = label_intervals(y_true[:, j], scores[:, j], float(thresholds.get(lab, 0.5)), draws) if draws else {}
        m["ci95"] = {k: (list(v) if v else None) for k, v in ci.items()}
    return report


def build_report(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str], thresholds: Mapping[str, float],
                 samples: Sequence[Sample], slice_by: Sequence[str] = (), info: Optional[Mapping[str, Any]] = None,
                 resamples: int = DEFAULT_RESAMPLES,
                 review_bands: Optional[Mapping[str, Tuple[float, float]]] = None) -> Dict[str, Any]:
    """The full report as a JSON-ready dict (``samples`` aligned with the rows of ``y_true``/``scores``).

    Every per-label figure carries a 95% bootstrap interval (``ci95``) from ``resamples`` resamples of the
    photos, or of the near-duplicate groups when the manifest has a ``group`` column. Each label also gets its
    review rate (``review_bands``: the model's; none given means empty bands), ECE and base-rate table, and
    ``negative_sources`` gives flag and review rates per negatives-only ``source`` (see :mod:`.operating`).
    """
    y_true = np.asarray(y_true).reshape(len(samples), len(labels))
    scores = np.asarray(scores).reshape(len(samples), len(labels))
    group_of = group_ids(samples)
    overall = with_intervals(multilabel_report(y_true, scores, labels, thresholds), y_true, scores, labels,
                             thresholds, group_of, resamples)
    operating.add_operating_figures(overall, y_true, scores, labels, thresholds, review_bands, group_of, resamples)
    slices: Dict[str, Dict[str, Any]] = {}
    for col in slice_by:
        groups: Dict[str, List[int]] = defaultdict(list)
        for i, s in enumerate(samples):
            groups[s.extra.get(col, "")].append(i)
        slices[col] = {}
        for value, idx in sorted(groups.items()):
            sub = with_intervals(multilabel_report(y_true[idx], scores[idx], labels, thresholds), y_true[idx],
                                 scores[idx], labels, thresholds,
                                 None if group_of is None else [group_of[i] for i in idx], resamples)
            slices[col][value] = {"n_images": sub["n_images"], "macro": sub["macro"], "micro": sub["micro"],
                                  "per_class": sub["per_class"]}
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **dict(info or {}),
        "labels": list(labels),
        "thresholds": {lab: float(thresholds.get(lab, 0.5)) for lab in labels},
        "n_images": overall["n_images"],
        "per_class": overall["per_class"],
        "macro": overall["macro"],
        "micro": overall["micro"],
        "slices": slices,
        "review_bands": overall["review_bands"],
        "negative_sources": operating.negative_sources(y_true, scores, labels, thresholds, review_bands, samples,
                                                       group_of, resamples),
        "intervals": {"method": "percentile bootstrap", "confidence": 0.95, "resamples": resamples,
                      "unit": "group" if group_of is not None else "photo"},
    }


def summary(report: Mapping[str, Any]) -> Dict[str, Any]:
    """The compact block stored in model metadata: macro/micro and per-class AP, P, R, support."""
    keep = ("precision", "recall", "f1", "ap", "roc_auc", "support", "threshold", "fpr", "flag_rate", "ci95")
    return {
        "split": report.get("split", ""),
        "n_images": report["n_images"],
        "macro": report["macro"],
        "micro": report["micro"],
        "per_class": {lab: {k: v for k, v in m.items() if k in keep} for lab, m in report["per_class"].items()},
    }


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _with_ci(value: Any, ci: Optional[Sequence[float]]) -> str:
    if value is None:
        return "–"
    return f"{_fmt(value)} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else _fmt(value)


def to_markdown(report: Mapping[str, Any]) -> str:
    lines = ["# Evaluation report", ""]
    for key in ("model", "manifest", "split"):
        if report.get(key):
            lines.append(f"- **{key}**: `{report[key]}`")
    lines.append(f"- **images**: {report['n_images']}" +
                 (f" ({report['skipped_images']} unreadable, skipped)" if report.get("skipped_images") else ""))
    iv = report.get("intervals")
    lines += ["", "Flagged = score ≥ the label's threshold. "
              + (f"In brackets: {iv['confidence']:.0%} {iv['method']} interval ({iv['resamples']} resamples of "
                 f"{iv['unit']}s)." if iv else ""), "",
              "| label | positives | negatives | threshold | precision | recall | false-positive rate | flag rate | "
              "AP | ROC-AUC |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for lab, m in report["per_class"].items():
        ci = m.get("ci95") or {}
        negatives = m.get("negatives", m["fp"] + m["tn"])
        cells = [_with_ci(m.get(k), ci.get(k)) for k in ("precision", "recall", "fpr", "flag_rate", "ap")]
        lines.append(f"| {lab} | {m['support']} | {negatives} | {_fmt(m['threshold'])} | " + " | ".join(cells)
                     + f" | {_fmt(m['roc_auc'])} |")
    for avg in ("macro", "micro"):
        m = report[avg]
        lines.append(f"| *{avg}* | | | | {_fmt(m['precision'])} | {_fmt(m['recall'])} | | | {_fmt(m['ap'])} | "
                     f"{_fmt(m['roc_auc'])} |")
    for col, groups in report.get("slices", {}).items():
        labels = report["labels"]
        lines += ["", f"## By `{col}`", "",
                  "| " + col + " | images | macro AP | "
                  + " | ".join(f"{lab}: positives / recall / AP / false positives" for lab in labels)
                  + " |", "|---|---:|---:|" + "---:|" * len(labels)]
        for value, g in groups.items():
            cells = []
            for lab in labels:
                c = g["per_class"][lab]
                recall = _fmt(c["recall"]) if c["support"] else "–"
                cells.append(f"{c['support']} / {recall} / {_fmt(c['ap'])} / {c['fp']} of {c['fp'] + c['tn']}")
            lines.append(f"| {value or '(empty)'} | {g['n_images']} | {_fmt(g['macro']['ap'])} | "
                         + " | ".join(cells) + " |")
    lines += operating.to_markdown(report)
    if report.get("faithfulness"):
        from .faithfulness import to_markdown as faithfulness_markdown

        lines += ["", "## Heatmaps: the deletion test", "", faithfulness_markdown(report["faithfulness"])]
    if report.get("robustness"):
        from .robustness import to_markdown as robustness_markdown

        lines += ["", "## Under a seller's benign edits", "", robustness_markdown(report["robustness"])]
    lines += ["", "![PR curves](pr_curves.png)", "", "![Confusion](confusion.png)", "",
              "![Reliability](reliability.png)", ""]
    if report.get("predictions"):
        lines += [f"Per-image scores: `{report['predictions']['file']}`. The most confident mistakes per label:", "",
                  "![Most confident errors](errors.png)", ""]
    return "\n".join(lines)


def plot_pr_curves(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str], thresholds: Mapping[str, float],
                   path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    for j, lab in enumerate(labels):
        if y_true[:, j].sum() == 0:
            continue
        p, r, t = precision_recall_curve(y_true[:, j], scores[:, j])
        line, = ax.step(np.r_[0.0, r], np.r_[1.0, p], where="post", label=lab)
        flagged = scores[:, j] >= thresholds.get(lab, 0.5)
        if flagged.any():
            tp = float((flagged & (y_true[:, j] == 1)).sum())
            ax.plot([tp / y_true[:, j].sum()], [tp / flagged.sum()], "o", color=line.get_color())
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("Precision-recall (dot: operating threshold)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left")
    else:
        ax.text(0.5, 0.5, "no positives in this sample: no curve", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confusion(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = report["labels"]
    fig, axes = plt.subplots(1, len(labels), figsize=(3.2 * len(labels), 3.2), dpi=100, squeeze=False)
    for ax, lab in zip(axes[0], labels):
        m = report["per_class"][lab]
        mat = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
        ax.imshow(mat, cmap="Blues")
        for (i, k), v in np.ndenumerate(mat):
            ax.text(k, i, str(v), ha="center", va="center", color="white" if v > mat.max() / 2 else "black")
        ax.set_xticks([0, 1], ["not flagged", "flagged"])
        ax.set_yticks([0, 1], ["negative", "positive"])
        ax.set_title(f"{lab} (t={m['threshold']:.2f})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_predictions(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str],
                      thresholds: Mapping[str, float], samples: Sequence[Sample], path: Path,
                      failures: Sequence[Tuple[Sample, str]] = ()) -> None:
    """One CSV row per image: image, split, its extra manifest columns, per label ``<label>_true``,
    ``<label>_score`` and ``<label>_flagged`` (score at or above the threshold), then ``error``. Images that could
    not be read (``failures``) come last, with their truth, empty scores and the error."""
    extra = sorted({c for s in [*samples, *(f[0] for f in failures)] for c in s.extra})
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "split", *extra, *(f"{lab}_{k}" for lab in labels for k in ("true", "score", "flagged")),
                    "error"])
        for i, s in enumerate(samples):
            cells: List[Any] = [s.image, s.split, *(s.extra.get(c, "") for c in extra)]
            for j, lab in enumerate(labels):
                cells += [int(y_true[i, j]), f"{float(scores[i, j]):.6f}", int(scores[i, j] >= thresholds[lab])]
            w.writerow([*cells, ""])
        for s, error in failures:
            cells = [s.image, s.split, *(s.extra.get(c, "") for c in extra)]
            for lab in labels:
                cells += [int(lab in s.labels), "", ""]
            w.writerow([*cells, error])


def most_confident_errors(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str],
                          thresholds: Mapping[str, float], k: int = ERRORS_PER_ROW) -> Dict[str, Dict[str, List[int]]]:
    """Row indices of the ``k`` highest-scored false positives and ``k`` lowest-scored false negatives per label."""
    out = {}
    for j, lab in enumerate(labels):
        flagged = scores[:, j] >= thresholds[lab]
        fp = np.flatnonzero(flagged & (y_true[:, j] == 0))
        fn = np.flatnonzero(~flagged & (y_true[:, j] == 1))
        out[lab] = {"false_positives": fp[np.argsort(-scores[fp, j], kind="stable")][:k].tolist(),
                    "false_negatives": fn[np.argsort(scores[fn, j], kind="stable")][:k].tolist()}
    return out


def _thumbnail(path: str, size: int) -> Optional[np.ndarray]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))
            im = im.convert("RGB")
            im.thumbnail((size, size))
            return np.asarray(im)
    except Exception:  # noqa: BLE001 - an unreadable file is drawn as a blank tile, never fatal for a report
        return None


def plot_errors(errors: Mapping[str, Mapping[str, List[int]]], scores: np.ndarray, labels: Sequence[str],
                samples: Sequence[Sample], path: Path, thumb: int = 160) -> None:
    """A contact sheet: per label, one row of confident false positives and one of confident false negatives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(lab, kind) for lab in labels for kind in ("false_positives", "false_negatives")]
    k = max([ERRORS_PER_ROW] + [len(errors[lab][kind]) for lab, kind in rows])
    fig, axes = plt.subplots(len(rows), k, figsize=(1.9 * k, 2.3 * len(rows)), dpi=100, squeeze=False)
    for r, (lab, kind) in enumerate(rows):
        idx = errors[lab][kind]
        what = "flagged, not" if kind == "false_positives" else "missed"
        for c in range(k):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{lab}\n{what} {lab}" if idx else f"{lab}\n{what} {lab}\n(none)", fontsize=8)
            if c >= len(idx):
                for spine in ax.spines.values():
                    spine.set_visible(False)
                continue
            i = idx[c]
            img = _thumbnail(samples[i].path, thumb)
            if img is None:
                ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            else:
                ax.imshow(img)
            name = Path(samples[i].image).name
            ax.set_title(f"{scores[i, labels.index(lab)]:.3f}\n{name[:22]}", fontsize=7)
    fig.suptitle("Most confident errors at the operating thresholds (score, image)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(report: Dict[str, Any], y_true: np.ndarray, scores: np.ndarray, out_dir: Path,
                 samples: Optional[Sequence[Sample]] = None,
                 failures: Sequence[Tuple[Sample, str]] = (), model: Any = None) -> Path:
    """Write report.json, report.md, report.html (the review page), pr_curves.png, confusion.png and
    reliability.png into ``out_dir``, and with ``samples`` (one per row of ``scores``) predictions.csv (with a row,
    and its error, for each of ``failures`` too) and errors.png (``report`` then gains the keys ``predictions`` and
    ``most_confident_errors``); returns report.json's path. ``model``: the loaded ONNX model, whose heatmaps of
    the most confident mistakes (when it has them) go into ``heatmaps/`` and onto the page."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    errors: Dict[str, Dict[str, List[int]]] = {}
    if samples is not None:
        labels, thresholds = list(report["labels"]), report["thresholds"]
        write_predictions(y_true, scores, labels, thresholds, samples, out_dir / "predictions.csv", failures)
        errors = most_confident_errors(y_true, scores, labels, thresholds)
        plot_errors(errors, scores, labels, samples, out_dir / "errors.png")
        report["predictions"] = {"file": "predictions.csv", "schema_version": PREDICTIONS_SCHEMA_VERSION}
        report["most_confident_errors"] = {lab: {kind: [samples[i].image for i in idx] for kind, idx in d.items()}
                                           for lab, d in errors.items()}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False), encoding="utf-8")
    (out_dir / "report.md").write_text(to_markdown(report), encoding="utf-8")
    plot_pr_curves(y_true, scores, report["labels"], report["thresholds"], out_dir / "pr_curves.png")
    plot_confusion(report, out_dir / "confusion.png")
    plot_reliability(y_true, scores, report["labels"], out_dir / "reliability.png",
                     title=f"Reliability on {report.get('split') or 'this sample'} "
                           f"({report['n_images']} photos, 15 equal-width score bins)")
    _write_page(report, y_true, scores, out_dir, samples, errors, model)
    return out_dir / "report.json"


def _write_page(report: Mapping[str, Any], y_true: np.ndarray, scores: np.ndarray, out_dir: Path,
                samples: Optional[Sequence[Sample]], errors: Mapping[str, Mapping[str, List[int]]], model: Any) -> None:
    """report.html: the report as a review page, with the most confident mistakes (and their heatmaps)."""
    from .evaluation_page import pr_curve_points, write_evaluation_page

    labels = list(report["labels"])
    heat: Dict[Tuple[int, str], str] = {}
    if samples is not None and model is not None and getattr(model, "has_heatmaps", False):
        from ..explain import write_overlays

        wanted: Dict[int, List[str]] = {}
        for lab, kinds in errors.items():
            for idx in kinds.values():
                for i in idx:
                    wanted.setdefault(i, []).append(lab)
        order = sorted(wanted)
        for i, ex in zip(order, model.explain_iter([samples[i].path for i in order], keep_photo=512,
                                                   names=[samples[i].image for i in order])):
            if ex.ok:
                for lab, path in write_overlays(ex, out_dir / "heatmaps", wanted[i], max_side=512).items():
                    heat[(i, lab)] = os.path.relpath(path, out_dir)
    mistakes = [{"input": str(samples[i].path), "name": samples[i].image, "label": lab,
                 "truth": int(kind == "false_negatives"), "score": float(scores[i, labels.index(lab)]),
                 "heatmap": str(out_dir / heat[(i, lab)]) if (i, lab) in heat else None}
                for lab, kinds in errors.items() for kind, idx in kinds.items() for i in idx] if samples else []
    write_evaluation_page(report, out_dir / "report.html", mistakes,
                          plots={"confusion": out_dir / "confusion.png", "reliability": out_dir / "reliability.png"},
                          pr_curves=pr_curve_points(y_true, scores, labels))


def select_split(samples: Sequence[Sample], split: str) -> List[Sample]:
    if split in ("all", ""):
        return list(samples)
    chosen = [s for s in samples if s.split == split]
    if not chosen:
        present = sorted({s.split or "(none)" for s in samples})
        raise ValueError(f"the manifest has no rows with split '{split}' (splits present: {', '.join(present)}); "
                         "pass --split all to evaluate every row")
    return chosen


def score_onnx(model: Any, samples: Sequence[Sample], batch_size: int = 32, workers: int = 1):
    """Score samples with a loaded ``wildlife_vision`` model; returns (scores, kept samples, failures), where
    failures lists (sample, error message) for each image that could not be read."""
    rows, kept, failures = [], [], []
    preds = model.predict_iter([s.path for s in samples], batch_size=batch_size, workers=workers)
    for s, p in zip(samples, preds):
        if p.error is not None:
            log.warning("skipping unreadable image %s: %s", s.image, p.error)
            failures.append((s, str(p.error)))
            continue
        rows.append([p.scores[lab] for lab in model.labels])
        kept.append(s)
    scores = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(model.labels))
    return scores, kept, failures


CHECKPOINT_SCORERS = "wildlife_vision.checkpoint_scorers"


def checkpoint_scorer():
    """The installed scorer for training checkpoints (entry-point group ``wildlife_vision.checkpoint_scorers``;
    the trainer registers ``torch``). Raises :class:`~wildlife_vision.exitcodes.MissingExtraError` when it or
    its dependencies are not installed."""
    from wildlife_vision.cli_common import entry_points_in
    from wildlife_vision.exitcodes import MissingExtraError

    eps = entry_points_in(CHECKPOINT_SCORERS)
    for ep in eps:
        try:
            return ep.load()
        except ImportError as e:
            raise MissingExtraError("train", getattr(e, "name", None) or ep.value) from None
    raise MissingExtraError("train", "a checkpoint scorer (entry point group " + CHECKPOINT_SCORERS + ")")


def evaluate_model(model_path: Path, manifest: Path, output: Path, split: str = "val",
                   slice_by: Optional[Sequence[str]] = None, batch_size: int = 32, workers: int = 2,
                   robustness: Optional[Sequence[str]] = None, faithfulness: bool = False,
                   runtime: Optional[str] = None, precision: Optional[str] = None) -> Dict[str, Any]:
    """Evaluate a model on one split of a manifest and write the report folder.

    ``model_path`` is an exported ``.onnx`` file (scored through ``wildlife_vision.load_model``, with its own
    thresholds) or a training run folder / ``.pt`` checkpoint (scored with torch, thresholds from the run's
    calibration.json). ``robustness``: edit names (:mod:`.robustness`; ``["all"]`` for every edit) to measure on
    the same photos; the result goes into ``report["robustness"]`` (ONNX models only). ``faithfulness``: run the
    heatmaps' deletion test (:mod:`.faithfulness`) on the photos the model flags; ``report["faithfulness"]``.
    ``runtime``/``precision``: the execution profile to evaluate (its own thresholds; see load_model).
    """
    model_path = Path(model_path)
    is_checkpoint = model_path.is_dir() or model_path.suffix == ".pt"
    if is_checkpoint:
        ckpt_path = model_path / "best.pt" if model_path.is_dir() else model_path
        scorer = checkpoint_scorer()
        labels = tuple(scorer.labels(ckpt_path))
        info = {"model": str(ckpt_path), "model_name": "checkpoint", "model_version": "",
                "model_sha256": file_sha256(ckpt_path)}
        bands = None
    else:
        from wildlife_vision import load_model

        model = load_model(model_path, batch_size=batch_size, runtime=runtime, precision=precision)
        labels = model.labels
        info = {"model": str(model_path), "model_name": model.name, "model_version": model.version,
                "model_sha256": file_sha256(model_path), "profile": model.profile,
                "profile_choice": model.profile_choice.to_dict()}
        bands = model.review_bands
    m = read_manifest(manifest, labels=labels, check_images=False, for_training=False)
    samples = select_split(m.samples, split)
    cols = default_slice_columns(samples, m.columns) if slice_by is None else list(slice_by)
    unknown = [c for c in cols if c not in m.columns]
    if unknown:
        raise ValueError(f"--slice-by column(s) {unknown} are not in the manifest (its extra columns: "
                         f"{', '.join(m.columns) or 'none'})")
    if is_checkpoint:
        scores, kept, failures, _, thresholds = scorer(ckpt_path, samples, batch_size, workers)
    else:
        scores, kept, failures = score_onnx(model, samples, batch_size=batch_size, workers=workers)
        thresholds = model.thresholds
    if not kept:
        raise ValueError(f"none of the {len(samples)} image(s) in split '{split}' could be read")
    y = targets_for(kept, labels)
    info.update({"manifest": str(manifest), "manifest_sha256": m.sha256, "split": split, "skipped_images": len(failures)})
    report = build_report(y, scores, labels, thresholds, kept, cols, info, review_bands=bands)
    if robustness:
        if is_checkpoint:
            raise ValueError("--robustness measures an exported ONNX model; export the run first")
        from .robustness import measure_robustness

        report["robustness"] = measure_robustness(
            model, [s.path for s in kept], edits=list(robustness), batch_size=batch_size, workers=workers,
            progress=True, groups=group_ids(kept), info={"split": split}, targets=y)
    if faithfulness:
        if is_checkpoint:
            raise ValueError("--faithfulness tests an exported ONNX model's heatmaps; export the run first")
        from .faithfulness import deletion_test

        report["faithfulness"] = deletion_test(model, [s.path for s in kept], batch_size=batch_size, workers=workers,
                                               groups=group_ids(kept), progress=True, info={"split": split})
    write_report(report, y, scores, output, kept, failures, model=None if is_checkpoint else model)
    return report


def evaluate_onnx(model_path: Path, manifest: Path, output: Path, split: str = "val",
                  slice_by: Optional[Sequence[str]] = None, batch_size: int = 32, workers: int = 2
                  ) -> Dict[str, Any]:
    """Evaluate an exported ONNX model (see :func:`evaluate_model`)."""
    return evaluate_model(model_path, manifest, output, split, slice_by, batch_size, workers)

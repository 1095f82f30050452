"""The leaderboard's board: every finished run scored on the same test photos, entries compared over seeds and photos.

Used by ``benchmarks/leaderboard.py``; ``write_board(cfg, records, total)`` writes ``docs/leaderboard.md`` and
``docs/results/leaderboard/board.json``.

- **Per run**: ``wildlife-vision compare`` over every finished model (``compare_models``: AP per label with a
  95% paired-bootstrap interval over near-duplicate groups, precision and recall at the run's own threshold,
  photos/s on this machine in the same run and on the same photos, file size), plus its training time. The
  comparison itself is kept in ``docs/results/leaderboard/compare/``.
- **Per entry**: the mean over its seeds and their spread (standard deviation; min-max) of each label's AP and
  the macro AP, with a 95% interval from a two-level bootstrap. Each draw resamples the test photos (by group)
  and, within each entry, its seeds with replacement, and takes the mean AP over the drawn seeds. The interval
  therefore carries both the test-set sampling and the seed-to-seed variation.
- **Entry against entry**: the difference of those means under the same draws (paired over photos). A
  difference is called real when its 95% interval excludes 0. With few seeds the seed level is coarse: two or
  three seeds resampled give only a handful of distinct means, which the board says.
"""

from __future__ import annotations

import json
import os
import platform
import time
from itertools import combinations
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

RESAMPLES = 1000
SPEED_PHOTOS = 200
BOARD_SCHEMA = "wildlife-vision/leaderboard/v1"


def _ap(y: np.ndarray, s: np.ndarray) -> float:
    from wildlife_vision.evaluation.metrics import average_precision

    v = average_precision(y, s)
    return float("nan") if v is None else float(v)


def scores_path(cfg: Mapping[str, Any], rec: Mapping[str, Any], repo: Path) -> Path:
    """Where a run's test scores are kept (committed with the results, so the board outlives the weights)."""
    return repo / cfg["results"] / "scores" / f"{rec['id']}-{rec['model_sha256'][:12]}-{cfg['split']}.json"


def score_runs(cfg: Mapping[str, Any], records: Sequence[Mapping[str, Any]], repo: Path):
    """Score every run's model on the board's split (cached per model sha256); keep the photos all of them read.
    Returns targets, {run: scores}, groups, how many photos were dropped and the manifest's sha256."""
    from wildlife_vision import load_model
    from wildlife_vision.data.manifest import read_manifest, targets_for
    from wildlife_vision.evaluation.evaluate import group_ids, score_onnx, select_split

    labels = list(cfg["labels"])
    man = read_manifest(repo / cfg["data"], labels=labels, check_images=False, for_training=False)
    samples = select_split(man.samples, cfg["split"])
    cache = repo / cfg["results"] / "scores"  # committed: the board can be rebuilt without retraining
    cache.mkdir(parents=True, exist_ok=True)
    scores: Dict[str, Dict[str, float]] = {}
    for rec in records:
        path = scores_path(cfg, rec, repo)
        if path.exists():
            scores[rec["id"]] = json.loads(path.read_text())
            continue
        s, kept, _ = score_onnx(load_model(repo / rec["model_file"]), samples, workers=2)
        scores[rec["id"]] = {k.image: [float(v) for v in row] for k, row in zip(kept, s)}
        path.write_text(json.dumps(scores[rec["id"]]))
    common = [s for s in samples if all(s.image in scores[r["id"]] for r in records)]
    y = targets_for(common, labels).astype(bool)
    mats = {r["id"]: np.asarray([scores[r["id"]][s.image] for s in common], dtype=np.float64) for r in records}
    groups = group_ids(common)
    return y, mats, groups, len(samples) - len(common), man.sha256


def entry_bootstrap(y: np.ndarray, mats: Mapping[str, np.ndarray], by_entry: Mapping[str, List[str]],
                    groups: Sequence[str], labels: Sequence[str], resamples: int = RESAMPLES, seed: int = 0):
    """Draws of each entry's mean-over-seeds AP per label (and macro), photos and seeds resampled together."""
    from wildlife_vision.evaluation.bootstrap import resample_indices

    rng = np.random.default_rng(seed + 1)
    draws = resample_indices(len(y), groups, resamples, seed)
    out = {e: np.full((len(draws), len(labels) + 1), np.nan) for e in by_entry}
    for b, idx in enumerate(draws):
        per_run = {rid: [_ap(y[idx, j], m[idx, j]) for j in range(len(labels))] for rid, m in mats.items()}
        for e, rids in by_entry.items():
            pick = [rids[i] for i in rng.integers(0, len(rids), len(rids))]
            aps = np.nanmean(np.asarray([per_run[r] for r in pick]), axis=0)
            out[e][b, :len(labels)] = aps
            out[e][b, -1] = np.nanmean(aps)
    return out


def _ci(v: np.ndarray) -> List[float]:
    v = v[np.isfinite(v)]
    return [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))] if v.size > 1 else [float("nan")] * 2


def _mean_or_none(values: Sequence[Any]) -> Any:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if len(v) == len(values) and v else None


def _from_scores(cfg: Mapping[str, Any], records: Sequence[Mapping[str, Any]], y: np.ndarray,
                 mats: Mapping[str, np.ndarray], groups: Sequence[str], labels: Sequence[str], repo: Path):
    """Per-run figures in compare_models' shape from the committed scores: AP with a 95% group bootstrap, and
    precision and recall at each run's own thresholds (from its record: the val-calibrated ones)."""
    from wildlife_vision.evaluation.bootstrap import resample_indices

    old = {}
    board = repo / cfg["results"] / "board.json"
    if board.is_file():
        old = {(r.get("model_sha256") or ""): r for r in json.loads(board.read_text()).get("runs", {}).values()}
    draws = resample_indices(len(y), groups, RESAMPLES, 0)
    out = {}
    for rec in records:
        s = mats[rec["id"]]
        per = {}
        for j, lab in enumerate(labels):
            th = float((rec.get("val") or {}).get(lab, {}).get("threshold", 0.5))
            flag, pos = s[:, j] >= th, y[:, j]
            tp = int((flag & pos).sum())
            boot = [v for v in (_ap(y[i, j], s[i, j]) for i in draws) if np.isfinite(v)]
            per[lab] = {"ap": _ap(y[:, j], s[:, j]), "ap_ci95": _ci(np.asarray(boot)), "threshold": th,
                        "precision_at_threshold": tp / max(1, int(flag.sum())) if flag.any() else None,
                        "recall_at_threshold": tp / max(1, int(pos.sum())), "recall_at_precision": None}
        prev = old.get(rec["model_sha256"]) or {}
        out[(repo / rec["model_file"]).resolve()] = {
            "labels": per, "macro": {"ap": float(np.mean([per[lab]["ap"] for lab in labels]))},
            "size_bytes": rec.get("model_bytes"),
            "speed": {"photos_per_s": prev.get("photos_per_s"), "source": "an earlier board" if prev else "not timed"}}
    return out


def _machine() -> str:
    from wildlife_vision.cpu import cpu_info

    cpu = cpu_info()
    return f"{cpu.model or platform.machine()} (CPU family {cpu.family}), {os.cpu_count()} CPUs"


def write_board(cfg: Mapping[str, Any], records: Sequence[Mapping[str, Any]], total: int, repo: Path) -> Path:
    from wildlife_vision.data.manifest import atomic_write_text
    from wildlife_vision.evaluation.compare import compare_models

    labels = list(cfg["labels"])
    y, mats, groups, dropped, manifest_sha = score_runs(cfg, records, repo)
    order = [e["name"] for e in cfg["entries"]]
    by_entry = {e: [r["id"] for r in records if r["entry"] == e] for e in order}
    by_entry = {e: v for e, v in by_entry.items() if v}
    desc = {e["name"]: e.get("description", "") for e in cfg["entries"]}
    have_models = all((repo / r["model_file"]).is_file() for r in records)
    if have_models:
        cmp = compare_models([repo / r["model_file"] for r in records], repo / cfg["data"], split=cfg["split"],
                             output_dir=repo / cfg["results"] / "compare", resamples=RESAMPLES,
                             speed_photos=SPEED_PHOTOS)
        by_file = {(repo / Path(m["model"])).resolve(): m for m in cmp["models"]}
    else:  # a new machine: the committed scores and records only (speed: the last board's figure for that model)
        by_file = _from_scores(cfg, records, y, mats, groups, labels, repo)
    runs: Dict[str, Any] = {}
    for r in records:
        m = by_file[(repo / r["model_file"]).resolve()]
        runs[r["id"]] = {"entry": r["entry"], "seed": r["seed"], "macro_ap": m["macro"]["ap"],
                         "model_sha256": r["model_sha256"],
                         "labels": {lab: {k: m["labels"][lab].get(k) for k in
                                          ("ap", "ap_ci95", "precision_at_threshold", "recall_at_threshold",
                                           "threshold", "recall_at_precision")} for lab in labels},
                         "photos_per_s": m["speed"]["photos_per_s"], "model_bytes": m["size_bytes"],
                         "speed_source": m["speed"].get("source", "this board's run"),
                         "train_seconds": r["train_seconds"], "train_images_per_sec": r["train_images_per_sec"]}
    boot = entry_bootstrap(y, mats, by_entry, groups, labels)
    entries: Dict[str, Any] = {}
    for e, rids in by_entry.items():
        cols = labels + ["macro"]
        vals = {c: [runs[r]["labels"][c]["ap"] if c != "macro" else runs[r]["macro_ap"] for r in rids] for c in cols}
        entries[e] = {"description": desc[e], "seeds": [runs[r]["seed"] for r in rids],
                      "ap": {c: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None,
                                 "min": float(np.min(v)), "max": float(np.max(v)), "ci95": _ci(boot[e][:, k])}
                             for k, (c, v) in enumerate(vals.items())},
                      "photos_per_s": _mean_or_none([runs[r]["photos_per_s"] for r in rids]),
                      "model_bytes": int(np.mean([runs[r]["model_bytes"] for r in rids])),
                      "train_minutes": float(np.mean([runs[r]["train_seconds"] for r in rids])) / 60}
    pairs = []
    for a, b in combinations(by_entry, 2):
        d = {c: boot[b][:, k] - boot[a][:, k] for k, c in enumerate(labels + ["macro"])}
        pairs.append({"a": a, "b": b, "ap_diff": {c: {"mean": float(entries[b]["ap"][c]["mean"] - entries[a]["ap"][c]["mean"]),
                                                      "ci95": _ci(v), "real": bool(_ci(v)[0] > 0 or _ci(v)[1] < 0)}
                                                  for c, v in d.items()}})
    board = {"schema": BOARD_SCHEMA, "name": cfg.get("name", ""), "split": cfg["split"], "data": cfg["data"],
             "manifest_sha256": manifest_sha, "n_photos": int(len(y)), "dropped_photos": dropped,
             "budget": cfg["budget"], "runs_finished": len(records), "runs_declared": total,
             "resamples": RESAMPLES, "machine": _machine(),
             "runs": runs, "entries": entries, "pairs": pairs,
             "source": "models scored in this run" if have_models else
                       "committed test scores and records (model files absent); photos/s from the last board that "
                       "timed each model; the run-by-run comparison in compare/ was not regenerated"}
    out_dir = repo / cfg["results"]
    atomic_write_text(out_dir / "board.json", json.dumps(board, indent=2, allow_nan=True))
    text = to_markdown(board, labels)
    atomic_write_text(repo / cfg["board"], text)
    print(f"wrote {repo / cfg['board']} ({len(records)} of {total} runs)")
    return repo / cfg["board"]


def _f(v: Any, nd: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{nd}f}"


def to_markdown(board: Mapping[str, Any], labels: Sequence[str]) -> str:
    partial = board["runs_finished"] < board["runs_declared"]
    lines = [f"# Leaderboard: {board['name']}", "",
             "*Generated by `python benchmarks/leaderboard.py` from `benchmarks/leaderboard.yaml`; do not edit by "
             "hand.*" + (f" **Partial: {board['runs_finished']} of {board['runs_declared']} declared runs are "
                         "finished; rerun the command to continue.**" if partial else ""), "",
             f"Every figure is on the frozen **{board['split']}** split of `{board['data']}` ({board['n_photos']} "
             f"photos{', ' + str(board['dropped_photos']) + ' dropped' if board['dropped_photos'] else ''}), which "
             "chose nothing: training used train, and the epoch and thresholds came from val. All runs share one "
             f"training budget: `{' '.join(board['budget'])}`. In brackets: 95% intervals "
             f"({board['resamples']} bootstrap draws over near-duplicate groups of photos; for an entry, over its "
             "seeds too). Photos/s: end to end on "
             f"{board['machine']}, in one run, on the same photos.", "",
             *([f"*Built from {board['source']}.*", ""] if board.get("source", "").startswith("committed") else []),
             "## Entries: mean over seeds", "",
             "| entry | seeds | macro AP (sd) | " + " | ".join(f"{lab} AP (sd)" for lab in labels)
             + " | photos/s | model MB | training min |", "|---|---|---|" + "---|" * len(labels) + "---|---|---|"]
    ranked = sorted(board["entries"].items(), key=lambda kv: -kv[1]["ap"]["macro"]["mean"])
    for name, e in ranked:
        cells = []
        for c in ["macro"] + list(labels):
            a = e["ap"][c]
            cells.append(f"{_f(a['mean'])} ({_f(a['sd'])}) [{_f(a['ci95'][0])}, {_f(a['ci95'][1])}]")
        lines.append(f"| **{name}** | {len(e['seeds'])} | " + " | ".join(cells)
                     + f" | {_f(e['photos_per_s'], 1)} | {e['model_bytes'] / 1e6:.1f} | {e['train_minutes']:.0f} |")
    lines += ["", "## Which differences are real", ""]
    if not board["pairs"]:
        lines.append("*Only one entry has finished runs.*")
    for p in board["pairs"]:
        d = p["ap_diff"]["macro"]
        verdict = "real" if d["real"] else "not distinguishable from noise"
        per = "; ".join(f"{lab} {p['ap_diff'][lab]['mean']:+.3f} [{p['ap_diff'][lab]['ci95'][0]:+.3f}, "
                        f"{p['ap_diff'][lab]['ci95'][1]:+.3f}]{' (real)' if p['ap_diff'][lab]['real'] else ''}"
                        for lab in labels)
        lines.append(f"- **{p['b']}** vs **{p['a']}**: macro AP {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, "
                     f"{d['ci95'][1]:+.3f}]: {verdict}. Per label: {per}.")
    n_cmp = len(board["pairs"]) * (len(labels) + 1)
    one_seed = [name for name, e in board["entries"].items() if len(e["seeds"]) < 2]
    lines += ["", f"{n_cmp} comparisons are made above, so at 95% about {0.05 * n_cmp:.1f} could look real by chance. "
              "With two or three seeds per entry the seed level of the bootstrap is coarse"
              + (f"; {', '.join(one_seed)} so far ha{'s' if len(one_seed) == 1 else 've'} one seed, so "
                 "its interval carries the test photos' sampling only, not the seed-to-seed variation, and a "
                 "difference called real there may not survive more seeds" if one_seed else "") + ". Training "
              "minutes are wall time on a shared machine whose load changed between runs: they are not a speed "
              "comparison.", "",
              "## Every run", "", "| run | macro AP | " + " | ".join(f"{lab} AP [95%] (P / R at its threshold)"
                                                          for lab in labels) + " | photos/s | training min |",
              "|---|---|" + "---|" * len(labels) + "---|---|"]
    for rid, r in sorted(board["runs"].items()):
        cells = [f"{_f(r['labels'][lab]['ap'])} [{_f((r['labels'][lab]['ap_ci95'] or [None])[0])}, "
                 f"{_f((r['labels'][lab]['ap_ci95'] or [None, None])[1])}] ({_f(r['labels'][lab]['precision_at_threshold'], 2)}"
                 f" / {_f(r['labels'][lab]['recall_at_threshold'], 2)})" for lab in labels]
        lines.append(f"| {rid} | {_f(r['macro_ap'])} | " + " | ".join(cells)
                     + f" | {_f(r['photos_per_s'], 1)} | {r['train_seconds'] / 60:.0f} |")
    lines += ["", "## Reproduce", "", "```bash", "pip install -e '.[train,eval]'",
              "python benchmarks/leaderboard.py            # trains what is missing (resumable), then writes this page",
              "python benchmarks/leaderboard.py --report-only   # the page from the finished runs", "```", "",
              "Per-run records (config hash, training time, val figures): `docs/results/leaderboard/records/`; the "
              "board's numbers: `docs/results/leaderboard/board.json`. Weights are not committed.", ""]
    return "\n".join(lines)

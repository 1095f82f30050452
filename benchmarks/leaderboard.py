"""The leaderboard: train every declared configuration for every seed, export it, and compare them on the test split.

    python benchmarks/leaderboard.py [--config benchmarks/leaderboard.yaml] [--max-runs N] [--stop-after MIN]
                                     [--report-only] [--dry-run]

One command, resumable: each (entry, seed) trains into ``runs/leaderboard/NAME-sSEED`` (an interrupted training
continues with ``--resume``), is exported to ``NAME-sSEED.onnx`` and leaves a record in
``docs/results/leaderboard/records/NAME-sSEED.json`` (committed; the weights are not). Runs whose record exists and
matches the declared budget and args are not redone, also on a new machine without the weights: their test
scores are committed (``docs/results/leaderboard/scores/``), and a board without every model file is built from
those scores (photos/s then come from the last board that timed each model). A record made with another budget is
refused, so a board never mixes recipes. Jobs go round-robin over seeds (seed 1 of every entry first), so a partial board is already
useful. ``--stop-after MIN`` starts no new training after that many minutes (a session can end cleanly).
After the runs, the board is written from every finished run (``docs/leaderboard.md``, marked partial when runs
are missing): see :mod:`leaderboard_report`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
RECORD_SCHEMA = "wildlife-vision/leaderboard-run/v1"


def load_config(path: Path) -> Dict[str, Any]:
    import yaml

    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in ("data", "labels", "split", "runs", "results", "board", "budget", "entries"):
        if key not in cfg:
            raise SystemExit(f"{path}: missing '{key}'")
    names = [e["name"] for e in cfg["entries"]]
    if len(set(names)) != len(names):
        raise SystemExit(f"{path}: entry names repeat: {names}")
    return cfg


def recipe_hash(cfg: Dict[str, Any], entry: Dict[str, Any]) -> str:
    """What makes two runs of one entry comparable: data, labels, budget and the entry's args."""
    text = json.dumps({"data": cfg["data"], "labels": cfg["labels"], "budget": cfg["budget"], "args": entry["args"]},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def jobs(cfg: Dict[str, Any]) -> List[Dict[str, Any]]:
    """(entry, seed) in round-robin order over the seeds."""
    out = []
    for i in range(max(len(e["seeds"]) for e in cfg["entries"])):
        for e in cfg["entries"]:
            if i < len(e["seeds"]):
                out.append({"entry": e, "seed": int(e["seeds"][i]), "id": f"{e['name']}-s{e['seeds'][i]}"})
    return out


def _cli(*args: str) -> List[str]:
    return [sys.executable, "-m", "wildlife_vision", *args]


def _run(cmd: List[str], log: Path) -> int:
    print("  $", " ".join(cmd[2:]), flush=True)
    with open(log, "a", encoding="utf-8") as f:
        return subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)


def train_time(run: Path) -> Dict[str, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train_s = sum(float(r.get("train_seconds", 0)) for r in rows)
    val_s = sum(float(r.get("val_seconds", 0)) for r in rows)
    ips = [float(r["train_images_per_sec"]) for r in rows if r.get("train_images_per_sec")]
    return {"epochs": len(rows), "train_seconds": round(train_s, 1), "val_seconds": round(val_s, 1),
            "train_images_per_sec": round(sum(ips) / len(ips), 2) if ips else None}


def do_job(cfg: Dict[str, Any], job: Dict[str, Any], dry: bool) -> Optional[Dict[str, Any]]:
    """Train (or resume), export and record one run; returns the record, or None when it failed."""
    from wildlife_vision.data.manifest import atomic_write_text, file_sha256
    from wildlife_vision.metadata import read_model_metadata

    runs, results = REPO / cfg["runs"], REPO / cfg["results"] / "records"
    runs.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    run, model, record = runs / job["id"], runs / f"{job['id']}.onnx", results / f"{job['id']}.json"
    want = recipe_hash(cfg, job["entry"])
    if record.exists():
        rec = json.loads(record.read_text())
        if rec.get("recipe_sha256") != want:
            raise SystemExit(f"{record} was made with another budget or args ({rec.get('recipe_sha256')} != {want}); "
                             "remove it (and its run) to redo it, or restore the declared configuration")
        if model.exists():
            return rec
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from leaderboard_report import scores_path

        if scores_path(cfg, rec, REPO).is_file():  # finished in an earlier session: its test scores are committed
            return rec
    log = runs / f"{job['id']}.log"
    print(f"[{job['id']}] {job['entry'].get('description', '')}", flush=True)
    if dry:
        return None
    t0 = time.time()
    if not (run / "calibration.json").exists():
        cmd = _cli("train", "--data", cfg["data"], "--labels", ",".join(cfg["labels"]), *cfg["budget"],
                   *job["entry"]["args"], "--seed", str(job["seed"]), "--output", str(run))
        if (run / "last.pt").exists():
            cmd = _cli("train", "--resume", "--output", str(run))
        elif run.exists():
            cmd.append("--exist-ok")
        if _run(cmd, log) != 0 or not (run / "calibration.json").exists():
            print(f"[{job['id']}] training failed; see {log} (rerun to resume)", flush=True)
            return None
    if not model.exists():
        cmd = _cli("export", str(run), "--output", str(model), "--name", job["entry"]["name"],
                   "--version", f"0.0.{job['seed']}", "--overwrite")
        if _run(cmd, log) != 0:
            print(f"[{job['id']}] export failed; see {log}", flush=True)
            return None
    meta = read_model_metadata(model)
    rec = {"schema": RECORD_SCHEMA, "id": job["id"], "entry": job["entry"]["name"], "seed": job["seed"],
           "description": job["entry"].get("description", ""), "args": job["entry"]["args"],
           "budget": cfg["budget"], "recipe_sha256": want, "backbone": meta.backbone,
           "config_sha256": meta.training.get("config_sha256"), "manifest_sha256": meta.training.get("manifest_sha256"),
           "model_file": os.path.relpath(model, REPO), "model_sha256": file_sha256(model),
           "model_bytes": model.stat().st_size, "val": meta.metrics.get("per_class"),
           "val_macro_ap": (meta.metrics.get("macro") or {}).get("ap"), **train_time(run),
           "wall_seconds_this_session": round(time.time() - t0, 1)}
    atomic_write_text(record, json.dumps(rec, indent=2))
    print(f"[{job['id']}] done: val macro AP {rec['val_macro_ap']}, training {rec['train_seconds']:.0f} s", flush=True)
    return rec


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "benchmarks" / "leaderboard.yaml"))
    ap.add_argument("--max-runs", type=int, default=None, help="train at most this many new runs")
    ap.add_argument("--stop-after", type=float, default=None, metavar="MIN",
                    help="start no new training after this many minutes")
    ap.add_argument("--report-only", action="store_true", help="write the board from the finished runs only")
    ap.add_argument("--dry-run", action="store_true", help="list what would run")
    args = ap.parse_args(argv)
    cfg = load_config(Path(args.config))
    start, started = time.time(), 0
    done: List[Dict[str, Any]] = []
    for job in jobs(cfg):
        record = REPO / cfg["results"] / "records" / f"{job['id']}.json"
        if args.report_only and not record.exists():
            continue  # never trained: --report-only writes the board from the finished runs only
        fresh = not record.exists()
        if fresh and (args.report_only or (args.max_runs is not None and started >= args.max_runs)
                      or (args.stop_after is not None and (time.time() - start) / 60 > args.stop_after)):
            continue
        rec = do_job(cfg, job, args.dry_run)
        started += int(fresh)
        if rec:
            done.append(rec)
    total = len(jobs(cfg))
    print(f"{len(done)} of {total} runs finished", flush=True)
    if args.dry_run or not done:
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from leaderboard_report import write_board

    write_board(cfg, done, total, repo=REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())

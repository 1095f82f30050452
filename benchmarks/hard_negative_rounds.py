#!/usr/bin/env python
"""Rounds of hard-negative mining: mine -> train -> export -> evaluate, R times, with a table of what changed.

    python benchmarks/hard_negative_rounds.py --rounds 3 --output runs/hard-negatives \\
        --model exported_models/wildtrade-lite0-v2.onnx \\
        --pool ../shared/data/everyday-v1/manifest.csv --pool-split train \\
        --train-manifest ../shared/data/wildtrade-v1/manifest.csv \\
        --heldout wildtrade-val=../shared/data/wildtrade-v1/manifest.csv:val \\
        --heldout everyday-val=../shared/data/everyday-v1/manifest.csv:val \\
        --top 200 --train-args "--model tf_efficientnet_lite0 --pretrained auto --epochs 8 --freeze-epochs 1 \\
            --lr 4e-4 --image-size 224 --test-image-size 256 --workers 1 --seed 42"

Round r (1..R) in OUTPUT/round<r>/:

1. ``wildlife-vision mine`` the model of round r-1 (round 0: ``--model``) on the pool, into the training manifest
   of round r-1 (round 0: ``--train-manifest``): ``manifest.csv`` and ``mining.json``. That report is also the
   pool measurement of the round r-1 model.
2. ``wildlife-vision train`` on ``manifest.csv`` with ``--train-args`` (``run/``; continued with ``--resume``
   when a previous attempt left ``run/last.pt``).
3. ``wildlife-vision export`` -> ``model.onnx`` (``--export-args``).
4. ``wildlife-vision evaluate`` on every ``--heldout NAME=MANIFEST:SPLIT`` -> ``eval-<NAME>/report.json``.

Round 0 evaluates ``--model`` on the held-out splits; after the last round, a measure-only mining (``--top 0``,
``OUTPUT/measure-round<R>/``) measures the last model on the pool. Each finished step is recorded in
``OUTPUT/state.json`` and skipped on the next run, so an interrupted run continues where it stopped (and a run
with a larger ``--rounds`` extends a finished one). The results go to ``OUTPUT/rounds.json`` (schema
:data:`SCHEMA`) and ``OUTPUT/rounds.md``: per model, the pool flag rate (every pool photo, and those it was
not trained on), and per held-out split the negatives' flag rate and the positives' recall, each with its
95% bootstrap interval (the intervals of `mine` and `evaluate`).

Held-out photos are never mined when they are rows of the training manifest (``mine`` skips photos already in
it); keep the pool's own held-out split apart with ``--pool-split``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

SCHEMA = "wildlife-vision/hard-negative-rounds/v1"
STATE = "state.json"

#: runs one command (argv after `wildlife-vision`), its output logged to the given file; returns the exit code
Runner = Callable[[List[str], Path], int]


def cli_runner(argv: List[str], log: Path) -> int:
    """Run ``wildlife-vision ARGV`` with this interpreter (the same environment), output into ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as f:
        f.write("$ wildlife-vision " + " ".join(shlex.quote(a) for a in argv) + "\n")
        f.flush()
        return subprocess.call([sys.executable, "-m", "wildlife_vision", *argv], stdout=f, stderr=subprocess.STDOUT)


def parse_heldout(text: str) -> Tuple[str, str, str]:
    """``NAME=MANIFEST:SPLIT`` -> (name, manifest, split)."""
    name, sep, rest = text.partition("=")
    manifest, colon, split = rest.rpartition(":")
    if not sep or not name or not colon or not manifest or split not in ("train", "val", "test", "all"):
        raise ValueError(f"--heldout {text!r}: expected NAME=MANIFEST:SPLIT, e.g. wildtrade-val=manifest.csv:val")
    return name, manifest, split


def _json(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---- the steps ------------------------------------------------------------------------------------------

def plan(cfg: Dict[str, Any]) -> List[Tuple[str, List[str], Path]]:
    """Every step of the run as (key, wildlife-vision argv, the file whose existence says it finished)."""
    out = Path(cfg["output"])
    steps: List[Tuple[str, List[str], Path]] = []

    def evaluate(r: int, model: str) -> None:
        for name, manifest, split in cfg["heldout"]:
            folder = out / f"round{r}" / f"eval-{name}"
            steps.append((f"round{r}/evaluate-{name}", ["evaluate", "--model", model, "--data", manifest, "--split",
                                                        split, "--output", str(folder), *cfg["evaluate_args"]],
                          folder / "report.json"))

    def mine(model: str, into: str, folder: Path, r: int, top: int, key: str) -> None:
        argv = ["mine", model, "--pool", cfg["pool"], "--into", into, "--output", str(folder / "manifest.csv"),
                "--report", str(folder / "mining.json"), "--round", str(r), "--top", str(top), "--overwrite",
                "--no-progress", *(["--pool-split", cfg["pool_split"]] if cfg.get("pool_split") else []),
                *cfg["mine_args"]]
        steps.append((key, argv, folder / "mining.json"))

    model, manifest = cfg["model"], cfg["train_manifest"]
    evaluate(0, model)
    for r in range(1, cfg["rounds"] + 1):
        folder = out / f"round{r}"
        mine(model, manifest, folder, r, cfg["top"], f"round{r}/mine")
        run = folder / "run"
        steps.append((f"round{r}/train", ["train", "--data", str(folder / "manifest.csv"), "--output", str(run),
                                          *cfg["train_args"]], run / "best.pt"))
        steps.append((f"round{r}/export", ["export", str(run), "--output", str(folder / "model.onnx"),
                                           "--overwrite", *cfg["export_args"]], folder / "model.onnx"))
        model, manifest = str(folder / "model.onnx"), str(folder / "manifest.csv")
        evaluate(r, model)
    last = cfg["rounds"]
    mine(model, manifest, out / f"measure-round{last}", last + 1, 0, f"measure-round{last}")
    return steps


def _resume_train(argv: List[str]) -> List[str]:
    """A train step whose earlier attempt left last.pt continues it (with its saved config)."""
    run = argv[argv.index("--output") + 1]
    if (Path(run) / "last.pt").is_file():
        return ["train", "--resume", "--output", run]
    return argv


def run_rounds(cfg: Dict[str, Any], runner: Runner = cli_runner, log: Callable[[str], None] = print) -> int:
    """Run (or continue) every step not yet finished; write the results table. Returns an exit code."""
    out = Path(cfg["output"])
    out.mkdir(parents=True, exist_ok=True)
    state = _json(out / STATE) or {"config": None, "done": {}}
    fixed = {k: v for k, v in cfg.items() if k != "rounds"}
    if state["config"] is not None and state["config"] != fixed:
        changed = sorted(k for k in set(fixed) | set(state["config"]) if fixed.get(k) != state["config"].get(k))
        log(f"{out} holds rounds run with other settings ({', '.join(changed)}); use another --output")
        return 2
    state["config"] = fixed
    _write_json(out / STATE, state)
    code = 0
    for key, argv, marker in plan(cfg):
        if key in state["done"] and marker.exists():
            continue
        if key.endswith("/train"):
            argv = _resume_train(argv)
        log(f"{key}: wildlife-vision {' '.join(shlex.quote(a) for a in argv)}")
        rc = runner(argv, out / "logs" / f"{key.replace('/', '-')}.log")
        if rc != 0 or not marker.exists():
            log(f"{key} failed (exit {rc}); see {out / 'logs'}; run again to continue from this step")
            code = rc or 1
            break
        state["done"][key] = {"argv": argv, "marker": str(marker)}
        _write_json(out / STATE, state)
    results = collect(cfg)
    _write_json(out / "rounds.json", results)
    (out / "rounds.md").write_text(to_markdown(results), encoding="utf-8")
    log(f"results: {out / 'rounds.md'}")
    return code


# ---- the table ------------------------------------------------------------------------------------------

def _figure(value: Any, ci: Any) -> Dict[str, Any]:
    return {"value": value, "ci95": ci}


def collect(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """What the finished steps measured, per model (round 0 = the starting model)."""
    out = Path(cfg["output"])
    rows = []
    for r in range(0, cfg["rounds"] + 1):
        pool_report = out / (f"round{r + 1}" if r < cfg["rounds"] else f"measure-round{r}") / "mining.json"
        mined = _json(out / f"round{r}" / "mining.json") if r else None
        row: Dict[str, Any] = {"round": r, "model": cfg["model"] if r == 0 else str(out / f"round{r}" / "model.onnx"),
                               "mined_this_round": (mined or {}).get("selected", {}).get("total") if r else 0,
                               "pool": {}, "heldout": {}}
        pool = _json(pool_report)
        if pool is not None:
            row["pool_split"] = pool["pool"]["split"]
            row["pool_size"] = pool["pool_size"]
            for lab, m in pool["per_label"].items():
                row["pool"][lab] = {"flag_rate": _figure(m["flag_rate"], m["flag_rate_ci95"]),
                                    "unseen_flag_rate": _figure(m["unseen"]["flag_rate"], m["unseen"]["flag_rate_ci95"]),
                                    "unseen_n": m["unseen"]["n"]}
        for name, _, split in cfg["heldout"]:
            report = _json(out / f"round{r}" / f"eval-{name}" / "report.json")
            if report is None:
                continue
            per = {}
            for lab, m in report["per_class"].items():
                ci = m.get("ci95") or {}
                per[lab] = {"negatives_flag_rate": _figure(m.get("fpr"), ci.get("fpr")),
                            "recall": _figure(m.get("recall"), ci.get("recall")),
                            "negatives": m.get("negatives"), "positives": m.get("support")}
            row["heldout"][name] = {"split": split, "n_images": report.get("n_images"), "per_label": per}
        rows.append(row)
    return {"schema": SCHEMA, "config": {k: v for k, v in cfg.items()}, "rounds": rows}


def _cell(fig: Optional[Dict[str, Any]]) -> str:
    if not fig or fig.get("value") is None:
        return "-"
    v, ci = fig["value"], fig.get("ci95")
    return f"{100 * v:.1f}%" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def to_markdown(results: Dict[str, Any]) -> str:
    rows = results["rounds"]
    labels = sorted({lab for r in rows for lab in r["pool"]} |
                    {lab for r in rows for h in r["heldout"].values() for lab in h["per_label"]})
    names = [h[0] for h in results["config"]["heldout"]]
    head = ["round", "mined"]
    for lab in labels:
        head += [f"{lab}: pool flag rate", f"{lab}: pool, unseen"]
        for name in names:
            head += [f"{lab}: {name} negatives flagged", f"{lab}: {name} recall"]
    lines = ["# Hard-negative rounds", "",
             f"Pool `{results['config']['pool']}` (split {results['config'].get('pool_split') or 'all'}); "
             "figures with 95% bootstrap intervals; round 0 is the starting model. 'pool, unseen': pool photos "
             "not in that model's training manifest.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["round"]), "-" if r["mined_this_round"] is None else str(r["mined_this_round"])]
        for lab in labels:
            p = r["pool"].get(lab, {})
            cells += [_cell(p.get("flag_rate")), _cell(p.get("unseen_flag_rate"))]
            for name in names:
                h = r["heldout"].get(name, {}).get("per_label", {}).get(lab, {})
                cells += [_cell(h.get("negatives_flag_rate")), _cell(h.get("recall"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def config_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    return {"output": str(Path(args.output)), "model": args.model, "pool": args.pool, "pool_split": args.pool_split,
            "train_manifest": args.train_manifest, "heldout": [list(parse_heldout(h)) for h in args.heldout],
            "rounds": args.rounds, "top": args.top, "train_args": shlex.split(args.train_args),
            "export_args": shlex.split(args.export_args), "evaluate_args": shlex.split(args.evaluate_args),
            "mine_args": shlex.split(args.mine_args)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the starting model (round 0)")
    p.add_argument("--pool", required=True, help="pool believed negative (manifest or folder)")
    p.add_argument("--pool-split", default=None, help="mine only this split of a manifest pool")
    p.add_argument("--train-manifest", required=True, help="the training manifest of round 0")
    p.add_argument("--heldout", action="append", required=True, metavar="NAME=MANIFEST:SPLIT",
                   help="a held-out split to evaluate every model on (repeatable)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--top", type=int, default=200, help="photos mined per round (mine --top)")
    p.add_argument("--train-args", required=True, help="the training recipe, one string (wildlife-vision train ...)")
    p.add_argument("--export-args", default="", help="extra arguments of wildlife-vision export")
    p.add_argument("--evaluate-args", default="--batch-size 32", help="extra arguments of wildlife-vision evaluate")
    p.add_argument("--mine-args", default="", help="extra arguments of wildlife-vision mine (e.g. --per-label)")
    p.add_argument("--output", required=True, help="folder of the rounds (resumed when it exists)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.top < 0:
        p.error("--rounds must be at least 1 and --top at least 0")
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        p.error(str(e))
    return run_rounds(cfg)


if __name__ == "__main__":
    sys.exit(main())

"""photos/s of `predict --engine ray` against the local engine on the same photos, interleaved in one run (the
machines are shared and noisy: compare the ratio, not the absolute figures).

    nice -n 10 python benchmarks/ray_vs_local.py --photos ../shared/data/wildtrade-v1/images --limit 400 \\
        --json /tmp/ray-vs-local.json

Local: the `predict` command itself (in-process, `--output x.jsonl`), timed end to end (model load included)
and by its own summary (steady: from after the model is loaded to the last row). Ray: a local Ray instance
started once (its start-up time is reported on its own), then per round one job through the engine the command runs (job folder, Ray Data actors, part files, the same summary
statistics), timed in three parts: actor start-up (from submitting the dataset to the first rows back:
actors created, one model loaded per actor), steady throughput (rows back between the moment every actor has
returned about one block and the moment before the last blocks, over that time: at both ends the other actors
have about the same work in flight, so it cancels) and end to end (all rows / the job's whole time, the driver's model check included). The local engine also runs
with `--threads 1` (one onnxruntime thread, as each 1-CPU actor has), to tell the engine from the thread
settings. The two engines' rows are checked to be the same records.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _local_round(paths, model, out: Path, *flags: str) -> dict:
    import contextlib
    import io
    import re

    from wildlife_vision.cli import main as cli_main

    err = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stderr(err):
        code = cli_main(["predict", *paths, "--model", str(model), "--output", str(out), "--no-progress", *flags])
    seconds = time.perf_counter() - t
    assert code == 0, (code, err.getvalue())
    # the command's own figure, timed from after the model is loaded to the last row written
    steady = float(re.search(r"\(([\d.]+) photos/s\)", err.getvalue()).group(1))
    return {"seconds": seconds, "photos_per_s": len(paths) / seconds, "steady_photos_per_s": steady}


def _ray_round(paths, model, out: Path, settings) -> dict:
    from wildlife_vision import load_model
    from wildlife_vision.batch.job import Job, prepare, write_part
    from wildlife_vision.batch.ray_engine import RayRun, default_actors
    import ray

    t0 = time.perf_counter()
    m = load_model(model, providers=["cpu"], threads=1)
    job = Job(list(paths), m.name, m.version, rows_per_part=1000)  # the command's default
    plan = prepare(str(out), job, resume=False, overwrite=False)
    run = RayRun(plan, Path(model).read_bytes(), settings,
                 actors=settings.actors or default_actors(settings, ray.cluster_resources()))
    marks = []

    def on_rows(n: int) -> None:
        marks.append((time.perf_counter(), n))

    submitted = time.perf_counter()
    rows = 0
    for b, lines in run.blocks(on_rows=on_rows):
        write_part(plan, b, lines)
        for line in lines:
            json.loads(line)  # the command parses every row for its summary
        rows += len(lines)
    end = time.perf_counter()
    assert rows == len(paths), (rows, len(paths))
    # steady: rows that came back between the moment every actor had returned about one block and the moment
    # before the last blocks; at both ends the other actors have about the same work in flight, so it cancels
    times = [t for t, _ in marks]
    done = [sum(n for _, n in marks[:k + 1]) for k in range(len(marks))]
    i, j = run.actors - 1, len(marks) - run.actors - 1
    steady = (done[j] - done[i]) / (times[j] - times[i]) if j > i and times[j] > times[i] else None
    return {"seconds": end - t0, "photos_per_s": rows / (end - t0), "actors": run.actors,
            "actor_startup_s": marks[0][0] - submitted, "steady_photos_per_s": steady,
            "steady_window_rows": done[j] - done[i] if steady else 0}


def _model_id(model) -> str:
    from wildlife_vision import load_model

    m = load_model(model, providers=["cpu"], threads=1)
    return f"{m.name} {m.version}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, required=True, help="a folder of photos (read recursively)")
    ap.add_argument("--model", type=Path, help="model file (default: the shipped default model)")
    ap.add_argument("--limit", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of (local, ray), interleaved")
    ap.add_argument("--ray-cpus-per-actor", type=float, default=1.0)
    ap.add_argument("--ray-actors", type=int, default=None)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    import logging

    from wildlife_vision.batch.job import read_rows
    from wildlife_vision.batch.ray_engine import RaySession, RaySettings
    from wildlife_vision.inputs import expand_inputs
    from wildlife_vision.model import default_model_path

    model = args.model or default_model_path()
    paths = expand_inputs([str(args.photos)], recursive=True).paths[: args.limit]
    if not paths:
        print(f"no photos under {args.photos}", file=sys.stderr)
        return 2
    settings = RaySettings(cpus_per_actor=args.ray_cpus_per_actor, actors=args.ray_actors)
    logging.basicConfig(level=logging.WARNING)
    local, local1, rayr = [], [], []
    with tempfile.TemporaryDirectory(prefix="ray-vs-local-") as tmp, RaySession() as session:
        print(f"ray: a local instance with {os.cpu_count()} CPUs started in {session.seconds:.1f} s", file=sys.stderr)
        for r in range(args.rounds):
            lo = Path(tmp) / f"local-{r}.jsonl"
            local.append(_local_round(paths, model, lo))
            local1.append(_local_round(paths, model, Path(tmp) / f"local1-{r}.jsonl", "--threads", "1"))
            print(f"round {r}: local {local[-1]['photos_per_s']:.1f} photos/s end to end, "
                  f"{local[-1]['steady_photos_per_s']:.1f} steady; with --threads 1: "
                  f"{local1[-1]['steady_photos_per_s']:.1f} steady", file=sys.stderr)
            ro = Path(tmp) / f"ray-{r}"
            rayr.append(_ray_round(paths, model, ro, settings))
            print(f"round {r}: ray {rayr[-1]['photos_per_s']:.1f} photos/s end to end, "
                  f"{rayr[-1]['steady_photos_per_s'] or float('nan'):.1f} steady, actors up in {rayr[-1]['actor_startup_s']:.1f} s",
                  file=sys.stderr)
        want = {json.loads(x)["input"]: json.loads(x) for x in lo.read_text(encoding="utf-8").splitlines()}
        got = {x["input"]: x for x in read_rows(str(ro))}
        assert set(got) == set(want) and len(got) == len(paths)
        worst = max(abs(got[k]["scores"][lab] - s) for k, w in want.items() for lab, s in w["scores"].items())
        assert worst <= 1e-6, worst
        startup = session.seconds

    def med(rows, key):
        values = [r[key] for r in rows if r[key] is not None]
        return statistics.median(values) if values else float("nan")

    result = {
        "schema_version": "wildlife-vision/ray-vs-local/v1",
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "photos": len(paths), "model": str(model), "model_id": _model_id(model), "rounds": args.rounds,
        "ray_settings": {"actors": rayr[0]["actors"], "cpus_per_actor": args.ray_cpus_per_actor},
        "ray_init_s": startup,
        "local": {"photos_per_s": med(local, "photos_per_s"), "steady_photos_per_s": med(local, "steady_photos_per_s"),
                  "rounds": local},
        "local_threads_1": {"steady_photos_per_s": med(local1, "steady_photos_per_s"), "rounds": local1},
        "ray": {"photos_per_s": med(rayr, "photos_per_s"), "steady_photos_per_s": med(rayr, "steady_photos_per_s"),
                "actor_startup_s": med(rayr, "actor_startup_s"), "rounds": rayr},
        "max_score_difference": worst,
    }
    result["ratio_ray_to_local_end_to_end"] = result["ray"]["photos_per_s"] / result["local"]["photos_per_s"]
    result["ratio_ray_steady_to_local_steady"] = (result["ray"]["steady_photos_per_s"]
                                                  / result["local"]["steady_photos_per_s"])
    try:
        import ray

        result["versions"] = {"ray": ray.__version__}
    except ImportError:
        pass
    print(f"{len(paths)} photos, median of {args.rounds} rounds: local {result['local']['photos_per_s']:.1f} photos/s "
          f"end to end, {result['local']['steady_photos_per_s']:.1f} steady; "
          f"ray ({result['ray_settings']['actors']} actors x {args.ray_cpus_per_actor:g} CPU) "
          f"{result['ray']['photos_per_s']:.1f} end to end ({result['ratio_ray_to_local_end_to_end']:.2f}x), "
          f"{result['ray']['steady_photos_per_s']:.1f} steady ({result['ratio_ray_steady_to_local_steady']:.2f}x); "
          f"ray start-up {startup:.1f} s, actor start-up {result['ray']['actor_startup_s']:.1f} s per job; "
          f"local with --threads 1: {result['local_threads_1']['steady_photos_per_s']:.1f} steady")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

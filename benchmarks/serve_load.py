"""Load test of `wildlife-vision serve` against in-process `model.predict`, on the same photos, in one run.

    python benchmarks/serve_load.py --json serve_load.json

It starts the real server (`wildlife-vision serve` in a subprocess, on a free port of 127.0.0.1; nothing leaves
the machine), sends the same photos (the first 300 of ../shared/data/wildtrade-v1/images, sorted) from 1, 8 and
32 concurrent clients (threads, one keep-alive http.client connection each, every photo sent once per round),
and reports throughput and p50/p95/p99 latency. In the same run it measures in-process library throughput
(``model.predict`` on the same photo bytes, batch 32 with 2 decode threads, and batch 8 with 1), alternating
with the 8-client rounds (``--repeats`` pairs; the machine is shared and noisy), and reports the median ratio
of HTTP to in-process photos/s at batch 32 (target: at least 0.7 with 8 clients), the ratio to the faster of
the two settings, and the session alone (``run_batch``) by batch size, which explains the difference. It
checks that the 8-client answers carry the library's scores (max difference at most 1e-4). Last, an overload
round restarts the server with a small ``--max-queue`` and sends from three times as many clients: every
request must get an answer, each one 200, 429 or 503. Every round is bounded in requests and seconds. Exit
status 0 when the scores match and the overload round lost nothing and answered nothing else; 1 otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = ROOT.parent / "shared" / "data" / "wildtrade-v1" / "images"


def machine() -> Dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "platform": platform.platform()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Server:
    """`wildlife-vision serve` in a subprocess on 127.0.0.1, its log in a file."""

    def __init__(self, args: argparse.Namespace, max_queue: int, log_dir: Path, name: str):
        self.port = free_port()
        exe = shutil.which("wildlife-vision")
        cmd = [exe] if exe else [sys.executable, "-m", "wildlife_vision"]
        cmd += ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--max-queue", str(max_queue),
                "--threads", str(args.threads), "--decode-threads", str(args.decode_threads),
                "--max-wait-ms", str(args.max_wait_ms)]
        if args.max_batch:
            cmd += ["--max-batch", str(args.max_batch)]
        if args.model:
            cmd += ["--model", str(args.model)]
        self.cmd = cmd
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                status, _, _ = request(self.port, "GET", "/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the server did not become ready in 120 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def request(port: int, method: str, path: str, body: Optional[bytes] = None,
            conn: Optional[http.client.HTTPConnection] = None) -> Tuple[int, Dict[str, str], bytes]:
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {"Content-Type": "image/jpeg"} if body is not None else {}
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        if own:
            c.close()


def http_round(port: int, photos: List[bytes], clients: int, time_limit: float) -> Dict[str, Any]:
    """Every photo sent once, spread over ``clients`` threads; stops sending after ``time_limit`` seconds."""
    results: List[Optional[Tuple[int, float, bytes]]] = [None] * len(photos)
    errors: List[str] = []
    start_barrier = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            conn.connect()
            start_barrier.wait()
            for i in range(k, len(photos), clients):
                if time.monotonic() > deadline[0]:
                    break
                t = time.perf_counter()
                try:
                    status, _, data = request(port, "POST", "/v1/predict", photos[i], conn)
                except (OSError, http.client.HTTPException) as e:  # a lost request: counted, never hidden
                    errors.append(f"{type(e).__name__}: {e}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                    continue
                results[i] = (status, time.perf_counter() - t, data)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + time_limit
    start_barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(time_limit + 180)
    seconds = time.perf_counter() - t0
    answered = [r for r in results if r is not None]
    statuses: Dict[str, int] = {}
    for status, _, _ in answered:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok = [r for r in answered if r[0] == 200]
    lat_ok = [r[1] * 1000 for r in ok]
    return {
        "clients": clients, "sent": len(answered) + len(errors), "answered": len(answered),
        "transport_errors": len(errors), "error_samples": errors[:5], "statuses": statuses, "seconds": seconds,
        "photos_per_s": len(ok) / seconds if seconds > 0 else 0.0,
        "p50_ms": percentile(lat_ok, 50), "p95_ms": percentile(lat_ok, 95), "p99_ms": percentile(lat_ok, 99),
        "refusal_p99_ms": percentile([r[1] * 1000 for r in answered if r[0] in (429, 503)], 99),
        "_latencies_ms": lat_ok,
        "_records": [json.loads(r[2]) if r is not None and r[0] == 200 else None for r in results],
    }


def merge(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Several rounds with the same clients: median photos/s, latency percentiles over every answer."""
    lat = [x for r in runs for x in r["_latencies_ms"]]
    statuses: Dict[str, int] = {}
    for r in runs:
        for k, n in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + n
    return {"clients": runs[0]["clients"], "runs": len(runs), "sent": sum(r["sent"] for r in runs),
            "answered": sum(r["answered"] for r in runs), "transport_errors": sum(r["transport_errors"] for r in runs),
            "statuses": statuses, "photos_per_s": statistics.median(r["photos_per_s"] for r in runs),
            "photos_per_s_runs": [r["photos_per_s"] for r in runs], "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95), "p99_ms": percentile(lat, 99)}


def in_process(model: Any, photos: List[bytes], batch_size: int, workers: int) -> Tuple[float, List[Any]]:
    t = time.perf_counter()
    preds = model.predict(photos, batch_size=batch_size, workers=workers)
    return len(photos) / (time.perf_counter() - t), preds


def session_rates(model: Any, sizes: Sequence[int], seconds: float = 1.0) -> Dict[int, float]:
    """photos/s of the session alone (``run_batch`` on a preprocessed batch), best of two tries per size."""
    import numpy as np

    h, w = model.preprocess_config.input_size
    out: Dict[int, float] = {}
    for n in sizes:
        batch = np.random.default_rng(0).normal(size=(n, 3, h, w)).astype(np.float32)
        model.run_batch(batch)
        best = 0.0
        for _ in range(2):
            t, k = time.perf_counter(), 0
            while time.perf_counter() - t < seconds:
                model.run_batch(batch)
                k += n
            best = max(best, k / (time.perf_counter() - t))
        out[n] = best
    return out


def max_score_diff(preds: List[Any], records: List[Optional[Dict[str, Any]]]) -> Tuple[float, int, int]:
    """(max |score difference|, photos compared, photos whose flagged/review differ)."""
    worst, compared, mismatched = 0.0, 0, 0
    for p, rec in zip(preds, records):
        if rec is None or not p.ok:
            continue
        compared += 1
        worst = max(worst, max(abs(rec["scores"][lab] - s) for lab, s in p.scores.items()))
        mismatched += rec["flagged"] != list(p.flagged) or rec["review"] != list(p.review)
    return worst, compared, mismatched


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="model file (default: the shipped default model)")
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of photos (searched recursively)")
    ap.add_argument("--limit", type=int, default=300, help="photos: the first N, sorted by path")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--max-batch", type=int, help="the server's --max-batch (default: the server's default)")
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads, server and in-process")
    ap.add_argument("--decode-threads", type=int, default=1, help="the server's decode threads")
    ap.add_argument("--library", nargs="+", default=["32x2", "8x1"], metavar="BATCHxWORKERS",
                    help="in-process `model.predict` settings, batch size x decode threads; the first (batch 32, "
                         "2 decode threads: the `predict` CLI's defaults here) is the reference of the ratio")
    ap.add_argument("--overload-queue", type=int, default=8, help="--max-queue of the overload round")
    ap.add_argument("--overload-factor", type=int, default=3, help="clients = factor x the overload --max-queue")
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds per round at most")
    ap.add_argument("--repeats", type=int, default=3, help="in-process / 8-client pairs (the ratio is their median)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    import wildlife_vision as wv
    from wildlife_vision.preprocess import IMAGE_EXTENSIONS

    paths = sorted(p for p in args.photos.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    paths = paths[: args.limit]
    if not paths:
        print(f"no photos under {args.photos}", file=sys.stderr)
        return 2
    photos = [p.read_bytes() for p in paths]
    model = wv.load_model(args.model, threads=args.threads or None)
    print(f"{len(photos)} photos ({sum(map(len, photos)) / len(photos) / 1024:.0f} KiB on average) from "
          f"{args.photos}; model {model.name} {model.version}; {machine()['cpu']}, {os.cpu_count()} cores",
          file=sys.stderr)
    try:
        library_runs = [tuple(int(x) for x in spec.lower().split("x")) for spec in args.library]
        assert all(len(t) == 2 and min(t) >= 1 for t in library_runs)
    except (ValueError, AssertionError):
        print(f"--library takes BATCHxWORKERS, e.g. 32x2; got {args.library}", file=sys.stderr)
        return 2
    model.predict(photos[:32], batch_size=32, workers=2)  # warm-up

    log_dir = Path(tempfile.mkdtemp(prefix="serve-load-"))
    session = session_rates(model, (1, 8, 32))
    ref = library_runs[0]
    rates: Dict[Tuple[int, int], List[float]] = {b: [] for b in library_runs}
    reference: List[Any] = []
    rounds: Dict[int, List[Dict[str, Any]]] = {c: [] for c in args.clients}
    ratios: List[float] = []  # HTTP with 8 clients / in-process at the reference setting, measured back to back
    ratios_best: List[float] = []  # ... / the faster in-process setting of the same repeat
    server = Server(args, args.max_queue, log_dir, "serve")
    try:
        # the shared machine is noisy: in-process and 8-client rounds alternate, and their ratio is taken per pair
        http_round(server.port, photos[:32], 8, 30)  # warm-up: connections, the session's first batch shapes
        for rep in range(args.repeats):
            for b in library_runs:
                rate, preds = in_process(model, photos, b[0], b[1])
                rates[b].append(rate)
                reference = reference or preds
                print(f"in-process predict, batch {b[0]}, workers {b[1]}: {rate:.1f} photos/s", file=sys.stderr)
            for c in args.clients:
                if c != 8 and rep > 0:
                    continue
                r = http_round(server.port, photos, c, args.time_limit)
                rounds[c].append(r)
                if c == 8:
                    ratios.append(r["photos_per_s"] / rates[ref][-1])
                    ratios_best.append(r["photos_per_s"] / max(rates[b][-1] for b in library_runs))
                print(f"HTTP, {c} clients: {r['photos_per_s']:.1f} photos/s, p50 {r['p50_ms']:.0f} ms, "
                      f"statuses {r['statuses']}", file=sys.stderr)
    finally:
        server.stop()
    means = {b: statistics.median(v) for b, v in rates.items()}
    library = means[ref]
    merged = [merge(rounds[c]) for c in args.clients if rounds[c]]

    # overload: three times as many clients as the queue admits; every request answered, 200/429/503 only
    n_over = args.overload_factor * args.overload_queue
    server = Server(args, args.overload_queue, log_dir, "overload")
    try:
        over = http_round(server.port, photos, n_over, args.time_limit)
        _, _, metrics = request(server.port, "GET", "/metrics")
        healthy = request(server.port, "GET", "/healthz")[0] == 200
        after = request(server.port, "POST", "/v1/predict", photos[0])[0]
    finally:
        server.stop()
    over["healthy_after"] = healthy and after == 200

    checks: Dict[str, Any] = {}
    if rounds.get(8):
        diffs = [max_score_diff(reference, r["_records"]) for r in rounds[8]]
        diff = max(d[0] for d in diffs)
        mismatched = sum(d[2] for d in diffs)
        compared = min(d[1] for d in diffs)
        checks.update(max_score_diff_8_clients=diff, photos_compared_8_clients=compared,
                      flag_mismatches_8_clients=mismatched, scores_match=diff <= 1e-4 and mismatched == 0
                      and compared == len(photos), ratio_8_clients=statistics.median(ratios),
                      ratios_8_clients=ratios,
                      ratio_8_clients_to_best_library=statistics.median(ratios_best))
    bad = {s: n for s, n in over["statuses"].items() if s not in ("200", "429", "503")}
    checks["overload_ok"] = (not bad and over["transport_errors"] == 0 and over["answered"] == over["sent"]
                             and over["sent"] == len(photos) and over["healthy_after"])

    print(f"\nmachine: {machine()['cpu']}, {os.cpu_count()} cores; {len(photos)} photos; model {model.name} "
          f"{model.version}; server --max-batch {args.max_batch or 'default'} --max-queue {args.max_queue} --threads "
          f"{args.threads} --decode-threads {args.decode_threads} --max-wait-ms {args.max_wait_ms:g}\n")
    print(f"| mode | clients | photos/s | ratio to in-process batch {ref[0]} | p50 ms | p95 ms | p99 ms | answers |")
    print("|---|---|---|---|---|---|---|---|")
    for b in library_runs:
        print(f"| in-process `model.predict` (batch {b[0]}, workers {b[1]}) | - | {means[b]:.1f} | "
              f"{means[b] / library:.2f} | - | - | - | {len(photos)} x {len(rates[b])} runs |")
    for r in merged + [over]:
        label = (f"HTTP, overload (--max-queue {args.overload_queue})" if r is over
                 else f"HTTP ({r['runs']} runs)" if r["runs"] > 1 else "HTTP")
        answers = ", ".join(f"{n} x {s}" for s, n in sorted(r["statuses"].items()))
        if r["transport_errors"]:
            answers += f", {r['transport_errors']} lost"
        ratio = checks["ratio_8_clients"] if r["clients"] == 8 and r is not over else r["photos_per_s"] / library
        print(f"| {label} | {r['clients']} | {r['photos_per_s']:.1f} | {ratio:.2f} | "
              f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {answers} |")
    print("\nsession alone (`run_batch`), photos/s by batch size: "
          + ", ".join(f"{b}: {r:.1f}" for b, r in session.items()))
    if rounds.get(8):
        print(f"8 clients vs the library: max score difference {checks['max_score_diff_8_clients']:.2e} over "
              f"{checks['photos_compared_8_clients']} photos, {checks['flag_mismatches_8_clients']} flag "
              f"differences ({'OK' if checks['scores_match'] else 'FAIL'}); throughput ratio "
              f"{checks['ratio_8_clients']:.2f} (target >= 0.7: "
              f"{'met' if checks['ratio_8_clients'] >= 0.7 else 'MISSED'}); "
              f"to the faster in-process setting: {checks['ratio_8_clients_to_best_library']:.2f}")
    print(f"overload ({n_over} clients, --max-queue {args.overload_queue}): {over['sent']} sent, {over['answered']} "
          f"answered, statuses {over['statuses']}, refusals p99 {over['refusal_p99_ms']:.0f} ms, healthy after: "
          f"{over['healthy_after']} ({'OK' if checks['overload_ok'] else 'FAIL'})")

    if args.json:
        def public(r: Dict[str, Any]) -> Dict[str, Any]:
            return {k: v for k, v in r.items() if not k.startswith("_")}

        out = {"schema": "wildlife-vision/serve-load/v1", "machine": machine(),
               "model": {"name": model.name, "version": model.version, "path": str(model.path)},
               "photos": {"folder": str(args.photos), "count": len(photos), "bytes": sum(map(len, photos))},
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "in_process_photos_per_s": {f"batch {b[0]} workers {b[1]}": v for b, v in rates.items()},
               "in_process_median": {f"batch {b[0]} workers {b[1]}": v for b, v in means.items()},
               "session_photos_per_s_by_batch": {str(b): r for b, r in session.items()},
               "http": [public(r) for r in merged], "overload": public(over), "checks": checks,
               "overload_metrics_excerpt": [line for line in metrics.decode().splitlines()
                                            if line.startswith(("wildlife_vision_http_requests_total",
                                                                "wildlife_vision_errors_total",
                                                                "wildlife_vision_batch_size_count",
                                                                "wildlife_vision_batch_size_sum"))]}
        args.json.write_text(json.dumps(out, indent=1), encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0 if checks.get("scores_match", True) and checks["overload_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

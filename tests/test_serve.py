"""`wildlife-vision serve`: a real uvicorn server on 127.0.0.1 (in a thread, or the CLI in a subprocess), a tiny
random-weight model, and real HTTP requests through httpx.

What it shows: answers from 8 concurrent clients carry the library's own scores; bad bodies are refused with
4xx/413 and a JSON error kind; a multipart form answers a list in order with a bad file's error in place;
overload is shed with 429 only and the service stays healthy; /metrics is valid Prometheus text that counts
what happened; /v1/model, /healthz, /readyz; graceful shutdown finishes accepted requests; the CLI's --help, exit 3
without the [serve] extra, exit 4 for a bad model.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")

import uvicorn  # noqa: E402
from PIL import Image  # noqa: E402

import wildlife_vision as wv  # noqa: E402
from helpers import make_photo  # noqa: E402
from wildlife_vision.records import JSONL_FIELDS, RECORD_SCHEMA, prediction_record  # noqa: E402
from wildlife_vision.serve.app import ServeSettings, create_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ---- a real server in a thread ----------------------------------------------------------------------

class ServerThread:
    """uvicorn serving ``create_app(model, settings)`` on a free port of 127.0.0.1, in a background thread."""

    def __init__(self, model, **settings):
        self.app = create_app(model, ServeSettings(**settings))
        self.service = self.app.state.service
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", access_log=False,
                                timeout_graceful_shutdown=10)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.server.started:
                try:
                    if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
            time.sleep(0.02)
        raise RuntimeError("the test server did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)

    def __exit__(self, *exc) -> None:
        self.stop()
        self.sock.close()


def jpeg(seed: int, size=(96, 64)) -> bytes:
    buf = io.BytesIO()
    make_photo(seed, size).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def slowed(model, seconds: float):
    """The model with every inference call taking at least ``seconds`` (to build queues and batches)."""
    run = model.run_batch

    def run_batch(batch, output=None):
        time.sleep(seconds)
        return run(batch, output)

    model.run_batch = run_batch
    return model


class Gate:
    """Holds every inference call of ``model`` while closed (open at first, for the warm-up): requests then
    stay admitted, queued or in their inference call for exactly as long as a test needs."""

    def __init__(self, model):
        self.event = threading.Event()
        self.event.set()
        run = model.run_batch

        def run_batch(batch, output=None):
            assert self.event.wait(30), "the test never opened the gate"
            return run(batch, output)

        model.run_batch = run_batch

    def close(self) -> None:
        self.event.clear()

    def open(self) -> None:
        self.event.set()


def post_image(client: httpx.Client, body: bytes, ctype: str = "image/jpeg") -> httpx.Response:
    return client.post("/v1/predict", content=body, headers={"content-type": ctype})


@pytest.fixture
def model(tiny_model_path):
    return wv.load_model(tiny_model_path)


# ---- Prometheus text format, parsed strictly ---------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def parse_prometheus(text: str) -> Tuple[Dict[str, str], Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]]:
    """(family -> type, (sample name, sorted labels) -> value); raises AssertionError on anything malformed."""
    assert text.endswith("\n")
    types: Dict[str, str] = {}
    helps = set()
    samples: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, f"second HELP for {name}"
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, f"second TYPE for {name}"
            types[name] = kind
            continue
        assert not line.startswith("#") and line.strip(), f"unexpected line {line!r}"
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, raw_labels, value = m.groups()
        labels: List[Tuple[str, str]] = []
        if raw_labels:
            pos = 0
            while pos < len(raw_labels):
                lm = _LABEL.match(raw_labels, pos)
                assert lm, f"bad labels in {line!r}"
                labels.append((lm.group(1), lm.group(2)))
                pos = lm.end()
        family = next((f for f in (name, re.sub(r"_(total|bucket|sum|count)$", "", name)) if f in types), None)
        assert family is not None, f"sample {name} has no TYPE line before it"
        if types[family] == "counter":
            assert name == family + "_total", line
        if types[family] == "histogram":
            assert name in (family + "_bucket", family + "_sum", family + "_count"), line
            assert (name == family + "_bucket") == any(k == "le" for k, _ in labels), line
        key = (name, tuple(sorted(labels)))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value.replace("+Inf", "inf"))
    for family, kind in types.items():  # histogram buckets are cumulative and end at +Inf == _count
        if kind != "histogram":
            continue
        series: Dict[tuple, List[Tuple[float, float]]] = {}
        for (name, labels), v in samples.items():
            if name == family + "_bucket":
                rest = tuple(kv for kv in labels if kv[0] != "le")
                le = float(dict(labels)["le"].replace("+Inf", "inf"))
                series.setdefault(rest, []).append((le, v))
        for rest, buckets in series.items():
            buckets.sort()
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), f"{family} buckets are not cumulative: {buckets}"
            assert math.isinf(buckets[-1][0]) and buckets[-1][1] == samples[(family + "_count", rest)]
    return types, samples


def sample(samples, metric: str, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


# ---- scoring ------------------------------------------------------------------------------------------

def test_8_concurrent_clients_get_the_librarys_own_scores(model):
    photos = [jpeg(i, (96 + 8 * (i % 5), 64 + 4 * (i % 3))) for i in range(40)]
    expected = model.predict(photos, batch_size=8)
    with ServerThread(slowed(wv.load_model(model.path), 0.02), max_batch=8, max_queue=64) as srv:
        def client(k: int) -> List[Tuple[int, httpx.Response]]:
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                return [(i, post_image(c, photos[i])) for i in range(k, len(photos), 8)]

        with ThreadPoolExecutor(8) as pool:
            answers = [a for part in pool.map(client, range(8)) for a in part]
        metrics = httpx.get(srv.url + "/metrics").text
    assert len(answers) == len(photos)
    for i, r in answers:
        assert r.status_code == 200, r.text
        rec = r.json()
        assert list(rec) == list(JSONL_FIELDS) and rec["schema"] == RECORD_SCHEMA
        want = prediction_record(expected[i], model.name, model.version)
        assert rec["flagged"] == want["flagged"] and rec["review"] == want["review"] and rec["error"] is None
        assert rec.keys() == want.keys() and rec["model_version"] == want["model_version"]
        assert set(rec["scores"]) == set(model.labels)
        for lab in model.labels:
            assert abs(rec["scores"][lab] - want["scores"][lab]) <= 1e-4
    _, s = parse_prometheus(metrics)
    calls = sample(s, "wildlife_vision_batch_size_count")
    assert sample(s, "wildlife_vision_batch_size_sum") == len(photos)  # every image went through one inference call
    assert calls < len(photos), "8 concurrent clients should share inference calls (micro-batches)"
    assert sample(s, "wildlife_vision_http_requests_total", route="/v1/predict", status="200") == len(photos)


def test_multipart_answers_a_list_in_order_with_errors_in_place(model):
    good = [jpeg(1), jpeg(2), jpeg(3)]
    files = [("files", ("a.jpg", good[0], "image/jpeg")), ("files", ("b.jpg", good[1], "image/jpeg")),
             ("files", ("notes.txt", b"this is not a photo\n", "text/plain")),
             ("files", ("empty.jpg", b"", "image/jpeg")), ("files", ("c.jpg", good[2], "image/jpeg"))]
    want = model.predict(good)
    with ServerThread(model, max_files=8) as srv:
        r = httpx.post(srv.url + "/v1/predict", files=files, timeout=30)
        too_many = httpx.post(srv.url + "/v1/predict", files=[("files", (f"{i}.jpg", good[0], "image/jpeg"))
                                                               for i in range(9)], timeout=30)
        no_files = httpx.post(srv.url + "/v1/predict", data={"note": "x"}, files=[], timeout=30,
                              headers={"content-type": "multipart/form-data; boundary=xyz"}, content=b"--xyz--\r\n")
    assert r.status_code == 200, r.text
    recs = r.json()
    assert [x["input"] for x in recs] == ["a.jpg", "b.jpg", "notes.txt", "empty.jpg", "c.jpg"]
    assert [x["error_kind"] for x in recs] == [None, None, "not_an_image", "empty", None]
    assert recs[2]["scores"] == {} and recs[2]["error"]
    for rec, p in zip([recs[0], recs[1], recs[4]], want):
        assert all(abs(rec["scores"][lab] - p.scores[lab]) <= 1e-4 for lab in model.labels)
        assert rec["flagged"] == list(p.flagged)
    assert too_many.status_code == 413 and too_many.json()["error_kind"] == "too_many_files"
    assert no_files.status_code == 400 and no_files.json()["error_kind"] == "empty"


# ---- bad input --------------------------------------------------------------------------------------------

def _bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (10_000, 9_000)).save(buf, "PNG")  # 90 Mpx, over the decompression-bomb limit; a few KB
    return buf.getvalue()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_bodies_are_refused_with_their_error_kind(model):
    photo = jpeg(5, (400, 300))
    cases = [  # body, content type, status, error kind
        (b"", "image/jpeg", 400, "empty"),
        (b"<html><body>404 not found</body></html>", "image/jpeg", 415, "not_an_image"),
        (b"%PDF-1.4 not a photo", "application/octet-stream", 415, "not_an_image"),
        (photo[: len(photo) // 2], "image/jpeg", 422, "truncated"),
        (_bomb_png(), "image/png", 413, "too_large"),
        (b'{"url": "http://169.254.169.254/latest/meta-data/"}', "application/json", 415,
         "unsupported_media_type"),
    ]
    with ServerThread(model, max_body_bytes=64 * 1024) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        for body, ctype, status, kind in cases:
            r = post_image(c, body, ctype)
            assert r.status_code == status, (kind, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/json")
            assert r.json()["error_kind"] == kind and r.json()["error"], r.text
        # over the limit with a Content-Length: refused from the header, before the body is read
        big = os.urandom(200 * 1024)
        r = post_image(c, big)
        assert r.status_code == 413 and r.json()["error_kind"] == "too_large", r.text

        # chunked (no Content-Length): counted while it streams; the server stops reading past the limit
        sent = []

        def chunks():
            for _ in range(64):
                sent.append(16 * 1024)
                yield b"\0" * (16 * 1024)

        r = c.post("/v1/predict", content=chunks(), headers={"content-type": "image/jpeg"})
        assert r.status_code == 413 and r.json()["error_kind"] == "too_large", r.text
        # and the service still scores a good photo on the same connection
        ok = post_image(c, jpeg(6))
        assert ok.status_code == 200 and ok.json()["error"] is None
        # a raw socket declaring 1 GB: the answer comes without a byte of the body sent
        port = int(srv.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                      b"Content-Length: 1000000000\r\n\r\n")
            head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 413"), head
        _, s = parse_prometheus(c.get("/metrics").text)
    assert sample(s, "wildlife_vision_errors_total", kind="too_large") == 4
    assert sample(s, "wildlife_vision_http_requests_total", route="/v1/predict", status="413") == 4
    assert sample(s, "wildlife_vision_errors_total", kind="empty") == 1


# ---- overload --------------------------------------------------------------------------------------------

def test_overload_is_shed_with_429_and_the_service_stays_healthy(model):
    gate = Gate(model)
    n_clients, queue = 24, 4
    with ServerThread(model, max_queue=queue, max_batch=2) as srv:
        gate.close()  # every inference call now waits: the admitted requests stay in the service

        def client(i: int) -> httpx.Response:
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                return post_image(c, jpeg(i))

        with ThreadPoolExecutor(n_clients) as pool:
            futures = [pool.submit(client, i) for i in range(n_clients)]
            deadline = time.monotonic() + 20
            while sum(f.done() for f in futures) < n_clients - queue and time.monotonic() < deadline:
                time.sleep(0.01)
            refused_while_blocked = sum(f.done() for f in futures)
            held = srv.service.admission.count
            gate.open()
            answers = [f.result(timeout=30) for f in futures]
        statuses = Counter(r.status_code for r in answers)
        # the queue admits exactly `queue` images; every other request is refused at once, while the model is
        # still busy with the admitted ones, and nothing goes unanswered
        assert held == queue and refused_while_blocked == n_clients - queue
        assert statuses == {200: queue, 429: n_clients - queue}, statuses
        for r in answers:
            if r.status_code == 429:
                assert r.json()["error_kind"] == "overloaded" and int(r.headers["retry-after"]) >= 1
            else:
                assert r.json()["error"] is None and set(r.json()["scores"]) == set(model.labels)
        # healthy afterwards: live, ready, scores again, nothing left in the queue
        assert httpx.get(srv.url + "/healthz").json()["status"] == "ok"
        assert httpx.get(srv.url + "/readyz").status_code == 200
        assert post_image(httpx.Client(base_url=srv.url, timeout=30), jpeg(99)).status_code == 200
        _, s = parse_prometheus(httpx.get(srv.url + "/metrics").text)
    assert sample(s, "wildlife_vision_http_requests_total", route="/v1/predict", status="429") == statuses[429]
    assert sample(s, "wildlife_vision_errors_total", kind="overloaded") == statuses[429]
    assert sample(s, "wildlife_vision_queue_depth") == 0 and sample(s, "wildlife_vision_batch_queue_depth") == 0


def test_graceful_shutdown_answers_every_accepted_request(model):
    gate = Gate(model)
    srv = ServerThread(model, max_queue=16, max_batch=2).__enter__()
    try:
        gate.close()
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(lambda i=i: post_image(httpx.Client(base_url=srv.url, timeout=30), jpeg(i)))
                       for i in range(6)]
            deadline = time.monotonic() + 10
            while srv.service.admission.count < 6 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert srv.service.admission.count == 6
            srv.service.begin_drain()  # what SIGTERM does first: readiness fails, new predictions get 503
            assert httpx.get(srv.url + "/readyz").status_code == 503
            late = post_image(httpx.Client(base_url=srv.url, timeout=30), jpeg(50))
            assert late.status_code == 503 and late.json()["error_kind"] == "shutting_down"
            assert "retry-after" in late.headers
            srv.server.should_exit = True  # then uvicorn stops listening and waits for the requests in progress
            time.sleep(0.2)
            assert srv.thread.is_alive() and not any(f.done() for f in futures)
            gate.open()
            answers = [f.result(timeout=30) for f in futures]
        assert [r.status_code for r in answers] == [200] * 6
        srv.thread.join(20)
        assert not srv.thread.is_alive()
        assert not srv.service.batcher._thread.is_alive()
    finally:
        gate.open()
        srv.__exit__(None, None, None)


def test_a_client_that_leaves_is_taken_out_of_the_queue(model):
    gate = Gate(model)
    with ServerThread(model, max_batch=1) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        gate.close()
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(post_image, c, jpeg(1))  # scored first: waits in its inference call
            deadline = time.monotonic() + 30
            body = jpeg(2)
            port = int(srv.url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # sends, then hangs up
                while srv.service.admission.count < 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
                while srv.service.batcher.depth == 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert srv.service.batcher.depth == 1  # queued behind the first photo
            noticed = time.monotonic() + 30  # its own deadline: a busy machine may have spent the first one
            while srv.service.admission.count > 1 and time.monotonic() < noticed:
                time.sleep(0.01)  # the hang-up is noticed while it waits
            assert srv.service.admission.count == 1, "the hang-up was not noticed within 30 s"
            gate.open()
            assert first.result(30).status_code == 200
        _, s = parse_prometheus(c.get("/metrics").text)
    assert sample(s, "wildlife_vision_batch_size_sum") == 1  # only the first photo reached the model
    assert sample(s, "wildlife_vision_http_requests_total", route="/v1/predict", status="499") == 1
    assert sample(s, "wildlife_vision_errors_total", kind="client_gone") == 1


def test_readiness_waits_for_the_warm_up_and_inference_failures_answer_500(model):
    gate = Gate(model)
    gate.close()  # the warm-up inference waits
    srv = ServerThread(model)
    srv.thread.start()
    try:
        deadline = time.monotonic() + 10
        while not srv.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.get("/healthz").json() == {"status": "ok", "ready": False, "draining": False}
            assert c.get("/readyz").status_code == 503  # the warm-up inference is still running
            early = post_image(c, jpeg(1))
            assert early.status_code == 503 and early.json()["error_kind"] == "not_ready"
            assert int(early.headers["retry-after"]) >= 1
            gate.open()
            assert srv.service.batcher.wait_ready(10)
            assert c.get("/readyz").status_code == 200

            def broken(batch, output=None):
                raise RuntimeError("the session is broken")

            model.run_batch = broken  # every inference fails: each image answers its own error, nothing hangs
            r = post_image(c, jpeg(2))
            assert r.status_code == 500 and r.json()["error_kind"] == "inference_failed", r.text
            assert r.json()["schema"] == RECORD_SCHEMA and r.json()["scores"] == {}
            assert c.get("/healthz").status_code == 200
    finally:
        gate.open()
        srv.__exit__(None, None, None)


# ---- metadata, health, metrics, OpenAPI ---------------------------------------------------------------------

def test_model_health_metrics_and_openapi(model, tiny_model_path):
    with ServerThread(model) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        info = c.get("/v1/model").json()
        health = c.get("/healthz")
        ready = c.get("/readyz")
        openapi = c.get("/openapi.json")
        docs = c.get("/docs")
        assert post_image(c, jpeg(1)).status_code == 200
        assert post_image(c, jpeg(2)).status_code == 200
        assert post_image(c, b"").status_code == 400
        assert post_image(c, b"hello", "text/plain").status_code == 415
        metrics = c.get("/metrics")
    assert info["name"] == model.name and info["version"] == model.version
    assert info["profile"]["profile"] == model.profile == "fp32", "the service says which profile scores"
    assert info["labels"] == list(model.labels) and info["thresholds"] == model.thresholds
    assert info["review_bands"] == {k: list(v) for k, v in model.review_bands.items()}
    assert info["sha256"] == hashlib.sha256(Path(tiny_model_path).read_bytes()).hexdigest()
    assert info["record_schema"] == RECORD_SCHEMA and info["limits"]["max_body_bytes"] == 20 * 1024 * 1024
    assert health.status_code == 200 and health.json() == {"status": "ok", "ready": True, "draining": False}
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert openapi.status_code == 200 and "/v1/predict" in openapi.json()["paths"]
    assert "image/*" in openapi.json()["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert docs.status_code == 404  # no Swagger UI: it would load its scripts from a CDN
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    types, s = parse_prometheus(metrics.text)
    assert types["wildlife_vision_http_request_duration_seconds"] == "histogram"
    assert types["wildlife_vision_batch_size"] == "histogram" and types["wildlife_vision_queue_depth"] == "gauge"
    assert sample(s, "wildlife_vision_http_requests_total", route="/v1/predict", status="200") == 2
    assert sample(s, "wildlife_vision_http_requests_total", route="/v1/predict", status="400") == 1
    assert sample(s, "wildlife_vision_http_requests_total", route="/v1/predict", status="415") == 1
    assert sample(s, "wildlife_vision_http_requests_total", route="/v1/model", status="200") == 1
    assert sample(s, "wildlife_vision_errors_total", kind="empty") == 1
    assert sample(s, "wildlife_vision_errors_total", kind="unsupported_media_type") == 1
    assert sample(s, "wildlife_vision_images_total", outcome="scored") == 2
    assert sample(s, "wildlife_vision_batch_size_sum") == 2
    assert sample(s, "wildlife_vision_http_request_duration_seconds_count", route="/v1/predict") == 4
    assert sample(s, "wildlife_vision_ready") == 1
    assert sample(s, "wildlife_vision_model_info", name=model.name, version=model.version,
                  sha256=info["sha256"]) == 1


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_queue"):
        ServeSettings(max_queue=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        ServeSettings(max_wait_ms=-1)


# ---- the command ------------------------------------------------------------------------------------------

def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wildlife_vision", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, **kw)


def test_serve_help_works():
    out = _cli("serve", "--help")
    assert out.returncode == 0, out.stderr
    for flag in ("--model", "--host", "--port", "--max-queue", "--max-batch", "--max-body-mb"):
        assert flag in out.stdout


def test_missing_serve_extra_exits_3_naming_it(monkeypatch, capsys, tiny_model_path):
    from wildlife_vision.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)  # `import fastapi` now raises ImportError
    assert main(["serve", "--model", str(tiny_model_path)]) == 3
    err = capsys.readouterr().err
    assert "'serve' extra" in err and "pip install 'wildlife-vision[serve]'" in err


def test_serve_command_runs_scores_and_stops_on_sigterm(tiny_model_path, tmp_path):
    assert _cli("serve", "--model", str(tmp_path / "missing.onnx"), "--port", "1").returncode == 4
    assert _cli("serve", "--model", str(tiny_model_path), "--max-queue", "0").returncode == 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "wildlife_vision", "serve", "--model", str(tiny_model_path),
                             "--port", str(port), "--no-access-log"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.1)
        r = httpx.post(url + "/v1/predict", content=jpeg(3), headers={"content-type": "image/jpeg"}, timeout=30)
        assert r.status_code == 200 and r.json()["model"] == "tiny-test-model"
        assert httpx.get(url + "/v1/model").json()["limits"]["max_batch"] == 8  # the CPU default
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # drained and shut down cleanly; then, as uvicorn does, the process ends by the signal it was sent
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Application shutdown complete" in err and "tiny-test-model" in err

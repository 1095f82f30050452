"""`wildlife-vision serve`: run the HTTP service (docs/serving.md). Needs the [serve] extra (FastAPI, uvicorn,
python-multipart), imported only when the command runs, so ``--help`` works without it."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Any

from ..cli_common import HelpFormatter, add_profile_options, fail, wrap
from ..exitcodes import EXIT_FAILURE, EXIT_OK, require_extra

#: the modules the [serve] extra installs
SERVE_MODULES = ("fastapi", "uvicorn", "multipart")
#: default --max-batch: on a 2-core Xeon the session scores batches of 1-8 faster per photo than 16-32
#: (docs/serving.md, load test); GPUs want large batches
CPU_MAX_BATCH = 8
GPU_MAX_BATCH = 32


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve", help="HTTP service around one model (needs the [serve] extra)", formatter_class=HelpFormatter,
        description=wrap("Serve one model over HTTP: POST /v1/predict takes a photo as the raw request body (or "
                         "several as a multipart form) and answers the records `predict` writes. Concurrent "
                         "requests are scored together in micro-batches; a full queue answers 429 at once. GET "
                         "/healthz, /readyz, /v1/model, /metrics (Prometheus), /openapi.json. The service never "
                         "fetches URLs. Install with `pip install 'wildlife-vision[serve]'`; see docs/serving.md."))
    p.add_argument("--model", "-m", metavar="MODEL.onnx", help="model file (default: the shipped default model)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 in a container behind a reverse proxy")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument("--max-queue", type=int, default=64, metavar="N",
                   help="images admitted and not yet answered; beyond that requests get 429 with Retry-After")
    p.add_argument("--max-batch", type=int, default=None, metavar="B",
                   help=f"images per inference call (default: {CPU_MAX_BATCH} on a CPU, where larger batches are "
                        f"slower per photo, {GPU_MAX_BATCH} on a GPU)")
    p.add_argument("--max-body-mb", type=float, default=20.0, metavar="M",
                   help="largest request body in MiB; larger bodies get 413 before they are read")
    p.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS",
                   help="how long a micro-batch waits for images already on their way")
    p.add_argument("--max-files", type=int, default=32, metavar="N", help="files in one multipart request")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="onnxruntime intra-op threads (default 0: onnxruntime's choice, one per core)")
    p.add_argument("--decode-threads", type=int, default=1, metavar="N",
                   help="threads decoding and preprocessing request bodies")
    add_profile_options(p)
    p.add_argument("--providers", nargs="+", metavar="P",
                   help="execution providers in order of preference, e.g. `--providers cuda cpu`")
    p.add_argument("--drain-timeout", type=int, default=30, metavar="S",
                   help="at shutdown (SIGTERM, Ctrl-C), seconds to finish the requests already accepted")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                   help="log one line per request on stderr")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    require_extra("serve", *SERVE_MODULES)
    checks = [(args.max_queue >= 1, f"--max-queue must be at least 1, got {args.max_queue}"),
              (args.max_batch is None or args.max_batch >= 1, f"--max-batch must be at least 1, got {args.max_batch}"),
              (args.max_body_mb > 0, f"--max-body-mb must be more than 0, got {args.max_body_mb}"),
              (args.max_wait_ms >= 0, f"--max-wait-ms must be 0 or more, got {args.max_wait_ms}"),
              (args.max_files >= 1, f"--max-files must be at least 1, got {args.max_files}"),
              (args.threads >= 0, f"--threads must be 0 (automatic) or more, got {args.threads}"),
              (args.decode_threads >= 1, f"--decode-threads must be at least 1, got {args.decode_threads}"),
              (0 <= args.port <= 65535, f"--port must be in 0..65535, got {args.port}"),
              (args.drain_timeout >= 1, f"--drain-timeout must be at least 1 second, got {args.drain_timeout}")]
    for ok, message in checks:
        if not ok:
            return fail("serve", message)

    import uvicorn

    from ..cli_predict import _load_model
    from ..model import GPU_PROVIDERS
    from .app import ServeSettings, create_app

    providers = [p for item in args.providers for p in item.split(",") if p] if args.providers else None
    model, code = _load_model(args.model, providers, args.threads, args.max_batch or GPU_MAX_BATCH, "serve",
                              runtime=args.runtime, precision=args.precision)
    if model is None:
        return code
    max_batch = args.max_batch or (GPU_MAX_BATCH if model.provider in GPU_PROVIDERS else CPU_MAX_BATCH)
    settings = ServeSettings(max_queue=args.max_queue, max_batch=max_batch,
                             max_body_bytes=max(1, int(args.max_body_mb * 1024 * 1024)),
                             max_wait_ms=args.max_wait_ms, decode_threads=args.decode_threads,
                             max_files=args.max_files)
    app = create_app(model, settings, drain_timeout=args.drain_timeout)
    service = app.state.service

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:  # fail readiness first, then drain
            service.begin_drain()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=args.host, port=args.port, access_log=args.access_log, lifespan="on",
                            timeout_graceful_shutdown=args.drain_timeout, log_level="info",
                            server_header=False)
    server = _Server(config)
    print(f"wildlife-vision serve: {model.name} {model.version} on {model.provider}, "
          f"http://{args.host}:{args.port} (max batch {max_batch}, queue {args.max_queue}, "
          f"body {args.max_body_mb:g} MiB, pid {os.getpid()})", file=sys.stderr)
    with warnings.catch_warnings():
        # Pillow warns about damaged files and near-limit canvases; each answer already says what happened
        warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")
        from PIL import Image

        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        try:
            server.run()
        except SystemExit:  # uvicorn exits when it cannot listen (port taken, address not ours); it said why
            return fail("serve", f"cannot listen on {args.host}:{args.port} (see the log above)", EXIT_FAILURE)
    if not server.started:
        return fail("serve", f"the server did not start on {args.host}:{args.port} (see the log above)",
                    EXIT_FAILURE)
    return EXIT_OK


__all__ = ["register", "cmd_serve", "SERVE_MODULES"]

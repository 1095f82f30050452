"""`wildlife-vision serve`: the HTTP service (FastAPI on uvicorn) around one loaded model; needs the [serve] extra.

Modules: ``cli`` (the command; imports no extra until it runs), ``app`` (the FastAPI routes and the
:class:`~wildlife_vision.serve.app.Service` behind them), ``batcher`` (dynamic micro-batching on one thread
that owns the session), ``limits`` (body size and queue admission), ``metrics`` (Prometheus text format).
Importing this package imports nothing from the extra. See docs/serving.md.
"""

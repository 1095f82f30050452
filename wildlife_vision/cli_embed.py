"""`wildlife-vision embed`: the model's embedding vectors for many photos, for bulk use (search, dedup, adapt).

Inputs are read exactly as `predict` reads them (files and folders, :func:`~wildlife_vision.inputs.expand_inputs`)
and embedded through the one scoring loop (:meth:`wildlife_vision.Model.embed_iter`). Two output formats:

* ``.npy``: a float32 array ``(N, D)`` of the inputs that could be embedded, in input order, plus a sidecar CSV
  ``<stem>.inputs.csv`` with exactly one row per input, failures included: ``input,row,error_kind,error``
  (``row`` is the input's row in the array, empty for a failure).
* ``.parquet`` (needs pyarrow, in the ``[ray]`` extra): one row per input, ``input``, ``embedding`` (a list of D
  float32, null for a failure; the schema's metadata gives ``embedding_dim``), ``error_kind``, ``error``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path
from typing import Any, List, Optional, Tuple

from .cli_common import HelpFormatter, fail, wrap
from .exitcodes import EXIT_FAILURE, EXIT_MODEL, EXIT_OK

FORMATS = (".npy", ".parquet")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "embed", help="write the model's embedding vectors for photos to a .npy (+ CSV) or .parquet file",
        description=wrap(
            "Embed image files and folders with the model's 'embedding' output (the pooled backbone features of "
            "a model from `wildlife-vision export`), reading them exactly as `predict` does. Every input gets "
            "exactly one entry, failures included: .npy writes the embedded rows as float32 (N, D) and a sidecar "
            "<stem>.inputs.csv (input,row,error_kind,error; row is empty for a failed input); .parquet (pyarrow, "
            "the [ray] extra) writes one row per input with a null embedding for a failure."),
        epilog="examples:\n"
               "  wildlife-vision embed photos/ --output embeddings.npy\n"
               "  wildlife-vision embed photos/ -r --model model.onnx --output embeddings.parquet",
        formatter_class=HelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders")
    p.add_argument("--model", "-m", metavar="MODEL.onnx", help="model file (default: the shipped default model)")
    p.add_argument("--output", "-o", required=True, metavar="FILE", help="embeddings.npy or embeddings.parquet")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into subfolders of folder PATHs")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per inference call")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="decoding threads")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="onnxruntime intra-op threads (0: onnxruntime's choice)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress output")
    p.set_defaults(func=cmd_embed)


def sidecar_path(output: Path) -> Path:
    """The inputs CSV beside a ``.npy`` output: ``embeddings.npy`` -> ``embeddings.inputs.csv``."""
    return output.with_name(output.stem + ".inputs.csv")


def cmd_embed(args: argparse.Namespace) -> int:
    from .cli_predict import _load_model
    from .data.manifest import atomic_write_bytes
    from .errors import EmbeddingUnavailable
    from .exitcodes import require_extra
    from .inputs import expand_inputs
    from .progress import track

    output = Path(args.output)
    fmt = output.suffix.lower()
    if fmt not in FORMATS:
        return fail("embed", f"--output must end in {' or '.join(FORMATS)}, got {output.name!r}")
    if args.batch_size < 1 or args.workers < 1 or args.threads < 0:
        return fail("embed", "--batch-size and --workers must be at least 1, --threads at least 0")
    targets = [output] + ([sidecar_path(output)] if fmt == ".npy" else [])
    for t in targets:
        if t.is_dir():
            return fail("embed", f"{t} is a folder; give a file name")
        if t.exists() and not args.overwrite:
            return fail("embed", f"{t} already exists; pass --overwrite to replace it")
    if fmt == ".parquet":
        require_extra("ray", "pyarrow")  # pyarrow ships in the [ray] extra; exit 3 naming it
    model, code = _load_model(args.model, None, args.threads, args.batch_size, "embed")
    if model is None:
        return code
    inputs = expand_inputs(args.paths, recursive=args.recursive)
    if not inputs.paths:
        return fail("embed", "no images found in the given PATHs (folders are read for image extensions; "
                             "--recursive descends into subfolders)")
    todo = [p for p in inputs.paths if p not in inputs.problems]
    start = time.monotonic()
    try:
        stream = model.embed_iter(todo, batch_size=args.batch_size, workers=args.workers)
    except EmbeddingUnavailable as e:
        return fail("embed", str(e), EXIT_MODEL)
    results = {}
    for res in track(stream, len(todo), "embed", enabled=args.progress):
        results[res.input] = res
    seconds = time.monotonic() - start
    rows: List[Tuple[str, Any, Optional[str], Optional[str]]] = []  # input, vector, kind, error
    for path in inputs.paths:
        if path in inputs.problems:
            msg, kind = inputs.problems[path]
            rows.append((path, None, kind, msg))
        else:
            r = results[path]
            rows.append((path, r.vector, r.error_kind, r.error))
    ok = [r for r in rows if r[1] is not None]
    dim = int(ok[0][1].shape[0]) if ok else 0
    try:
        if fmt == ".npy":
            _write_npy(output, rows, dim, atomic_write_bytes)
        else:
            _write_parquet(output, rows, dim)
    except OSError as e:
        return fail("embed", f"cannot write {output}: {e.strerror or e}", EXIT_FAILURE)
    failed = len(rows) - len(ok)
    rate = len(todo) / seconds if seconds > 0 else 0.0
    print(f"embedded {len(ok)} of {len(rows)} inputs ({failed} failed) with {model.name} {model.version} in "
          f"{seconds:.1f} s ({rate:.1f} photos/s on {model.provider}); D = {dim}; wrote {output}"
          + (f" and {sidecar_path(output)}" if fmt == ".npy" else ""), file=sys.stderr)
    return EXIT_OK  # as predict: the command ran; failed inputs carry their error in the output


def _write_npy(output: Path, rows: List[Tuple[str, Any, Optional[str], Optional[str]]], dim: int, write) -> None:
    import numpy as np

    vectors = [r[1] for r in rows if r[1] is not None]
    array = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(["input", "row", "error_kind", "error"])
    index = 0
    for path, vec, kind, err in rows:
        if vec is not None:
            w.writerow([path, index, "", ""])
            index += 1
        else:
            w.writerow([path, "", kind or "", err or ""])
    write(sidecar_path(output), text.getvalue().encode("utf-8"))
    write(output, buf.getvalue())


def _write_parquet(output: Path, rows: List[Tuple[str, Any, Optional[str], Optional[str]]], dim: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .data.manifest import atomic_write_bytes

    # a variable-size list: pyarrow cannot read back a fixed-size list column with nulls in it
    emb_type = pa.list_(pa.float32())
    schema_meta = {b"embedding_dim": str(dim).encode()}
    table = pa.table({
        "input": pa.array([r[0] for r in rows], pa.string()),
        "embedding": pa.array([None if r[1] is None else r[1].tolist() for r in rows], emb_type),
        "error_kind": pa.array([r[2] for r in rows], pa.string()),
        "error": pa.array([r[3] for r in rows], pa.string()),
    }).replace_schema_metadata(schema_meta)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(output, sink.getvalue().to_pybytes())


__all__ = ["register", "cmd_embed", "sidecar_path"]

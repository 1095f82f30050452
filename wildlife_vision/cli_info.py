"""`wildlife-vision info`: print what a model file says about itself (see "The info command" in docs/predict.md).

It reads the metadata without starting onnxruntime.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import Any, List

from .exitcodes import EXIT_FAILURE, EXIT_MODEL, EXIT_OK


def register(subparsers: Any) -> None:
    i = subparsers.add_parser("info", help="print a model file's metadata",
                              description="Print the labels, thresholds, review bands, preprocessing, backbone, "
                                          "training provenance and metrics stored in a wildlife_vision model.")
    i.add_argument("model", nargs="?", metavar="MODEL.onnx", help="model file (default: the shipped default model)")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from .errors import ModelLoadError
    from .metadata import read_model_metadata
    from .model import default_model_path

    try:
        path = args.model if args.model is not None else str(default_model_path())
        meta = read_model_metadata(path)
        data = open(path, "rb").read()
    except ModelLoadError as e:
        print(f"wildlife-vision info: cannot read the model: {e}", file=sys.stderr)
        return EXIT_MODEL
    except OSError as e:
        print(f"wildlife-vision info: cannot read {args.model}: {e.strerror or e}", file=sys.stderr)
        return EXIT_MODEL
    digest = hashlib.sha256(data).hexdigest()
    if args.json:
        return _print_out(json.dumps({"path": os.path.abspath(path), "size_bytes": len(data), "sha256": digest,
                                      "metadata": meta.to_dict()}, indent=2, sort_keys=False))
    pre = meta.preprocess
    lines = [
        f"model:        {meta.name} {meta.model_version}",
        f"file:         {os.path.abspath(path)} ({len(data):,} bytes)",
        f"sha256:       {digest}",
        f"schema:       {meta.schema_version}",
        f"backbone:     {meta.backbone or '-'}",
        f"created:      {meta.created or '-'} (wildlife-vision {meta.package_version or '?'})",
        f"input/output: {meta.input_name} -> {meta.output_name}",
        f"labels ({len(meta.labels)}):",
    ]
    width = max(len(lab) for lab in meta.labels)
    lines.append(f"  {'label'.ljust(width)}  threshold  review band")
    for lab in meta.labels:
        low, high = meta.review_bands[lab]
        band = f"[{low:.3f}, {high:.3f})" if high > low else "-"
        lines.append(f"  {lab.ljust(width)}  {meta.thresholds[lab]:9.3f}  {band}")
    lines += [
        "preprocessing:",
        f"  input size:    {pre.input_size[0]}x{pre.input_size[1]} (height x width), RGB, NCHW float32",
        f"  resize:        shorter side to {pre.resize_shorter} ({pre.interpolation}, crop_pct {pre.crop_pct}), "
        "then centre crop",
        f"  normalise:     mean {list(pre.mean)}, std {list(pre.std)}",
        f"  JPEG draft:    {'on' if pre.draft else 'off'}",
    ]
    from pathlib import Path

    from .cpu import cpu_info
    from .profiles import own_profile, profiles_table

    cpu = cpu_info()
    lines.append(f"execution profiles (this CPU: {cpu.family}; the file's own thresholds above are "
                 f"{own_profile(meta)}):")
    for row in profiles_table(meta, Path(path), cpu):
        if not (row["own"] or row["calibrated"]):
            continue
        entry = (meta.profiles or {}).get(row["profile"]) or {}
        th = entry.get("thresholds")
        lines.append(f"  {row['profile']:<14} {row['runtime']:<12} "
                     + ("usable here" if row["usable"] else f"not usable here: {row['why_not']}")
                     + (f"; thresholds {', '.join(f'{k} {v:.3f}' for k, v in th.items())}" if th else "")
                     + (f"; gate {'passed' if row['gate_passed'] else 'FAILED'}" if entry else ""))
    for title, block in (("calibration", meta.calibration), ("training", meta.training), ("metrics", meta.metrics)):
        lines.append(f"{title}:" + ("" if block else " -"))
        lines.extend(_tree(block, "  "))
    return _print_out("\n".join(lines))


def _print_out(text: str) -> int:
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `wildlife-vision info | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the interpreter's final flush
        except OSError:
            pass
        return EXIT_FAILURE
    return EXIT_OK


def _tree(obj: Any, indent: str) -> List[str]:
    out: List[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                out.append(f"{indent}{k}:")
                out.extend(_tree(v, indent + "  "))
            else:
                out.append(f"{indent}{k}: {_short(v)}")
    return out


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
    return text if len(text) <= 160 else text[:157] + "..."

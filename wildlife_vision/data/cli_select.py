"""`wildlife-vision data select`: the next photos worth a reviewer's time, as a Label Studio task file.

The pool (image files and folders, read as `predict` reads them, or a manifest CSV whose rows are taken as
unlabelled) is scored and embedded once with the model (torch-free). For each label,
:func:`wildlife_vision.data.select.select_for_review` picks photos near the model's decision boundary, spread
out in embedding space (k-means medoids), never photos already labelled (``--labelled``); with ``--clean``, the highest
scored photos of a pool believed to hold no positives are added as look-alike checks
(:func:`~wildlife_vision.data.select.confident_positives`). The picks are written as Label Studio tasks with
the model's pre-annotations in the project's Choice values (the same writer as ``labelstudio-export``), in the
order picked, each saying why it was picked (``selected_for``). Importing the annotated tasks back with
``data labelstudio-import`` gives a manifest without any of the model's fields.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from wildlife_vision.cli_common import fail
from wildlife_vision.exitcodes import EXIT_FAILURE, EXIT_MODEL, EXIT_OK


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "select", help="pick the unlabelled photos worth labelling next; write Label Studio tasks with "
                       "pre-annotations",
        description="Active learning: score and embed an unlabelled pool once, pick --n photos (per label: near "
                    "its decision boundary, diverse in embedding space, never what is already labelled), optionally "
                    "add the top-scored photos of a pool believed clean (look-alike checks), and write them as "
                    "Label Studio tasks with the model's pre-annotations, in the order picked. See docs/adapt.md.")
    p.add_argument("pool", nargs="+", metavar="PATH",
                   help="image files and/or folders, or a manifest .csv (its rows are the pool; labels ignored)")
    p.add_argument("--model", "-m", metavar="MODEL.onnx", help="model file (default: the shipped default model)")
    p.add_argument("--output", "-o", required=True, metavar="TASKS.json")
    p.add_argument("--n", type=int, default=50, metavar="N", help="photos to pick from the pool (default 50)")
    p.add_argument("--labels", metavar="A,B,...", help="labels to select for (default: every label of the model); "
                                                        "--n is shared among them")
    p.add_argument("--labelled", action="append", metavar="MANIFEST.csv",
                   help="photos already labelled (repeatable): never picked again")
    p.add_argument("--clean", action="append", metavar="PATH",
                   help="files/folders believed to hold no positives (e.g. a category of everyday listings): "
                        "their top-scored photos are added as look-alike checks")
    p.add_argument("--confident", type=int, metavar="K",
                   help="look-alike checks per label from --clean (default: a tenth of --n, at least 1)")
    p.add_argument("--candidates", type=float, default=4.0, metavar="C",
                   help="uncertainty step keeps C x n photos before the diversity step (default 4)")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into subfolders of folder PATHs")
    p.add_argument("--config", metavar="PROJECT.xml",
                   help="the project's labelling config (default: the documented config in docs/data-curation.md)")
    p.add_argument("--label-map", metavar="FILE", help="the import's Choice -> label file, used in reverse")
    p.add_argument("--map", action="append", metavar="LABEL=CHOICE", help="label -> Choice value (repeatable)")
    p.add_argument("--image-root", metavar="DIR",
                   help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT (default: $LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)")
    p.add_argument("--url-prefix", default="/data/local-files/?d=",
                   help="prefix for local paths (default /data/local-files/?d=; '' for plain paths)")
    p.add_argument("--from-name", help="the Choices control (default: the config's only one)")
    p.add_argument("--to-name", help="the Image object (default: the control's toName)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--batch-size", type=int, default=32, metavar="N")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="decoding threads")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_select)


def _pool_paths(args_paths: Sequence[str], recursive: bool) -> Tuple[List[str], Dict[str, Tuple[str, str]]]:
    """Inputs as `predict` expands them; a .csv argument contributes its manifest rows' image paths."""
    from wildlife_vision.inputs import expand_inputs

    plain = [a for a in args_paths if not a.lower().endswith(".csv")]
    inputs = expand_inputs(plain, recursive=recursive) if plain else None
    paths = list(inputs.paths) if inputs else []
    problems = dict(inputs.problems) if inputs else {}
    seen = set(paths)
    for a in args_paths:
        if a.lower().endswith(".csv"):
            for p in manifest_paths(a):
                if p not in seen:
                    seen.add(p)
                    paths.append(p)
    return paths, problems


def manifest_paths(path: str) -> List[str]:
    """The image paths of a manifest CSV's rows (relative paths resolved against the manifest's folder)."""
    from wildlife_vision.data.manifest import read_manifest_table

    table = read_manifest_table(path)
    return [str(table.image_path(i)) for i in range(len(table))]


def _score_and_embed(model: Any, paths: Sequence[str], args: argparse.Namespace, what: str):
    """(predictions by path, embeddings by path) for ``paths``; failures are kept out and counted by the caller."""
    from wildlife_vision.progress import track

    preds = {p.input: p for p in track(model.predict_iter(paths, batch_size=args.batch_size, workers=args.workers),
                                       len(paths), f"select: score {what}", enabled=args.progress)}
    embs = {e.input: e for e in track(model.embed_iter(paths, batch_size=args.batch_size, workers=args.workers),
                                      len(paths), f"select: embed {what}", enabled=args.progress)}
    return preds, embs


def cmd_select(args: argparse.Namespace) -> int:
    import numpy as np

    from wildlife_vision.cli_predict import _load_model
    from wildlife_vision.data.labelstudio import LabelStudioError, predictions_to_tasks
    from wildlife_vision.data.labelstudio_config import ls_maps
    from wildlife_vision.data.manifest import ManifestError, atomic_write_text
    from wildlife_vision.data.select import plan_selection
    from wildlife_vision.errors import EmbeddingUnavailable

    cmd = "data select"
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        return fail(cmd, f"{out} already exists; pass --overwrite to replace it")
    if args.n < 1 or args.batch_size < 1 or args.workers < 1 or args.candidates < 1:
        return fail(cmd, "--n, --batch-size and --workers must be at least 1, --candidates at least 1")
    if args.confident is not None and args.confident < 0:
        return fail(cmd, "--confident must be at least 0")
    try:
        config, choice_map, label_map = ls_maps(args)  # as labelstudio-export reads them
        pool, problems = _pool_paths(args.pool, args.recursive)
        labelled = set()
        for m in args.labelled or []:
            labelled.update(os.path.realpath(p) for p in manifest_paths(m))
        clean, _ = _pool_paths(args.clean, args.recursive) if args.clean else ([], {})
    except (ManifestError, LabelStudioError, ValueError, OSError) as e:
        return fail(cmd, str(e))
    model, code = _load_model(args.model, None, 0, args.batch_size, cmd)
    if model is None:
        return code
    labels = [s.strip() for s in args.labels.split(",") if s.strip()] if args.labels else list(model.labels)
    unknown = [lab for lab in labels if lab not in model.labels]
    if unknown:
        return fail(cmd, f"label(s) {', '.join(unknown)} not in the model ({', '.join(model.labels)})")
    already = [p for p in pool if os.path.realpath(p) in labelled]
    todo = [p for p in pool if p not in problems and os.path.realpath(p) not in labelled]
    if not todo:
        return fail(cmd, f"no unlabelled photo to select from ({len(pool)} in the pool, {len(already)} already "
                         f"labelled, {len(problems)} unreadable)")
    if not model.has_embedding:
        return fail(cmd, str(EmbeddingUnavailable(f"{model.path} has no 'embedding' output; selection needs a model "
                                                  "exported by `wildlife-vision export`")), EXIT_MODEL)
    preds, embs = _score_and_embed(model, todo, args, "pool")
    ok = [p for p in todo if preds[p].ok and embs[p].ok]
    failed = len(todo) - len(ok)
    if not ok:
        return fail(cmd, f"none of the {len(todo)} pool photos could be read", EXIT_FAILURE)
    scores = np.asarray([[preds[p].scores[lab] for lab in labels] for p in ok], dtype=np.float64)
    x = np.stack([embs[p].vector for p in ok])
    clean_scores, clean_ok = None, []
    if clean:
        cp = {p.input: p for p in model.predict_iter(clean, batch_size=args.batch_size, workers=args.workers)}
        clean_ok = [p for p in clean if cp[p].ok and p not in set(ok)]
        clean_scores = np.asarray([[cp[p].scores[lab] for lab in labels] for p in clean_ok], dtype=np.float64)
        for p in clean_ok:
            preds[p] = cp[p]
    k = args.confident if args.confident is not None else (max(1, args.n // 10) if clean else 0)
    picks = plan_selection(scores, [model.thresholds[lab] for lab in labels], x, args.n, labels,
                           candidates=args.candidates, clean_scores=clean_scores, confident=k)
    chosen: List[Tuple[str, str]] = []
    for where, i, reason in picks:
        chosen.append(((ok if where == "pool" else clean_ok)[i], reason))
    records = [{**preds[p].to_dict(), "model": model.name, "model_version": model.version} for p, _ in chosen]
    image_root = args.image_root or os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT") or None
    try:
        res = predictions_to_tasks(records, dict(model.thresholds), image_root=image_root, url_prefix=args.url_prefix,
                                   config=config, from_name=args.from_name, to_name=args.to_name,
                                   label_map=label_map, choice_map=choice_map)
    except (LabelStudioError, ValueError) as e:
        return fail(cmd, str(e))
    by_input = {t["data"]["input"]: t for t in res.tasks}
    tasks = []
    for rank, (p, reason) in enumerate(chosen, start=1):
        t = by_input[p]
        t["data"]["selected_for"] = reason
        t["data"]["selection_rank"] = rank
        tasks.append(t)
    try:
        atomic_write_text(out, json.dumps(tasks, indent=1, ensure_ascii=False) + "\n")
    except OSError as e:
        return fail(cmd, f"cannot write {out}: {e.strerror or e}", EXIT_FAILURE)
    reasons: Dict[str, int] = {}
    for _, r in chosen:
        reasons[r] = reasons.get(r, 0) + 1
    summary = {"output": str(out), "pool": len(pool), "already_labelled": len(already), "unreadable": len(problems) + failed,
               "scored": len(ok), "clean_pool": len(clean_ok), "tasks": len(tasks), "selected_for": reasons,
               "thresholds": {lab: model.thresholds[lab] for lab in labels}, "model": f"{model.name} {model.version}"}
    if args.json:
        print(json.dumps(summary, indent=1, ensure_ascii=False))
    else:
        print(f"{len(tasks)} tasks written to {out} from a pool of {len(ok)} scored photos ({len(already)} already "
              f"labelled, {len(problems) + failed} unreadable), most useful first")
        for r, c in sorted(reasons.items()):
            print(f"  {r}: {c}")
    return EXIT_OK


__all__ = ["add_parser", "cmd_select", "manifest_paths"]

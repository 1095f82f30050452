"""`wildlife-vision data ...`: dedup, split, check, stats, labelstudio-import, labelstudio-export.

Exit codes (the shared table in :mod:`wildlife_vision.exitcodes`): 0 success (``check``: no leaks), 1 ``check``
found leaks, or an output could not be written, 2 bad input (missing or malformed manifest, export or
predictions file, bad option values), 3 a missing optional extra (matplotlib for ``--chart``). Every failure is
one message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import List, Optional, Sequence

from wildlife_vision.exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE as EXIT_INPUT

log = logging.getLogger("wildlife_vision.data")

#: ``data check`` found groups that span two splits
EXIT_LEAKS = EXIT_FAILURE


# ---- shared helpers -----------------------------------------------------------------------------

def default_cache_path(manifest_path: os.PathLike) -> Path:
    """Fingerprint cache for a manifest: ``$WILDLIFE_VISION_CACHE`` or ``$XDG_CACHE_HOME``/``~/.cache``,
    then ``wildlife-vision/fingerprints/<manifest stem>-<hash of its absolute path>.npz``."""
    base = os.environ.get("WILDLIFE_VISION_CACHE")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wildlife-vision"
    p = Path(manifest_path).resolve()
    digest = hashlib.sha1(str(p).encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return root / "fingerprints" / f"{p.stem}-{digest}.npz"


def _cache_for(args) -> Optional[Path]:
    if getattr(args, "no_cache", False):
        return None
    if getattr(args, "cache", None):
        return Path(args.cache)
    return default_cache_path(args.manifest)


def _progress(args) -> bool:
    """Progress on stderr unless --no-progress: a bar on a terminal, else a line every 10 s (wildlife_vision.progress)."""
    return not getattr(args, "no_progress", False)


def _err(cmd: str, msg: str) -> int:
    print(f"wildlife-vision data {cmd}: {msg}", file=sys.stderr)
    return EXIT_INPUT


def _unwritable(cmd: str, path, e: OSError) -> int:
    print(f"wildlife-vision data {cmd}: cannot write {path}: {e.strerror or e}", file=sys.stderr)
    return EXIT_FAILURE


def _read(cmd: str, path: str):
    from wildlife_vision.data.manifest import ManifestError, read_manifest_table

    try:
        return read_manifest_table(path)
    except ManifestError as e:
        _err(cmd, str(e))
        return None


def _add_dedup_options(p: argparse.ArgumentParser) -> None:
    from wildlife_vision.data.dedup import DEFAULT_EMBEDDING_THRESHOLD, DEFAULT_THRESHOLD, DEFAULT_VERIFY_THRESHOLD

    g = p.add_argument_group("near-duplicate detection")
    g.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD, metavar="BITS",
                   help=f"64-bit pHash distance (best window pair) for a candidate pair (default {DEFAULT_THRESHOLD})")
    g.add_argument("--verify-threshold", type=int, default=DEFAULT_VERIFY_THRESHOLD, metavar="BITS",
                   help="256-bit pHash distance of the same windows that confirms a candidate "
                        f"(default {DEFAULT_VERIFY_THRESHOLD}; lower = stricter)")
    g.add_argument("--model", metavar="MODEL.onnx",
                   help="also join photos whose embeddings (the model's 'embedding' output) are this similar")
    g.add_argument("--embedding-threshold", type=float, default=DEFAULT_EMBEDDING_THRESHOLD, metavar="COS",
                   help=f"cosine similarity for --model (default {DEFAULT_EMBEDDING_THRESHOLD})")
    g.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes for fingerprinting and threads for the pair search (default: cores, at most 4)")
    g.add_argument("--cache", metavar="PATH.npz", help="fingerprint cache (default: under ~/.cache/wildlife-vision)")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the fingerprint cache")
    g.add_argument("--no-progress", action="store_true", help="no progress output on stderr")


def _dedup_params(args):
    from wildlife_vision.data.dedup import DedupParams

    if not 0 <= args.threshold <= 64:
        raise ValueError(f"--threshold must be 0..64, got {args.threshold}")
    if not 0 <= args.verify_threshold <= 256:
        raise ValueError(f"--verify-threshold must be 0..256, got {args.verify_threshold}")
    if not -1.0 <= args.embedding_threshold <= 1.0:
        raise ValueError(f"--embedding-threshold must be a cosine similarity in [-1, 1], got {args.embedding_threshold}")
    return DedupParams(threshold=args.threshold, verify_threshold=args.verify_threshold, embedding_model=args.model,
                       embedding_threshold=args.embedding_threshold, workers=max(1, args.workers))


def _run_dedup(cmd: str, args, manifest):
    """find_duplicates with CLI error handling; returns the result or an int exit code."""
    from wildlife_vision.data.dedup import find_duplicates
    from wildlife_vision.errors import EmbeddingUnavailable, ModelLoadError

    try:
        params = _dedup_params(args)
    except ValueError as e:
        return _err(cmd, str(e))
    try:
        return find_duplicates(manifest, params, cache=_cache_for(args), progress=_progress(args))
    except EmbeddingUnavailable as e:
        return _err(cmd, f"{e}. Run without --model to use the perceptual hashes only.")
    except ModelLoadError as e:  # a model that does not load: say so, as an input error
        return _err(cmd, f"cannot use --model: {e}")


def _parse_by(values: Optional[Sequence[str]]) -> List[str]:
    out: List[str] = []
    for v in values or []:
        for part in v.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def _group_keys(cmd: str, args, manifest, by: List[str]):
    """Keys per row for each grouping name in ``by`` -> (dict name -> keys, dedup result or None) or exit code."""
    from wildlife_vision.data.dedup import groups_from_report, load_report

    keys = {}
    result = None
    for name in by:
        if name == "group":
            if getattr(args, "groups", None):
                try:
                    report = load_report(args.groups)
                except (OSError, ValueError) as e:
                    return _err(cmd, f"--groups: {e}")
                keys[name] = [None if g is None else str(g) for g in groups_from_report(report, manifest)]
                log.info("near-duplicate groups from %s", args.groups)
            elif "dup_group" in manifest.fieldnames and not getattr(args, "recompute", False):
                keys[name] = manifest.column("dup_group")
                log.info("near-duplicate groups from the manifest's dup_group column (--recompute to recompute)")
            else:
                result = _run_dedup(cmd, args, manifest)
                if isinstance(result, int):
                    return result
                keys[name] = [None if g is None else str(g) for g in result.group_of_row]
                print(f"near-duplicate groups: {result.summary['groups']} ({result.summary['exact_groups']} exact, "
                      f"{result.summary['near_groups']} near), {result.summary['rows_in_groups']} rows, "
                      f"{result.summary['timings']['total_s']:.1f} s", file=sys.stderr)
        else:
            if name not in manifest.fieldnames:
                return _err(cmd, f"--by {name}: the manifest has no column {name!r} (columns: {manifest.fieldnames}); "
                                 "use --by group for near-duplicate groups")
            keys[name] = manifest.column(name)
    return keys, result


# ---- commands -----------------------------------------------------------------------------------

def cmd_dedup(args) -> int:
    from wildlife_vision.data.dedup import format_summary
    from wildlife_vision.data.manifest import write_manifest

    manifest = _read("dedup", args.manifest)
    if manifest is None:
        return EXIT_INPUT
    result = _run_dedup("dedup", args, manifest)
    if isinstance(result, int):
        return result
    out = Path(args.output) if args.output else Path.cwd() / f"{Path(args.manifest).stem}.dedup.json"
    try:
        result.write_report(out)
    except OSError as e:
        return _unwritable("dedup", out, e)
    if args.json:
        print(json.dumps({"report": str(out), **result.summary}, indent=1))
    else:
        print(format_summary(result))
        print(f"report: {out}")
    if args.write_manifest:
        if Path(args.write_manifest).resolve() == Path(args.manifest).resolve() and not args.inplace:
            return _err("dedup", "--write-manifest would overwrite the input manifest; add --inplace to allow it")
        try:
            write_manifest(args.write_manifest, manifest.with_column("dup_group", result.dup_group_column()))
        except OSError as e:
            return _unwritable("dedup", args.write_manifest, e)
        if not args.json:
            print(f"manifest with dup_group column: {args.write_manifest}")
    return EXIT_OK


def cmd_split(args) -> int:
    from wildlife_vision.data.manifest import write_manifest
    from wildlife_vision.data.splits import check_leaks, combine_groupings, format_split_table, split_by_group

    manifest = _read("split", args.manifest)
    if manifest is None:
        return EXIT_INPUT
    if not args.output and not args.inplace:
        return _err("split", "say where to write: --output NEW.csv (or --inplace to rewrite the manifest)")
    by = _parse_by(args.by) or ["group"]
    got = _group_keys("split", args, manifest, by)
    if isinstance(got, int):
        return got
    keys, result = got
    comp = combine_groupings(len(manifest), list(keys.values()))
    try:
        plan = split_by_group(manifest, comp, val=args.val, test=args.test, seed=args.seed, freeze=args.freeze or ())
    except ValueError as e:
        return _err("split", str(e))
    for w in plan.warnings:
        print(f"warning: {w}", file=sys.stderr)
    new = manifest.with_column("split", plan.assignment, after="labels")
    if result is not None and "dup_group" not in new.fieldnames:
        new = new.with_column("dup_group", result.dup_group_column())
    target = Path(args.manifest) if args.inplace else Path(args.output)
    if not args.inplace and target.resolve() == Path(args.manifest).resolve():
        return _err("split", "--output is the input manifest; use --inplace to rewrite it")
    try:
        write_manifest(target, new)
    except OSError as e:
        return _unwritable("split", target, e)
    summary = {"output": str(target), "by": by, "seed": args.seed, "targets": plan.targets, "rows": plan.rows,
               "groups": plan.groups, "labels": {s: dict(c) for s, c in plan.counts.items()}, "leaks": {}}
    for name, k in keys.items():
        summary["leaks"][name] = check_leaks(new, k, name).leaking_groups
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"split by {', '.join(by)} (seed {args.seed}): " + ", ".join(
            f"{s} {plan.rows[s]} rows / {plan.groups[s]} groups" for s in plan.rows))
        print(format_split_table(new, plan.assignment))
        print("leaks after the split: " + ", ".join(f"{k}: {v}" for k, v in summary["leaks"].items()))
        print(f"written: {target}")
    return EXIT_OK


def cmd_check(args) -> int:
    from wildlife_vision.data.splits import check_leaks, format_leaks

    manifest = _read("check", args.manifest)
    if manifest is None:
        return EXIT_INPUT
    if args.split_column not in manifest.fieldnames:
        return _err("check", f"the manifest has no {args.split_column!r} column; nothing to check")
    by = ([] if args.no_dedup else ["group"]) + [b for b in _parse_by(args.by) if b != "group" or args.no_dedup]
    if not by:
        return _err("check", "nothing to check: give --by COLUMN or drop --no-dedup")
    got = _group_keys("check", args, manifest, by)
    if isinstance(got, int):
        return got
    keys, result = got
    reports = [check_leaks(manifest, k, name, split_column=args.split_column) for name, k in keys.items()]
    leaks = any(r.leaking_groups for r in reports)
    if args.json:
        out = {"schema": "wildlife-vision/leak-check/v1", "manifest": str(args.manifest), "leaks": leaks,
               "splits": dict(sorted(Counter(manifest.column(args.split_column)).items())),
               "groupings": [r.to_dict() for r in reports]}
        if result is not None:
            out["dedup_summary"] = result.summary
        print(json.dumps(out, indent=1))
    else:
        for r in reports:
            print(format_leaks(r))
        print("LEAKS FOUND" if leaks else "clean: no group spans two splits")
    return EXIT_LEAKS if leaks else EXIT_OK


def cmd_stats(args) -> int:
    from wildlife_vision.data.hashing import scan_paths
    from wildlife_vision.data.stats import compute_stats, format_stats, write_chart

    manifest = _read("stats", args.manifest)
    if manifest is None:
        return EXIT_INPUT
    scan = None
    if not args.no_decode:
        scan = scan_paths([str(manifest.image_path(i)) for i in range(len(manifest))], workers=max(1, args.workers),
                          progress=_progress(args), cache=_cache_for(args))
    st = compute_stats(manifest, scan)
    if args.chart:
        try:
            write_chart(st, args.chart, scan)
        except OSError as e:
            return _unwritable("stats", args.chart, e)
        st["chart"] = args.chart
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        print(format_stats(st))
        if args.chart:
            print(f"chart: {args.chart}")
    return EXIT_OK


def cmd_ls_import(args) -> int:
    from wildlife_vision.data.labelstudio_config import ls_maps

    from wildlife_vision.data.labelstudio import LabelStudioError, import_labelstudio
    from wildlife_vision.data.manifest import write_manifest

    if not Path(args.export).is_file():
        return _err("labelstudio-import", f"export file not found: {args.export}")
    if Path(args.output).exists() and not args.force:
        return _err("labelstudio-import", f"{args.output} exists; pass --force to replace it")
    try:
        config, choice_map, items = ls_maps(args)
        res = import_labelstudio(args.export, args.output, image_root=args.image_root,
                                 labels=_parse_by([args.labels] if args.labels else None) or None, policy=args.policy,
                                 label_map={**choice_map, **items}, none_choices=args.none_choice or (),
                                 from_name=args.from_name, image_key=args.image_key,
                                 strip_prefixes=args.strip_prefix or (), empty_means_none=args.empty_means_none,
                                 config=config, use_ground_truth=not args.no_ground_truth)
    except (LabelStudioError, ValueError, OSError) as e:
        return _err("labelstudio-import", str(e))
    s = res.summary()
    if not res.rows and s.get("tasks"):
        for p in res.problems[:20]:
            print(f"  {p}", file=sys.stderr)
        why = ", ".join(f"{k}: {v}" for k, v in res.counts.items() if v and k != "tasks")
        return _err("labelstudio-import", f"no task of {s['tasks']} could be imported ({why}); nothing was written")
    try:
        write_manifest(args.output, res.fieldnames, res.rows)
    except OSError as e:
        return _unwritable("labelstudio-import", args.output, e)
    if args.json:
        print(json.dumps({"output": args.output, **s}, indent=1, ensure_ascii=False))
    else:
        print(f"{s['rows']} rows written to {args.output} from {s.get('tasks', 0)} tasks "
              f"({res.export_format} export, control {res.from_name!r})")
        for k, v in s.items():
            if k not in ("rows", "problems", "tasks", "imported", "notes", "format", "from_name") and v:
                print(f"  {k}: {v}")
        for n in res.notes:
            print(f"  note: {n}", file=sys.stderr)
        for p in res.problems[:20]:
            print(f"  {p}", file=sys.stderr)
    return EXIT_OK


def cmd_ls_export(args) -> int:
    from wildlife_vision.data.labelstudio_config import ls_maps

    from wildlife_vision.data.labelstudio import (AUTO, LabelStudioError, parse_thresholds, predictions_to_tasks,
                                                  read_prediction_records)
    from wildlife_vision.data.manifest import atomic_write_text

    if not Path(args.predictions).is_file():
        return _err("labelstudio-export", f"predictions file not found: {args.predictions}")
    image_root = args.image_root or os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT") or None
    try:
        config, choice_map, items = ls_maps(args)
        thresholds = {}
        if args.model:
            from wildlife_vision.errors import ModelLoadError
            from wildlife_vision.model import load_model

            try:
                thresholds.update(load_model(args.model).thresholds)
            except ModelLoadError as e:
                return _err("labelstudio-export", f"--model: {e}")
        thresholds.update(parse_thresholds(args.thresholds))
        if args.default_threshold is not None and not 0.0 <= args.default_threshold <= 1.0:
            raise ValueError(f"--default-threshold must be in [0, 1], got {args.default_threshold}")
        records, counts = read_prediction_records(args.predictions)
        res = predictions_to_tasks(records, thresholds, default_threshold=args.default_threshold,
                                   image_root=image_root, url_prefix=args.url_prefix, config=config,
                                   from_name=args.from_name, to_name=args.to_name,
                                   none_choice=AUTO if args.none_choice is None else args.none_choice,
                                   label_map=items, choice_map=choice_map, limit=args.limit)
    except (LabelStudioError, ValueError, OSError) as e:
        return _err("labelstudio-export", str(e))
    res.counts.update(counts)
    try:
        atomic_write_text(args.output, json.dumps(res.tasks, indent=1, ensure_ascii=False) + "\n")
    except OSError as e:
        return _unwritable("labelstudio-export", args.output, e)
    c = dict(res.counts)
    if args.json:
        print(json.dumps({"output": args.output, "thresholds": thresholds, "image_root": image_root,
                          "choices": res.choices, **c}, indent=1, ensure_ascii=False))
    else:
        th = ", ".join(f"{k}={v:g}" for k, v in sorted(thresholds.items()))
        if args.default_threshold is not None:
            th = f"{th}; others {args.default_threshold:g}" if th else f"{args.default_threshold:g} for every label"
        print(f"{c.get('tasks', 0)} tasks written to {args.output}, most uncertain first (thresholds: {th or 'none'})")
        print(f"  choices: {', '.join(f'{k} -> {v}' for k, v in sorted(res.choices.items()))}")
        for k, v in sorted(c.items()):
            if k != "tasks" and v:
                print(f"  {k}: {v}")
        if res.tasks:
            top = res.tasks[0]["data"]
            print(f"  first: {top['input']} (closest to threshold: {top['closest_label']}, margin {top['margin']:.3f})")
    return EXIT_OK


# ---- registration -------------------------------------------------------------------------------

def register(subparsers) -> None:
    data = subparsers.add_parser(
        "data", help="labelled-photo intake: dedup, leakage-safe splits, checks, stats, Label Studio, active selection",
        description="Curate labelled photos before training: find exact and near-duplicate photos, assign splits "
                    "that no duplicate group (or seller, listing, any column) crosses, check manifests for "
                    "cross-split leaks, print statistics, and exchange labels with Label Studio. "
                    "See docs/data-curation.md.")
    data.set_defaults(func=lambda a: (data.print_help(sys.stderr), EXIT_INPUT)[1])
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    p = sub.add_parser("dedup", help="find exact and near-duplicate photos; write a JSON report",
                       description="Find exact (same file or bytes) and near-duplicate photos (resized, recompressed, "
                                   "cropped, watermarked) in a manifest and write a report "
                                   "(schema wildlife-vision/dedup/v1): groups with rows, images, labels, splits, "
                                   "label conflicts.")
    p.add_argument("manifest", metavar="MANIFEST.csv")
    p.add_argument("--output", "-o", metavar="REPORT.json", help="report path (default: ./<manifest stem>.dedup.json)")
    p.add_argument("--write-manifest", metavar="OUT.csv", help="also write the manifest with a dup_group column")
    p.add_argument("--inplace", action="store_true", help="allow --write-manifest to be the input manifest")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_dedup_options(p)
    p.set_defaults(func=cmd_dedup)

    p = sub.add_parser("split", help="assign train/val/test so that no group spans two splits",
                       description="Assign splits to whole groups (near-duplicate groups and/or any column such as "
                                   "seller or listing), stratified by label as far as the groups allow. "
                                   "Deterministic for a given --seed.")
    p.add_argument("manifest", metavar="MANIFEST.csv")
    p.add_argument("--by", action="append", metavar="group|COLUMN",
                   help="grouping(s): 'group' (near duplicates) or a column name; repeat or comma-separate to "
                        "combine (default: group)")
    p.add_argument("--val", type=float, default=0.1, help="validation fraction (default 0.1)")
    p.add_argument("--test", type=float, default=0.1, help="test fraction (default 0.1; 0 for none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", "-o", metavar="NEW.csv", help="where to write the manifest with the new split column")
    p.add_argument("--inplace", action="store_true", help="rewrite the input manifest instead")
    p.add_argument("--freeze", action="append", metavar="SPLIT",
                   help="keep rows already in SPLIT there (e.g. a held-back test set); their groups join them")
    p.add_argument("--groups", metavar="REPORT.json", help="near-duplicate groups from a dedup report")
    p.add_argument("--recompute", action="store_true", help="recompute groups even if the manifest has dup_group")
    p.add_argument("--json", action="store_true")
    _add_dedup_options(p)
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("check", help="report groups whose rows fall in more than one split (exit 1 if any)",
                       description="Report cross-split leaks: near-duplicate groups (unless --no-dedup) and groups "
                                   "of any --by COLUMN that span more than one split, with counts per split pair. "
                                   "Exit status 0 when clean, 1 when leaks are found.")
    p.add_argument("manifest", metavar="MANIFEST.csv")
    p.add_argument("--by", action="append", metavar="COLUMN", help="also check groupings by these columns")
    p.add_argument("--no-dedup", action="store_true", help="do not check near-duplicate groups")
    p.add_argument("--groups", metavar="REPORT.json", help="near-duplicate groups from a dedup report")
    p.add_argument("--recompute", action="store_true", help="recompute groups even if the manifest has dup_group")
    p.add_argument("--split-column", default="split")
    p.add_argument("--json", action="store_true")
    _add_dedup_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("stats", help="counts per label and split, decode failures, sizes; optional PNG chart")
    p.add_argument("manifest", metavar="MANIFEST.csv")
    p.add_argument("--chart", metavar="STATS.png", help="write a bar chart (needs matplotlib)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-decode", action="store_true", help="counts only: do not open the images")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--cache", metavar="PATH.npz")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("labelstudio-import", help="Label Studio export (JSON, JSON_MIN or CSV; Choices) -> manifest",
                       description="Turn a Label Studio JSON, JSON_MIN or CSV export of an image classification "
                                   "project (one Choices control) into a manifest, one row per task. Cancelled and rejected "
                                   "annotations are dropped; ground-truth annotations decide; otherwise --policy "
                                   "picks the latest or the per-label majority. Choices that map to no label stop "
                                   "the import (exit 2) with the list. See docs/data-curation.md.")
    p.add_argument("export", metavar="EXPORT.json")
    p.add_argument("--output", "-o", required=True, metavar="MANIFEST.csv")
    p.add_argument("--config", metavar="PROJECT.xml",
                   help="the project's labelling config (Settings > Labeling Interface > Code): which Choices "
                        "control to read, the Choice aliases, the image field")
    p.add_argument("--from-name", help="the Choices control with the labels (default: the only one)")
    p.add_argument("--label-map", metavar="FILE", help="Choice -> label: JSON object or CHOICE=LABEL lines "
                                                      "(needed for non-ASCII Choice values without an alias)")
    p.add_argument("--map", action="append", metavar="CHOICE=LABEL", help="rename a choice (repeatable; over "
                                                                          "--label-map)")
    p.add_argument("--image-root", metavar="DIR",
                   help="folder that /data/local-files/?d= paths (LOCAL_FILES_DOCUMENT_ROOT) and /data/upload/ files "
                        "(Label Studio's media folder) are under")
    p.add_argument("--labels", metavar="A,B,...", help="allowed labels; tasks with other labels are skipped")
    p.add_argument("--policy", choices=("latest", "majority"), default="latest",
                   help="several annotations and no ground truth: the latest, or each label more than half chose")
    p.add_argument("--no-ground-truth", action="store_true",
                   help="treat ground-truth annotations like the others (default: they decide)")
    p.add_argument("--none-choice", action="append", metavar="CHOICE",
                   help="extra choice text meaning 'none of the classes' (besides none, no wildlife product, ...)")
    p.add_argument("--image-key", help="task data field with the image (default: from --config, image, or the "
                                       "first image URL)")
    p.add_argument("--strip-prefix", action="append", metavar="URL_PREFIX",
                   help="remote URLs starting with this map to paths under --image-root (repeatable)")
    p.add_argument("--empty-means-none", action="store_true",
                   help="a submitted annotation with no choice means none of the classes (default: ignored)")
    p.add_argument("--force", action="store_true", help="replace an existing --output")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls_import)

    p = sub.add_parser("labelstudio-export", help="predictions -> Label Studio tasks with pre-annotations, uncertain first",
                       description="Turn `wildlife-vision predict` records (JSONL or CSV) into Label Studio tasks with "
                                   "predictions in the project's Choice values, sorted so that the photos closest "
                                   "to a threshold come first. See docs/data-curation.md.")
    p.add_argument("predictions", metavar="PREDICTIONS.jsonl")
    p.add_argument("--output", "-o", required=True, metavar="TASKS.json")
    p.add_argument("--model", metavar="MODEL.onnx", help="take the thresholds from this model's metadata (the model "
                                                         "that wrote the predictions)")
    p.add_argument("--thresholds", metavar="LABEL=T,...", help="thresholds (override --model)")
    p.add_argument("--default-threshold", type=float, metavar="T",
                   help="for labels with no threshold from --model/--thresholds (default: such labels are an error)")
    p.add_argument("--config", metavar="PROJECT.xml",
                   help="the project's labelling config (default: the documented config in docs/data-curation.md)")
    p.add_argument("--label-map", metavar="FILE", help="the import's Choice -> label file, used in reverse")
    p.add_argument("--map", action="append", metavar="LABEL=CHOICE", help="label -> Choice value (repeatable)")
    p.add_argument("--image-root", metavar="DIR", help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT: local paths are "
                                                       "written relative to it (default: "
                                                       "$LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT; needed for local "
                                                       "paths unless --url-prefix '')")
    p.add_argument("--url-prefix", default="/data/local-files/?d=",
                   help="prefix for local paths (default /data/local-files/?d=; '' for plain paths)")
    p.add_argument("--from-name", help="the Choices control (default: the config's only one)")
    p.add_argument("--to-name", help="the Image object (default: the control's toName)")
    p.add_argument("--none-choice", help="Choice for photos with no flagged label (default: the config's 'none' "
                                         "Choice; '' for an empty prediction)")
    p.add_argument("--limit", type=int, metavar="N", help="keep only the N most uncertain")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls_export)

    from wildlife_vision.data.cli_select import add_parser as add_select

    add_select(sub)


__all__ = ["register", "default_cache_path"]

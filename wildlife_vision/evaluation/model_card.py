"""Generate a model card (Markdown) from an exported model's metadata, its evaluation report and its data card.

The card is written from numbers, never by hand, so it cannot drift from the model it describes:
``wildlife-vision model-card MODEL.onnx --report REPORT_DIR/report.json --data MANIFEST --output CARD.md``.
The report must name this model file's sha256 (``model_sha256``, written by `wildlife-vision evaluate`); another
model's report is refused. Text about the training data (intended use, failure modes, sources and licences) is
copied from its data card (``datasets/NAME.md``, found from the training manifest's folder name, or
``--data-card``); without one the card says so and keeps to generic text. Optional inputs (``--int8``,
``--robustness``, ``--baseline``, the report's base rates and negatives-only sources) add sections; each section
whose input is missing is left out with a note. The sections follow CLIP's model card: intended and out-of-scope
use, classes, metrics by split and source with 95% intervals, operating points, training data and licences,
known failure modes, retraining.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from wildlife_vision.data.manifest import file_sha256, read_manifest_table  # the one manifest parser
from wildlife_vision.evaluation.card_sections import (ROBUSTNESS_SCHEMA, DataCard, accuracy, gate_failed,
                                                      parse_data_card, render_card, split_name, weights_origin)

log = logging.getLogger(__name__)

#: the repository's data cards (present in a source checkout; a wheel has none, then ./datasets is searched)
REPO_DATASETS = Path(__file__).resolve().parents[2] / "datasets"

_accuracy = accuracy          # the names the tests and earlier callers use
_weights_origin = weights_origin


def sources_and_licences(manifest: Path) -> List[Dict[str, Any]]:
    """Per (source, licence): photo counts per split and per label, read from the manifest (the one manifest
    parser, :func:`wildlife_vision.data.manifest.read_manifest_table`; raises its ManifestError)."""
    m = read_manifest_table(manifest)
    table: Dict[tuple, Dict[str, Any]] = defaultdict(lambda: {"splits": Counter(), "labels": Counter()})
    for i, r in enumerate(m.rows):
        key = (r.get("source") or "(none)", r.get("license") or "(not stated)")
        table[key]["splits"][r.get("split") or "(none)"] += 1
        for lab in m.labels(i) or ("(none)",):
            table[key]["labels"][lab] += 1
    return [{"source": s, "license": lic, "splits": dict(v["splits"]), "labels": dict(v["labels"])}
            for (s, lic), v in sorted(table.items())]


def render(meta: Dict[str, Any], report: Dict[str, Any], sources: Optional[List[Dict[str, Any]]] = None,
           baseline: Optional[Dict[str, Any]] = None, model_file: str = "", int8: Optional[Dict[str, Any]] = None,
           reproduce: str = "", data_card: Optional[DataCard] = None, robustness: Optional[Dict[str, Any]] = None,
           robustness_origin: str = "", profile_reports: Optional[Dict[str, Any]] = None) -> str:
    """The card's Markdown. ``int8``: ``{"file", "meta" (the INT8 file's metadata), "summary"}``, or without
    ``meta`` a model that was made but not shipped. ``robustness`` defaults to ``report["robustness"]``."""
    if robustness is None and isinstance(report.get("robustness"), dict):
        robustness, robustness_origin = report["robustness"], robustness_origin or "from the evaluation report"
    from .card_profiles import profiles_section

    return render_card(meta, report, sources=sources, baseline=baseline, model_file=model_file, int8=int8,
                       reproduce=reproduce, data_card=data_card, robustness_block=robustness,
                       robustness_origin=robustness_origin or "from `--robustness`",
                       profiles_block=profiles_section(meta, report, profile_reports or {}, int8))


# ---- inputs, each checked against the model ----------------------------------------------------------------

def check_report(report: Mapping[str, Any], meta: Mapping[str, Any], sha: str, flag: str, path: str) -> None:
    """ValueError unless ``report`` was made for this model file (its ``model_sha256``), with its labels and
    thresholds."""
    got = report.get("model_sha256")
    if not got:
        raise ValueError(f"{flag} {path} names no model_sha256, so it cannot be tied to this model; re-run "
                         "`wildlife-vision evaluate --model MODEL.onnx ...` with this version to get one")
    if str(got).lower() != sha:
        raise ValueError(f"{flag} {path} is the report of another model file (model_sha256 {str(got)[:12]}..., "
                         f"this model's is {sha[:12]}...); evaluate this model and pass that report")
    labels = report.get("labels")
    if labels is not None and list(labels) != list(meta["labels"]):
        raise ValueError(f"{flag} {path} has labels {list(labels)}, the model {list(meta['labels'])}")
    thresholds = report.get("thresholds")
    if isinstance(thresholds, dict) and not _same_thresholds(thresholds, meta["thresholds"]):
        raise ValueError(f"{flag} {path} was scored at thresholds {thresholds}, not the model's {meta['thresholds']}")


def _same_thresholds(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    try:
        return set(a) == set(b) and all(abs(float(a[k]) - float(b[k])) <= 1e-9 for k in b)
    except (TypeError, ValueError):
        return False


def find_data_card(meta: Mapping[str, Any]) -> Optional[Tuple[Path, str]]:
    """``datasets/NAME.md`` for the training manifest's folder name NAME (or the manifest file's own name when
    it is not ``manifest``), in ./datasets, the repository's datasets/ and the manifest's folder."""
    training = meta.get("training") or {}
    manifest = training.get("manifest") or ((training.get("config") or {}).get("data") or {}).get("manifest")
    if not manifest or not isinstance(manifest, str):
        return None
    mp = Path(manifest)
    names = [n for n in (mp.parent.name, mp.stem if mp.stem.lower() != "manifest" else "") if n]
    for name in names:
        for folder in (Path.cwd() / "datasets", REPO_DATASETS, mp.parent):
            cand = folder / f"{name}.md"
            if cand.is_file():
                return cand, f"found from the training manifest `{mp.parent.name}/{mp.name}`"
    return None


def read_data_card(path: Path, found_by: str) -> DataCard:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"--data-card {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--data-card {path}: cannot read it: {getattr(e, 'strerror', None) or e}") from None
    shown = path
    try:
        shown = path.resolve().relative_to(REPO_DATASETS.parent)
    except ValueError:
        pass
    return parse_data_card(text, shown.as_posix(), found_by)


def read_int8(path: str, meta: Mapping[str, Any]) -> Dict[str, Any]:
    """The INT8 file's metadata, keys this version does not model (``int8_gate``) included. Raises
    ModelLoadError/MetadataError when it cannot be read, ValueError when it is not this model's INT8 twin."""
    from wildlife_vision.metadata import METADATA_KEY, read_model_metadata, scan_onnx

    validated = read_model_metadata(path)
    raw = json.loads(scan_onnx(Path(path).read_bytes(), path)[METADATA_KEY])
    m8 = {**raw, **validated.to_dict()}
    if list(m8["labels"]) != list(meta["labels"]):
        raise ValueError(f"--int8 {path} has labels {m8['labels']}, the fp32 model {list(meta['labels'])}: it is "
                         "not this model's INT8 copy")
    return m8


def check_robustness(rob: Any, meta: Mapping[str, Any], int8: Optional[Mapping[str, Any]], where: str) -> None:
    """ValueError unless ``rob`` follows the robustness schema and was measured at this model's thresholds."""
    if not isinstance(rob, dict) or rob.get("schema_version") != ROBUSTNESS_SCHEMA:
        got = rob.get("schema_version") if isinstance(rob, dict) else type(rob).__name__
        raise ValueError(f"{where} is not robustness results: expected schema_version '{ROBUSTNESS_SCHEMA}', "
                         f"found {got!r}")
    edits = rob.get("edits")
    if not isinstance(edits, dict) or not all(isinstance(e, dict) and isinstance(e.get("per_class"), dict)
                                              for e in edits.values()):
        raise ValueError(f"{where}: 'edits' must map each edit to an object with 'per_class'")
    extra = sorted({lab for e in edits.values() for lab in e["per_class"]} - set(meta["labels"]))
    if extra:
        raise ValueError(f"{where} has labels the model does not have: {extra}")
    th = rob.get("thresholds")
    if isinstance(th, dict) and th:
        ours = {k: v for k, v in meta["thresholds"].items() if k in th}
        theirs = {k: v for k, v in ((int8 or {}).get("thresholds") or {}).items() if k in th}
        if not _same_thresholds(th, ours) and not (theirs and _same_thresholds(th, theirs)):
            raise ValueError(f"{where} was measured at thresholds {th}, not this model's {dict(meta['thresholds'])}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "model-card", help="write a model card (Markdown) from a model's metadata, its evaluation report and its "
        "data card", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL.onnx", help="exported model")
    p.add_argument("--report", required=True, metavar="REPORT.json",
                   help="report.json from `wildlife-vision evaluate --model MODEL.onnx ... --slice-by source` (its "
                        "model_sha256 must be this file's)")
    p.add_argument("--data-card", metavar="CARD.md",
                   help="data card of the training data (datasets/NAME.md); by default datasets/NAME.md for the "
                        "folder NAME of the training manifest named in the model's metadata, when there is one")
    p.add_argument("--data", metavar="MANIFEST", help="training manifest, for the sources and licences table")
    p.add_argument("--baseline", metavar="REPORT.json", help="report.json of a baseline (e.g. a linear probe)")
    p.add_argument("--int8", metavar="MODEL.int8.onnx",
                   help="the INT8 copy: its own thresholds, review bands, metrics and int8_gate are shown beside "
                        "the fp32 operating point")
    p.add_argument("--int8-report", metavar="REPORT.json",
                   help="report.json of `wildlife-vision evaluate --model MODEL.int8.onnx` on the same split as "
                   "--report (its model_sha256 must be the INT8 file's): the INT8 operating point is then shown on "
                   "that split; without it, on the split its metadata names")
    p.add_argument("--int8-failing", action="store_true",
                   help="include an --int8 model whose metadata says it failed its gate (marked FAILING); "
                        "without this such a model is refused")
    p.add_argument("--int8-summary", default="", help="one more line on the INT8 model; without --int8 it says "
                        "the INT8 model was evaluated but not shipped")
    p.add_argument("--profile-report", action="append", default=[], metavar="NAME=REPORT.json",
                   help="report.json of `wildlife-vision evaluate --model MODEL.onnx --precision P` for the file's "
                        "execution profile NAME (e.g. bf16=bf16-report.json), on the same split as --report; its "
                        "model_sha256 must be this file's and its thresholds the profile's (repeatable)")
    p.add_argument("--robustness", metavar="ROBUSTNESS.json",
                   help=f"robustness results ({ROBUSTNESS_SCHEMA}); by default the report's 'robustness' block")
    p.add_argument("--reproduce", metavar="FILE", help="text file with the exact commands that produced the model")
    p.add_argument("--output", "-o", required=True, metavar="CARD.md", help="where to write the card")
    p.set_defaults(func=_run)


def _read_json(flag: str, path: str, what: str = "an evaluation report",
               writer: str = "the report.json written by `wildlife-vision evaluate`") -> Dict[str, Any]:
    """A JSON object from ``path``, or ValueError with a one-line reason naming ``flag``."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} {path} is a folder; name the JSON file in it (e.g. {p / 'report.json'})")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{flag} {path}: file not found") from None
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot read it: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{flag} {path} is not JSON ({e}); pass {writer}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{flag} {path} is not {what}: expected a JSON object, found {type(data).__name__}")
    return data


def _run(args: argparse.Namespace) -> int:
    from wildlife_vision.cli_common import fail
    from wildlife_vision.data.manifest import ManifestError, atomic_write_text
    from wildlife_vision.errors import MetadataError, ModelLoadError
    from wildlife_vision.exitcodes import EXIT_FAILURE, EXIT_MODEL, EXIT_OK, EXIT_USAGE
    from wildlife_vision.model import load_model

    try:
        model = load_model(args.model)
        sha = file_sha256(Path(args.model))
    except ModelLoadError as e:
        return fail("model-card", f"cannot load the model: {e}", EXIT_MODEL)
    except OSError as e:
        return fail("model-card", f"cannot read the model: {e.strerror or e}", EXIT_MODEL)
    meta = model.metadata.to_dict()
    try:
        report = _read_json("--report", args.report)
        if not isinstance(report.get("per_class"), dict):
            raise ValueError(f"--report {args.report} is not an evaluation report from `wildlife-vision evaluate` "
                             "(no per_class object)")
        check_report(report, meta, sha, "--report", args.report)
        baseline = _read_json("--baseline", args.baseline) if args.baseline else None
        sources = sources_and_licences(Path(args.data)) if args.data else None
        reproduce = Path(args.reproduce).read_text(encoding="utf-8") if args.reproduce else ""
        if args.data_card:
            card = read_data_card(Path(args.data_card), "given with `--data-card`")
        else:
            found = find_data_card(meta)
            card = read_data_card(*found) if found else None
    except ManifestError as e:
        return fail("model-card", f"--data: {e}", EXIT_USAGE)
    except ValueError as e:
        return fail("model-card", str(e), EXIT_USAGE)
    except OSError as e:
        return fail("model-card", f"--reproduce {args.reproduce}: {e.strerror or e}", EXIT_USAGE)
    int8 = None
    if args.int8:
        try:
            m8 = read_int8(args.int8, meta)
        except (ModelLoadError, MetadataError) as e:
            return fail("model-card", f"--int8: cannot read the INT8 model: {e}", EXIT_MODEL)
        except ValueError as e:
            return fail("model-card", str(e), EXIT_USAGE)
        if gate_failed(m8) and not args.int8_failing:
            return fail("model-card", f"--int8 {args.int8} failed its INT8 gate (int8_gate.passed is not true in "
                                      "its metadata); leave it out, or pass --int8-failing to describe it marked "
                                      "FAILING", EXIT_USAGE)
        int8 = {"file": Path(args.int8).name, "meta": m8, "summary": args.int8_summary}
        if args.int8_report:
            try:
                r8 = _read_json("--int8-report", args.int8_report)
                check_report(r8, m8, file_sha256(Path(args.int8)), "--int8-report", args.int8_report)
                if split_name(r8) != split_name(report):
                    raise ValueError(f"--int8-report {args.int8_report} is on split {split_name(r8)!r}, --report on "
                                     f"{split_name(report)!r}: compare the two models on the same photos")
            except ValueError as e:
                return fail("model-card", str(e), EXIT_USAGE)
            int8["report"] = r8
    elif args.int8_report:
        return fail("model-card", "--int8-report needs --int8", EXIT_USAGE)
    elif args.int8_summary:
        int8 = {"file": "", "summary": args.int8_summary}
    profile_reports: Dict[str, Any] = {}
    try:
        for item in args.profile_report:
            name, _, path = item.partition("=")
            entry = (meta.get("profiles") or {}).get(name)
            if not path or not entry or not entry.get("thresholds"):
                raise ValueError(f"--profile-report {item}: give NAME=REPORT.json for a profile of this model with "
                                 f"its own thresholds ({', '.join(k for k, v in (meta.get('profiles') or {}).items() if v.get('thresholds')) or 'none'})")
            rp = _read_json("--profile-report", path)
            check_report(rp, {**meta, "thresholds": entry["thresholds"]}, sha, "--profile-report", path)
            if rp.get("profile") != name:
                raise ValueError(f"--profile-report {path} was scored by profile {rp.get('profile')!r}, not {name!r}")
            if split_name(rp) != split_name(report):
                raise ValueError(f"--profile-report {path} is on split {split_name(rp)!r}, --report on "
                                 f"{split_name(report)!r}")
            profile_reports[name] = rp
    except ValueError as e:
        return fail("model-card", str(e), EXIT_USAGE)
    rob, origin = None, ""
    try:
        if args.robustness:
            rob, origin = _read_json("--robustness", args.robustness, "robustness results",
                                     f"a {ROBUSTNESS_SCHEMA} JSON file"), f"`{Path(args.robustness).name}`"
            check_robustness(rob, meta, int8 and int8.get("meta"), f"--robustness {args.robustness}")
        elif "robustness" in report:
            rob, origin = report["robustness"], "from the evaluation report"
            check_robustness(rob, meta, int8 and int8.get("meta"), f"--report {args.report}: its 'robustness'")
    except ValueError as e:
        return fail("model-card", str(e), EXIT_USAGE)
    try:
        text = render(meta, report, sources, baseline, model_file=Path(args.model).name, int8=int8,
                      reproduce=reproduce, data_card=card, robustness=rob, robustness_origin=origin,
                      profile_reports=profile_reports)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
        return fail("model-card", f"--report {args.report} is not an evaluation report from `wildlife-vision "
                                  f"evaluate` ({type(e).__name__}: {e})", EXIT_USAGE)
    out = Path(args.output)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text)
    except OSError as e:
        return fail("model-card", f"cannot write {out}: {e.strerror or e}", EXIT_FAILURE)
    print(f"model card: {out}" + ("" if card else " (no data card: generic text for the training data)"))
    return EXIT_OK

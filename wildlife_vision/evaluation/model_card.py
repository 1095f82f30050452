"""Generate a model card (Markdown) from an exported model's metadata and its evaluation report.

The card is written from numbers, never by hand, so it cannot drift from the model it describes:
``wildlife-vision model-card MODEL.onnx --report REPORT_DIR/report.json --data MANIFEST --output CARD.md``.
It follows CLIP's model card: intended use, out-of-scope use, what is covered and what is not, metrics
(overall and by source), the operating point, training data and licences, known failure modes, retraining.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional

from wildlife_vision.data.manifest import TAXONOMY, read_manifest_table  # the one label list and manifest parser

log = logging.getLogger(__name__)

FAILURE_MODES = {
    "ivory": [
        "**Bone, resin, celluloid and tagua-nut (vegetable ivory)** carvings look like ivory; about one in nine "
        "'ivory' photos in the Met Museum source is in fact bone, labelled ivory as in the source, so the model "
        "partly learned *carved creamy-white object* rather than the material.",
        "**Object form over material**: glass, glazed ceramic (celadon, blanc de Chine), stone and pottery objects "
        "shaped like typical ivory objects (hairpins, recorders and flutes, standing figurines, carved boxes and "
        "plaques) can score as high as ivory. In the wildtrade-v1 validation split every fine-tuned model tried "
        "had such confident false positives, largely the same photos, whose nearest training photos are mostly "
        "ivory objects of the same form: the museum data ties object types to the label.",
        "**Legal ivory**: mammoth (fossil), walrus, narwhal, hippo and certified antique ivory are scored like "
        "elephant ivory. The score is a reason to look, not a finding of illegality.",
        "**Museum photos are not listing photos**: training ivory comes from studio photos on plain backgrounds. "
        "Cluttered phone photos, hands, price tags and watermarks are unseen; expect lower recall there.",
    ],
    "live_animal": [
        "**Captive versus wild**: the label means *a wild species*, not *taken from the wild*; captive-bred, "
        "legally kept animals score the same. Training photos show animals in nature, not in cages or shops.",
        "**Domestic look-alikes**: exotic-looking domestic breeds (Bengal or Savannah cats, some dog breeds), "
        "plush toys, figurines and taxidermy can be flagged.",
        "Fish and invertebrates were left out of the data and are out of scope.",
    ],
}


def _weights_origin(pt: Dict[str, Any]) -> str:
    """One sentence on where the initial weights came from, following a checkpoint's own lineage."""
    source, detail = pt.get("source"), pt.get("detail", "")
    if source == "package":
        return f"ImageNet-1k, from the offline package `{detail}` (Apache-2.0)"
    if source == "hub":
        return f"ImageNet-1k, from the Hugging Face hub `{detail}` (see that model's licence)"
    if source == "none":
        return "random initialisation (no pretraining)"
    sha = f", sha256 `{pt['sha256'][:12]}...`" if pt.get("sha256") else ""
    parent = pt.get("parent")
    if source == "file" and parent:
        at = f" at {parent['image_size']} px" if parent.get("image_size") else ""
        ep = (f" (epoch {parent['epoch']} of {parent['epochs']})" if parent.get("epoch") and parent.get("epochs")
              else "")
        return (f"the fine-tuned backbone of an earlier wildlife-vision run (`{detail}`{sha}: `{parent.get('model')}` "
                f"fine-tuned{at}{ep} on data with manifest sha256 `{str(parent.get('manifest_sha256'))[:12]}...`, "
                f"itself initialised from {_weights_origin(parent.get('pretrained', {}))}); its classifier was "
                "re-initialised and trained again")
    return f"a local weights file `{detail}`{sha}"


def _fmt(x: Optional[float], nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def _accuracy(c: Dict[str, Any]) -> Optional[float]:
    n = sum(int(c.get(k, 0)) for k in ("tp", "fp", "fn", "tn"))
    return None if n == 0 else (int(c.get("tp", 0)) + int(c.get("tn", 0))) / n


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
           reproduce: str = "") -> str:
    labels: List[str] = list(meta["labels"])
    missing = [lab for lab in TAXONOMY if lab not in labels]
    training = meta.get("training", {})
    pre = meta.get("preprocess", {})
    calib = meta.get("calibration", {})
    per_class = report.get("per_class", {})
    out: List[str] = []
    w = out.append
    w(f"# Model card: {meta.get('name', 'wildlife-vision model')} {meta.get('model_version', '')}".rstrip())
    w("")
    w(f"*Generated by `wildlife-vision model-card` from the model's metadata and its evaluation report on the "
      f"`{report.get('split', 'val')}` split ({report.get('n_images', '?')} photos). Do not edit by hand: "
      "regenerate it.*")
    w("")
    w("## Model details")
    w("")
    w(f"- **File**: `{model_file or 'model.onnx'}` (ONNX, self-describing: labels, thresholds, review bands, "
      "preprocessing and these metrics are in its metadata; `wildlife-vision info` prints them).")
    w(f"- **Architecture**: `{meta.get('backbone', '?')}` (timm) fine-tuned as a multi-label classifier with "
      f"sigmoid outputs; input {pre.get('input_size')} RGB, shorter side resized to {pre.get('resize_shorter')} "
      f"({pre.get('interpolation')}), centre crop, mean {pre.get('mean')}, std {pre.get('std')}.")
    train_size = training.get("config", {}).get("data", {}).get("image_size")
    if train_size and list(pre.get("input_size", [])) != [train_size, train_size]:
        w(f"- **Train and test sizes differ**: fine-tuned on {train_size} px random-resized crops, evaluated, "
          f"calibrated and run at {pre.get('input_size')} (timm's `test_input_size`): random-resized-crop training "
          "shows objects larger than a centre crop does, so a larger test size matches them better (FixRes, "
          "Touvron et al. 2019).")
    pt = training.get("pretrained", {})
    if pt:
        w(f"- **Initial weights**: {_weights_origin(pt)}.")
    w(f"- **Training data**: manifest sha256 `{training.get('manifest_sha256', '?')}`; config sha256 "
      f"`{training.get('config_sha256', '?')}`; best epoch {training.get('best_epoch', '?')} of "
      f"{training.get('epochs', '?')}; seed {training.get('seed', '?')}.")
    w(f"- **Created** {meta.get('created', '?')} with wildlife-vision {meta.get('package_version', '?')}; "
      f"metadata schema {meta.get('schema_version')}.")
    w("")
    w("## Intended use")
    w("")
    w("- **Triage of marketplace and social-media listing photos for human review** by trust-and-safety teams of "
      "platforms in the Coalition to End Wildlife Trafficking Online, and by researchers studying online "
      "wildlife trade. A flag or a review-band score puts a listing in front of a trained moderator.")
    w("- Measuring and comparing detectors on shared, leakage-checked splits.")
    w("")
    w("**A score is never the sole basis for enforcement**: not for removing a listing without review, "
      "suspending an account, or reporting a person to authorities. Legality depends on species, age, "
      "paperwork and jurisdiction, none of which a photo shows.")
    w("")
    w("## Out-of-scope uses")
    w("")
    w("- Automated takedowns or sanctions without human review.")
    w("- Species identification, age estimation of ivory, or telling legal from illegal items.")
    w("- Surveillance or identification of people; the model knows nothing about people and must not be used "
      "to profile sellers.")
    w("- Photos unlike listing photos (camera traps, microscopy, X-ray, CCTV) and video without evaluation.")
    if missing:
        w(f"- The classes this model does not cover ({', '.join(f'`{m}`' for m in missing)}): see below.")
    w("")
    w("## Classes")
    w("")
    w("| label | covered | validation positives | note |")
    w("|---|---|---|---|")
    for lab in TAXONOMY + tuple(lab for lab in labels if lab not in TAXONOMY):
        if lab in labels:
            w(f"| `{lab}` | yes | {per_class.get(lab, {}).get('support', '?')} | trained on real photos |")
        else:
            w(f"| `{lab}` | **no** | 0 | no public labelled photos found yet; the code and taxonomy support it |")
    w("")
    if missing:
        w(f"**Not covered: {', '.join(f'`{m}`' for m in missing)}.** This model has no output for them and will "
          "not flag them. To add them, collect labelled listing photos (a few hundred positives per class and "
          "look-alike negatives: cow horn and resin for rhino horn, fish scales and pine cones for pangolin "
          "scales, faux fur and toys for tiger parts — see `datasets/taxonomy.md`), add rows to a manifest "
          "(`image,labels,split,...`, see `datasets/README.md`), deduplicate and split with `wildlife-vision data "
          "dedup` / `data split --by group`, and retrain as shown at the end of this card; the label list "
          "follows the manifest.")
        w("")
    w(f"## Metrics on the `{report.get('split', 'val')}` split")
    w("")
    w(f"{report.get('n_images', '?')} photos; precision, recall, F1 and accuracy at the shipped thresholds; "
      "average precision (AP) and ROC-AUC are threshold-free.")
    w("")
    w("| label | AP | ROC-AUC | precision | recall | F1 | accuracy | support | threshold |")
    w("|---|---|---|---|---|---|---|---|---|")
    for lab in labels:
        c = per_class.get(lab, {})
        w(f"| `{lab}` | {_fmt(c.get('ap'))} | {_fmt(c.get('roc_auc'))} | {_fmt(c.get('precision'))} | "
          f"{_fmt(c.get('recall'))} | {_fmt(c.get('f1'))} | {_fmt(_accuracy(c))} | {c.get('support', '?')} | "
          f"{_fmt(c.get('threshold'))} |")
    for avg in ("macro", "micro"):
        m = report.get(avg, {})
        w(f"| *{avg}* | {_fmt(m.get('ap'))} | {_fmt(m.get('roc_auc'))} | {_fmt(m.get('precision'))} | "
          f"{_fmt(m.get('recall'))} | {_fmt(m.get('f1'))} | | | |")
    w("")
    slices = report.get("slices", {})
    if "source" in slices:
        w("### By source")
        w("")
        w("Accuracy is the share of the source's photos whose flag for that label is right (flagged positives "
          "plus unflagged negatives).")
        w("")
        w("| source | photos | label | positives | AP | precision | recall | accuracy |")
        w("|---|---|---|---|---|---|---|---|")
        for src, s in sorted(slices["source"].items()):
            for lab in labels:
                c = s.get("per_class", {}).get(lab, {})
                if not c or (c.get("support", 0) == 0 and c.get("fp", 0) == 0 and lab not in _labels_seen(s)):
                    continue
                w(f"| {src} | {s.get('n_images')} | `{lab}` | {c.get('support')} | {_fmt(c.get('ap'))} | "
                  f"{_fmt(c.get('precision')) if c.get('tp', 0) + c.get('fp', 0) else 'n/a'} | "
                  f"{_fmt(c.get('recall')) if c.get('support') else 'n/a'} | {_fmt(_accuracy(c))} |")
        w("")
    if baseline:
        w("### Against a linear probe")
        w("")
        w("A linear probe (same backbone and pretrained weights, frozen; only the classifier trained) on the same "
          "data and split:")
        w("")
        w("| label | AP, this model | AP, linear probe |")
        w("|---|---|---|")
        for lab in labels:
            w(f"| `{lab}` | {_fmt(per_class.get(lab, {}).get('ap'))} | "
              f"{_fmt(baseline.get('per_class', {}).get(lab, {}).get('ap'))} |")
        w(f"| *macro* | {_fmt(report.get('macro', {}).get('ap'))} | {_fmt(baseline.get('macro', {}).get('ap'))} |")
        w("")
    if int8:
        w("### INT8 model")
        w("")
        if int8.get("file"):
            w(f"An INT8 model (onnxruntime static quantisation) is shipped beside it: `{int8['file']}`. "
              f"Change in validation AP against fp32: {int8.get('summary', '')}.")
        else:
            w("An INT8 model (onnxruntime static quantisation, `wildlife-vision export --int8`) was made and "
              f"evaluated but is **not shipped**: {int8.get('summary', '')}.")
        w("")
    w("## Thresholds and operating point")
    w("")
    target = calib.get("target", "precision")
    w(f"Thresholds were chosen per label on the `{calib.get('split', 'val')}` split for a target {target} of "
      f"{calib.get('value', '?')}: {calib.get('rule', '')}. Scores in the review band (just under the threshold) "
      "should go to a human review queue rather than be dropped.")
    w("")
    w("| label | threshold (flag at or above) | review band | val precision | val recall | recall incl. review | "
      "share of photos in review |")
    w("|---|---|---|---|---|---|---|")
    bands = meta.get("review_bands", {})
    for lab in labels:
        p = calib.get("per_label", {}).get(lab, {})
        band = bands.get(lab, [None, None])
        w(f"| `{lab}` | {_fmt(meta['thresholds'][lab])} | [{_fmt(band[0])}, {_fmt(band[1])}) | "
          f"{_fmt(p.get('precision'))} | {_fmt(p.get('recall'))} | {_fmt(p.get('review_recall'))} | "
          f"{_fmt(p.get('review_fraction'))} |")
    w("")
    w("The validation split was also used to pick the best epoch and the thresholds, so these figures are "
      "somewhat optimistic; a held-out test split (kept back from this data release) is the fair measure. "
      "Platforms should re-check the thresholds on a sample of their own listings: base rates there are far "
      "lower than in this data, so precision at the same threshold will be lower.")
    w("")
    if sources:
        w("## Training data and licences")
        w("")
        w("Data set `wildtrade-v1` (see `datasets/wildtrade-v1.md`). No images are distributed with this package.")
        w("")
        w("| source | licence | train | val | labels |")
        w("|---|---|---|---|---|")
        for s in sources:
            labs = ", ".join(f"{k} {v}" for k, v in sorted(s["labels"].items()))
            w(f"| {s['source']} | {s['license']} | {s['splits'].get('train', 0)} | {s['splits'].get('val', 0)} | "
              f"{labs} |")
        w("")
        w("- **met-museum**: The Metropolitan Museum of Art Open Access (CC0-1.0); ivory objects against other "
          "museum objects (ceramics, glass, metal).")
        w("- **imagenet-sample**: one ImageNet validation photo per class; ImageNet terms of access (non-commercial "
          "research). Wild vertebrates are `live_animal`; domestic animals and objects are negatives.")
        w("- **birds-525**, **big-cats-10**: public dataset cards state CC0-1.0.")
        w("")
        w("Because of the ImageNet terms, this model's weights inherit a non-commercial-research caveat for that "
          "part of the data; platforms deploying it commercially should check with their counsel or retrain "
          "without the `imagenet-sample` rows (`wildlife-vision train` takes any manifest).")
        w("")
    w("## Known failure modes and biases")
    w("")
    for lab in labels:
        for item in FAILURE_MODES.get(lab, []):
            w(f"- `{lab}`: {item}")
    w("- **Source shortcut risk**: each label comes from few sources (ivory only from one museum's studio photos; "
      "live animals from nature photography). The model may partly rely on photographic style; the by-source "
      "table above shows where it was measured, and nothing else was.")
    w("- Photos of text, screenshots of chats and listings whose product is only described in words are not "
      "understood.")
    w("")
    w("## How to retrain or reproduce")
    w("")
    if reproduce:
        w("This model was produced with:")
        w("")
        w("```bash")
        w(reproduce.strip())
        w("```")
        w("")
    w("To retrain on your own labelled photos, write a manifest (`datasets/README.md`), check it "
      "(`wildlife-vision data stats`, `data dedup`, `data check`), then run `wildlife-vision train --data "
      "MANIFEST --model tf_efficientnet_lite0 --epochs 8 --output runs/mine`, `wildlife-vision export runs/mine "
      "--output mine.onnx --int8`, and `wildlife-vision model-card mine.onnx --report ...` for its card. "
      "The resolved training configuration is in the model's metadata (`wildlife-vision info MODEL --json`).")
    w("")
    return "\n".join(out)


def _labels_seen(slice_: Dict[str, Any]) -> List[str]:
    return [lab for lab, c in slice_.get("per_class", {}).items() if c.get("support", 0) > 0]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "model-card", help="write a model card (Markdown) from a model's metadata and its evaluation report",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL.onnx", help="exported model")
    p.add_argument("--report", required=True, metavar="REPORT.json",
                   help="report.json from `wildlife-vision evaluate --model MODEL.onnx ... --slice-by source`")
    p.add_argument("--data", metavar="MANIFEST", help="training manifest, for the sources and licences table")
    p.add_argument("--baseline", metavar="REPORT.json", help="report.json of a baseline (e.g. a linear probe)")
    p.add_argument("--int8", metavar="MODEL.int8.onnx", help="shipped INT8 model, described beside the fp32 one")
    p.add_argument("--int8-summary", default="", help="one line on the INT8 AP change (from `export --int8`); without --int8 it says the INT8 model "
                        "was evaluated but not shipped")
    p.add_argument("--reproduce", metavar="FILE", help="text file with the exact commands that produced the model")
    p.add_argument("--output", "-o", required=True, metavar="CARD.md", help="where to write the card")
    p.set_defaults(func=_run)


def _read_json(flag: str, path: str) -> Dict[str, Any]:
    """A JSON object from ``path``, or ValueError with a one-line reason naming ``flag``."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} {path} is a folder; name its report.json (e.g. {p / 'report.json'})")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{flag} {path}: file not found") from None
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot read it: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{flag} {path} is not JSON ({e}); pass the report.json written by "
                         "`wildlife-vision evaluate`") from None
    if not isinstance(data, dict):
        raise ValueError(f"{flag} {path} is not an evaluation report: expected a JSON object, found "
                         f"{type(data).__name__}")
    return data


def _run(args: argparse.Namespace) -> int:
    from wildlife_vision.cli_common import fail
    from wildlife_vision.data.manifest import ManifestError
    from wildlife_vision.errors import ModelLoadError
    from wildlife_vision.exitcodes import EXIT_FAILURE, EXIT_MODEL, EXIT_OK, EXIT_USAGE
    from wildlife_vision.model import load_model

    try:
        model = load_model(args.model)
    except ModelLoadError as e:
        return fail("model-card", f"cannot load the model: {e}", EXIT_MODEL)
    meta = model.metadata.to_dict()
    try:
        report = _read_json("--report", args.report)
        baseline = _read_json("--baseline", args.baseline) if args.baseline else None
        sources = sources_and_licences(Path(args.data)) if args.data else None
        reproduce = Path(args.reproduce).read_text(encoding="utf-8") if args.reproduce else ""
    except ManifestError as e:
        return fail("model-card", f"--data: {e}", EXIT_USAGE)
    except ValueError as e:
        return fail("model-card", str(e), EXIT_USAGE)
    except OSError as e:
        return fail("model-card", f"--reproduce {args.reproduce}: {e.strerror or e}", EXIT_USAGE)
    int8 = None
    if args.int8 or args.int8_summary:
        int8 = {"file": Path(args.int8).name if args.int8 else "", "summary": args.int8_summary}
    try:
        text = render(meta, report, sources, baseline, model_file=Path(args.model).name, int8=int8,
                      reproduce=reproduce)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        return fail("model-card", f"--report {args.report} is not an evaluation report from `wildlife-vision "
                                  f"evaluate` ({type(e).__name__}: {e})", EXIT_USAGE)
    out = Path(args.output)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
    except OSError as e:
        return fail("model-card", f"cannot write {out}: {e.strerror or e}", EXIT_FAILURE)
    print(f"model card: {out}")
    return EXIT_OK

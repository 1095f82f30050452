"""The sections of a model card, each written from numbers (used by :mod:`wildlife_vision.evaluation.model_card`).

Every figure names the split it was measured on and carries its 95% interval where its input gives one. Nothing
here knows any data set: text about a model's training data (its intended use, failure modes, sources and
licences) comes from that data's data card (:class:`DataCard`, ``datasets/*.md``), and generic text stands in
when there is none. A section whose input is missing is left out with a one-line note saying what would fill it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from wildlife_vision.data.manifest import TAXONOMY

ROBUSTNESS_SCHEMA = "wildlife-vision/robustness/v1"

#: data-card headings (level 2, case-insensitive) whose text model cards copy -> section key
DATA_CARD_SECTIONS = {"intended use": "intended_use", "out-of-scope uses": "out_of_scope",
                      "out of scope uses": "out_of_scope", "known failure modes": "failure_modes",
                      "sources and licences": "sources", "sources and licenses": "sources"}


@dataclass(frozen=True)
class DataCard:
    """A data card: its name (``# Data card: NAME``), where it is, how it was found, and its copied sections."""

    name: str
    path: str
    found_by: str
    sections: Mapping[str, str] = field(default_factory=dict)


def parse_data_card(text: str, path: str, found_by: str) -> DataCard:
    """The sections of a data card that model cards copy (see :data:`DATA_CARD_SECTIONS`), HTML comments
    dropped; the name from its first ``# `` heading (after ``Data card:``), else the file name."""
    name, key, sections = "", None, {}
    body: Dict[str, List[str]] = {}
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"#{1,2} ", line):
            title = line.lstrip("#").strip()
            if line.startswith("# ") and not name:
                name = title.split(":", 1)[1].strip() if ":" in title else title
            key = DATA_CARD_SECTIONS.get(re.sub(r"\s+", " ", title.lower().rstrip(":.")))
            if key:
                body.setdefault(key, [])
            continue
        if key and not re.fullmatch(r"\s*<!--.*-->\s*", line):
            body[key].append(line)
    for k, lines in body.items():
        t = "\n".join(lines).strip("\n")
        if t.strip():
            sections[k] = t
    stem = path.replace("\\", "/").rsplit("/", 1)[-1]
    return DataCard(name=name or stem.rsplit(".", 1)[0], path=path, found_by=found_by, sections=sections)


def for_labels(text: str, labels: Sequence[str]) -> str:
    """``text`` without the top-level bullets (and their continuation lines) that start with a label in
    backticks (``- `ivory`: ...``) the model does not have."""
    out, skip = [], False
    for line in text.splitlines():
        m = re.match(r"[-*] `([^`]+)`:", line)
        if m or re.match(r"[-*] |\S", line):
            skip = bool(m) and m.group(1) not in labels
        if not skip:
            out.append(line)
    return "\n".join(out).strip("\n")


# ---- formatting -------------------------------------------------------------------------------------------

def fmt(x: Any, nd: int = 3) -> str:
    return "n/a" if x is None or isinstance(x, bool) or not isinstance(x, (int, float)) else f"{x:.{nd}f}"


def interval(ci: Any) -> Optional[List[float]]:
    ok = isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)
    return list(ci) if ok else None


def with_ci(x: Any, ci: Any, nd: int = 3) -> str:
    """``0.953 [0.921, 0.978]``; ``[no interval]`` when the input has none."""
    if x is None:
        return "n/a"
    c = interval(ci)
    return f"{fmt(x, nd)} [{c[0]:.{nd}f}, {c[1]:.{nd}f}]" if c else f"{fmt(x, nd)} [no interval]"


def split_name(d: Mapping[str, Any]) -> str:
    s = d.get("split")
    return f"`{s}`" if s else "(split not recorded)"


def accuracy(c: Mapping[str, Any]) -> Optional[float]:
    n = sum(int(c.get(k, 0) or 0) for k in ("tp", "fp", "fn", "tn"))
    return None if n == 0 else (int(c.get("tp", 0) or 0) + int(c.get("tn", 0) or 0)) / n


def weights_origin(pt: Mapping[str, Any]) -> str:
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
                f"itself initialised from {weights_origin(parent.get('pretrained', {}))}); its classifier was "
                "re-initialised and trained again")
    return f"a local weights file `{detail}`{sha}"


def int8_gate(meta: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The ``int8_gate`` block of an INT8 model's metadata (top level, or under ``metrics`` or ``training``)."""
    for block in (meta, meta.get("metrics") or {}, meta.get("training") or {}):
        gate = block.get("int8_gate") if isinstance(block, Mapping) else None
        if isinstance(gate, Mapping):
            return gate
    return None


def gate_failed(meta: Mapping[str, Any]) -> bool:
    gate = int8_gate(meta)
    return gate is not None and gate.get("passed") is not True


def ci_of(d: Mapping[str, Any], key: str) -> Any:
    """A figure's 95% interval from a report block (``ci95: {key: [lo, hi]}`` or ``KEY_ci95``)."""
    return (d.get("ci95") or {}).get(key) if isinstance(d.get("ci95"), Mapping) else d.get(f"{key}_ci95")


def _copied(card: Optional[DataCard], key: str, labels: Sequence[str]) -> str:
    return for_labels(card.sections.get(key, ""), labels) if card else ""


# ---- sections ---------------------------------------------------------------------------------------------

def header(meta: Mapping[str, Any], report: Mapping[str, Any], model_file: str,
           card: Optional[DataCard]) -> List[str]:
    training, pre = meta.get("training") or {}, meta.get("preprocess") or {}
    sha = report.get("model_sha256") or ""
    out = [f"# Model card: {meta.get('name', 'wildlife-vision model')} {meta.get('model_version', '')}".rstrip(), "",
           f"*Generated by `wildlife-vision model-card` from the model's metadata, its evaluation report on the "
           f"{split_name(report)} split ({report.get('n_images', '?')} photos; the report names this file's "
           f"sha256 `{sha[:12]}...`) and " + (f"the data card `{card.path}` ({card.found_by})" if card else
                                              "no data card") + ". Do not edit by hand: regenerate it.*", "",
           "## Model details", "",
           f"- **File**: `{model_file or 'model.onnx'}` (ONNX, self-describing: labels, thresholds, review bands, "
           "preprocessing and metrics are in its metadata; `wildlife-vision info` prints them).",
           f"- **Architecture**: `{meta.get('backbone') or '?'}` fine-tuned as a multi-label classifier with "
           f"sigmoid outputs; input {pre.get('input_size')} RGB, shorter side resized to "
           f"{pre.get('resize_shorter')} ({pre.get('interpolation')}), centre crop, mean {pre.get('mean')}, "
           f"std {pre.get('std')}."]
    train_size = (training.get("config") or {}).get("data", {}).get("image_size")
    if train_size and list(pre.get("input_size", [])) != [train_size, train_size]:
        out.append(f"- **Train and test sizes differ**: fine-tuned on {train_size} px random-resized crops, "
                   f"evaluated, calibrated and run at {pre.get('input_size')} (timm's `test_input_size`): "
                   "random-resized-crop training shows objects larger than a centre crop does, so a larger test "
                   "size matches them better (FixRes, Touvron et al. 2019).")
    for step in training.get("graph_steps") or []:  # steps in the graph around the backbone, in their order
        out.append(f"- **In the graph**: {step}.")
    if training.get("pretrained"):
        out.append(f"- **Initial weights**: {weights_origin(training['pretrained'])}.")
    if training:
        out.append(f"- **Training data**: manifest sha256 `{training.get('manifest_sha256', '?')}`; config sha256 "
                   f"`{training.get('config_sha256', '?')}`; best epoch {training.get('best_epoch', '?')} of "
                   f"{training.get('epochs', '?')}; seed {training.get('seed', '?')}.")
    else:
        out.append("- **Training data**: not recorded in the model's metadata.")
    out += [f"- **Created** {meta.get('created') or '?'} with wildlife-vision {meta.get('package_version') or '?'}; "
            f"metadata schema {meta.get('schema_version')}.", ""]
    return out


def uses(labels: Sequence[str], card: Optional[DataCard]) -> List[str]:
    out = ["## Intended use", ""]
    text = _copied(card, "intended_use", labels)
    if text:
        out += [f"From the data card `{card.path}`:", "", text, ""]
    else:
        out += ["- **Triage of photos for human review**: a flag or a review-band score puts a photo in front of "
                "a trained person, who decides.",
                "",
                "*No intended-use section: " + (f"the data card `{card.path}` has no `## Intended use`."
                                                if card else "no data card (`--data-card`).") +
                " The setting this model's training data fits is not described here.*"]
    out += ["", "**A score is never the sole basis for enforcement**: not for removing a listing without review, "
            "suspending an account, or reporting a person to authorities. Legality depends on species, age, "
            "paperwork and jurisdiction, none of which a photo shows.", "",
            "## Out-of-scope uses", "",
            "- Automated takedowns or sanctions without human review.",
            "- Surveillance or identification of people; the model knows nothing about people and must not be used "
            "to profile sellers.",
            "- Photos unlike those it was trained and evaluated on, without evaluating it on them first."]
    text = _copied(card, "out_of_scope", labels)
    if text:
        out.append(text)
    missing = uncovered(labels)
    if missing:
        out.append(f"- The classes this model does not cover ({', '.join(f'`{m}`' for m in missing)}): see below.")
    return out + [""]


def uncovered(labels: Sequence[str]) -> List[str]:
    """Taxonomy classes the model lacks, when it covers part of the taxonomy at all."""
    if not any(lab in TAXONOMY for lab in labels):
        return []
    return [lab for lab in TAXONOMY if lab not in labels]


def classes(labels: Sequence[str], report: Mapping[str, Any]) -> List[str]:
    per_class, missing = report.get("per_class") or {}, uncovered(labels)
    out = ["## Classes", "", f"| label | covered | positives in {split_name(report)} |", "|---|---|---|"]
    order = list(TAXONOMY) + [x for x in labels if x not in TAXONOMY] if missing else list(labels)
    for lab in order:
        if lab in labels:
            out.append(f"| `{lab}` | yes | {per_class.get(lab, {}).get('support', '?')} |")
        else:
            out.append(f"| `{lab}` | **no** | 0 |")
    out.append("")
    if missing:
        out += [f"**Not covered: {', '.join(f'`{m}`' for m in missing)}.** This model has no output for them and "
                "will not flag them. To add them, collect labelled listing photos (a few hundred positives per "
                "class and look-alike negatives, see `datasets/taxonomy.md`), add rows to a manifest "
                "(`image,labels,split,...`, see `datasets/README.md`), deduplicate and split with `wildlife-vision "
                "data dedup` / `data split --by group`, and retrain as shown at the end of this card; the label "
                "list follows the manifest.", ""]
    return out


RATES = (("ap", "AP"), ("precision", "precision"), ("recall", "recall"), ("fpr", "false-positive rate"),
         ("flag_rate", "flag rate"))


def metrics(labels: Sequence[str], report: Mapping[str, Any], baseline: Optional[Mapping[str, Any]]) -> List[str]:
    sp, per_class = split_name(report), report.get("per_class") or {}
    iv = report.get("intervals") or {}
    how = (f"{iv.get('method', 'bootstrap')} over {iv.get('resamples', '?')} resamples of "
           f"{iv.get('unit', 'photo')}s" if iv else "as given in the report")
    out = [f"## Metrics on the {sp} split", "",
           f"{report.get('n_images', '?')} photos of the {sp} split. Precision, recall, false-positive and flag "
           f"rates at the model's thresholds; AP is threshold-free. In brackets: the 95% interval ({how}).", "",
           "| label | " + " | ".join(f"{name}, {sp}" for _, name in RATES) + " | positives | threshold |",
           "|---|" + "---|" * (len(RATES) + 2)]
    for lab in labels:
        c = per_class.get(lab, {})
        out.append(f"| `{lab}` | " + " | ".join(with_ci(c.get(k), ci_of(c, k)) for k, _ in RATES) +
                   f" | {c.get('support', '?')} | {fmt(c.get('threshold'))} |")
    if not any(isinstance(c.get("ci95"), Mapping) for c in per_class.values()):
        out += ["", "*This report carries no intervals (`ci95`): re-run `wildlife-vision evaluate` to get them.*"]
    avg = [a for a in ("macro", "micro") if ci_of(report.get(a) or {}, "ap")]
    if avg:
        out += ["", "; ".join(f"{a} AP on {sp}: {with_ci(report[a].get('ap'), ci_of(report[a], 'ap'))}"
                              for a in avg) + "."]
    out.append("")
    src = (report.get("slices") or {}).get("source")
    if src:
        out += [f"### By source ({sp} split)", "",
                "| source | photos | label | positives | " + " | ".join(f"{n}, {sp}" for _, n in RATES[:4]) + " |",
                "|---|---|---|---|---|---|---|---|"]
        for name, s in sorted(src.items()):
            for lab in labels:
                c = (s.get("per_class") or {}).get(lab, {})
                if not c or (not c.get("support") and not c.get("fp")):
                    continue
                cells = [with_ci(c.get(k), ci_of(c, k)) if (k != "precision" or c.get("tp", 0) + c.get("fp", 0))
                         and (k != "recall" or c.get("support")) else "n/a" for k, _ in RATES[:4]]
                out.append(f"| {name} | {s.get('n_images')} | `{lab}` | {c.get('support')} | " + " | ".join(cells)
                           + " |")
        out.append("")
    else:
        out += ["*No by-source figures: the report has no `source` slice (`evaluate --slice-by source`).*", ""]
    if baseline:
        bsp = split_name(baseline)
        out += ["### Against a baseline", "", f"| label | AP, this model, {sp} | AP, baseline, {bsp} |",
                "|---|---|---|"]
        for lab in labels:
            a, b = per_class.get(lab, {}), (baseline.get("per_class") or {}).get(lab, {})
            out.append(f"| `{lab}` | {with_ci(a.get('ap'), ci_of(a, 'ap'))} | "
                       f"{with_ci(b.get('ap'), ci_of(b, 'ap'))} |")
        out.append("")
    return out


def operating_points(meta: Mapping[str, Any], report: Mapping[str, Any],
                     int8: Optional[Mapping[str, Any]]) -> List[str]:
    labels, sp = list(meta["labels"]), split_name(report)
    m8 = (int8 or {}).get("meta")
    out = ["## Operating points", "",
           "A score at or above a label's threshold flags it; a score in the review band [low, threshold) should "
           "go to a human review queue rather than be dropped."]
    head = [f"fp32 threshold", "fp32 review band", f"fp32 precision, {sp}", f"fp32 recall, {sp}"]
    r8 = (int8 or {}).get("report")
    if m8:
        mx = r8 or m8.get("metrics") or {}
        s8, failing = split_name(mx), gate_failed(m8)
        tag = "INT8 (**FAILING its gate**)" if failing else "INT8"
        head += [f"{tag} threshold", f"{tag} review band", f"{tag} precision, {s8}", f"{tag} recall, {s8}"]
        out += ["", f"The INT8 model `{int8.get('file') or 'model.int8.onnx'}` has its own thresholds and review "
                "bands, chosen on its own scores; its figures are from "
                + ("its own evaluation report on the same split." if r8 else "its own metadata.")]
    out += ["", "| label | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for lab in labels:
        c = (report.get("per_class") or {}).get(lab, {})
        band = (meta.get("review_bands") or {}).get(lab, [None, None])
        cells = [fmt(meta["thresholds"][lab]), f"[{fmt(band[0])}, {fmt(band[1])})",
                 with_ci(c.get("precision"), ci_of(c, "precision")), with_ci(c.get("recall"), ci_of(c, "recall"))]
        if m8:
            c8 = ((r8 or m8.get("metrics") or {}).get("per_class") or {}).get(lab, {})
            b8 = (m8.get("review_bands") or {}).get(lab, [None, None])
            cells += [fmt((m8.get("thresholds") or {}).get(lab)), f"[{fmt(b8[0])}, {fmt(b8[1])})",
                      with_ci(c8.get("precision"), ci_of(c8, "precision")),
                      with_ci(c8.get("recall"), ci_of(c8, "recall"))]
        out.append(f"| `{lab}` | " + " | ".join(cells) + " |")
    out.append("")
    if int8:
        out += int8_section(int8)
    else:
        out += ["*No INT8 operating point: no `--int8` model given.*", ""]
    return out + calibration(meta, report)


def int8_section(int8: Mapping[str, Any]) -> List[str]:
    m8 = int8.get("meta")
    out = ["### INT8 model", ""]
    if not m8:
        out += ["An INT8 model (onnxruntime static quantisation, `wildlife-vision export --int8`) was made and "
                f"evaluated but is **not shipped**: {int8.get('summary', '')}.", ""]
        return out
    gate = int8_gate(m8)
    if gate is None:
        out.append(f"`{int8.get('file')}`: its metadata has no `int8_gate` block, so it was not checked against "
                   "the fp32 model.")
    elif gate_failed(m8):
        out.append(f"**FAILING: `{int8.get('file')}` did not pass its INT8 gate** (its metadata says so); it is "
                   "described here for comparison, not for use.")
    else:
        out.append(f"`{int8.get('file')}` passed its INT8 gate (recorded in its metadata).")
    if gate:
        out += gate_lines(gate)
    t = (m8.get("metrics") or {}).get("int8_vs_fp32") or {}
    ma = t.get("macro") or {}
    if ma.get("ap_fp32") is not None and ma.get("ap_int8") is not None:
        out.append(f"- macro AP fp32 {fmt(ma['ap_fp32'], 4)} -> INT8 {fmt(ma['ap_int8'], 4)} on "
                   f"{t.get('val_images', '?')} photos scored by both (paired; same photos).")
    if int8.get("summary"):
        out.append(f"- {int8['summary']}")
    return out + [""]


def gate_lines(gate: Mapping[str, Any]) -> List[str]:
    """The INT8 gate: its rule, a row per label (AP drop, the matched figure's drop with its paired interval,
    whether it passed) and its failures; other keys as they are."""
    out: List[str] = []
    if gate.get("rule"):
        out.append(f"- gate rule (on {gate.get('n_images', '?')} photos of the {split_name(gate)} split): "
                   f"{gate['rule']}.")
    per = gate.get("per_label")
    if isinstance(per, Mapping) and per:
        fig = gate.get("matched_figure", "recall")
        out += ["", f"| label | AP fp32 -> INT8, {split_name(gate)} | AP drop | {fig} fp32 -> INT8 | {fig} drop "
                "[95% paired interval] | passed |", "|---|---|---|---|---|---|"]
        for lab, g in per.items():
            if not isinstance(g, Mapping) or not g.get("gated"):
                out.append(f"| `{lab}` | {(g or {}).get('note', 'not gated') if isinstance(g, Mapping) else g} "
                           "| | | | |")
                continue
            ci = g.get("drop_ci95") if isinstance(g.get("drop_ci95"), Mapping) else {}
            f32, q8 = g.get("fp32") or {}, g.get("int8") or {}
            out.append(f"| `{lab}` | {fmt(g.get('ap_fp32'), 4)} -> {fmt(g.get('ap_int8'), 4)} | "
                       f"{with_ci(g.get('ap_drop'), ci.get('ap'), 4)} | {fmt(f32.get(fig))} -> {fmt(q8.get(fig))} | "
                       f"{with_ci(g.get(f'{fig}_drop'), ci.get(fig))} | {'yes' if g.get('passed') else '**no**'} |")
        out.append("")
    out += [f"- gate failure: {f}" for f in gate.get("failures") or []]
    known = {"passed", "rule", "per_label", "failures", "split", "n_images", "matched_figure"}
    out += [f"- gate `{k}`: `{json.dumps(v, sort_keys=True, default=str)}`" for k, v in gate.items() if k not in known]
    return out


def calibration(meta: Mapping[str, Any], report: Mapping[str, Any]) -> List[str]:
    cal = meta.get("calibration") or {}
    if not cal:
        return ["### Calibration", "", "*No calibration block in the model's metadata: how the thresholds were "
                "chosen is not recorded.*", ""]
    n, csp = cal.get("n_images"), split_name(cal)
    data = cal.get("data_sha256") or cal.get("manifest_sha256")
    target = cal.get("target_precision", cal.get("value", "?"))
    line = (f"Thresholds were chosen per label on {n if n is not None else '?'} photos of the {csp} split ("
            + (f"data sha256 `{data}`" if data else "data hash not recorded") + ") for a target "
            f"{cal.get('target', 'precision')} of {target}"
            + (f" at prevalence {cal['target_prevalence']}" if cal.get("target_prevalence") is not None else "")
            + (f": {cal['rule']}" if cal.get("rule") else "") + ".")
    at_prev = cal.get("target_prevalence") is not None
    out = ["### Calibration", "", line, "",
           f"| label | positives | prevalence, {csp} | precision, {csp} | recall, {csp} | "
           + (f"precision at prevalence {cal['target_prevalence']} | " if at_prev else "")
           + "recall incl. review | share of photos in review |",
           "|---|---|---|---|---|---|---|" + ("---|" if at_prev else "")]
    for lab in meta["labels"]:
        p = (cal.get("per_label") or {}).get(lab, {})
        a = p.get("at_sample") if isinstance(p.get("at_sample"), Mapping) else p
        prev = p.get("sample_prevalence", p.get("prevalence"))
        pos = p.get("positives", p.get("support"))
        if prev is None and pos is not None and n:
            prev = pos / n
        review = p.get("review_rate", p.get("review_fraction"))
        cells = [str(pos if pos is not None else "?"), fmt(prev), with_ci(a.get("precision"), ci_of(a, "precision")),
                 with_ci(a.get("recall"), ci_of(a, "recall"))]
        if at_prev:
            ap = p.get("at_prevalence") or {}
            cells.append(with_ci(ap.get("precision"), ap.get("precision_ci95")))
        cells += [fmt(p.get("review_recall")),
                  with_ci(review, p.get("review_rate_ci95")) if p.get("review_rate_ci95") else fmt(review)]
        out.append(f"| `{lab}` | " + " | ".join(cells) + " |")
    out.append("")
    if cal.get("split") and cal.get("split") == report.get("split"):
        out += [f"The thresholds were chosen on the same {csp} split this card's metrics come from (and training "
                "may have picked its best epoch on it), so these figures are somewhat optimistic: report final "
                "figures on a split used for neither.", ""]
    return out


def base_rates(labels: Sequence[str], report: Mapping[str, Any]) -> List[str]:
    sp, per_class = split_name(report), report.get("per_class") or {}
    rows = [(lab, r) for lab in labels for r in (per_class.get(lab, {}).get("base_rates") or [])]
    out = ["## Precision at lower base rates", ""]
    if not rows:
        return out + ["*Left out: the report has no `base_rates` (precision at the prevalences a platform sees, "
                      "from the recall and false-positive rate measured on the split).*", ""]
    out += [f"From each label's recall and false-positive rate on the {sp} split at its threshold: the precision "
            "expected where positives are rarer than in this data, and what that means per million photos.", "",
            f"| label | prevalence | precision (from {sp}) | flagged per million | true positives per million |",
            "|---|---|---|---|---|"]
    for lab, r in rows:
        pm = r.get("per_million") or {}
        out.append(f"| `{lab}` | {r.get('prevalence')} | {with_ci(r.get('precision'), r.get('precision_ci95'))} | "
                   f"{_count(pm.get('flagged'))} | {_count(pm.get('true'))} |")
    return out + [""]


def _count(x: Any) -> str:
    return f"{x:,.0f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "n/a"


def negative_sources(labels: Sequence[str], report: Mapping[str, Any]) -> List[str]:
    neg = report.get("negative_sources") or {}
    out = ["## Flag rates on negatives-only sources", ""]
    if not neg:
        return out + ["*Left out: the report has no `negative_sources` (photos with none of the labels, such as "
                      "everyday listings, where every flag is a false positive).*", ""]
    out += ["Every photo of these sources has none of the labels, so every flag is a false alarm and every "
            "review-band score an unneeded review.", "",
            "| source | split | photos | label | flag rate | review rate |", "|---|---|---|---|---|---|"]
    for name, s in sorted(neg.items()):
        for lab in labels:
            c = (s.get("per_class") or {}).get(lab)
            if c is None:
                continue
            out.append(f"| {name} | {split_name(s) if s.get('split') else split_name(report)} | "
                       f"{s.get('n_images', '?')} | `{lab}` | {with_ci(c.get('flag_rate'), ci_of(c, 'flag_rate'))}"
                       f" | {with_ci(c.get('review_rate'), ci_of(c, 'review_rate'))} |")
    return out + [""]


def robustness(labels: Sequence[str], rob: Optional[Mapping[str, Any]], origin: str) -> List[str]:
    out = ["## Robustness to photo edits", ""]
    if not rob:
        return out + ["*Left out: no robustness results (`--robustness robustness.json`, or a `robustness` block in "
                      "the report).*", ""]
    out += [f"Score changes when {rob.get('n_images', '?')} photos of the {split_name(rob)} split are edited "
            f"({origin}); a flip is a photo whose flag changes at the thresholds "
            f"{', '.join(f'`{k}` {fmt(v)}' for k, v in (rob.get('thresholds') or {}).items()) or '(not recorded)'}."
            " In brackets: 95% intervals.", "",
            "| edit | label | median change | 95th-percentile change | largest change | flip rate | flips |",
            "|---|---|---|---|---|---|---|"]
    for name, e in (rob.get("edits") or {}).items():
        for lab in labels:
            c = (e.get("per_class") or {}).get(lab)
            if c is None:
                continue
            ci = c.get("ci95") or {}
            out.append(f"| {name} | `{lab}` | {fmt(c.get('p50_abs_change'))} | "
                       f"{with_ci(c.get('p95_abs_change'), ci.get('p95_abs_change'))} | "
                       f"{fmt(c.get('max_abs_change'))} | {with_ci(c.get('flip_rate'), ci.get('flip_rate'))} | "
                       f"{c.get('flips', '?')} |")
    out.append("")
    out += [f"- **{name}**: {e.get('description', '')}" for name, e in (rob.get("edits") or {}).items()]
    return out + [""]


def heatmaps(meta: Mapping[str, Any], report: Mapping[str, Any]) -> List[str]:
    """Whether the file explains its scores, and how faithful its heatmaps are (the report's deletion test)."""
    out = ["## Heatmaps and their faithfulness", ""]
    if not meta.get("heatmap"):
        return out + ["*This file has no heatmap output (`Model.explain` refuses it): it was exported before "
                      "heatmaps; `wildlife-vision heatmaps MODEL.onnx --output NEW.onnx` adds one.*", ""]
    out += ["`Model.explain` and `predict --explain DIR` give each label's class activation map over the upright "
            "photo, computed in the same pass as the scores (the `cam` output: the classifier's weights over the "
            "last feature map; its spatial mean is the label's logit).", ""]
    faith = report.get("faithfulness")
    if not faith:
        return out + ["*Left out: no deletion test in the report (`wildlife-vision evaluate --faithfulness`).*", ""]
    from .faithfulness import to_markdown as faithfulness_markdown

    return out + [faithfulness_markdown(faith), ""]


def training_data(labels: Sequence[str], sources: Optional[Sequence[Mapping[str, Any]]],
                  card: Optional[DataCard]) -> List[str]:
    out = ["## Training data and licences", ""]
    out.append(f"Data set `{card.name}` (data card `{card.path}`)." if card else
               "*No data card (`--data-card`, e.g. `datasets/NAME.md`): the sources and licences of the training "
               "data are not described here.*")
    out.append("")
    if sources:
        splits = sorted({k for s in sources for k in s["splits"]},
                        key=lambda k: (["train", "val", "test"] + [k]).index(k))
        out += ["| source | licence | " + " | ".join(splits) + " | labels |",
                "|---|---|" + "---|" * len(splits) + "---|"]
        for s in sources:
            labs = ", ".join(f"{k} {v}" for k, v in sorted(s["labels"].items()))
            out.append(f"| {s['source']} | {s['license']} | " + " | ".join(str(s['splits'].get(k, 0)) for k in splits)
                       + f" | {labs} |")
        out.append("")
    else:
        out += ["*No per-source table: no training manifest given (`--data MANIFEST`).*", ""]
    text = _copied(card, "sources", labels)
    if text:
        out += [text, ""]
    elif card:
        out += [f"*The data card `{card.path}` has no `## Sources and licences` section.*", ""]
    return out


def failure_modes(labels: Sequence[str], card: Optional[DataCard]) -> List[str]:
    out = ["## Known failure modes and biases", ""]
    text = _copied(card, "failure_modes", labels)
    if text:
        out += [f"From the data card `{card.path}`:", "", text, ""]
    else:
        out += ["*No failure modes specific to the training data: " +
                (f"the data card `{card.path}` has no `## Known failure modes` section."
                 if card else "no data card (`--data-card`).") +
                " Look for them: slice the evaluation by source and check negatives-only sources.*", ""]
    out += ["- **Photos unlike the evaluation photos** were not measured: the figures above hold for photos like "
            "those of the evaluated split and its sources, and nothing else was.",
            "- Photos of text, screenshots of chats and listings whose product is only described in words are not "
            "understood.", ""]
    return out


def retrain(meta: Mapping[str, Any], reproduce: str) -> List[str]:
    training = meta.get("training") or {}
    out = ["## How to retrain or reproduce", ""]
    if reproduce:
        out += ["This model was produced with:", "", "```bash", reproduce.strip(), "```", ""]
    backbone = meta.get("backbone") or training.get("backbone") or "tf_efficientnet_lite0"
    out += ["To retrain on your own labelled photos, write a manifest (`datasets/README.md`) and a data card for it "
            "(`datasets/NAME.md`), check it (`wildlife-vision data stats`, `data dedup`, `data check`), then run "
            f"`wildlife-vision train --data MANIFEST --model {backbone} --epochs {training.get('epochs', 8)} "
            "--output runs/mine`, `wildlife-vision export runs/mine --output mine.onnx --int8`, `wildlife-vision "
            "evaluate --model mine.onnx ...` and `wildlife-vision model-card mine.onnx --report ... --data-card "
            "datasets/NAME.md` for its card. The resolved training configuration is in the model's metadata "
            "(`wildlife-vision info MODEL --json`).", ""]
    return out


def render_card(meta: Mapping[str, Any], report: Mapping[str, Any], *, sources=None, baseline=None,
                model_file: str = "", int8: Optional[Mapping[str, Any]] = None, reproduce: str = "",
                data_card: Optional[DataCard] = None, robustness_block: Optional[Mapping[str, Any]] = None,
                robustness_origin: str = "", profiles_block: Sequence[str] = ()) -> str:
    labels = list(meta["labels"])
    out = (header(meta, report, model_file, data_card) + uses(labels, data_card) + classes(labels, report)
           + metrics(labels, report, baseline) + operating_points(meta, report, int8) + list(profiles_block)
           + base_rates(labels, report)
           + negative_sources(labels, report) + robustness(labels, robustness_block, robustness_origin)
           + heatmaps(meta, report)
           + training_data(labels, sources, data_card) + failure_modes(labels, data_card) + retrain(meta, reproduce))
    return "\n".join(out)


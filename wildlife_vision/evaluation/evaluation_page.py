"""`evaluate`'s report as one self-contained HTML page, built from the same parts as the review page.

:func:`write_evaluation_page` renders a report dict of :func:`wildlife_vision.evaluation.evaluate.build_report`
(per-label metrics with their 95% intervals, confusion counts, base rates, negatives-only sources, slices),
precision-recall curves drawn as inline SVG from :func:`pr_curve_points` (or a PNG plot when no points are
given), any other plots inlined as ``data:`` URIs, and the most confident mistakes as the review page's card
grid, with heatmap overlays where given. Like the review page it loads nothing from the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .review_images import THUMB_SIZE, ThumbnailStore, plot_data_uri
from .review_page import Thresholds, clean_text, esc, grid_section, html_page, notes_html

PathLike = Union[str, os.PathLike]

MISTAKE_BANDS = (("fp", "false positive"), ("fn", "missed positive"))
#: line colours of the PR curves, by label order
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def pr_curve_points(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str],
                    max_points: int = 400) -> Dict[str, Dict[str, List[float]]]:
    """Per label with positives, ``{"recall": [...], "precision": [...], "thresholds": [...]}`` of its PR curve
    (:func:`.metrics.precision_recall_curve`), thinned to at most ``max_points`` points (the last always kept),
    for :func:`write_evaluation_page`'s ``pr_curves``."""
    from .metrics import precision_recall_curve

    y_true, scores = np.asarray(y_true), np.asarray(scores)
    out = {}
    for j, lab in enumerate(labels):
        if y_true[:, j].sum() == 0:
            continue
        p, r, t = precision_recall_curve(y_true[:, j], scores[:, j])
        keep = np.unique(np.linspace(0, len(r) - 1, min(len(r), max_points)).round().astype(int))
        out[lab] = {"recall": [round(float(v), 5) for v in r[keep]],
                    "precision": [round(float(v), 5) for v in p[keep]],
                    "thresholds": [round(float(v), 5) for v in t[keep]]}
    return out


def pr_svg(curves: Mapping[str, Mapping[str, Sequence[float]]], report: Mapping[str, Any]) -> str:
    """Precision against recall as an inline SVG step plot, one line per label, a dot at each label's operating
    threshold (its precision and recall in ``report``)."""
    w, h, left, bottom, top, right = 400, 340, 44, 38, 12, 12
    pw, ph = w - left - right, h - top - bottom

    def x(v: float) -> float:
        return round(left + pw * max(0.0, min(1.0, float(v))), 2)

    def y(v: float) -> float:
        return round(top + ph * (1 - max(0.0, min(1.02, float(v))) / 1.02), 2)

    parts = [f'<svg id="wv-pr" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
             'role="img" aria-label="precision-recall curves">', f'<rect x="{left}" y="{top}" width="{pw}" '
             f'height="{ph}" fill="#fff" stroke="#c5ccd1"/>']
    for k in range(6):
        v = k / 5
        parts.append(f'<line x1="{x(v)}" y1="{top}" x2="{x(v)}" y2="{top + ph}" stroke="#eef0f2"/>'
                     f'<line x1="{left}" y1="{y(v)}" x2="{left + pw}" y2="{y(v)}" stroke="#eef0f2"/>'
                     f'<text x="{x(v)}" y="{top + ph + 14}" text-anchor="middle">{v:.1f}</text>'
                     f'<text x="{left - 6}" y="{y(v) + 4}" text-anchor="end">{v:.1f}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{h - 6}" text-anchor="middle">recall</text>'
                 f'<text x="12" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 12 {top + ph / 2})">'
                 'precision</text>')
    labels = list(report.get("labels") or curves)
    for i, lab in enumerate(labels):
        c = curves.get(lab)
        if not c:
            continue
        colour = COLOURS[i % len(COLOURS)]
        m = (report.get("per_class") or {}).get(lab, {})
        ap = m.get("ap")
        d = [f"M{x(0)},{y(1)}"] + [f"H{x(r)}V{y(p)}" for r, p in zip(c["recall"], c["precision"])]
        parts.append(f'<path class="wv-pr-line" data-label="{esc(lab)}" d="{"".join(d)}" fill="none" '
                     f'stroke="{colour}" stroke-width="1.6"><title>{esc(lab)}'
                     f'{"" if ap is None else f" AP {ap:.3f}"}</title></path>')
        if m.get("precision") is not None and m.get("recall") is not None:
            parts.append(f'<circle cx="{x(m["recall"])}" cy="{y(m["precision"])}" r="4" fill="{colour}" '
                         f'stroke="#fff"><title>{esc(lab)} at threshold {m.get("threshold", 0):.3f}: precision '
                         f'{m["precision"]:.3f}, recall {m["recall"]:.3f}</title></circle>')
        ly = top + ph - 14 - 16 * (len(labels) - 1 - i)
        parts.append(f'<line x1="{left + 10}" y1="{ly}" x2="{left + 28}" y2="{ly}" stroke="{colour}" '
                     f'stroke-width="2"/><text x="{left + 32}" y="{ly + 4}">{esc(lab)}'
                     f'{"" if ap is None else f" (AP {ap:.3f})"}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _num(v: Any) -> str:
    return "\u2013" if v is None else (f"{v:.3f}" if isinstance(v, float) else esc(v))


def _ci(value: Any, ci: Any) -> str:
    if value is None:
        return "\u2013"
    if ci and len(ci) == 2 and ci[0] is not None:
        return f"{value:.3f} <span class=\"wv-ci\">[{ci[0]:.3f}, {ci[1]:.3f}]</span>"
    return _num(value)


def metrics_table(report: Mapping[str, Any]) -> str:
    """Per label: positives, negatives, threshold, review band and the figures with their 95% intervals."""
    keys = (("precision", "precision"), ("recall", "recall"), ("fpr", "false-positive rate"),
            ("flag_rate", "flag rate"), ("review_rate", "review rate"), ("ap", "AP"))
    head = ("<tr><th>label</th><th class=\"num\">positives</th><th class=\"num\">negatives</th>"
            "<th class=\"num\">threshold</th><th class=\"num\">review band</th>"
            + "".join(f"<th class=\"num\">{name}</th>" for _, name in keys)
            + "<th class=\"num\">ROC-AUC</th><th class=\"num\">ECE</th></tr>")
    rows = []
    bands = report.get("review_bands") or {}
    for lab, m in (report.get("per_class") or {}).items():
        ci = m.get("ci95") or {}
        band = bands.get(lab)
        negatives = m.get("negatives", m.get("fp", 0) + m.get("tn", 0))
        rows.append(f"<tr><td>{esc(lab)}</td><td class=\"num\">{m.get('support', 0):,}</td>"
                    f"<td class=\"num\">{negatives:,}</td><td class=\"num\">{_num(m.get('threshold'))}</td>"
                    f"<td class=\"num\">{f'[{band[0]:.3f}, {band[1]:.3f})' if band else chr(8211)}</td>"
                    + "".join(f"<td class=\"num\">{_ci(m.get(k), ci.get(k))}</td>" for k, _ in keys)
                    + f"<td class=\"num\">{_num(m.get('roc_auc'))}</td><td class=\"num\">{_num(m.get('ece'))}</td>"
                      "</tr>")
    for avg in ("macro", "micro"):
        m = report.get(avg) or {}
        rows.append(f"<tr><td><i>{avg}</i></td><td></td><td></td><td></td><td></td>"
                    f"<td class=\"num\">{_num(m.get('precision'))}</td><td class=\"num\">{_num(m.get('recall'))}"
                    "</td><td></td><td></td><td></td>"
                    f"<td class=\"num\">{_num(m.get('ap'))}</td><td class=\"num\">{_num(m.get('roc_auc'))}</td>"
                    "<td></td></tr>")
    return f"<table id=\"wv-metrics\">{head}{''.join(rows)}</table>"


def confusion_tables(report: Mapping[str, Any]) -> str:
    """One 2x2 table per label at its threshold."""
    out = []
    for lab, m in (report.get("per_class") or {}).items():
        out.append(f"<table class=\"wv-confusion\"><tr><th>{esc(lab)} (t={_num(m.get('threshold'))})</th>"
                   "<th class=\"num\">not flagged</th><th class=\"num\">flagged</th></tr>"
                   f"<tr><th>negative</th><td class=\"num\">{m.get('tn', 0):,}</td>"
                   f"<td class=\"num\">{m.get('fp', 0):,}</td></tr>"
                   f"<tr><th>positive</th><td class=\"num\">{m.get('fn', 0):,}</td>"
                   f"<td class=\"num\">{m.get('tp', 0):,}</td></tr></table>")
    return "<div class=\"wv-plots\">" + "".join(out) + "</div>"


def _n(value: Any, spec: str = ",") -> str:
    """A number for a table cell; "–" when the report has none (e.g. no positives in the sample)."""
    return "–" if value is None else format(value, spec)


def base_rate_table(report: Mapping[str, Any]) -> str:
    rows = []
    for lab, m in (report.get("per_class") or {}).items():
        for b in m.get("base_rates") or []:
            pm = b.get("per_million") or {}
            rows.append(f"<tr><td>{esc(lab)}</td><td class=\"num\">{_n(b.get('prevalence'), 'g')}</td>"
                        f"<td class=\"num\">{_ci(b.get('precision'), b.get('precision_ci95'))}</td>"
                        f"<td class=\"num\">{_n(pm.get('flagged'))}</td><td class=\"num\">{_n(pm.get('true'))}</td>"
                        f"<td class=\"num\">{_n(pm.get('false'))}</td></tr>")
    if not rows:
        return ""
    return ("<h2>At a platform's base rate</h2><table id=\"wv-baserates\"><tr><th>label</th>"
            "<th class=\"num\">prevalence</th><th class=\"num\">precision</th><th class=\"num\">flagged per million"
            "</th><th class=\"num\">of which true</th><th class=\"num\">false</th></tr>" + "".join(rows) + "</table>")


def negative_sources_table(report: Mapping[str, Any]) -> str:
    sources = report.get("negative_sources") or {}
    labels = list(report.get("labels") or [])
    if not sources:
        return ""
    head = "".join(f"<th class=\"num\">{esc(lab)}: flagged / review</th>" for lab in labels)
    rows = []
    for src, s in sources.items():
        pc = s.get("per_class") or {}
        cells = "".join(f"<td class=\"num\">{pc.get(lab, {}).get('flagged', 0):,} / "
                        f"{pc.get(lab, {}).get('review', 0):,}</td>" for lab in labels)
        rows.append(f"<tr><td>{esc(src)}</td><td class=\"num\">{s.get('n_images', 0):,}</td>{cells}</tr>")
    return ("<h2>Negatives-only sources</h2><table id=\"wv-sources\"><tr><th>source</th><th class=\"num\">photos</th>"
            + head + "</tr>" + "".join(rows) + "</table>")


def slices_tables(report: Mapping[str, Any]) -> str:
    labels = list(report.get("labels") or [])
    out = []
    for col, groups in (report.get("slices") or {}).items():
        head = "".join(f"<th class=\"num\">{esc(lab)}: positives / recall / AP / false positives</th>"
                       for lab in labels)
        rows = []
        for value, g in groups.items():
            cells = []
            for lab in labels:
                c = (g.get("per_class") or {}).get(lab, {})
                recall = _num(c.get("recall")) if c.get("support") else "\u2013"
                cells.append(f"<td class=\"num\">{c.get('support', 0):,} / {recall} / {_num(c.get('ap'))} / "
                             f"{c.get('fp', 0):,} of {c.get('fp', 0) + c.get('tn', 0):,}</td>")
            rows.append(f"<tr><td>{esc(value or '(empty)')}</td><td class=\"num\">{g.get('n_images', 0):,}</td>"
                        f"<td class=\"num\">{_num((g.get('macro') or {}).get('ap'))}</td>{''.join(cells)}</tr>")
        out.append(f"<h3>By {esc(col)}</h3><table class=\"wv-slice\"><tr><th>{esc(col)}</th>"
                   f"<th class=\"num\">photos</th><th class=\"num\">macro AP</th>{head}</tr>{''.join(rows)}</table>")
    return ("<h2>Slices</h2>" + "".join(out)) if out else ""


def _mistake_rows(mistakes: Sequence[Mapping[str, Any]], store: ThumbnailStore) -> Tuple[List[Dict[str, Any]], int]:
    """Card rows for the mistakes (see :func:`write_evaluation_page`), and how many photos were unreadable."""
    paths = [Path(m["input"]) if m.get("input") else None for m in mistakes]
    store.prefetch(paths)
    rows, unreadable = [], 0
    for i, (m, path) in enumerate(zip(mistakes, paths)):
        lab, truth = str(m["label"]), int(m["truth"])
        thumb = store.photo(path)
        row: Dict[str, Any] = {"i": i, "o": i, "n": clean_text(m.get("name") or m.get("input") or "?"),
                               "t": thumb.index, "w": thumb.width, "h": thumb.height,
                               "s": {lab: float(m["score"])}, "b": {"fn" if truth else "fp": [lab]},
                               "y": {lab: truth}}
        notes = []
        if thumb.note:
            unreadable += 1
            notes.append(f"photo not shown: {thumb.note}")
        if m.get("heatmap"):
            ov = store.overlay(Path(m["heatmap"]), None if thumb.note else (thumb.width, thumb.height))
            if ov.note:
                notes.append(f"heatmap not shown: {ov.note}")
            else:
                row["m"] = {lab: ov.index}
        if notes:
            row["x"] = clean_text("; ".join(notes))
        rows.append(row)
    return rows, unreadable


def build_evaluation_page(report: Mapping[str, Any], mistakes: Sequence[Mapping[str, Any]] = (),
                          plots: Optional[Mapping[str, PathLike]] = None,
                          pr_curves: Optional[Mapping[str, Mapping[str, Sequence[float]]]] = None, *,
                          thumb_size: int = THUMB_SIZE, workers: int = 1, title: Optional[str] = None) -> str:
    """The evaluation page's HTML; see :func:`write_evaluation_page`."""
    from .review_page import generated_note

    labels = list(report.get("labels") or (report.get("per_class") or {}).keys())
    who = " ".join(str(report.get(k) or "") for k in ("model_name", "model_version")).strip() or \
        str(report.get("model") or "a model")
    split = report.get("split") or "?"
    title = title or f"Evaluation: {who} on {split}"
    notes = []
    n = report.get("n_images", 0)
    iv = report.get("intervals") or {}
    sub = [f"model <b id=\"wv-model\">{esc(who)}</b>"]
    for key in ("model", "manifest"):
        if report.get(key):
            sub.append(f"{key} <code>{esc(report[key])}</code>")
    sub.append(f"split {esc(split)}: {n:,} photos" + (f" ({report['skipped_images']:,} unreadable, skipped)"
                                                     if report.get("skipped_images") else ""))
    sub.append(esc(generated_note()))
    header = f"<h1>{esc(title)}</h1>\n<div class=\"wv-sub\">" + " \u00b7 ".join(sub) + "</div>"
    if iv:
        header += (f"\n<p class=\"wv-sub\">Flagged = score \u2265 the label's threshold. In brackets: "
                   f"{iv.get('confidence', 0.95):.0%} {esc(iv.get('method', 'bootstrap'))} interval "
                   f"({iv.get('resamples', '?')} resamples of {esc(iv.get('unit', 'photo'))}s).</p>")
    body = ["<section id=\"wv-summary\"><h2>Per label</h2>", metrics_table(report), "<h2>Confusion at the "
            "thresholds</h2>", confusion_tables(report), base_rate_table(report), negative_sources_table(report),
            slices_tables(report), "</section>"]
    figures = []
    plots = dict(plots or {})
    if pr_curves:
        figures.append(f"<figure>{pr_svg(pr_curves, report)}<figcaption>Precision-recall (dot: operating "
                       "threshold)</figcaption></figure>")
        plots.pop("pr_curves", None)
    for name, path in plots.items():
        uri, why = plot_data_uri(path)
        if uri is None:
            notes.append(f"plot {name} left out: {why}")
            continue
        figures.append(f"<figure><img src=\"{uri}\" alt=\"{esc(name)}\"><figcaption>{esc(name)}</figcaption>"
                       "</figure>")
    if figures:
        body.append("<section id=\"wv-figures\"><h2>Plots</h2><div class=\"wv-plots\">" + "".join(figures)
                    + "</div></section>")
    if mistakes:
        store = ThumbnailStore(size=thumb_size, workers=workers)
        rows, unreadable = _mistake_rows(mistakes, store)
        if unreadable:
            notes.append(f"{unreadable} mistake photo(s) could not be read and show a placeholder")
        th = Thresholds(thresholds={k: float(v) for k, v in (report.get("thresholds") or {}).items()},
                        review_bands={k: (float(v[0]), float(v[1])) for k, v in
                                      (report.get("review_bands") or {}).items()},
                        source="the report", labels=tuple(labels))
        body.append(grid_section(rows, store.images, labels, th, MISTAKE_BANDS,
                                 heading="The most confident mistakes"))
    if notes:
        header += "\n" + notes_html(notes)
    return html_page(title, header, "\n".join(b for b in body if b))


def write_evaluation_page(report: Mapping[str, Any], out_path: PathLike,
                          mistakes: Sequence[Mapping[str, Any]] = (),
                          plots: Optional[Mapping[str, PathLike]] = None,
                          pr_curves: Optional[Mapping[str, Mapping[str, Sequence[float]]]] = None, *,
                          thumb_size: int = THUMB_SIZE, workers: int = 1, title: Optional[str] = None) -> Path:
    """Write ``report`` (a :func:`~.evaluate.build_report` dict) as one self-contained HTML page; return its path.

    ``mistakes``: dicts ``{"input": photo path, "label": str, "truth": 0 or 1, "score": float, "heatmap": overlay
    image path or None}`` (optional ``"name"``: what the card shows instead of the path); truth 0 is a flagged
    negative, truth 1 a missed positive. Paths are used as given (relative to the current folder); an unreadable
    photo gets a placeholder. ``plots``: name -> PNG/JPEG file, inlined (``"pr_curves"`` is left out when
    ``pr_curves`` is given). ``pr_curves``: :func:`pr_curve_points`, drawn as inline SVG.
    """
    from ..data.manifest import atomic_write_text

    text = build_evaluation_page(report, mistakes, plots, pr_curves, thumb_size=thumb_size, workers=workers,
                                 title=title)
    return atomic_write_text(out_path, text)


__all__ = ["pr_curve_points", "pr_svg", "build_evaluation_page", "write_evaluation_page", "MISTAKE_BANDS"]

"""The review pages' inline style sheet and script, as string constants (no external file, font or script).

:mod:`wildlife_vision.evaluation.review_page` writes them into every page it renders. The script reads two JSON
blobs from the page, ``<script type="application/json" id="wv-rows">`` (labels, thresholds, bands, one short
object per photo) and ``id="wv-images"`` (the list of ``data:`` URIs the rows point into, each thumbnail
stored once), and renders one page of cards at a time, so a few thousand photos stay fast. Row fields:
``n`` name, ``o`` order in the file, ``t`` thumbnail index, ``w``/``h`` its size, ``s`` scores by label, ``b``
band -> labels (e.g. ``{"flagged": ["ivory"]}``), ``m`` heatmap index by label, ``y`` truth by label (evaluation
pages), ``x`` a note (e.g. why the photo could not be shown). Every value is put into the page with
``textContent`` or as an attribute, never as HTML.
"""

from __future__ import annotations

#: Content-Security-Policy of every page: nothing is loaded from anywhere, images only from ``data:`` URIs.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")

CSS = """
:root { --fg: #1d2327; --muted: #5f6b73; --line: #d8dee2; --bg: #f6f7f8; --card: #fff;
        --flag: #c0392b; --review: #c98a00; --ok: #2e7d32; --band: #f5d88c; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); }
header, main > section { padding: 12px 20px; }
header { background: var(--card); border-bottom: 1px solid var(--line); }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 18px 0 8px; }
.wv-sub { color: var(--muted); }
.wv-note { color: #8a4b00; background: #fff4e0; border: 1px solid #f0c98c; border-radius: 4px; padding: 6px 10px;
           margin: 6px 0; }
table { border-collapse: collapse; background: var(--card); margin: 4px 0 8px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.wv-ci { color: var(--muted); font-size: 12px; }
#wv-controls { position: sticky; top: 0; z-index: 2; background: var(--bg); padding: 8px 0;
               display: flex; flex-wrap: wrap; gap: 10px; align-items: center; border-bottom: 1px solid var(--line); }
#wv-controls label { display: inline-flex; gap: 4px; align-items: center; }
#wv-controls select, #wv-controls input[type=search], button { font: inherit; padding: 2px 6px; }
#wv-count { color: var(--muted); }
#wv-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(196px, 1fr)); gap: 10px; padding: 10px 0; }
.wv-card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 6px;
           display: flex; flex-direction: column; gap: 4px; min-width: 0; }
.wv-card.wv-has-flag { border-left: 4px solid var(--flag); }
.wv-card.wv-has-review { border-left: 4px solid var(--review); }
.wv-thumb { height: 184px; display: flex; align-items: center; justify-content: center; background: #eceff1;
            border-radius: 4px; overflow: hidden; position: relative; }
.wv-thumb img { max-width: 100%; max-height: 184px; display: block; }
.wv-thumb .wv-tag { position: absolute; left: 4px; top: 4px; background: rgba(0,0,0,.6); color: #fff;
                    font-size: 11px; padding: 0 4px; border-radius: 3px; }
.wv-name { font-size: 12px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; color: var(--muted); }
.wv-score { display: grid; grid-template-columns: 1fr auto; gap: 0 6px; font-size: 12px; }
.wv-score .wv-lab { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.wv-score.wv-flagged .wv-lab { color: var(--flag); font-weight: 600; }
.wv-score.wv-review .wv-lab { color: var(--review); font-weight: 600; }
.wv-bar { grid-column: 1 / 3; position: relative; height: 6px; background: #e3e7ea; border-radius: 3px; }
.wv-bar .wv-fill { position: absolute; left: 0; top: 0; bottom: 0; background: #7b8a94; border-radius: 3px; }
.wv-flagged .wv-bar .wv-fill { background: var(--flag); }
.wv-review .wv-bar .wv-fill { background: var(--review); }
.wv-bar .wv-bandr { position: absolute; top: 0; bottom: 0; background: var(--band); opacity: .7; }
.wv-bar .wv-thr { position: absolute; top: -2px; bottom: -2px; width: 2px; background: var(--fg); }
.wv-card .wv-x { font-size: 11px; color: #8a4b00; }
.wv-card .wv-kind { font-size: 12px; font-weight: 600; }
.wv-card button.wv-heat { font-size: 11px; align-self: flex-start; }
.wv-card button.wv-heat[aria-pressed=true] { background: var(--fg); color: #fff; }
#wv-pager { display: flex; gap: 8px; align-items: center; padding: 4px 0 16px; }
.wv-legend span { display: inline-block; margin-right: 12px; }
.wv-sw { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; }
.wv-plots { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.wv-plots figure { margin: 0; background: var(--card); border: 1px solid var(--line); padding: 6px; }
.wv-plots img { max-width: 640px; height: auto; display: block; }
svg text { font: 11px system-ui, sans-serif; fill: var(--fg); }
details > summary { cursor: pointer; }
"""

JS = r"""
(function () {
  "use strict";
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  var data = JSON.parse($("wv-rows").textContent);
  var images = JSON.parse($("wv-images").textContent);
  var rows = data.rows, labels = data.labels, pageSize = data.page_size || 60;
  var thresholds = data.thresholds || {}, ranges = data.review_bands || {};
  var bandNames = {};
  data.bands.forEach(function (b) { bandNames[b[0]] = b[1]; });
  var state = {label: "", band: "", sort: "score-desc", query: "", page: 0, overlay: false};
  var shown = [];
  var grid = $("wv-grid");

  function fill(select, options) {
    options.forEach(function (o) { var opt = el("option", null, o[1]); opt.value = o[0]; select.appendChild(opt); });
  }
  fill($("wv-label"), [["", "any label"]].concat(labels.map(function (l) { return [l, l]; })));
  fill($("wv-band"), [["", "any band"]].concat(data.bands));

  function inBand(r, band, label) {
    var ls = (r.b && r.b[band]) || [];
    return label ? ls.indexOf(label) >= 0 : ls.length > 0;
  }
  function matches(r) {
    if (state.query && r.n.toLowerCase().indexOf(state.query) < 0) { return false; }
    if (!state.band && !state.label) { return true; }
    var bands = state.band ? [state.band] : Object.keys(r.b || {});
    for (var i = 0; i < bands.length; i++) { if (inBand(r, bands[i], state.label)) { return true; } }
    return false;
  }
  function score(r) {
    if (state.label) { var v = r.s[state.label]; return typeof v === "number" ? v : -1; }
    var best = -1;
    for (var k in r.s) { if (typeof r.s[k] === "number" && r.s[k] > best) { best = r.s[k]; } }
    return best;
  }
  function compare(a, b) {
    if (state.sort === "name") { return a.n < b.n ? -1 : a.n > b.n ? 1 : a.o - b.o; }
    if (state.sort === "order") { return a.o - b.o; }
    var d = score(a) - score(b);
    if (d === 0) { return a.o - b.o; }
    return state.sort === "score-asc" ? d : -d;
  }
  function heatLabel(r) {
    var m = r.m || {};
    if (state.label && m[state.label] !== undefined) { return state.label; }
    var keys = Object.keys(m);
    keys.sort(function (a, b) { return (r.s[b] || 0) - (r.s[a] || 0); });
    return keys.length ? keys[0] : null;
  }
  function setImage(card, heat) {
    var r = rows[card.dataset.row], img = card.querySelector("img"), tag = card.querySelector(".wv-tag");
    var lab = heat ? heatLabel(r) : null;
    if (lab !== null) {
      img.src = images[r.m[lab]]; img.dataset.kind = "heatmap"; img.alt = "heatmap for " + lab + ": " + r.n;
      tag.textContent = "heatmap: " + lab; tag.hidden = false;
    } else {
      img.src = images[r.t]; img.dataset.kind = "photo"; img.alt = r.n; tag.hidden = true;
    }
  }
  function wantsHeat(card) { return state.overlay || card.dataset.pinned === "1" || card.dataset.hover === "1"; }

  function scoreLine(r, lab) {
    var s = r.s[lab], t = thresholds[lab], band = ranges[lab];
    var cls = "wv-score";
    if (r.b && r.b.flagged && r.b.flagged.indexOf(lab) >= 0) { cls += " wv-flagged"; }
    else if (r.b && r.b.review && r.b.review.indexOf(lab) >= 0) { cls += " wv-review"; }
    else if (r.y && typeof s === "number" && typeof t === "number" && s >= t) { cls += " wv-flagged"; }
    var line = el("div", cls);
    line.appendChild(el("span", "wv-lab", lab));
    var txt = typeof s === "number" ? s.toFixed(3) : "-";
    if (typeof t === "number") { txt += (typeof s === "number" && s >= t ? " \u2265 " : " < ") + t.toFixed(3); }
    line.appendChild(el("span", "wv-val", txt));
    line.title = lab + ": score " + txt + (band ? ", review band [" + band[0].toFixed(3) + ", " +
                                            band[1].toFixed(3) + ")" : "");
    var bar = el("div", "wv-bar");
    if (band && band[1] > band[0]) {
      var br = el("span", "wv-bandr");
      br.style.left = (100 * band[0]) + "%"; br.style.width = (100 * (band[1] - band[0])) + "%";
      bar.appendChild(br);
    }
    var f = el("span", "wv-fill");
    f.style.width = (typeof s === "number" ? 100 * Math.max(0, Math.min(1, s)) : 0) + "%";
    bar.appendChild(f);
    if (typeof t === "number") { var th = el("span", "wv-thr"); th.style.left = "calc(" + (100 * t) + "% - 1px)"; bar.appendChild(th); }
    line.appendChild(bar);
    return line;
  }
  function cardLabels(r) {
    if (r.y) { return Object.keys(r.y); }
    if (labels.length <= 4) { return labels; }
    var out = [];
    Object.keys(r.b || {}).forEach(function (b) { (r.b[b] || []).forEach(function (l) { if (out.indexOf(l) < 0) { out.push(l); } }); });
    if (state.label && out.indexOf(state.label) < 0) { out.unshift(state.label); }
    return out.length ? out : labels.slice(0, 2);
  }
  function card(r) {
    var c = el("div", "wv-card");
    c.dataset.row = r.i;
    if (inBand(r, "flagged", "") || inBand(r, "fp", "") || inBand(r, "fn", "")) { c.className += " wv-has-flag"; }
    else if (inBand(r, "review", "")) { c.className += " wv-has-review"; }
    var th = el("div", "wv-thumb"), img = el("img");
    img.width = r.w; img.height = r.h; img.decoding = "async";
    th.appendChild(img);
    var tag = el("span", "wv-tag"); tag.hidden = true; th.appendChild(tag);
    c.appendChild(th);
    var base = r.n.replace(/[\\/]+$/, "").split(/[\\/]/).pop() || r.n;
    var name = el("div", "wv-name", base); name.title = r.n; c.appendChild(name);
    if (r.y) {  // evaluation mistakes: say which kind
      Object.keys(r.b || {}).forEach(function (b) {
        c.appendChild(el("div", "wv-kind", (bandNames[b] || b) + ": " + r.b[b].join(", ")));
      });
    }
    cardLabels(r).forEach(function (lab) { c.appendChild(scoreLine(r, lab)); });
    if (r.x) { c.appendChild(el("div", "wv-x", r.x)); }
    if (r.m && Object.keys(r.m).length) {
      var btn = el("button", "wv-heat", "heatmap");
      btn.type = "button"; btn.setAttribute("aria-pressed", "false");
      btn.addEventListener("click", function () {
        c.dataset.pinned = c.dataset.pinned === "1" ? "0" : "1";
        btn.setAttribute("aria-pressed", c.dataset.pinned === "1" ? "true" : "false");
        setImage(c, wantsHeat(c));
      });
      c.appendChild(btn);
      th.addEventListener("mouseenter", function () { c.dataset.hover = "1"; setImage(c, true); });
      th.addEventListener("mouseleave", function () { c.dataset.hover = "0"; setImage(c, wantsHeat(c)); });
    }
    setImage(c, wantsHeat(c));
    return c;
  }
  function render() {
    var pages = Math.max(1, Math.ceil(shown.length / pageSize));
    state.page = Math.max(0, Math.min(state.page, pages - 1));
    var start = state.page * pageSize, end = Math.min(shown.length, start + pageSize);
    var frag = document.createDocumentFragment();
    for (var i = start; i < end; i++) { frag.appendChild(card(shown[i])); }
    grid.textContent = "";
    grid.appendChild(frag);
    $("wv-count").textContent = shown.length ? ("photos " + (start + 1) + "\u2013" + end + " of " + shown.length +
      " matching, of " + rows.length + " in this report") :
      ("no photo matches (" + rows.length + " in this report)");
    $("wv-page").textContent = "page " + (state.page + 1) + " of " + pages;
    $("wv-prev").disabled = state.page === 0;
    $("wv-next").disabled = state.page >= pages - 1;
  }
  function update() {
    shown = rows.filter(matches);
    shown.sort(compare);
    render();
  }
  function on(id, ev, f) { $(id).addEventListener(ev, f); }
  on("wv-label", "change", function (e) { state.label = e.target.value; state.page = 0; update(); });
  on("wv-band", "change", function (e) { state.band = e.target.value; state.page = 0; update(); });
  on("wv-sort", "change", function (e) { state.sort = e.target.value; state.page = 0; update(); });
  on("wv-query", "input", function (e) { state.query = e.target.value.toLowerCase(); state.page = 0; update(); });
  on("wv-overlay", "change", function (e) {
    state.overlay = e.target.checked;
    Array.prototype.forEach.call(grid.children, function (c) { setImage(c, wantsHeat(c)); });
  });
  on("wv-prev", "click", function () { state.page -= 1; render(); window.scrollTo(0, grid.offsetTop - 60); });
  on("wv-next", "click", function () { state.page += 1; render(); window.scrollTo(0, grid.offsetTop - 60); });
  $("wv-overlay").disabled = !rows.some(function (r) { return r.m && Object.keys(r.m).length; });
  update();
  document.body.dataset.ready = "1";
})();
"""

"""The review page (`wildlife-vision report`) and `evaluate`'s HTML page, without a browser: self-contained, one
card entry per flagged or review row, error rows listed, thumbnails as data URIs (upright, heatmaps the photo's
size), broken photos as placeholders, hostile strings escaped, thousands of rows fast and small, exit codes."""

from __future__ import annotations

import base64
import io
import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import make_photo, make_tiny_model, tiny_metadata
from wildlife_vision.cli import main as cli_main
from wildlife_vision.evaluation.evaluation_page import pr_curve_points, write_evaluation_page
from wildlife_vision.evaluation.review_page import (RecordsError, build_review_page, read_records,
                                                    write_review_page)

SCHEMA = "wildlife-vision/prediction/v1"
LABELS = ("ivory", "live_animal")


def record(name, scores=None, flagged=(), review=(), error=None, kind=None, heatmaps=None,
           model=("tiny-test-model", "0.0.1")):
    rec = {"schema": SCHEMA, "input": name, "error": error, "error_kind": kind if error else None,
           "flagged": list(flagged), "review": list(review), "scores": {} if error else dict(scores or {}),
           "model": model[0], "model_version": model[1]}
    if heatmaps:
        rec["heatmaps"] = heatmaps
    return rec


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_records(folder: Path, n: int, n_photos: int = 5, size=(320, 240), errors: int = 2, seed: int = 0,
                 model=("tiny-test-model", "0.0.1")):
    """``n`` scored rows over ``n_photos`` generated photos (relative names), a red overlay PNG per photo named in
    ``heatmaps`` for every flagged row, and ``errors`` error rows; returns (records path, the rows)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n_photos):
        make_photo(k, size).save(folder / f"photo_{k}.jpg", quality=90)
        Image.new("RGB", size, (255, 40 * k % 256, 0)).save(folder / f"heat_{k}.png")
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = i % n_photos
        s = {"ivory": round(float(rng.random()), 4), "live_animal": round(float(rng.random()), 4)}
        flagged = [lab for lab in LABELS if s[lab] >= 0.7]
        review = [lab for lab in LABELS if 0.5 <= s[lab] < 0.7]
        heat = {lab: f"heat_{k}.png" for lab in flagged}
        rows.append(record(f"photo_{k}.jpg", s, flagged, review, heatmaps=heat, model=model))
    for e in range(errors):
        rows.append(record(f"broken_{e}.jpg", error=f"truncated JPEG file: image file is truncated ({e})",
                           kind="truncated", model=model))
    return write_jsonl(folder / "preds.jsonl", rows), rows


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(html_text: str):
    p = _Tags()
    p.feed(html_text)
    return p


def blob(html_text: str, element_id: str):
    m = re.search(r'<script type="application/json" id="%s">(.*?)</script>' % element_id, html_text, re.S)
    assert m, f"no {element_id} blob"
    return json.loads(m.group(1))


def decode_uri(uri: str) -> Image.Image:
    head, data = uri.split(",", 1)
    assert head in ("data:image/jpeg;base64", "data:image/png;base64"), head
    return Image.open(io.BytesIO(base64.b64decode(data)))


def assert_self_contained(text: str) -> None:
    tags = parse(text).tags
    csp = [a.get("content", "") for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0] and "img-src data:" in csp[0], csp
    assert "connect-src" not in csp[0] and "http" not in csp[0]
    for tag, attrs in tags:
        assert tag not in ("link", "iframe", "object", "embed", "base"), tag
        if tag == "script":
            assert "src" not in attrs, attrs
        for key in ("src", "href", "srcset", "poster", "action", "data"):
            if key in attrs:
                assert attrs[key].startswith("data:") or attrs[key].startswith("#"), (tag, key, attrs[key][:60])
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", text, re.I)
    assert not re.search(r"url\(\s*[\"']?(https?:)?//", text, re.I)
    assert "@import" not in text


# ---- the page --------------------------------------------------------------------------------------------------

def test_the_page_is_self_contained_and_has_one_entry_per_flagged_or_review_row(tmp_path):
    records, rows = make_records(tmp_path / "run", 40)
    out = tmp_path / "review.html"
    summary = write_review_page(records, out, root=tmp_path / "run")
    text = out.read_text(encoding="utf-8")
    assert_self_contained(text)
    data, images = blob(text, "wv-rows"), blob(text, "wv-images")
    expected = [r for r in rows if r["error"] is None and (r["flagged"] or r["review"])]
    assert 0 < len(expected) < 40
    assert [(r["n"], r["s"]) for r in data["rows"]] == [(r["input"], r["scores"]) for r in expected]
    assert [r["b"].get("flagged", []) for r in data["rows"]] == [r["flagged"] for r in expected]
    assert [r["b"].get("review", []) for r in data["rows"]] == [r["review"] for r in expected]
    assert summary.n_shown == len(expected) and summary.n_errors == 2
    assert all(u.startswith("data:image/jpeg;base64,") for u in images)
    assert len(images) == 5 + 5  # each distinct photo and overlay once (none broken)
    for name in ("broken_0.jpg", "broken_1.jpg"):
        assert text.count(f"<td>{name}</td><td>truncated</td>") == 1
    assert "could not be scored (2)" in text
    assert "tiny-test-model 0.0.1" in text


def test_thumbnails_are_upright_small_and_heatmaps_match_the_photo_size(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    img = make_photo(3, (400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: upright it is 200 wide, 400 high
    img.save(folder / "sideways.jpg", exif=exif.tobytes())
    Image.new("RGB", (200, 400), (255, 0, 0)).save(folder / "heat.png")
    records = write_jsonl(folder / "p.jsonl", [record("sideways.jpg", {"ivory": 0.9}, ["ivory"],
                                                      heatmaps={"ivory": "heat.png"})])
    text, _ = build_review_page(records, root=folder, thumb_size=120)
    row = blob(text, "wv-rows")["rows"][0]
    images = blob(text, "wv-images")
    photo, heat = decode_uri(images[row["t"]]), decode_uri(images[row["m"]["ivory"]])
    assert photo.size == (60, 120) == (row["w"], row["h"])
    assert heat.size == photo.size
    assert np.asarray(heat.convert("RGB"))[..., 0].mean() > 200  # the red overlay, not the photo


def test_a_broken_or_missing_photo_gets_a_placeholder_and_a_note(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "page.jpg").write_text("<!doctype html><html>error</html>")
    make_photo(1).save(folder / "good.jpg")
    records = write_jsonl(folder / "p.jsonl", [
        record("garbage.jpg", {"ivory": 0.9}, ["ivory"]), record("page.jpg", {"ivory": 0.8}, ["ivory"]),
        record("gone.jpg", {"ivory": 0.6}, review=["ivory"], heatmaps={"ivory": "gone-heat.png"}),
        record("good.jpg", {"ivory": 0.95}, ["ivory"], heatmaps={"ivory": "garbage.jpg"}),
        record("https://example.com/listing.jpg", {"ivory": 0.9}, ["ivory"])])
    text, summary = build_review_page(records, root=folder)
    rows = {r["n"]: r for r in blob(text, "wv-rows")["rows"]}
    images = blob(text, "wv-images")
    assert summary.n_unreadable == 4 and summary.n_heatmaps_unreadable == 2
    placeholder = rows["garbage.jpg"]["t"]
    assert rows["page.jpg"]["t"] == rows["gone.jpg"]["t"] == placeholder != rows["good.jpg"]["t"]
    assert decode_uri(images[placeholder]).size[0] > 0
    assert "corrupt" in rows["garbage.jpg"]["x"] or "truncated" in rows["garbage.jpg"]["x"]
    assert "not_an_image" in rows["page.jpg"]["x"] and "HTML" in rows["page.jpg"]["x"]
    assert "not_found" in rows["gone.jpg"]["x"] and "heatmap for ivory not shown" in rows["gone.jpg"]["x"]
    assert "m" not in rows["good.jpg"] and "heatmap for ivory not shown" in rows["good.jpg"]["x"]
    assert "URLs are never fetched" in rows["https://example.com/listing.jpg"]["x"]
    assert "4 photo(s) could not be read" in text


def test_strings_from_the_records_are_escaped(tmp_path):
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>&amp;\u2028.jpg"
    records = write_jsonl(tmp_path / "p.jsonl", [
        record(hostile, {"ivory": 0.9}, ["ivory"]),
        record("</script><script>alert(3)</script>", error="bad </td></table><b>x", kind="corrupt"),
        record("surrogate-\udcff.jpg", {"ivory": 0.8}, ["ivory"])])
    text, _ = build_review_page(records)
    assert "<script>alert" not in text and "<img src=x" not in text and "<b>x" not in text
    assert_self_contained(text)
    names = [r["n"] for r in blob(text, "wv-rows")["rows"]]
    assert names == [hostile, "surrogate-\ufffd.jpg"]
    assert "&lt;/script&gt;&lt;script&gt;alert(3)" in text


def test_paths_resolve_against_the_current_folder_then_the_records_folder_then_root(tmp_path, monkeypatch):
    run, elsewhere = tmp_path / "run", tmp_path / "cwd"
    run.mkdir()
    elsewhere.mkdir()
    make_photo(1, (64, 64), color=(250, 250, 250)).save(run / "a.jpg")      # only beside the records
    make_photo(2, (64, 64), color=(5, 5, 5)).save(elsewhere / "b.jpg")       # only in the current folder
    records = write_jsonl(run / "p.jsonl", [record("a.jpg", {"ivory": 0.9}, ["ivory"]),
                                            record("b.jpg", {"ivory": 0.9}, ["ivory"])])
    monkeypatch.chdir(elsewhere)
    _, summary = build_review_page(records)
    assert summary.n_unreadable == 0
    _, summary = build_review_page(records, root=run)  # --root: only there
    assert summary.n_unreadable == 1


def test_thresholds_from_the_model_the_shipped_default_or_unknown(tmp_path):
    from wildlife_vision.metadata import read_model_metadata
    from wildlife_vision.model import default_model_path

    model = make_tiny_model(tmp_path / "m.onnx", metadata=tiny_metadata(thresholds={"ivory": 0.7,
                                                                                    "live_animal": 0.4}))
    records, _ = make_records(tmp_path / "run", 10)
    text, _ = build_review_page(records, model=model, root=tmp_path / "run")
    data = blob(text, "wv-rows")
    assert data["thresholds"] == {"ivory": 0.7, "live_animal": 0.4}
    assert data["review_bands"]["ivory"] == pytest.approx([0.5, 0.7])
    assert "thresholds unknown" not in text

    text, summary = build_review_page(records, root=tmp_path / "run")
    assert blob(text, "wv-rows")["thresholds"] == {} and "thresholds unknown for ivory, live_animal" in text

    meta = read_model_metadata(default_model_path())
    shipped, _ = make_records(tmp_path / "shipped", 10, model=(meta.name, meta.model_version))
    text, summary = build_review_page(shipped, root=tmp_path / "shipped")
    assert blob(text, "wv-rows")["thresholds"] == pytest.approx(dict(meta.thresholds))
    assert "shipped default model" in summary.thresholds_source


def test_all_and_max_rows(tmp_path):
    records, rows = make_records(tmp_path / "run", 60)
    scored = [r for r in rows if r["error"] is None]
    text, summary = build_review_page(records, root=tmp_path / "run", include_all=True)
    assert summary.n_shown == len(scored)
    assert any("none" in r["b"] for r in blob(text, "wv-rows")["rows"])

    text, summary = build_review_page(records, root=tmp_path / "run", max_rows=5)
    shown = blob(text, "wv-rows")["rows"]
    assert len(shown) == 5 and summary.n_candidates > 5
    assert f"showing 5 of {summary.n_candidates}" in text
    flagged = sorted((max(r["scores"].values()) for r in scored if r["flagged"]), reverse=True)
    assert sorted((max(r["s"].values()) for r in shown), reverse=True) == flagged[:5]
    assert [r["o"] for r in shown] == sorted(r["o"] for r in shown)  # kept in file order


def test_three_thousand_rows_render_fast_and_the_page_stays_small(tmp_path):
    records, rows = make_records(tmp_path / "run", 3000, n_photos=6, size=(640, 480))
    start = time.perf_counter()
    summary = write_review_page(records, tmp_path / "review.html", root=tmp_path / "run")
    seconds = time.perf_counter() - start
    n = sum(1 for r in rows if r["flagged"] or r["review"])
    assert summary.n_shown == n > 1500
    assert summary.n_images == 12  # 6 photos + 6 overlays, each once
    images = blob((tmp_path / "review.html").read_text(encoding="utf-8"), "wv-images")
    per_row = (summary.html_bytes - sum(len(u) for u in images) - 40_000) / n  # less the images and the skeleton
    assert per_row < 200, per_row
    assert summary.html_bytes < 1_000_000
    assert seconds < 15, f"{seconds:.1f} s for {n} rows"


# ---- reading records -----------------------------------------------------------------------------------------

def test_bad_records_files_name_the_line(tmp_path):
    good = json.dumps(record("a.jpg", {"ivory": 0.1}))
    p = tmp_path / "p.jsonl"
    p.write_text(good + "\n{not json\n" + good + "\n")
    with pytest.raises(RecordsError, match="line 2 is not valid JSON"):
        read_records(p)
    p.write_text(good + "\n" + json.dumps({"schema": "wildlife-vision/prediction/v9", "input": "x"}) + "\n")
    with pytest.raises(RecordsError, match="line 2: schema .* newer"):
        read_records(p)
    p.write_text(json.dumps({"input": "x"}) + "\n")
    with pytest.raises(RecordsError, match="not a prediction record"):
        read_records(p)
    p.write_text(good + "\n" + json.dumps(record("b.jpg", {"ivory": float("nan")})) + "\n")
    with pytest.raises(RecordsError, match="not a finite number"):
        read_records(p)
    p.write_text(good + "\n" + good[:30])  # a run cut short: the last line has no newline
    recs, notes = read_records(p)
    assert len(recs) == 1 and "incomplete" in notes[0]


def test_csv_records_are_read_too(tmp_path):
    import wildlife_vision as wv
    from wildlife_vision.records import RecordEncoder

    enc = RecordEncoder("csv", LABELS, "tiny-test-model", "0.0.1")
    preds = [wv.Prediction(input="a,b.jpg", scores={"ivory": 0.9, "live_animal": 0.1}, flagged=("ivory",),
                           review=()),
             wv.Prediction(input="c.jpg", scores={}, flagged=(), review=(), error="nope", error_kind="corrupt")]
    path = tmp_path / "p.csv"
    path.write_bytes(enc.header() + b"".join(enc.encode(pr) for pr in preds))
    recs, _ = read_records(path)
    assert [(r.input, r.flagged, r.scores, r.error_kind) for r in recs] == [
        ("a,b.jpg", ["ivory"], {"ivory": 0.9, "live_animal": 0.1}, None), ("c.jpg", [], {}, "corrupt")]


# ---- the command ------------------------------------------------------------------------------------------------

def test_report_command_writes_the_page(tmp_path, capsys):
    records, _ = make_records(tmp_path / "run", 20)
    out = tmp_path / "review.html"
    assert cli_main(["report", str(records), "--output", str(out), "--root", str(tmp_path / "run"),
                     "--no-progress"]) == 0
    assert "report: " in capsys.readouterr().out
    assert_self_contained(out.read_text(encoding="utf-8"))
    # a page it wrote is replaced without --overwrite
    assert cli_main(["report", str(records), "-o", str(out), "--all", "--no-progress"]) == 0


@pytest.mark.parametrize("case, code", [
    ("missing", 2), ("folder", 2), ("not_records", 2), ("bad_json", 2), ("max_rows", 2), ("root", 2),
    ("output_is_folder", 2), ("output_is_input", 2), ("foreign_output", 2), ("foreign_output_overwrite", 0),
    ("bad_model", 4), ("unwritable", 1), ("empty", 0)])
def test_report_exit_codes(tmp_path, case, code, capsys):
    records, _ = make_records(tmp_path / "run", 5)
    out = tmp_path / "review.html"
    args = [str(records), "--output", str(out), "--no-progress"]
    if case == "missing":
        args[0] = str(tmp_path / "nope.jsonl")
    elif case == "folder":
        args[0] = str(tmp_path)
    elif case == "not_records":
        (tmp_path / "x.jsonl").write_text('{"a": 1}\n')
        args[0] = str(tmp_path / "x.jsonl")
    elif case == "bad_json":
        (tmp_path / "x.jsonl").write_text('{"a": 1\n{}\n')
        args[0] = str(tmp_path / "x.jsonl")
    elif case == "max_rows":
        args += ["--max-rows", "0"]
    elif case == "root":
        args += ["--root", str(tmp_path / "nowhere")]
    elif case == "output_is_folder":
        args[2] = str(tmp_path)
    elif case == "output_is_input":
        args[2] = str(records)
    elif case.startswith("foreign_output"):
        out.write_text("my notes")
        if case.endswith("overwrite"):
            args.append("--overwrite")
    elif case == "bad_model":
        (tmp_path / "m.onnx").write_text("not a model")
        args += ["--model", str(tmp_path / "m.onnx")]
    elif case == "unwritable":
        (tmp_path / "file").write_text("x")
        args[2] = str(tmp_path / "file" / "review.html")
    elif case == "empty":
        (tmp_path / "e.jsonl").write_text("")
        args[0] = str(tmp_path / "e.jsonl")
    assert cli_main(["report", *args]) == code
    err = capsys.readouterr().err
    if code:
        assert "wildlife-vision report: " in err
    if case == "foreign_output":
        assert out.read_text() == "my notes" and "--overwrite" in err


# ---- evaluate's page -----------------------------------------------------------------------------------------

def test_evaluation_page(tmp_path):
    from wildlife_vision.data.manifest import Sample
    from wildlife_vision.evaluation.evaluate import build_report

    rng = np.random.default_rng(0)
    n = 60
    y = (rng.random((n, 2)) < 0.4).astype(int)
    s = np.clip(0.55 * y + 0.5 * rng.random((n, 2)), 0, 1)
    samples = [Sample(path=f"/x/{i}.jpg", image=f"{i}.jpg", labels=(), split="test",
                      extra={"source": "a" if i % 2 else "b"}) for i in range(n)]
    report = build_report(y, s, LABELS, {"ivory": 0.6, "live_animal": 0.6}, samples, ["source"],
                          {"split": "test", "model_name": "tiny", "model_version": "1"}, resamples=50,
                          review_bands={"ivory": (0.4, 0.6), "live_animal": (0.5, 0.6)})
    make_photo(1, (300, 200)).save(tmp_path / "fp.jpg")
    Image.new("RGB", (300, 200), (255, 0, 0)).save(tmp_path / "fp-heat.png")
    make_photo(2).save(tmp_path / "plot.png")
    (tmp_path / "fake.png").write_text("not a png")
    mistakes = [dict(input=str(tmp_path / "fp.jpg"), label="ivory", truth=0, score=0.93,
                     heatmap=str(tmp_path / "fp-heat.png")),
                dict(input=str(tmp_path / "missing.jpg"), label="live_animal", truth=1, score=0.02, heatmap=None)]
    out = write_evaluation_page(report, tmp_path / "eval.html", mistakes,
                                plots={"pr_curves": tmp_path / "plot.png", "reliability": tmp_path / "plot.png",
                                       "broken": tmp_path / "fake.png"},
                                pr_curves=pr_curve_points(y, s, LABELS))
    text = out.read_text(encoding="utf-8")
    assert_self_contained(text)
    assert text.count('class="wv-pr-line"') == 2 and text.count("<circle") == 2
    assert text.count("<figure><img src=\"data:image/png;base64,") == 1  # reliability; pr_curves drawn as SVG
    assert "plot broken left out" in text
    rows = blob(text, "wv-rows")["rows"]
    assert [r["b"] for r in rows] == [{"fp": ["ivory"]}, {"fn": ["live_animal"]}]
    assert "m" in rows[0] and "x" in rows[1]
    p = report["per_class"]["ivory"]
    assert f"{p['precision']:.3f} <span class=\"wv-ci\">[{p['ci95']['precision'][0]:.3f}" in text
    assert "By source" in text

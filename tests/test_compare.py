"""`wildlife-vision compare` and `compare_models`: several tiny random-weight models on the same generated photos
(labels that follow the photo's colour, so APs are neither 0 nor 1), paired bootstrap differences, slices, the
Markdown, and the exit codes; plus the shipped fp32 model against its INT8 twin on a few real photos."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import make_photo, make_tiny_model
from wildlife_vision import load_model
from wildlife_vision.cli import main as cli_main
from wildlife_vision.data.manifest import read_manifest, targets_for
from wildlife_vision.evaluation.bootstrap import percentile_interval, resample_indices
from wildlife_vision.evaluation.compare import SCHEMA, compare_models, holm, recall_at_precision
from wildlife_vision.evaluation.evaluate import group_ids
from wildlife_vision.evaluation.metrics import average_precision
from wildlife_vision.exitcodes import EXIT_MODEL, EXIT_OK, EXIT_USAGE

LABELS = ("ivory", "live_animal")
RESAMPLES = 200
ROOT = Path(__file__).resolve().parents[1]


def write_dataset(folder: Path, n: int = 150, seed: int = 1) -> Path:
    """Photos whose labels follow their colour (ivory: reddish, live_animal: bluish, with noise), a ``group``
    column (pairs of rows, some rows in no group), a ``source`` column, a split column, and one corrupt test
    photo."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour = rng.integers(0, 256, 3)
        labels = [lab for lab, ch, cut in (("ivory", 0, 150), ("live_animal", 2, 165))
                  if colour[ch] + rng.normal(0, 40) > cut]
        path = folder / f"p{i:03d}.jpg"
        make_photo(i, (48, 40), color=tuple(int(c) for c in colour)).save(path)
        rows.append({"image": path.name, "labels": ";".join(labels), "split": "train" if i % 4 == 0 else "test",
                     "group": f"g{i // 2}" if i % 7 else "", "source": "shop" if i % 3 == 0 else "market"})
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows.append({"image": "broken.jpg", "labels": "ivory", "split": "test", "group": "", "source": "market"})
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    manifest = write_dataset(tmp / "data")
    a = make_tiny_model(tmp / "a.onnx", seed=0)
    b = make_tiny_model(tmp / "b.onnx", seed=1)
    twin = tmp / "twin" / "a.onnx"  # the same bytes under another path: must compare as identical
    twin.parent.mkdir()
    shutil.copy(a, twin)
    out = tmp / "out"
    code = cli_main(["compare", str(a), str(b), str(twin), "--data", str(manifest), "--split", "test",
                     "--slice-by", "source", "--resamples", str(RESAMPLES), "--speed-photos", "16",
                     "--speed-rounds", "1", "--output", str(out), "--no-progress"])
    result = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    return {"tmp": tmp, "manifest": manifest, "models": [a, b, twin], "out": out, "code": code, "result": result}


def kept_photos(setup):
    """The test photos every model could read, in manifest order, with their targets and groups."""
    m = read_manifest(setup["manifest"], labels=LABELS, check_images=False, for_training=False)
    kept = [s for s in m.samples if s.split == "test" and s.image != "broken.jpg"]
    return kept, targets_for(kept, LABELS), group_ids(kept)


def walk_intervals(node, where=""):
    """(where, value, interval) for every ``X`` / ``X_ci95`` pair in the result."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k.endswith("_ci95") and v is not None and node.get(k[:-5]) is not None:
                yield f"{where}/{k}", node[k[:-5]], v
            elif isinstance(v, (dict, list)):
                yield from walk_intervals(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk_intervals(v, f"{where}[{i}]")


def test_compare_json_has_the_documented_shape(setup):
    r = setup["result"]
    assert setup["code"] == EXIT_OK
    assert r["schema"] == SCHEMA and r["split"] == "test" and r["labels"] == list(LABELS)
    assert len(r["manifest_sha256"]) == 64
    assert r["bootstrap"]["resamples"] == RESAMPLES and r["bootstrap"]["unit"] == "group"
    assert [m["model"] for m in r["models"]] == [str(p) for p in setup["models"]]
    assert len({m["id"] for m in r["models"]}) == 3  # a.onnx twice, told apart
    for m in r["models"]:
        assert set(m["labels"]) == set(LABELS)
        for c in m["labels"].values():
            assert {"ap", "ap_ci95", "recall_at_threshold", "precision_at_threshold", "recall_at_threshold_ci95",
                    "fpr_at_threshold", "recall_at_precision", "recall_at_precision_ci95"} <= set(c)
            assert 0.2 < c["ap"] < 0.99 and len(c["ap_ci95"]) == 2  # generated so that AP is not trivial
        assert m["size_bytes"] == Path(m["model"]).stat().st_size and len(m["sha256"]) == 64
        assert m["speed"]["photos_per_s"] > 0 and m["speed"]["photos"] == 16
    assert r["speed"]["machine"]["cpus"] >= 1
    assert [(p["a"], p["b"]) for p in r["pairs"]] == [(str(x), str(y)) for i, x in enumerate(setup["models"])
                                                      for y in setup["models"][i + 1:]]
    for p in r["pairs"]:
        for d in p["labels"].values():
            assert {"ap_diff", "ap_diff_ci95", "significant", "recall_at_threshold_diff",
                    "precision_at_threshold_diff"} <= set(d)
    assert r["multiple_comparisons"]["comparisons"] == 3 * 2  # pairs x labels (the identical pair: p = 1)
    json.dumps(r, allow_nan=False)


def test_every_interval_contains_its_estimate(setup):
    found = list(walk_intervals(setup["result"]))
    assert len(found) > 50
    outside = [(w, v, ci) for w, v, ci in found if not ci[0] - 1e-12 <= v <= ci[1] + 1e-12]
    assert outside == []
    assert setup["result"]["interval_check"] == {"checked": len(found), "outside": []}


def test_the_same_photos_for_every_model_and_the_broken_one_dropped(setup):
    r = setup["result"]
    kept, y, _ = kept_photos(setup)
    assert r["n_photos"] == len(kept) and r["n_split"] == len(kept) + 1
    assert r["dropped"]["n"] == 1 and r["dropped"]["photos"][0]["image"] == "broken.jpg"
    assert set(r["dropped"]["photos"][0]["errors"]) == {m["id"] for m in r["models"]}
    # each model's AP is the AP of its own predictions on exactly these photos
    for path, m in zip(setup["models"], r["models"]):
        model = load_model(path)
        scores = np.array([[p.scores[lab] for lab in LABELS] for p in model.predict([s.path for s in kept])])
        for j, lab in enumerate(LABELS):
            assert m["labels"][lab]["ap"] == pytest.approx(average_precision(y[:, j], scores[:, j]), abs=1e-9)
            assert m["labels"][lab]["positives"] == int(y[:, j].sum())


def test_paired_difference_is_b_minus_a_on_the_same_resamples(setup):
    r = setup["result"]
    kept, y, groups = kept_photos(setup)
    pair = r["pairs"][0]  # a.onnx -> b.onnx
    a, b = r["models"][0], r["models"][1]
    sa = np.array([[p.scores[lab] for lab in LABELS] for p in load_model(setup["models"][0]).predict(
        [s.path for s in kept])])
    sb = np.array([[p.scores[lab] for lab in LABELS] for p in load_model(setup["models"][1]).predict(
        [s.path for s in kept])])
    draws = resample_indices(len(kept), groups, RESAMPLES, 0)
    for j, lab in enumerate(LABELS):
        d = pair["labels"][lab]
        assert d["ap_diff"] == pytest.approx(b["labels"][lab]["ap"] - a["labels"][lab]["ap"], abs=1e-12)
        assert d["recall_at_threshold_diff"] == pytest.approx(
            b["labels"][lab]["recall_at_threshold"] - a["labels"][lab]["recall_at_threshold"], abs=1e-12)
        diffs = [average_precision(y[i, j], sb[i, j]) - average_precision(y[i, j], sa[i, j]) for i in draws
                 if y[i, j].any()]
        assert d["ap_diff_ci95"] == pytest.approx(list(percentile_interval(diffs)), abs=1e-9)
        assert d["significant"] == (d["ap_diff_ci95"][0] > 0 or d["ap_diff_ci95"][1] < 0)


def test_identical_models_differ_by_exactly_zero(setup):
    r = setup["result"]
    same = [p for p in r["pairs"] if p["a_id"] == r["models"][0]["id"] and p["b_id"] == r["models"][2]["id"]][0]
    for d in same["labels"].values():
        assert d["ap_diff"] == 0 and d["ap_diff_ci95"] == [0.0, 0.0] and not d["significant"]
        assert d["recall_at_threshold_diff"] == 0 and d["recall_at_threshold_diff_ci95"] == [0.0, 0.0]
        assert d["flag_agreement"] == 1.0 and d["ap_diff_p"] == 1.0
    assert r["models"][0]["sha256"] == r["models"][2]["sha256"]


def test_slices_by_source(setup):
    r = setup["result"]
    kept, y, _ = kept_photos(setup)
    sl = r["slices"]["source"]
    assert set(sl) == {"shop", "market"}
    assert sum(v["n_photos"] for v in sl.values()) == r["n_photos"]
    for value, e in sl.items():
        assert e["n_photos"] == sum(s.extra["source"] == value for s in kept)
        assert len(e["models"]) == 3 and len(e["pairs"]) == 3
        for p in e["pairs"]:
            ma = next(m for m in e["models"] if m["id"] == p["a_id"])
            mb = next(m for m in e["models"] if m["id"] == p["b_id"])
            for lab in LABELS:
                assert p["labels"][lab]["ap_diff"] == pytest.approx(
                    mb["labels"][lab]["ap"] - ma["labels"][lab]["ap"], abs=1e-12)
    big = [e for e in sl.values() if e["n_photos"] >= r["slice_rule"]["min_photos"]]
    assert big and all(e["models"][0]["labels"]["ivory"]["ap_ci95"] for e in big
                       if e["models"][0]["labels"]["ivory"]["positives"] >= r["slice_rule"]["min_positives"])


def test_markdown_reads_as_tables_and_sentences(setup):
    md = (setup["out"] / "compare.md").read_text(encoding="utf-8")
    r = setup["result"]
    assert f"# Model comparison on split `test` ({r['n_photos']} photos)" in md
    assert "1 dropped" in md and f"{RESAMPLES} resamples" in md and "photos/s" in md
    assert md.count("| model | AP [95% CI] | threshold | precision | recall |") == len(LABELS)
    for lab in LABELS:
        assert f"### `{lab}`" in md and f"### `{lab}` by `source`" in md
    assert "## Differences (b − a, paired)" in md
    assert "rank every photo alike" in md  # the identical pair, said plainly
    assert ("the interval excludes 0" in md) or ("the interval contains 0" in md)
    assert "Holm" in md and "All " in md and "contain their own estimate" in md
    for name in ("pr_curves.png", "forest_ap.png", "forest_diff.png"):
        assert (setup["out"] / name).stat().st_size > 0 and f"]({name})" in md


def test_one_model_is_an_evaluation_without_pairs(setup, capsys):
    out = setup["tmp"] / "one"
    code = cli_main(["compare", str(setup["models"][1]), "--data", str(setup["manifest"]), "--resamples", "50",
                     "--speed-photos", "0", "--no-plots", "--output", str(out), "--no-progress"])
    assert code == EXIT_OK and "one model" in capsys.readouterr().err
    r = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert r["pairs"] == [] and len(r["models"]) == 1 and r["models"][0]["speed"]["photos_per_s"] is None
    assert "nothing to compare it with" in (out / "compare.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("case, code", [
    ("missing model", EXIT_MODEL), ("not onnx", EXIT_MODEL), ("missing manifest", EXIT_USAGE),
    ("bad manifest", EXIT_USAGE), ("unknown split", EXIT_USAGE), ("unknown column", EXIT_USAGE),
    ("same model twice", EXIT_USAGE), ("bad precision", EXIT_USAGE)])
def test_exit_codes(setup, tmp_path, capsys, case, code):
    a, b = (str(p) for p in setup["models"][:2])
    data = str(setup["manifest"])
    extra = []
    if case == "missing model":
        b = str(tmp_path / "nope.onnx")
    elif case == "not onnx":
        (tmp_path / "x.onnx").write_text("hello")
        b = str(tmp_path / "x.onnx")
    elif case == "missing manifest":
        data = str(tmp_path / "nope.csv")
    elif case == "bad manifest":
        (tmp_path / "bad.csv").write_text("picture,tags\nx.jpg,ivory\n")
        data = str(tmp_path / "bad.csv")
    elif case == "unknown split":
        extra = ["--split", "holdout"]
    elif case == "unknown column":
        extra = ["--slice-by", "colour"]
    elif case == "same model twice":
        b = a
    elif case == "bad precision":
        extra = ["--at-precision", "1.5"]
    out = tmp_path / "out"
    assert cli_main(["compare", a, b, "--data", data, "--output", str(out), "--no-progress", *extra]) == code
    err = capsys.readouterr().err
    assert "wildlife-vision compare:" in err
    assert not (out / "compare.json").exists()


def test_plots_are_skipped_with_a_note_without_matplotlib(setup, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    r = compare_models(setup["models"][:2], setup["manifest"], output_dir=tmp_path, resamples=20, speed_photos=0)
    assert "matplotlib" in r["plots"]["skipped"] and not list(tmp_path.glob("*.png"))
    assert "Plots skipped" in (tmp_path / "compare.md").read_text(encoding="utf-8")


def test_recall_at_precision_and_holm():
    y = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert recall_at_precision(y, s, 1.0) == (pytest.approx(2 / 3), 0.8)  # top two, both positive
    assert recall_at_precision(y, s, 0.75) == (1.0, 0.6)  # 3 of the top 4
    assert recall_at_precision(~y, s, 0.99)[1] is None  # no threshold reaches it
    assert recall_at_precision(np.zeros(6, bool), s, 0.9) == (None, None)
    assert holm([0.01, 0.04, None, 0.03]) == [pytest.approx(0.03), pytest.approx(0.06), None, pytest.approx(0.06)]


@pytest.mark.shared_data
def test_shipped_fp32_against_its_int8_twin(wildtrade_manifest, tmp_path):
    data = ROOT / "datasets" / "wildtrade-v2.csv"
    fp32 = ROOT / "exported_models" / "wildtrade-lite0-v4.onnx"
    int8 = ROOT / "exported_models" / "wildtrade-lite0-v4.int8.onnx"
    r = compare_models([fp32, int8], data, split="test", output_dir=tmp_path, limit=60, resamples=200,
                       speed_photos=8, speed_rounds=1, workers=1)
    assert r["n_photos"] + r["dropped"]["n"] == 60 and r["dropped"]["n"] == 0
    pair = r["pairs"][0]
    for lab in r["labels"]:
        a, b = r["models"][0]["labels"][lab], r["models"][1]["labels"][lab]
        if a["ap"] is None:
            continue
        d = pair["labels"][lab]
        assert abs(d["ap_diff"]) < 0.1 and d["ap_diff"] == pytest.approx(b["ap"] - a["ap"])
        assert d["flag_agreement"] > 0.9  # the twin flags nearly the same photos
    assert r["models"][1]["size_bytes"] < r["models"][0]["size_bytes"] / 2
    assert (tmp_path / "compare.md").is_file()


def test_robustness_per_model_on_the_same_photos(setup, tmp_path):
    a, b = setup["models"][:2]
    r = compare_models([a, b], setup["manifest"], output_dir=tmp_path, resamples=20, speed_photos=0,
                       robustness=["mirror", "jpeg"], plots=False)
    rb = r["robustness"]
    assert rb["edits"] == ["mirror", "jpeg"] and set(rb["models"]) == {"a.onnx", "b.onnx"}
    for block in rb["models"].values():
        assert block["n_images"] == r["n_photos"] and block["n_failed"] == 0
        for edit in ("mirror", "jpeg"):
            for lab in LABELS:
                m = block["edits"][edit][lab]
                assert 0 <= m["p95_abs_change"] <= 1 and 0 <= m["flip_rate"] <= 1 and m["n"] == r["n_photos"]
    # the figures are measure_robustness's own, on the photos every model could read, with the same seed
    from wildlife_vision.evaluation.robustness import measure_robustness

    kept, _, groups = kept_photos(setup)
    direct = measure_robustness(load_model(b), [s.path for s in kept], edits=["mirror", "jpeg"], resamples=20,
                                groups=groups)
    for edit in ("mirror", "jpeg"):
        for lab in LABELS:
            got, want = rb["models"]["b.onnx"]["edits"][edit][lab], direct["edits"][edit]["per_class"][lab]
            assert got["p95_abs_change"] == want["p95_abs_change"] and got["flips"] == want["flips"]
    assert "## Under a seller's benign edits" in (tmp_path / "compare.md").read_text(encoding="utf-8")


def test_a_run_folder_is_scored_by_the_checkpoint_scorer_and_not_timed(setup, tmp_path, monkeypatch):
    """The checkpoint path's plumbing, with a stand-in scorer (the real one is torch, the [train] extra):
    thresholds come from the scorer, the photos it skips are dropped for every model, and it is not timed."""
    import wildlife_vision.evaluation.compare as compare

    stand_in = load_model(setup["models"][1])

    def scorer(ckpt, samples, batch_size, workers):
        preds = stand_in.predict([s.path for s in samples])
        ok = [p.error is None and s.image != "p001.jpg" for s, p in zip(samples, preds)]  # p001: "cannot read"
        scores = np.array([[p.scores[lab] for lab in LABELS] for p, k in zip(preds, ok) if k])
        failures = [(s, "unreadable") for s, k in zip(samples, ok) if not k]
        kept = [s for s, k in zip(samples, ok) if k]
        return scores, kept, failures, list(LABELS), {"ivory": 0.4, "live_animal": 0.6}

    scorer.labels = lambda ckpt: list(LABELS)
    monkeypatch.setattr(compare, "checkpoint_scorer", lambda: scorer)
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"weights")
    r = compare_models([setup["models"][0], run], setup["manifest"], resamples=20, speed_photos=4, speed_rounds=1)
    onnx, ckpt = r["models"]
    assert ckpt["kind"] == "checkpoint" and ckpt["thresholds"] == {"ivory": 0.4, "live_animal": 0.6}
    assert ckpt["speed"]["photos_per_s"] is None and onnx["speed"]["photos_per_s"] > 0
    assert r["dropped"]["n"] == 2 and {d["image"] for d in r["dropped"]["photos"]} == {"broken.jpg", "p001.jpg"}
    p001 = next(d for d in r["dropped"]["photos"] if d["image"] == "p001.jpg")
    assert p001["errors"] == {"run": "unreadable"}
    with pytest.raises(Exception, match="checkpoint not found"):
        compare_models([setup["models"][0], tmp_path], setup["manifest"], resamples=0, speed_photos=0)

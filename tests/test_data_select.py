"""`wildlife-vision data select`: picks from an unlabelled pool, written as Label Studio tasks with pre-annotations
(the same writer as labelstudio-export, checked against Label Studio's SDK there); the model's fields never come
back through the import."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from helpers import make_tiny_model, write_photos

from wildlife_vision.cli import main
from wildlife_vision.data.labelstudio_config import read_config
from wildlife_vision.data.select import plan_selection


@pytest.fixture
def pool(tmp_path):
    model = make_tiny_model(tmp_path / "m.onnx", embedding=True, seed=3)
    photos = write_photos(tmp_path / "root" / "pool", 24)
    (tmp_path / "root" / "pool" / "broken.jpg").write_bytes(b"not a jpeg")
    clean = write_photos(tmp_path / "root" / "clean", 6, start=100)
    labelled = tmp_path / "labelled.csv"
    with open(labelled, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "labels"])
        for p in photos[:4]:
            w.writerow([f"root/pool/{p.name}", "ivory"])
    return model, photos, clean, labelled


def _select(tmp_path, model, *extra, expect=0):
    out = tmp_path / "tasks.json"
    code = main(["data", "select", str(tmp_path / "root" / "pool"), "--model", str(model), "--output", str(out),
                 "--image-root", str(tmp_path / "root"), "--no-progress", "--overwrite", *extra])
    assert code == expect
    return json.loads(out.read_text(encoding="utf-8")) if code == 0 else None


def test_select_writes_label_studio_tasks_in_pick_order(pool, tmp_path, capsys):
    model, photos, clean, labelled = pool
    tasks = _select(tmp_path, model, "--n", "6", "--labelled", str(labelled), "--clean", str(tmp_path / "root" / "clean"),
                    "--confident", "1", "--json")
    summary = json.loads(capsys.readouterr().out)
    assert summary["already_labelled"] == 4 and summary["unreadable"] == 1 and summary["scored"] == 20
    assert len(tasks) == 6 + 2 and summary["tasks"] == 8
    assert [t["data"]["selection_rank"] for t in tasks] == list(range(1, 9))
    reasons = [t["data"]["selected_for"] for t in tasks]
    assert reasons[:6].count("uncertain: ivory") == 3 and reasons[:6].count("uncertain: live_animal") == 3
    assert reasons[6:] == ["look-alike check: ivory", "look-alike check: live_animal"]
    inputs = [t["data"]["input"] for t in tasks]
    assert len(set(inputs)) == 8, "no photo is picked twice"
    assert not {p.name for p in photos[:4]} & {inp.rsplit("/", 1)[-1] for inp in inputs}, "labelled photos are skipped"
    assert not any(inp.endswith("broken.jpg") for inp in inputs)
    assert sum("/clean/" in inp for inp in inputs) == 2
    choices = set(read_config(None).control(None).values) | {v for v in read_config(None).control(None).values}
    for t in tasks:
        assert t["data"]["image"].startswith("/data/local-files/?d=pool/") or \
            t["data"]["image"].startswith("/data/local-files/?d=clean/")
        (pred,) = t["predictions"]
        for r in pred["result"]:
            assert set(r["value"]["choices"]) <= choices, "pre-annotations are the config's Choice values"


def test_the_pick_is_the_uncertain_end_of_the_pool(pool, tmp_path):
    import wildlife_vision as wv

    model, photos, _, _ = pool
    m = wv.load_model(model)
    th = m.thresholds["ivory"]
    preds = m.predict([str(p) for p in photos])
    dist = sorted(abs(np.log(p.scores["ivory"] / (1 - p.scores["ivory"])) - np.log(th / (1 - th))) for p in preds)
    tasks = _select(tmp_path, model, "--n", "3", "--labels", "ivory", "--candidates", "1")
    got = sorted(abs(np.log(t["data"]["score_ivory"] / (1 - t["data"]["score_ivory"])) - np.log(th / (1 - th)))
                 for t in tasks)
    assert np.allclose(got, dist[:3], atol=1e-4), "with --candidates 1 the picks are the 3 most uncertain photos"


def test_selected_tasks_import_without_model_fields(pool, tmp_path):
    model, photos, _, _ = pool
    tasks = _select(tmp_path, model, "--n", "4")
    for i, t in enumerate(tasks):  # a reviewer accepts each pre-annotation
        t["id"] = i + 1
        t["annotations"] = [{"id": 100 + i, "result": t["predictions"][0]["result"], "was_cancelled": False,
                             "updated_at": "2026-12-02T06:00:00Z"}]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks), encoding="utf-8")
    out = tmp_path / "labelled-new.csv"
    assert main(["data", "labelstudio-import", str(export), "-o", str(out), "--image-root", str(tmp_path / "root")]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    cols = set(rows[0])
    assert not cols & {"selected_for", "selection_rank", "margin", "flagged", "closest_label", "input"}
    assert not [c for c in cols if c.startswith("score_")]


def test_bad_uses_are_refused(pool, tmp_path, capsys):
    model, photos, _, labelled = pool
    _select(tmp_path, model, "--labels", "rhino_horn", expect=2)
    assert "not in the model" in capsys.readouterr().err
    _select(tmp_path, model, "--n", "0", expect=2)
    no_emb = make_tiny_model(tmp_path / "plain.onnx")
    _select(tmp_path, no_emb, expect=4)
    assert "embedding" in capsys.readouterr().err


def test_plan_selection_shares_n_among_labels_without_repeats():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 8))
    scores = rng.uniform(size=(40, 2))
    picks = plan_selection(scores, [0.5, 0.5], emb, 7, ["a", "b"], clean_scores=rng.uniform(size=(5, 2)), confident=2)
    pool = [i for w, i, _ in picks if w == "pool"]
    assert len(pool) == len(set(pool)) == 7
    assert [r for _, _, r in picks].count("uncertain: a") == 4
    clean = [i for w, i, _ in picks if w == "clean"]
    assert len(clean) == len(set(clean)) == 4

"""Label Studio: import an export written by the test; export predictions as pre-annotations, uncertain first."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from wildlife_vision.data.labelstudio import (import_labelstudio, parse_thresholds, predictions_to_tasks,
                                           read_prediction_records, resolve_image_url)
from synthetic import write_scene
from wildlife_vision.cli import main


def _ann(aid, choices, updated, cancelled=False, from_name="label"):
    result = [{"id": f"r{aid}", "type": "choices", "from_name": from_name, "to_name": "image",
               "value": {"choices": choices}}] if choices is not None else []
    return {"id": aid, "completed_by": 1, "result": result, "was_cancelled": cancelled,
            "created_at": updated, "updated_at": updated}


@pytest.fixture
def ls_export(tmp_path):
    root = tmp_path / "ls-root"
    for p in ("shop/a.jpg", "shop/b.jpg", "shop/c.jpg", "upload/3/1a2b3c4d-d.jpg", "plain/e.jpg", "f.jpg",
              "shop/g.jpg", "shop/h.jpg"):
        write_scene(root / p, hash(p) % 1000)
    tasks = [
        # two annotations: the later one wins under 'latest'; majority of 2 ties -> latest
        {"id": 1, "data": {"image": "/data/local-files/?d=shop/a.jpg", "seller": "s1", "listing": "L9"},
         "annotations": [_ann(11, ["Ivory"], "2024-05-01T10:00:00Z"),
                         _ann(12, ["Ivory", "Live animal"], "2024-05-02T10:00:00Z")]},
        # a cancelled (skipped) annotation is ignored; the other says 'No wildlife product' -> empty labels
        {"id": 2, "data": {"image": "/data/local-files/?d=shop%2Fb.jpg", "seller": "s1"},
         "annotations": [_ann(21, ["Ivory"], "2024-05-03T10:00:00Z", cancelled=True),
                         _ann(22, ["No wildlife product"], "2024-05-01T10:00:00Z")]},
        # only cancelled annotations: skipped
        {"id": 3, "data": {"image": "/data/local-files/?d=shop/c.jpg"},
         "annotations": [_ann(31, ["Ivory"], "2024-05-01T10:00:00Z", cancelled=True)]},
        # an uploaded file
        {"id": 4, "data": {"image": "/data/upload/3/1a2b3c4d-d.jpg"},
         "annotations": [_ann(41, ["none"], "2024-05-01T10:00:00Z")]},
        # a plain relative path, and three annotators: majority keeps 'Rhino horn'
        {"id": 5, "data": {"image": "plain/e.jpg"},
         "annotations": [_ann(51, ["Rhino horn"], "2024-05-01T10:00:00Z"),
                         _ann(52, ["Rhino horn"], "2024-05-02T10:00:00Z"),
                         _ann(53, ["Rhino horn", "Ivory"], "2024-05-03T10:00:00Z")]},
        # an http URL mapped through --strip-prefix
        {"id": 6, "data": {"image": "https://cdn.example.com/photos/f.jpg"},
         "annotations": [_ann(61, ["Live animal"], "2024-05-01T10:00:00Z")]},
        # an unmapped remote URL: kept as a URL, counted
        {"id": 7, "data": {"image": "https://elsewhere.example.org/x.jpg"},
         "annotations": [_ann(71, ["Ivory"], "2024-05-01T10:00:00Z")]},
        # not annotated at all
        {"id": 8, "data": {"image": "/data/local-files/?d=shop/g.jpg"}, "annotations": []},
        # a choice outside --labels
        {"id": 9, "data": {"image": "http://localhost:8080/data/local-files/?d=shop/h.jpg"},
         "annotations": [_ann(91, ["Tiger bone wine"], "2024-05-01T10:00:00Z")]},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    return path, root


def _rows(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_import_latest_policy_cli(ls_export, tmp_path, capsys):
    export, root = ls_export
    out = tmp_path / "data" / "manifest.csv"
    code = main(["data", "labelstudio-import", str(export), "-o", str(out), "--image-root", str(root),
                 "--strip-prefix", "https://cdn.example.com/photos/", "--labels",
                 "ivory,live_animal,rhino_horn"])
    assert code == 0
    text = capsys.readouterr().out
    rows = _rows(out)
    by_task = {r["ls_task_id"]: r for r in rows}
    assert set(by_task) == {"1", "2", "4", "5", "6", "7"}
    assert by_task["1"]["labels"] == "ivory;live_animal"       # latest annotation
    assert by_task["1"]["seller"] == "s1" and by_task["1"]["listing"] == "L9"
    assert by_task["1"]["ls_annotations"] == "2" and by_task["1"]["ls_agreement"] == "0"
    assert by_task["2"]["labels"] == "" and by_task["2"]["ls_annotations"] == "1"  # cancelled one ignored
    assert by_task["4"]["labels"] == ""
    assert by_task["5"]["labels"] == "rhino_horn;ivory"        # latest of three (policy latest)
    # paths relative to the manifest's folder, and they exist
    for t in ("1", "2", "4", "5", "6"):
        assert (out.parent / by_task[t]["image"]).is_file(), by_task[t]["image"]
    assert by_task["4"]["image"].endswith("upload/3/1a2b3c4d-d.jpg")
    assert by_task["7"]["image"] == "https://elsewhere.example.org/x.jpg"
    assert list(rows[0])[:2] == ["image", "labels"] and list(rows[0])[-3:] == ["ls_task_id", "ls_annotations",
                                                                                 "ls_agreement"]
    assert "skipped_cancelled: 1" in text and "skipped_unlabelled: 1" in text
    assert "skipped_unknown_label: 1" in text and "images_remote: 1" in text
    # refuses to overwrite without --force
    assert main(["data", "labelstudio-import", str(export), "-o", str(out)]) == 2


def test_import_majority_policy(ls_export, tmp_path):
    export, root = ls_export
    res = import_labelstudio(export, tmp_path / "m.csv", image_root=str(root), policy="majority")
    by_task = {r["ls_task_id"]: r for r in res.rows}
    assert by_task["5"]["labels"] == "rhino_horn"      # ivory chosen by 1 of 3
    assert by_task["1"]["labels"] == "ivory;live_animal"  # 2 annotators: ivory 2/2, live_animal 1/2 tie -> latest
    assert by_task["9"]["labels"] == "tiger_bone_wine"  # no --labels: any choice is a label
    assert res.counts["disagreements"] == 2


def test_import_json_min_and_label_map(tmp_path):
    write_scene(tmp_path / "a.jpg", 1)
    data = [{"image": "/data/local-files/?d=a.jpg", "id": 1, "label": "Elephant ivory", "annotator": 3,
             "annotation_id": 9, "created_at": "x", "updated_at": "x", "lead_time": 1.0, "seller": "q"},
            {"image": "/data/local-files/?d=a.jpg", "id": 2, "label": {"choices": ["Nothing"]}}]
    p = tmp_path / "min.json"
    p.write_text(json.dumps(data))
    res = import_labelstudio(p, tmp_path / "m.csv", image_root=str(tmp_path), label_map={"Elephant ivory": "ivory"})
    assert [r["labels"] for r in res.rows] == ["ivory", ""]
    assert res.rows[0]["seller"] == "q" and res.rows[0]["image"] == "a.jpg"


def test_resolve_image_url_styles(tmp_path):
    assert resolve_image_url("/data/local-files/?d=x/y%20z.jpg", "/r") == ("/r/x/y z.jpg", "local-files")
    assert resolve_image_url("/data/upload/7/ab-c.jpg", "/media") == ("/media/upload/7/ab-c.jpg", "upload")
    assert resolve_image_url("s3://bucket/p/q.jpg", "/r", ["s3://bucket/"]) == ("/r/p/q.jpg", "stripped")
    assert resolve_image_url("https://h/x.jpg")[1] == "remote"
    assert resolve_image_url("rel/x.jpg", "/r") == ("/r/rel/x.jpg", "path")


def _records(path: Path):
    recs = [
        {"schema": "wildlife-vision/prediction/v1", "input": "photos/sure_yes.jpg", "error": None,
         "flagged": ["ivory"], "review": [], "scores": {"ivory": 0.97, "live_animal": 0.02}, "model": "m",
         "model_version": "1.2"},
        {"input": "photos/borderline.jpg", "scores": {"ivory": 0.52, "live_animal": 0.1}},   # few optional fields
        {"input": "photos/broken.jpg", "error": "truncated image file", "scores": {}, "flagged": []},
        {"input": "photos/sure_no.jpg", "scores": {"ivory": 0.01, "live_animal": 0.03}, "model": "m",
         "model_version": "1.2"},
        {"input": "photos/live_edge.jpg", "scores": {"ivory": 0.2, "live_animal": 0.34}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"input": "photos/cut', encoding="utf-8")
    return path


def test_export_sorts_uncertain_first_and_leaves_out_errors(tmp_path, capsys):
    preds = _records(tmp_path / "p.jsonl")
    out = tmp_path / "tasks.json"
    code = main(["data", "labelstudio-export", str(preds), "-o", str(out), "--thresholds", "live_animal=0.35",
                 "--image-root", "photos"])
    assert code == 0
    text = capsys.readouterr().out
    tasks = json.loads(out.read_text())
    order = [t["data"]["input"] for t in tasks]
    # margins: live_edge 0.01 (live_animal at 0.35), borderline 0.02 (ivory at 0.5), sure_no 0.32, sure_yes 0.33
    assert order == ["photos/live_edge.jpg", "photos/borderline.jpg", "photos/sure_no.jpg", "photos/sure_yes.jpg"]
    assert [t["data"]["uncertainty_rank"] for t in tasks] == [1, 2, 3, 4]
    assert tasks[0]["data"]["closest_label"] == "live_animal"
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == ["none"]  # 0.34 < 0.35: not flagged
    second = tasks[1]
    assert second["data"]["image"] == "/data/local-files/?d=borderline.jpg"
    assert second["data"]["closest_label"] == "ivory"
    pred = second["predictions"][0]
    assert pred["result"][0]["type"] == "choices" and pred["result"][0]["value"]["choices"] == ["ivory"]
    assert pred["result"][0]["from_name"] == "label" and pred["result"][0]["to_name"] == "image"
    assert pred["score"] == pytest.approx(0.02)
    none_task = next(t for t in tasks if t["data"]["input"] == "photos/sure_no.jpg")
    assert none_task["predictions"][0]["result"][0]["value"]["choices"] == ["none"]
    assert none_task["predictions"][0]["model_version"] == "m 1.2"
    assert "left_out_error: 1" in text and "incomplete_last_line: 1" in text


def test_export_thresholds_from_model_and_limit(tmp_path, capsys):
    from helpers import make_tiny_model, tiny_metadata

    meta = tiny_metadata(thresholds={"ivory": 0.9, "live_animal": 0.5})
    model = make_tiny_model(tmp_path / "t.onnx", metadata=meta)
    preds = _records(tmp_path / "p.jsonl")
    out = tmp_path / "tasks.json"
    assert main(["data", "labelstudio-export", str(preds), "-o", str(out), "--model", str(model), "--limit", "2",
                 "--none-choice", "", "--map", "ivory=Ivory", "--url-prefix", ""]) == 0
    tasks = json.loads(out.read_text())
    assert len(tasks) == 2
    # with ivory's threshold at 0.9, sure_yes (0.97) is 0.07 away: the most uncertain
    assert tasks[0]["data"]["input"] == "photos/sure_yes.jpg"
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == ["Ivory"]
    assert tasks[0]["data"]["image"] == "photos/sure_yes.jpg"
    assert tasks[1]["predictions"][0]["result"] == []  # nothing flagged and no none-choice
    assert "left_out_limit: 2" in capsys.readouterr().out


def test_export_csv_predictions_and_bad_thresholds(tmp_path, capsys):
    p = tmp_path / "p.csv"
    p.write_text("input,error,error_kind,flagged,review,score_ivory,score_live_animal,model,model_version,schema\n"
                 "a.jpg,,,ivory,,0.7,0.1,m,1,wildlife-vision/prediction/v1\n"
                 "b.jpg,cannot decode,decode,,,,,m,1,wildlife-vision/prediction/v1\n")
    res = predictions_to_tasks(read_prediction_records(p)[0], {})
    assert [t["data"]["input"] for t in res.tasks] == ["a.jpg"] and res.counts["left_out_error"] == 1
    with pytest.raises(ValueError):
        parse_thresholds("ivory=2")
    assert main(["data", "labelstudio-export", str(p), "-o", str(tmp_path / "t.json"), "--thresholds", "ivory"]) == 2
    assert "LABEL=VALUE" in capsys.readouterr().err

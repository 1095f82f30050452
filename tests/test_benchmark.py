"""`wildlife-vision benchmark` runs end to end on the tiny model with generated photos and writes valid JSON;
FLOP counting of ONNX graphs; the report's targets."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from helpers import make_tiny_model, write_photos

from wildlife_vision_train import benchmark as B
from wildlife_vision.cli import main

FAST = ["--no-torch", "--seconds", "0.05", "--latency-photos", "4", "--batch-sizes", "1", "4",
        "--e2e-batch-size", "4", "--decode-workers", "1", "2"]


def test_benchmark_command_on_generated_photos_writes_json(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    out = tmp_path / "bench.json"
    rc = main(["benchmark", "--model", str(model), "--data", "generated", "--photos", "10", *FAST,
               "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "onnxruntime fp32" in text and "targets:" in text and "skipped: --no-torch" in text
    r = json.loads(out.read_text())
    assert r["schema"] == "wildlife-vision/benchmark/v1"
    assert r["machine"]["cores"] >= 1 and "onnxruntime" in r["machine"]["versions"]
    fp32 = r["configs"]["ort_fp32"]
    assert fp32["e2e"]["photos"] == 10 and fp32["e2e"]["photos_per_s"] > 0
    assert set(fp32["model_only"]) == {"1", "4"}
    assert fp32["latency_one_photo"]["p50_ms"] > 0 and fp32["peak_rss_mb"] > 0
    assert fp32["e2e"]["max_abs_score_diff_between_worker_settings"] == 0.0
    assert set(fp32["e2e"]["by_decode_workers"]) == {"1", "2"}
    assert r["configs"]["torch_eager"] == {"skipped": "--no-torch"}
    assert r["configs"]["torch_competent"] == {"skipped": "--no-torch"}
    assert "skipped" in r["configs"]["ort_int8"]
    assert r["photos"]["source"] == "generated"
    by_name = {t["name"]: t for t in r["targets"]}
    assert by_name["e2e_fp32_vs_model_b32"]["status"] in ("PASS", "FAIL")
    assert by_name["e2e_fp32_vs_torch"]["status"] == "SKIP"
    assert by_name["train_ours_vs_plain"]["status"] == "SKIP"


def test_benchmark_with_int8_and_a_labelled_manifest_compares_ap(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    int8 = tmp_path / "tiny.int8.onnx"
    shutil.copy(model, int8)  # a stand-in: the comparison machinery, not quantisation, is under test
    photos = write_photos(tmp_path / "img", 12)
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "labels", "split"])
        for i, p in enumerate(photos):
            w.writerow([p.relative_to(tmp_path).as_posix(), ["ivory", "live_animal", ""][i % 3],
                        "val" if i < 8 else "train"])
    out = tmp_path / "b.json"
    rc = main(["benchmark", "--model", str(model), "--data", str(manifest), *FAST, "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["model"]["int8_path"] == str(int8)  # found beside the model
    assert r["photos"]["val_photos"] == 8 and r["photos"]["count"] == 8
    acc = r["accuracy"]
    assert acc["val_photos"] == 8 and acc["int8_macro_ap_change"] == 0.0
    t = {x["name"]: x for x in r["targets"]}
    assert t["int8_ap_change"]["status"] == "PASS"
    assert t["e2e_int8_vs_fp32"]["status"] in ("PASS", "FAIL")
    assert "validation AP on 8 photos" in capsys.readouterr().out


def test_benchmark_usage_errors(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    assert main(["benchmark", "--model", str(model), "--photos", "0", "--no-torch"]) == 2
    assert "--photos must be at least 1" in capsys.readouterr().err
    assert main(["benchmark", "--model", str(tmp_path / "missing.onnx"), "--no-torch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wildlife-vision benchmark: model ") and "not found" in err and "Traceback" not in err
    assert main(["benchmark", "--model", str(model), "--data", str(tmp_path / "nowhere"), "--no-torch"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(B.BenchmarkError, match="no .jpg"):
        B.find_photos(str(tmp_path), None, [], tmp_path / "work")


def test_generated_photos_need_no_test_fixture(tmp_path):
    """`--data generated` works from an installed package: the generator is the benchmark's own."""
    code = ("import sys; from pathlib import Path; from PIL import Image\n"
            "from wildlife_vision_train.benchmark.photos import generated_photos\n"
            "paths = generated_photos(Path(sys.argv[1]), 3)\n"
            "assert 'synthetic' not in sys.modules\n"
            "print([Image.open(p).size for p in paths], len(set(open(p, 'rb').read() for p in paths)))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "gen")], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[(448, 336), (448, 336), (448, 336)] 3"


def test_count_onnx_flops_counts_conv_and_gemm(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "W")
    g = numpy_helper.from_array(np.zeros((8, 2), np.float32), "G")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "G"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])], initializer=[w, g])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "c.onnx"))
    r = B.count_onnx_flops(tmp_path / "c.onnx")
    conv_macs = 8 * 16 * 16 * 3 * 3 * 3
    assert r["gmac_per_photo"] == round((conv_macs + 8 * 2) / 1e9, 4)
    assert r["by_op_gmac"]["Conv"] == round(conv_macs / 1e9, 4)


@pytest.fixture(scope="module")
def timm_and_onnx(tmp_path_factory):
    """A tiny random-init timm model (test_efficientnet, 32 px) as a torch state dict and as a self-describing
    ONNX file with the same weights, and eight generated photos."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    import io
    import warnings

    import onnx

    from helpers import tiny_metadata
    from wildlife_vision.metadata import METADATA_KEY

    d = tmp_path_factory.mktemp("timm")
    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", pretrained=False, num_classes=2).eval()
    torch.save(net.state_dict(), d / "best.pt")

    class Scores(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return torch.sigmoid(self.net(x))

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, as in the trainer's export
        torch.onnx.export(Scores(), (torch.randn(2, 3, 32, 32),), buf, input_names=["pixel_values"],
                          output_names=["scores"], dynamic_axes={"pixel_values": {0: "batch"}, "scores": {0: "batch"}},
                          opset_version=17, dynamo=False)
    m = onnx.load_from_string(buf.getvalue())
    meta = tiny_metadata(backbone="test_efficientnet")
    entry = m.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(m, str(d / "m.onnx"))
    return {"onnx": d / "m.onnx", "weights": d / "best.pt", "meta": meta,
            "photos": [str(p) for p in write_photos(d / "img", 8)]}


def test_competent_torch_baseline_runs_and_scores_like_onnxruntime(timm_and_onnx):
    """The competent baseline (DataLoader workers, channels-last, inference mode) and the naive one compute the
    same scores as onnxruntime through Model.predict_iter, so they time the same work."""
    import torch

    from wildlife_vision_train.benchmark.inference import ort_worker, torch_worker

    t = timm_and_onnx
    spec = {"paths": t["photos"], "batch_sizes": [1, 4], "seconds": 0.01, "latency_photos": 2,
            "e2e_batch_size": 4, "repeats": 1, "decode_workers": [1, 2], "threads": 1}
    torch_spec = {**spec, "backbone": "test_efficientnet", "labels": t["meta"]["labels"],
                  "preprocess": t["meta"]["preprocess"], "weights": str(t["weights"])}
    before = torch.get_num_threads()
    try:  # the workers normally run in their own process; here they share the test's
        competent = torch_worker({**torch_spec, "style": "competent"})
        assert competent["torch_threads"] == 1  # set as asked
        naive = torch_worker({**torch_spec, "style": "naive"})
    finally:
        torch.set_num_threads(before)
    ort = ort_worker({**spec, "model": str(t["onnx"])})
    assert competent["settings"]["layout"] == "channels_last"
    assert competent["settings"]["autograd"] == "torch.inference_mode()"
    assert naive["settings"]["layout"] == "NCHW"
    e = competent["e2e"]
    assert e["photos"] == 8 and e["photos_per_s"] > 0 and set(e["by_decode_workers"]) == {"1", "2"}
    assert e["max_abs_score_diff_between_worker_settings"] < 1e-6
    assert set(competent["model_only"]) == {"1", "4"} and competent["latency_one_photo"]["p50_ms"] > 0
    ref = np.asarray(ort["scores"])
    assert ref.shape == (8, 2) and np.ptp(ref, axis=0).min() > 1e-3  # photos score differently: a real comparison
    np.testing.assert_allclose(np.asarray(competent["scores"]), ref, atol=1e-4)
    np.testing.assert_allclose(np.asarray(naive["scores"]), ref, atol=1e-4)
    with pytest.raises(ValueError, match="competent"):
        torch_worker({**torch_spec, "style": "fast"})


def test_targets_and_report_text_from_a_synthetic_report():
    r = {"settings": {"batch_sizes": [1, 8, 32]}, "model": {"gflop_per_photo": 0.8, "path": "m", "backbone": "b",
                                                             "input_size": [224, 224], "source": "x"},
         "machine": {"peak_gflops_fp32": 160.0, "cpu": "cpu", "cores": 2, "ghz": 2.5, "simd": ["avx2"],
                     "flops_per_cycle_per_core": 32, "versions": {}},
         "configs": {
             "torch_competent": {"e2e": {"photos_per_s": 20.0}, "model_only": {"32": {"photos_per_s": 25.0}},
                                 "latency_one_photo": {"p50_ms": 40, "p95_ms": 50}, "peak_rss_mb": 900},
             "torch_eager": {"e2e": {"photos_per_s": 10.0}, "model_only": {"32": {"photos_per_s": 20.0}},
                             "latency_one_photo": {"p50_ms": 50, "p95_ms": 60}, "peak_rss_mb": 900},
             "ort_fp32": {"e2e": {"photos_per_s": 45.0}, "model_only": {"32": {"photos_per_s": 50.0}},
                          "latency_one_photo": {"p50_ms": 20, "p95_ms": 25}, "peak_rss_mb": 300},
             "ort_int8": {"e2e": {"photos_per_s": 50.0}, "model_only": {"32": {"photos_per_s": 80.0}},
                          "latency_one_photo": {"p50_ms": 15, "p95_ms": 18}, "peak_rss_mb": 300}},
         "accuracy": {"int8_macro_ap_change": -0.006, "labels": ["ivory"], "val_photos": 5,
                      "int8_max_abs_score_diff": 0.1,
                      "ort_fp32": {"macro_ap": 0.9, "per_label_ap": {"ivory": 0.9}},
                      "ort_int8": {"macro_ap": 0.894, "per_label_ap": {"ivory": 0.894}}}, "training": {"ratio_ours_vs_plain": 2.5},
         "created": "now", "seconds": 1.0, "photos": {"count": 5, "source": "s"}}
    B.build_ratios_and_targets(r)
    t = {x["name"]: x["status"] for x in r["targets"]}
    # 45 / 20 against the competent baseline fails the 3x target although 45 / 10 against the naive one would pass
    assert t == {"e2e_fp32_vs_model_b32": "PASS", "e2e_fp32_vs_torch": "FAIL", "e2e_int8_vs_fp32": "FAIL",
                 "int8_ap_change": "FAIL", "train_ours_vs_plain": "PASS"}
    assert r["ratios"]["e2e_fp32_vs_torch_competent"] == 2.25 and r["ratios"]["e2e_fp32_vs_torch_eager"] == 4.5
    assert r["ratios"]["e2e_torch_competent_vs_naive"] == 2.0
    assert r["ratios"]["e2e_fp32_vs_model_only_fp32_b32"] == 0.9
    assert r["flop_limit"]["photos_per_s_at_peak"] == 200.0
    assert r["configs"]["ort_fp32"]["e2e"]["fraction_of_flop_limit"] == 0.225
    text = B.format_report(r)
    assert "[FAIL] end-to-end INT8 / fp32 >= 1.15" in text
    assert "[FAIL] end-to-end onnxruntime fp32 / torch competent >= 3: 2.250" in text
    rows = [line.split()[:3] for line in text.splitlines() if line.startswith("torch ")]
    assert rows == [["torch", "competent", "20.0"], ["torch", "naive", "10.0"]]

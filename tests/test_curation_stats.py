"""`data stats`: counts per label and split, decode failures, size distribution, chart; no torch in the package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wildlife_vision.data.manifest import write_manifest
from synthetic import write_scene
from wildlife_vision.cli import main


@pytest.fixture
def small_manifest(tmp_path):
    rows = []
    for i in range(6):
        write_scene(tmp_path / "img" / f"{i}.jpg", i, size=(320 + 40 * i, 240))
        rows.append({"image": f"img/{i}.jpg", "labels": ["ivory", "", "live_animal", "ivory;live_animal", "", "ivory"][i],
                     "split": "train" if i < 4 else "val", "source": "shopA" if i % 2 else "shopB"})
    (tmp_path / "img" / "bad.jpg").write_bytes(b"<html>not an image</html>")
    rows.append({"image": "img/bad.jpg", "labels": "", "split": "val", "source": "shopA"})
    write_manifest(tmp_path / "m.csv", ["image", "labels", "split", "source"], rows)
    return tmp_path / "m.csv"


def test_stats_json(small_manifest, capsys):
    assert main(["data", "stats", str(small_manifest), "--json", "--no-cache"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["rows"] == 7
    assert st["splits"] == {"train": 4, "val": 3}
    assert st["labels"]["ivory"] == {"train": 2, "val": 1, "total": 3}
    assert st["labels"]["live_animal"]["total"] == 2
    assert st["labels"]["(none)"] == {"train": 1, "val": 2, "total": 3}
    assert st["rows_without_labels"] == 3 and st["multi_label_rows"] == 1
    assert [f["image"] for f in st["decode_failures"]] == ["img/bad.jpg"]
    assert "HTML" in st["decode_failures"][0]["error"]
    assert st["width"]["min"] == 320 and st["width"]["max"] == 520 and st["height"]["median"] == 240
    assert st["sources"]["distinct"] == 2
    assert st["file_kb"]["max"] > 0


def test_stats_text_and_chart(small_manifest, tmp_path, capsys):
    chart = tmp_path / "stats.png"
    assert main(["data", "stats", str(small_manifest), "--chart", str(chart), "--no-cache"]) == 0
    text = capsys.readouterr().out
    assert "decode failures: 1" in text and "img/bad.jpg" in text
    assert "ivory" in text and "width: min 320 px" in text
    assert chart.is_file() and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stats_without_decoding(small_manifest, capsys):
    assert main(["data", "stats", str(small_manifest), "--no-decode", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert "decode_failures" not in st and st["rows"] == 7


def test_chart_without_matplotlib_says_how_to_install(small_manifest, tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    code = main(["data", "stats", str(small_manifest), "--no-decode", "--chart", str(tmp_path / "c.png")])
    assert code == 3
    assert "pip install 'wildlife-vision[eval]'" in capsys.readouterr().err


def test_curation_package_does_not_import_torch():
    code = ("import sys, wildlife_vision.data.cli, wildlife_vision.data.dedup, wildlife_vision.data.splits, "
            "wildlife_vision.data.labelstudio, wildlife_vision.data.stats; "
            "print('torch' in sys.modules)")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert out.stdout.strip() == "False"

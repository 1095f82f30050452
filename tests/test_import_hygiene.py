"""The inference library stays small: importing it, and running `predict`, never pulls in the training stack;
and a plain (non-editable) install carries the shipped default model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from helpers import make_photo, make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
#: top-level packages that must never be imported by the inference path (torch & co. are the `train` extra;
#: onnx is a dev/train tool, not a runtime dependency)
FORBIDDEN = ("torch", "torchvision", "timm", "albumentations", "onnx", "onnxscript", "matplotlib", "safetensors")

CHECK = """
import sys
bad = sorted({m.split('.')[0] for m in sys.modules} & set(%r))
print("FORBIDDEN:" + ",".join(bad))
""" % (FORBIDDEN,)


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120,
                          cwd=str(ROOT))


def _forbidden(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 0, out.stderr
    line = [x for x in out.stdout.splitlines() if x.startswith("FORBIDDEN:")][-1]
    return line[len("FORBIDDEN:"):]


def test_importing_the_library_and_cli_does_not_import_the_training_stack():
    code = "import wildlife_vision, wildlife_vision.cli, wildlife_vision.cli_predict, wildlife_vision.records\n" + CHECK
    assert _forbidden(_run(code)) == ""


def test_running_predict_and_info_does_not_import_the_training_stack(tmp_path):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    photo = tmp_path / "p.jpg"
    make_photo(0).save(photo)
    code = textwrap.dedent("""
        import sys
        from wildlife_vision.cli import main
        rc1 = main(["predict", sys.argv[1], "--model", sys.argv[2], "--output", sys.argv[3], "--no-progress"])
        rc2 = main(["info", sys.argv[2]])
        import wildlife_vision as wv
        wv.load_model(sys.argv[2]).predict([sys.argv[1]], workers=2)
        assert rc1 == rc2 == 0, (rc1, rc2)
    """) + CHECK
    out = _run(code, str(photo), str(model), str(tmp_path / "out.jsonl"))
    assert _forbidden(out) == ""
    assert (tmp_path / "out.jsonl").read_text().count("\n") == 1


def test_explain_and_predict_explain_need_only_the_core_install(tmp_path):
    """Heatmaps on the shipped model (it has the cam output), through the library and `predict --explain`,
    without importing torch, timm or onnx."""
    photo = tmp_path / "p.jpg"
    make_photo(3, (200, 120)).save(photo)
    code = textwrap.dedent("""
        import sys
        import wildlife_vision as wv
        from wildlife_vision.cli import main
        ex = wv.load_model().explain(sys.argv[1])
        assert ex.ok and ex.maps["ivory"].shape == (120, 200), ex.maps["ivory"].shape
        rc = main(["predict", sys.argv[1], "--output", sys.argv[2], "--explain", sys.argv[3], "--no-progress"])
        assert rc == 0, rc
    """) + CHECK
    out = _run(code, str(photo), str(tmp_path / "out.jsonl"), str(tmp_path / "heat"))
    assert _forbidden(out) == ""
    assert '"heatmaps"' in (tmp_path / "out.jsonl").read_text()


def _default_model_files():
    default = ROOT / "exported_models" / "DEFAULT"
    if not default.is_file():
        return None
    return default, default.read_text(encoding="utf-8").strip()


@pytest.mark.slow
def test_wheel_contains_the_default_model(tmp_path):
    """`pip install .` (not editable) must ship exported_models/DEFAULT and the .onnx it names."""
    found = _default_model_files()
    if found is None:
        pytest.skip("exported_models/DEFAULT does not exist yet in this checkout (the shipped model is not trained "
                    "yet); this test checks the wheel once it does")
    default, name = found
    assert (ROOT / "exported_models" / name).is_file(), f"DEFAULT names {name}, which is not in exported_models/"
    # build from a copy so the shared checkout gets no build/ or egg-info churn
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "runs",
                                    ".pytest_cache", ".hypothesis", "notebooks", "datasets", "benchmarks")
    shutil.copytree(ROOT, src, ignore=ignore, symlinks=True)
    wheels = tmp_path / "wheels"
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                          "-w", str(wheels), "-q"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = wheels.glob("wildlife_vision-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "wildlife_vision/exported_models/DEFAULT" in names, (
        "the wheel lacks exported_models/DEFAULT: add \"DEFAULT\" to [tool.setuptools.package-data] "
        "\"wildlife_vision.exported_models\" in pyproject.toml")
    assert f"wildlife_vision/exported_models/{name}" in names
    assert "wildlife_vision/cli_predict.py" in names and "wildlife_vision/records.py" in names
    # both floors ship, the trainer under its own import name, and the commands are registered as plugins
    for module in ("wildlife_vision/data/manifest.py", "wildlife_vision/evaluation/evaluate.py",
                   "wildlife_vision_train/train.py", "wildlife_vision_train/benchmark/cli.py"):
        assert module in names, module
    assert not any(n.startswith("training/") for n in names)
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[wildlife_vision.commands]" in text and "wildlife_vision_train.cli:register" in text

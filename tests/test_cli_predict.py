"""`wildlife-vision predict` and `info`: rows, formats, input expansion, resume, exit codes, interruption."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from wildlife_vision.cli import main as cli_main
from wildlife_vision.exitcodes import EXIT_INTERRUPTED, EXIT_MODEL, EXIT_OK, EXIT_USAGE
from wildlife_vision.inputs import expand_inputs
from wildlife_vision.records import JSONL_FIELDS, RECORD_SCHEMA, csv_header

from helpers import make_photo, make_tiny_model, tiny_metadata, write_photos

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def setup(tmp_path):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    folder = tmp_path / "photos"
    write_photos(folder, 4, "JPEG", size=(48, 40))
    write_photos(folder / "sub", 2, "PNG", size=(40, 48))
    (folder / "notes.txt").write_text("skip me")
    (folder / "broken.jpg").write_text("<html>not a photo</html>")
    return tmp_path, model, folder


def run(*args) -> int:
    return cli_main(["predict", *map(str, args), "--no-progress"])


def rows_of(path: Path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---- rows and formats ---------------------------------------------------------------------------------

def test_draft_flag_reaches_the_decoder(tmp_path):
    """--draft opts in to reduced-scale JPEG decoding (scores as the Python API's draft=True), --no-draft and
    the default decode in full; on a noisy photo many times the input size the two really differ."""
    import wildlife_vision as wv

    model = make_tiny_model(tmp_path / "tiny.onnx")
    photo = tmp_path / "big.jpg"
    make_photo(3, (1600, 1200)).save(photo, quality=90)
    scores = {}
    for flag in ("--draft", "--no-draft", None):
        out = tmp_path / f"{flag}.jsonl"
        assert run(photo, "--model", model, "-o", out, *([flag] if flag else [])) == EXIT_OK
        scores[flag] = rows_of(out)[0]["scores"]
    assert scores["--draft"] == wv.load_model(model, draft=True).predict(str(photo)).scores
    assert scores["--no-draft"] == scores[None] == wv.load_model(model).predict(str(photo)).scores
    assert scores["--draft"] != scores[None]


def test_jsonl_rows_are_versioned_and_complete(setup, capsys):
    tmp, model, folder = setup
    out = tmp / "out.jsonl"
    assert run(folder, "--model", model, "--output", out) == EXIT_OK
    rows = rows_of(out)
    assert [Path(r["input"]).name for r in rows] == ["broken.jpg"] + [f"photo_{i:04d}.jpg" for i in range(4)]
    for r in rows:
        assert list(r) == list(JSONL_FIELDS)
        assert r["schema"] == RECORD_SCHEMA and r["model"] == "tiny-test-model" and r["model_version"] == "0.0.1"
    bad, good = rows[0], rows[1:]
    assert bad["error_kind"] == "not_an_image" and bad["scores"] == {} and bad["flagged"] == [] and bad["review"] == []
    for r in good:
        assert r["error"] is None and r["error_kind"] is None
        assert set(r["scores"]) == {"ivory", "live_animal"}
        assert r["flagged"] == [k for k in ("ivory", "live_animal") if r["scores"][k] >= 0.5]
    err = capsys.readouterr().err
    assert "5 inputs: 4 scored, 1 failed" in err and "flagged: ivory" in err and "review:" in err
    assert "photos/s" in err and "not_an_image 1" in err and "1 subfolders (use --recursive)" in err


def test_rows_match_the_python_api(setup):
    import wildlife_vision as wv

    tmp, model, folder = setup
    out = tmp / "out.jsonl"
    assert run(folder, "-r", "--model", model, "-o", out, "--batch-size", "3", "--workers", "3") == EXIT_OK
    m = wv.load_model(model)
    for r in rows_of(out):
        p = m.predict(r["input"])
        assert (r["scores"], r["flagged"], r["review"], r["error"]) == (p.scores, list(p.flagged), list(p.review),
                                                                        p.error)


def test_csv_output(setup):
    tmp, model, folder = setup
    out = tmp / "out.csv"
    assert run(folder, "--recursive", "--model", model, "--output", out) == EXIT_OK
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == csv_header(["ivory", "live_animal"]) == [
        "input", "error", "error_kind", "flagged", "review", "score_ivory", "score_live_animal", "model",
        "model_version", "profile", "schema"]
    body = [dict(zip(rows[0], r)) for r in rows[1:]]
    assert {r["profile"] for r in body} == {"fp32"}, "every row names the profile that scored it"
    assert len(body) == 7
    broken = next(r for r in body if r["input"].endswith("broken.jpg"))
    assert broken["error_kind"] == "not_an_image" and broken["score_ivory"] == ""
    ok = next(r for r in body if r["input"].endswith("photo_0000.jpg"))
    assert ok["error"] == "" and 0 <= float(ok["score_ivory"]) <= 1 and ok["schema"] == RECORD_SCHEMA
    assert all(set(filter(None, r["flagged"].split(";"))) <= {"ivory", "live_animal"} for r in body)


def test_stdout_is_jsonl_and_stderr_has_the_summary(setup, capsys):
    tmp, model, folder = setup
    assert run(folder / "photo_0001.jpg", "--model", model) == EXIT_OK
    cap = capsys.readouterr()
    (row,) = [json.loads(x) for x in cap.out.splitlines()]
    assert row["input"].endswith("photo_0001.jpg") and "1 scored" in cap.err
    assert run(folder / "photo_0001.jpg", "--model", model, "--format", "csv") == EXIT_OK
    assert capsys.readouterr().out.splitlines()[0].startswith("input,error,")


def test_progress_bar_with_and_without_tqdm(setup, capsys, monkeypatch):
    tmp, model, folder = setup
    assert cli_main(["predict", str(folder), "--model", str(model), "-o", str(tmp / "a.jsonl"), "--progress"]) == 0
    assert "photo" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    assert cli_main(["predict", str(folder), "--model", str(model), "-o", str(tmp / "b.jsonl"), "--progress"]) == 0
    assert "5/5 photos (100%)" in capsys.readouterr().err


# ---- input expansion ---------------------------------------------------------------------------------

def test_expansion_is_sorted_deduplicated_and_filters_folders_only(setup):
    tmp, model, folder = setup
    txt = folder / "notes.txt"
    res = expand_inputs([str(folder / "photo_0002.jpg"), str(folder), str(txt), str(folder / "photo_0002.jpg")])
    names = [Path(p).name for p in res.paths]
    assert names == ["photo_0002.jpg", "broken.jpg", "photo_0000.jpg", "photo_0001.jpg", "photo_0003.jpg",
                     "notes.txt"]
    assert res.duplicates == 2 and res.skipped_non_images == 1 and res.skipped_subfolders == 1
    rec = expand_inputs([str(folder)], recursive=True)
    assert [os.path.relpath(p, folder) for p in rec.paths] == [
        "broken.jpg", "photo_0000.jpg", "photo_0001.jpg", "photo_0002.jpg", "photo_0003.jpg",
        os.path.join("sub", "photo_0000.png"), os.path.join("sub", "photo_0001.png")]


def test_symlink_loops_do_not_hang(setup):
    tmp, model, folder = setup
    os.symlink("..", folder / "sub" / "up")            # sub/up -> photos (a loop)
    os.symlink(".", folder / "self_dir")               # photos/self_dir -> photos
    os.symlink("loop.jpg", folder / "loop.jpg")        # a link to itself
    os.symlink(str(folder / "sub"), folder / "sub_again")  # the same real folder under a second name
    start = time.perf_counter()
    res = expand_inputs([str(folder)], recursive=True)
    assert time.perf_counter() - start < 2
    assert res.skipped_loops >= 2
    real = [os.path.realpath(p) for p in res.paths if not p.endswith("loop.jpg")]
    assert len(real) == len(set(real)) == 7
    out = tmp / "out.jsonl"
    assert run(folder, "-r", "--model", model, "-o", out) == EXIT_OK
    loop_row = next(r for r in rows_of(out) if r["input"].endswith("loop.jpg"))
    assert loop_row["error_kind"] == "unreadable" and "symbolic links" in loop_row["error"]


def test_unlistable_folder_gets_an_error_row(setup, monkeypatch):
    tmp, model, folder = setup
    real_scandir = os.scandir

    def scandir(path):
        if str(path).endswith("sub"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp / "out.jsonl"
    assert run(folder, "-r", "--model", model, "-o", out) == EXIT_OK
    row = next(r for r in rows_of(out) if r["input"].endswith("sub"))
    assert row["error_kind"] == "unreadable" and "Permission denied" in row["error"]


def test_non_ascii_and_non_utf8_file_names(tmp_path):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    folder = tmp_path / "фото"
    folder.mkdir()
    make_photo(0).save(folder / "象牙 ivory é.jpg")
    raw = os.fsencode(str(folder)) + b"/\xff\xfe-latin1-\xe9.jpg"  # not valid UTF-8
    try:
        with open(raw, "wb") as f:
            make_photo(1).save(f, "JPEG")
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    out = tmp_path / "out.jsonl"
    assert run(folder, "--model", model, "-o", out) == EXIT_OK
    rows = rows_of(out)
    assert len(rows) == 2 and all(r["error"] is None for r in rows)
    assert any(r["input"].endswith("象牙 ivory é.jpg") for r in rows)
    # resume recognises both names, including the undecodable one
    assert run(folder, "--model", model, "-o", out, "--resume") == EXIT_OK
    assert len(rows_of(out)) == 2
    csv_out = tmp_path / "out.csv"
    assert run(folder, "--model", model, "-o", csv_out) == EXIT_OK
    assert run(folder, "--model", model, "-o", csv_out, "--resume") == EXIT_OK
    assert len(csv_out.read_bytes().splitlines()) == 3


def test_file_name_with_a_newline_keeps_csv_one_line_per_row(tmp_path):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    folder = tmp_path / "p"
    folder.mkdir()
    make_photo(0).save(folder / "two\nlines.jpg", "JPEG")
    out = tmp_path / "o.csv"
    assert run(folder, "--model", model, "-o", out) == EXIT_OK
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "two\\x0alines.jpg" in lines[1]
    assert run(folder, "--model", model, "-o", out, "--resume") == EXIT_OK
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2
    jl = tmp_path / "o.jsonl"
    assert run(folder, "--model", model, "-o", jl) == EXIT_OK
    assert rows_of(jl)[0]["input"].endswith("two\nlines.jpg")


# ---- existing outputs, resume ---------------------------------------------------------------------------

def test_existing_output_is_not_overwritten_without_a_flag(setup, capsys):
    tmp, model, folder = setup
    out = tmp / "out.jsonl"
    out.write_text("precious\n")
    assert run(folder, "--model", model, "-o", out) == EXIT_USAGE
    assert out.read_text() == "precious\n"
    assert "--resume" in capsys.readouterr().err
    assert run(folder, "--model", model, "-o", out, "--overwrite") == EXIT_OK
    assert len(rows_of(out)) == 5


def test_resume_skips_done_inputs_and_repairs_a_torn_last_line(setup, capsys):
    tmp, model, folder = setup
    out = tmp / "out.jsonl"
    assert run(folder, "--model", model, "-o", out) == EXIT_OK
    full = rows_of(out)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2]) + lines[2][:25])  # two rows and a torn third, as after a crash
    capsys.readouterr()
    assert run(folder, "--model", model, "-o", out, "--resume") == EXIT_OK
    err = capsys.readouterr().err
    assert "incomplete last line" in err and "2 already in" in err and "3 inputs" in err
    assert rows_of(out) == full  # same rows, same order, nothing duplicated or lost
    assert run(folder, "--model", model, "-o", out, "--resume") == EXIT_OK
    assert rows_of(out) == full


def test_resume_csv_and_a_csv_torn_inside_its_header(setup):
    tmp, model, folder = setup
    out = tmp / "out.csv"
    out.write_bytes(b"input,err")  # killed while writing the header
    assert run(folder, "--model", model, "-o", out, "--resume") == EXIT_OK
    lines = out.read_text().splitlines()
    assert lines[0].startswith("input,error,error_kind") and len(lines) == 6
    out.write_text("\n".join(lines[:3]) + "\n")
    assert run(folder, "--model", model, "-o", out, "--resume") == EXIT_OK
    assert out.read_text().splitlines() == lines


def test_resume_refuses_to_mix_models_or_formats(setup, capsys):
    tmp, model, folder = setup
    out = tmp / "out.jsonl"
    assert run(folder, "--model", model, "-o", out) == EXIT_OK
    other = make_tiny_model(tmp / "other.onnx", metadata=tiny_metadata(model_version="0.0.2"))
    assert run(folder, "--model", other, "-o", out, "--resume") == EXIT_USAGE
    assert "would mix" in capsys.readouterr().err
    three = make_tiny_model(tmp / "three.onnx", labels=("a", "b", "c"))
    csv_out = tmp / "out.csv"
    assert run(folder, "--model", model, "-o", csv_out) == EXIT_OK
    assert run(folder, "--model", three, "-o", csv_out, "--resume") == EXIT_USAGE
    assert "columns" in capsys.readouterr().err
    junk = tmp / "junk.jsonl"
    junk.write_text('{"input": "a"}\nnot json\n')
    assert run(folder, "--model", model, "-o", junk, "--resume") == EXIT_USAGE
    assert "line 2 is not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("args, says", [
    (["--resume"], "need --output"),
    (["-o", "x.txt"], "cannot tell the output format"),
    (["-o", "x.jsonl", "--resume", "--overwrite"], "contradict"),
    (["--batch-size", "0"], "--batch-size"),
    (["--workers", "0"], "--workers"),
    (["--threads", "-2"], "--threads"),
    (["--providers", "quantum"], "unknown execution provider"),
])
def test_usage_errors_exit_2(setup, capsys, monkeypatch, args, says):
    tmp, model, folder = setup
    monkeypatch.chdir(tmp)
    assert run(folder, "--model", model, *args) == EXIT_USAGE
    assert says in capsys.readouterr().err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["predict"])
    assert e.value.code == EXIT_USAGE


def test_missing_model_exits_4(setup, capsys):
    tmp, model, folder = setup
    assert run(folder, "--model", tmp / "nope.onnx") == EXIT_MODEL
    assert "model file not found" in capsys.readouterr().err


# ---- info -------------------------------------------------------------------------------------------

def test_info_text_and_json(tmp_path, capsys):
    meta = tiny_metadata(training={"dataset": "wildtrade-v1", "manifest_sha256": "ab" * 32, "epochs": 3},
                         metrics={"test": {"ivory": {"ap": 0.91}}}, created="2024-05-01T00:00:00Z")
    model = make_tiny_model(tmp_path / "m.onnx", metadata=meta)
    assert cli_main(["info", str(model)]) == EXIT_OK
    text = capsys.readouterr().out
    for word in ("tiny-test-model 0.0.1", "ivory", "live_animal", "0.500", "[0.300, 0.500)", "32x32", "bilinear",
                 "tiny-linear", "manifest_sha256", "ap: 0.91", "sha256:"):
        assert word in text, word
    assert cli_main(["info", str(model), "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["metadata"]["labels"] == ["ivory", "live_animal"] and len(data["sha256"]) == 64
    assert data["metadata"]["training"]["dataset"] == "wildtrade-v1"


# ---- interruption --------------------------------------------------------------------------------------

def _many_photos(folder: Path, n: int):
    folder.mkdir()
    buf = io.BytesIO()
    for i in range(n):
        buf.seek(0)
        buf.truncate()
        Image.new("RGB", (40, 30), ((i * 7) % 256, (i * 13) % 256, (i * 29) % 256)).save(buf, "PNG")
        (folder / f"img_{i:05d}.png").write_bytes(buf.getvalue())
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")


def _kill_when(proc, out: Path, lines: int, sig) -> int:
    seen = 0
    while proc.poll() is None:
        if out.exists():
            seen = out.read_bytes().count(b"\n")
            if seen >= lines:
                proc.send_signal(sig)
                break
        time.sleep(0.002)
    proc.wait(timeout=60)
    return seen


def test_sigkill_midway_then_resume_gives_exactly_one_row_per_input(tmp_path):
    n = 1500
    folder = tmp_path / "photos"
    _many_photos(folder, n)
    model = make_tiny_model(tmp_path / "tiny.onnx")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "wildlife_vision", "predict", str(folder), "--model", str(model), "--output",
           str(out), "--batch-size", "16", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    seen = _kill_when(proc, out, 300, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    before = out.read_bytes()
    assert 300 <= seen and before.count(b"\n") < n + 1
    out.write_bytes(before + b'{"schema": "wildlife-vision/prediction/v1", "input": "')  # and a torn write
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""  # ends with a newline: no partial line
    rows = [json.loads(x) for x in lines[:-1]]  # every line is valid JSON
    inputs = [r["input"] for r in rows]
    expected = sorted(str(p) for p in folder.iterdir())
    assert len(inputs) == len(set(inputs)) == n + 1  # none duplicated
    assert sorted(inputs) == expected  # none lost
    assert inputs == expected  # and still in order
    assert sum(r["error"] is not None for r in rows) == 1
    assert "incomplete last line" in done.stderr


def test_ctrl_c_keeps_whole_rows_and_exits_130(tmp_path):
    folder = tmp_path / "photos"
    _many_photos(folder, 1500)
    model = make_tiny_model(tmp_path / "tiny.onnx")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "wildlife_vision", "predict", str(folder), "--model", str(model), "-o", str(out),
           "--batch-size", "16", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    _kill_when(proc, out, 200, signal.SIGINT)
    err = proc.stderr.read()
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "--resume" in err
    data = out.read_bytes()
    assert data.endswith(b"\n") and all(json.loads(x) for x in data.splitlines())

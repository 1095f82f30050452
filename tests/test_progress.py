"""The one progress reporter (wildlife_vision.progress): a bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import io
import sys

import pytest

import wildlife_vision.progress as progress_mod
from wildlife_vision.cli import main as cli_main
from wildlife_vision.progress import Progress, format_seconds, track

from helpers import make_tiny_model, write_photos


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    p = Progress(4, "predict", unit="photo", interval=0, stream=out)
    for _ in range(4):
        p.update(1)
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("predict: 1/4 photos (25%), ") and ", ETA " in lines[0]
    assert lines[-1].startswith("predict: 4/4 photos (100%) in ")


def test_lines_only_every_interval_and_a_last_line():
    out = io.StringIO()
    with Progress(1000, "predict", stream=out, interval=3600) as p:
        for _ in range(1000):
            p.update(1)
    assert out.getvalue().splitlines() == [out.getvalue().strip()]  # no periodic line, just the last one
    assert out.getvalue().startswith("predict: 1000/1000 photos (100%) in ")


def test_short_loops_with_leave_false_stay_silent_and_disabled_prints_nothing():
    out = io.StringIO()
    assert list(Progress(3, "pair search", unit="block", leave=False, stream=out).wrap(range(3))) == [0, 1, 2]
    assert out.getvalue() == ""
    p = Progress(3, "x", enabled=False, stream=out)
    p.update(3)
    p.close()
    assert out.getvalue() == ""
    items = [1, 2]
    assert track(items, enabled=False) is items


def test_unknown_total_and_plural_units():
    out = io.StringIO()
    p = Progress(None, "eval", unit="batch", interval=0, stream=out)
    p.update(2)
    p.close()
    assert out.getvalue().splitlines()[0].startswith("eval: 2 batches, ")


def test_a_terminal_gets_tqdm_or_an_in_place_line(monkeypatch):
    pytest.importorskip("tqdm")
    tty = FakeTTY()
    p = Progress(5, "predict", stream=tty)
    assert p._bar is not None
    p.update(5)
    p.close()
    assert "predict" in tty.getvalue()
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    tty = FakeTTY()
    p = Progress(5, "predict", stream=tty)
    p.update(5)
    p.close()
    assert tty.getvalue().startswith("\rpredict: 5/5 photos (100%)") and tty.getvalue().endswith("\n")


def test_format_seconds():
    assert format_seconds(43.2) == "43 s"
    assert format_seconds(200) == "3 min 20 s"
    assert format_seconds(3900) == "1 h 05 min"


def test_predict_prints_periodic_lines_when_stderr_is_not_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress_mod, "LINE_INTERVAL", 0.0)
    model = make_tiny_model(tmp_path / "tiny.onnx")
    folder = tmp_path / "photos"
    write_photos(folder, 4, "JPEG", size=(40, 32))
    args = ["predict", str(folder), "--model", str(model), "--batch-size", "1", "--workers", "1"]
    assert cli_main([*args, "-o", str(tmp_path / "a.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "predict: 1/4 photos (25%), " in err and "ETA" in err and "predict: 4/4 photos (100%) in " in err
    assert "\r" not in err
    assert cli_main([*args, "-o", str(tmp_path / "b.jsonl"), "--no-progress"]) == 0
    assert "photos (" not in capsys.readouterr().err

"""`predict --shard I/N`: a partition by a hash of each input's key; the shards' union is the full run, no
input is in two shards, membership depends on nothing but the key, and a bad I/N is a usage error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wildlife_vision.batch.shard import Shard, parse_shard, shard_of
from wildlife_vision.cli import main as cli_main
from wildlife_vision.exitcodes import EXIT_OK, EXIT_USAGE

from helpers import make_tiny_model, write_photos


def predict(*args) -> int:
    return cli_main(["predict", *map(str, args), "--no-progress"])


def rows_of(path: Path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("text, want", [("0/1", (0, 1)), ("3/4", (3, 4)), (" 1 / 2 ", (1, 2)), ("07/10", (7, 10))])
def test_parse_shard(text, want):
    s = parse_shard(text)
    assert (s.index, s.count) == want and str(s) == f"{want[0]}/{want[1]}"


@pytest.mark.parametrize("text, message", [
    ("4/4", "0..3 (0-based)"), ("1/0", "at least 1"), ("-1/4", "I/N with whole numbers"),
    ("a/b", "I/N with whole numbers"), ("2", "I/N with whole numbers"), ("1/2/3", "I/N with whole numbers"),
    ("", "I/N with whole numbers"), ("1.5/4", "I/N with whole numbers")])
def test_bad_shards_are_refused(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        parse_shard(text)


def test_membership_depends_only_on_the_key():
    keys = [f"photos/{i:05d}.jpg" for i in range(4000)]
    for n in (1, 2, 3, 7):
        shards = [Shard(i, n).select(keys) for i in range(n)]
        assert sorted(k for s in shards for k in s) == sorted(keys)          # union: everything, once
        assert sum(len(s) for s in shards) == len(keys)                      # no overlaps
        mean = len(keys) / n
        assert all(abs(len(s) - mean) < 5 * mean ** 0.5 for s in shards)    # balanced like a fair hash
        # another listing (reversed, half of it, plus new names) puts every common key in the same shard
        other = keys[::-2] + ["photos/new.jpg", "фото/象牙.jpg", "bad-\udcff.jpg"]
        for i in range(n):
            assert set(Shard(i, n).select(other)) & set(keys) == set(shards[i]) & set(other)
    # the split is part of the job-array contract: the same on every machine and in every later version
    # (values pinned when the scheme was introduced; changing the scheme breaks running job arrays)
    assert [shard_of(f"{i}.jpg", 7) for i in range(8)] == [6, 4, 3, 0, 6, 0, 0, 5]
    assert [shard_of(k, 10) for k in ("a.jpg", "photos/b.png", "bad-\udcff.jpg")] == [6, 8, 8]


def test_local_shards_add_up_to_the_full_run(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    folder = tmp_path / "photos"
    write_photos(folder, 17, "JPEG", size=(40, 40))
    write_photos(folder / "sub", 3, "PNG", size=(40, 40))
    (folder / "broken.jpg").write_text("not a photo")
    full = tmp_path / "full.jsonl"
    assert predict(folder, "-r", "--model", model, "-o", full) == EXIT_OK
    want = {r["input"]: r for r in rows_of(full)}
    capsys.readouterr()
    got = {}
    for i in range(3):
        out = tmp_path / f"shard-{i}.jsonl"
        assert predict(folder, "-r", "--model", model, "-o", out, "--shard", f"{i}/3") == EXIT_OK
        rows = rows_of(out)
        assert rows, "a shard of 21 inputs in 3 came out empty"
        assert f"shard:   {i}/3: {len(rows)} of 21 inputs" in capsys.readouterr().err
        for r in rows:
            assert r["input"] not in got, f"{r['input']} is in two shards"
            got[r["input"]] = r
    assert got == want
    # a shard resumes like any run: nothing is redone or duplicated
    out = tmp_path / "shard-1.jsonl"
    before = out.read_bytes()
    assert predict(folder, "-r", "--model", model, "-o", out, "--shard", "1/3", "--resume") == EXIT_OK
    assert out.read_bytes() == before


@pytest.mark.parametrize("value", ["3/3", "-1/3", "1/0", "x", "1/3/1", "0/-2"])
def test_bad_shard_flag_is_a_usage_error(tmp_path, capsys, value):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    write_photos(tmp_path / "p", 1, "JPEG", size=(40, 40))
    out = tmp_path / "out.jsonl"
    assert predict(tmp_path / "p", "--model", model, "-o", out, f"--shard={value}") == EXIT_USAGE
    assert "--shard" in capsys.readouterr().err
    assert not out.exists()

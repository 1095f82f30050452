"""`wildlife-vision embed`: the model's embedding vectors in bulk, one entry per input (failures included), as
.npy + a sidecar CSV or as Parquet; the vectors are Model.embed's."""

from __future__ import annotations

import argparse
import csv
import sys

import numpy as np
import pytest

from helpers import make_tiny_model, write_photos

import wildlife_vision as wv
from wildlife_vision.cli_embed import register, sidecar_path


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["embed", *argv])
    from wildlife_vision.exitcodes import EXIT_MISSING_EXTRA, MissingExtraError

    try:
        return args.func(args)
    except MissingExtraError as e:  # what wildlife_vision.cli.main does
        print(e, file=sys.stderr)
        return EXIT_MISSING_EXTRA


@pytest.fixture
def inputs(tmp_path):
    model = make_tiny_model(tmp_path / "m.onnx", embedding=True)
    photos = write_photos(tmp_path / "photos", 5)
    bad = tmp_path / "photos" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    missing = tmp_path / "nope.jpg"
    return model, photos, bad, missing


def test_npy_rows_match_model_embed_and_the_sidecar_lists_every_input(inputs, tmp_path):
    model, photos, bad, missing = inputs
    out = tmp_path / "emb.npy"
    rc = _run(str(tmp_path / "photos"), str(missing), "--model", str(model), "--output", str(out), "--no-progress")
    assert rc == 0
    arr = np.load(out)
    assert arr.dtype == np.float32 and arr.shape == (5, 48)
    with sidecar_path(out).open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7  # 5 photos, the broken file (in the folder) and the missing path: one row each
    by_input = {r["input"]: r for r in rows}
    assert by_input[str(bad)]["row"] == "" and by_input[str(bad)]["error_kind"]
    assert by_input[str(missing)]["row"] == "" and "not found" in by_input[str(missing)]["error"]
    m = wv.load_model(model)
    for p in photos:
        r = by_input[str(p)]
        assert r["error"] == "" and np.array_equal(arr[int(r["row"])], m.embed(str(p)))
    assert [int(r["row"]) for r in rows if r["row"]] == list(range(5))  # array rows in input order


def test_parquet_has_one_row_per_input_with_null_for_failures(inputs, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="parquet output needs pyarrow (the [ray] extra)")
    model, photos, bad, _ = inputs
    out = tmp_path / "emb.parquet"
    assert _run(str(tmp_path / "photos"), "--model", str(model), "--output", str(out), "--no-progress") == 0
    table = pq.read_table(out).to_pylist()
    assert len(table) == 6
    failed = [r for r in table if r["embedding"] is None]
    assert [r["input"] for r in failed] == [str(bad)] and failed[0]["error"]
    m = wv.load_model(model)
    ok = next(r for r in table if r["input"] == str(photos[0]))
    assert np.array_equal(np.asarray(ok["embedding"], dtype=np.float32), m.embed(str(photos[0])))


def test_parquet_without_pyarrow_exits_3_naming_the_extra(inputs, tmp_path, monkeypatch, capsys):
    model, *_ = inputs
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    rc = _run(str(tmp_path / "photos"), "--model", str(model), "--output", str(tmp_path / "e.parquet"))
    assert rc == 3 and "[ray]" in capsys.readouterr().err
    assert not (tmp_path / "e.parquet").exists()


def test_bad_uses_are_refused_clearly(inputs, tmp_path, capsys):
    model, *_ = inputs
    plain = make_tiny_model(tmp_path / "plain.onnx")  # no embedding output
    assert _run(str(tmp_path / "photos"), "--model", str(plain), "--output", str(tmp_path / "e.npy")) == 4
    assert "embedding" in capsys.readouterr().err
    assert _run(str(tmp_path / "photos"), "--model", str(model), "--output", str(tmp_path / "e.txt")) == 2
    out = tmp_path / "e.npy"
    out.write_bytes(b"keep me")
    assert _run(str(tmp_path / "photos"), "--model", str(model), "--output", str(out)) == 2
    assert out.read_bytes() == b"keep me" and "--overwrite" in capsys.readouterr().err

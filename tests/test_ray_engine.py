"""`predict --engine ray`: a real local Ray instance (started once for this module, 2 CPUs), the tiny model,
generated photos. Rows must be the local engine's, one per input; --resume after a real kill must finish
without redoing or duplicating a block; a job folder refuses other inputs; no [ray] extra -> exit 3."""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wildlife_vision.batch.job import JOB_FILE, JOB_SCHEMA, read_rows
from wildlife_vision.cli import main as cli_main
from wildlife_vision.exitcodes import EXIT_MISSING_EXTRA, EXIT_OK, EXIT_USAGE
from wildlife_vision.records import JSONL_FIELDS

from helpers import make_photo, make_tiny_model, tiny_metadata, write_photos

ray = pytest.importorskip("ray", reason="needs the [ray] extra")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own deprecated settings


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module; the CLI reuses it in-process, subprocesses join it by address."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of 21 JPEGs, 2 PNGs in a subfolder, a broken photo and a text file; the tiny model; and the local
    engine's rows for it."""
    tmp = tmp_path_factory.mktemp("ray")
    model = make_tiny_model(tmp / "tiny.onnx")
    folder = tmp / "photos"
    write_photos(folder, 21, "JPEG", size=(48, 40))
    write_photos(folder / "sub", 2, "PNG", size=(40, 48))
    (folder / "broken.jpg").write_text("<html>not a photo</html>")
    (folder / "notes.txt").write_text("skip me")
    local = tmp / "local.jsonl"
    assert predict(folder, "-r", "--model", model, "--output", local) == EXIT_OK
    rows = [json.loads(line) for line in local.read_text(encoding="utf-8").splitlines()]
    return tmp, model, folder, {r["input"]: r for r in rows}


def predict(*args) -> int:
    return cli_main(["predict", *map(str, args), "--no-progress"])


def by_input(rows):
    out = {}
    for r in rows:
        assert r["input"] not in out, f"duplicate row for {r['input']}"
        out[r["input"]] = r
    return out


def assert_same_records(got, want):
    assert set(got) == set(want)
    for key, r in got.items():
        w = want[key]
        assert list(r) == list(JSONL_FIELDS) == list(w)
        for f in JSONL_FIELDS:
            if f != "scores":
                assert r[f] == w[f], (key, f)
        assert set(r["scores"]) == set(w["scores"])
        for lab, s in r["scores"].items():
            assert abs(s - w["scores"][lab]) <= 1e-6, (key, lab)


def test_rows_match_the_local_engine(ray_address, photos, tmp_path, capsys):
    _, model, folder, local = photos
    out = tmp_path / "out"
    assert predict(folder, "-r", "--model", model, "--engine", "ray", "--output", out, "--rows-per-part", "5",
                   "--batch-size", "4") == EXIT_OK
    rows = read_rows(str(out))
    assert len(rows) == len(local) == 24
    assert_same_records(by_input(rows), local)
    broken = next(r for r in rows if r["input"].endswith("broken.jpg"))
    assert broken["error_kind"] == "not_an_image" and broken["scores"] == {}
    # fixed numbered blocks of the sorted inputs, each part sorted; the manifest says what the job is
    parts = sorted(p.name for p in out.glob("part-*.jsonl"))
    assert parts == [f"part-{b:05d}.jsonl" for b in range(5)]
    keys = [r["input"] for r in rows]
    assert keys == sorted(local)
    job = json.loads((out / JOB_FILE).read_text())
    assert (job["schema"], job["inputs"], job["parts"], job["rows_per_part"]) == (JOB_SCHEMA, 24, 5, 5)
    with gzip.open(out / "inputs.jsonl.gz", "rt") as f:
        assert [json.loads(line) for line in f] == keys
    err = capsys.readouterr().err
    assert "24 inputs: 23 scored, 1 failed" in err and "photos/s" in err and "not_an_image 1" in err
    assert "flagged: ivory" in err and "review:" in err and "(24 rows in 5 of 5 part files)" in err
    # a second run without --resume or --overwrite never touches the folder
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert predict(folder, "-r", "--model", model, "--engine", "ray", "--output", out) == EXIT_USAGE
    assert "already holds a job" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_resume_after_a_real_kill(ray_address, photos, tmp_path):
    """A subprocess scoring into DIR is SIGKILLed once some part files exist; --resume writes only the missing
    blocks (the finished part files keep their inode and mtime) and every input has exactly one row."""
    _, model, _, _ = photos
    folder = tmp_path / "big"
    sources = []
    for i in range(4):  # camera-sized photos decode slowly enough to catch the job mid-way
        p = tmp_path / f"src_{i}.jpg"
        make_photo(i, (1600, 1200)).save(p, quality=92)
        sources.append(p)
    folder.mkdir()
    for i in range(240):
        os.link(sources[i % 4], folder / f"p_{i:04d}.jpg")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "wildlife_vision", "predict", str(folder), "--model", str(model), "--engine", "ray",
           "--ray-address", ray_address, "--ray-actors", "1", "--batch-size", "2", "--rows-per-part", "8",
           "--output", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    try:
        while len(list(out.glob("part-*.jsonl"))) < 3:
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace")
            assert time.monotonic() < deadline, "no part files after 90 s"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stderr.close()
    survivors = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("part-*.jsonl")}
    assert 3 <= len(survivors) < 30, f"the kill came too late to test resuming ({len(survivors)} of 30 parts)"
    (out / ".part-00029.jsonl.1234-dead.tmp").write_bytes(b'{"half": ')  # a crash mid-write leaves one of these

    assert predict(folder, "--model", model, "--engine", "ray", "--output", out, "--resume") == EXIT_OK
    rows = by_input(read_rows(str(out)))
    assert sorted(rows) == sorted(f"{folder}/p_{i:04d}.jpg" for i in range(240))
    assert all(r["error"] is None for r in rows.values())
    assert len(list(out.glob("part-*.jsonl"))) == 30 and not list(out.glob(".*.tmp"))
    for name, stamp in survivors.items():
        p = out / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp, f"{name} was redone"


def test_resume_after_lost_parts_and_refusals(ray_address, photos, tmp_path, capsys):
    """A crash emulated on disk (a part file gone, a stale temporary file) is finished by --resume; a resume
    whose inputs, model or shard differ is refused, saying why."""
    _, model, folder, local = photos
    out = tmp_path / "out"
    base = [folder, "-r", "--model", model, "--engine", "ray", "--output", out]
    assert predict(*base, "--rows-per-part", "10") == EXIT_OK
    assert len(list(out.glob("part-*.jsonl"))) == 3
    (out / "part-00001.jsonl").unlink()
    (out / ".part-00001.jsonl.99-x.tmp").write_bytes(b"{")
    kept = (out / "part-00000.jsonl").stat().st_mtime_ns
    capsys.readouterr()
    assert predict(*base, "--resume") == EXIT_OK
    err = capsys.readouterr().err
    assert "removed 1 temporary files" in err and "10 inputs: 10 scored" in err and "14 already in" in err
    assert_same_records(by_input(read_rows(str(out))), local)
    assert (out / "part-00000.jsonl").stat().st_mtime_ns == kept

    extra = folder.parent / "more"
    write_photos(extra, 1, "JPEG", size=(48, 40), start=50)
    assert predict(folder, extra, *base[1:], "--resume") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "inputs differ" in err and "photo_0050.jpg" in err and "24 inputs, these PATHs list 25" in err
    other = make_tiny_model(tmp_path / "other.onnx", metadata=tiny_metadata(name="other-model"))
    assert predict(folder, "-r", "--model", other, "--engine", "ray", "--output", out, "--resume") == EXIT_USAGE
    assert "job of model tiny-test-model 0.0.1, not other-model 0.0.1" in capsys.readouterr().err
    assert predict(*base, "--resume", "--shard", "0/2") == EXIT_USAGE
    assert "shard" in capsys.readouterr().err
    assert predict(*base, "--resume", "--rows-per-part", "7") == EXIT_USAGE
    assert "10 rows per part" in capsys.readouterr().err


def test_shards_on_ray_add_up_to_the_job(ray_address, photos, tmp_path):
    _, model, folder, local = photos
    got = {}
    for i in range(2):
        out = tmp_path / f"shard{i}"
        assert predict(folder, "-r", "--model", model, "--engine", "ray", "--shard", f"{i}/2", "--output", out,
                       "--ray-actors", "1") == EXIT_OK
        rows = by_input(read_rows(str(out)))
        assert rows and not set(rows) & set(got)
        assert json.loads((out / JOB_FILE).read_text())["shard"] == f"{i}/2"
        got.update(rows)
    assert_same_records(got, local)


def test_file_uris_are_read_inside_the_actors(ray_address, photos, tmp_path):
    """Inputs named by URI go through pyarrow's filesystems (here file://, as s3:// would): same scores."""
    _, model, folder, local = photos
    out = tmp_path / "out"
    uri = "file://" + str(folder.resolve())
    assert predict(uri + "/", uri + "/missing.jpg", "--model", model, "--engine", "ray", "--output", out,
                   "--ray-actors", "1") == EXIT_OK
    rows = by_input(read_rows(str(out)))
    assert rows[uri + "/missing.jpg"]["error_kind"] == "not_found"
    del rows[uri + "/missing.jpg"]
    want = {k: v for k, v in local.items() if "/sub/" not in k}
    assert sorted(rows) == sorted(uri + "/" + os.path.relpath(k, folder) for k in want)
    for key, r in rows.items():
        w = want[str(folder / key[len(uri) + 1:])]
        assert (r["scores"], r["flagged"], r["error_kind"]) == (w["scores"], w["flagged"], w["error_kind"])


@pytest.mark.parametrize("flags, message", [
    (["--engine", "ray"], "needs --output DIR/"),
    (["--engine", "ray", "-o", "x.csv", "--format", "csv"], "JSONL part files"),
    (["--engine", "ray", "-o", "d", "--ray-actors", "0"], "--ray-actors must be at least 1"),
    (["--engine", "ray", "-o", "d", "--ray-cpus-per-actor", "0"], "--ray-cpus-per-actor must be more than 0"),
    (["--engine", "ray", "-o", "d", "--rows-per-part", "0"], "--rows-per-part must be at least 1"),
    (["--engine", "ray", "-o", "d", "--providers", "quantum"], "unknown execution provider"),
    (["-o", "x.jsonl", "--ray-actors", "2"], "only apply to --engine ray"),
])
def test_usage_errors(tmp_path, capsys, flags, message):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    assert predict(tmp_path, "--model", model, *flags) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_missing_ray_extra_exits_3_naming_it(tmp_path, monkeypatch, capsys):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    for mod in ("ray", "ray.data"):
        monkeypatch.setitem(sys.modules, mod, None)  # `import ray` now raises ImportError
    assert predict(tmp_path, "--model", model, "--engine", "ray", "--output", tmp_path / "out") == EXIT_MISSING_EXTRA
    err = capsys.readouterr().err
    assert "wildlife-vision[ray]" in err and "'ray' extra" in err
    assert not (tmp_path / "out").exists()

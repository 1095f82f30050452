"""`wildlife-vision mine` (hard-negative mining) and the rounds driver's bookkeeping, on a tiny random-weight
ONNX model and generated photos."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import make_photo, make_tiny_model, tiny_metadata

from wildlife_vision import load_model
from wildlife_vision.data.manifest import read_manifest, read_manifest_table
from wildlife_vision.data.mining import (SCHEMA, eligible_mask, known_mask, rate_intervals, read_pool,
                                         register, select_top)
from wildlife_vision.exitcodes import EXIT_FAILURE, EXIT_MODEL, EXIT_OK, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[1]
N_POOL = 14


def cli_main(argv):
    """`wildlife-vision mine ...` through this plugin's own parser (other plugins play no part)."""
    import argparse

    parser = argparse.ArgumentParser(prog="wildlife-vision")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


# ---- the pure selection functions ---------------------------------------------------------------------

def test_select_top_ranks_by_the_highest_eligible_score_and_caps_at_k():
    labels = ("ivory", "live_animal")
    scores = np.array([[0.9, 0.1], [0.2, 0.95], [0.6, 0.7], [0.99, 0.0], [0.4, 0.4], [np.nan, np.nan]])
    eligible = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [0, 0], [1, 1]], bool)
    picked = select_top(scores, eligible, labels, top=3)
    assert [s.index for s in picked] == [3, 1, 0]
    assert [s.labels for s in picked] == [("ivory",), ("live_animal",), ("ivory",)]
    assert picked[1].score == pytest.approx(0.95)
    # row 2 ranks by its eligible ivory score 0.6, not its (ineligible) live_animal 0.7; 4 and the NaN row never
    every = select_top(scores, eligible, labels, top=None)
    assert [s.index for s in every] == [3, 1, 0, 2] and every[-1].score == pytest.approx(0.6)
    # an excluded row takes no place: the next one moves up
    assert [s.index for s in select_top(scores, eligible, labels, top=3, exclude=np.eye(6, dtype=bool)[3])] \
        == [1, 0, 2]
    assert select_top(scores, eligible, labels, top=0) == []


def test_select_top_per_label_keeps_k_of_each_label_and_merges_a_photo_picked_twice():
    labels = ("ivory", "live_animal")
    scores = np.array([[0.9, 0.8], [0.8, 0.1], [0.7, 0.9], [0.1, 0.7]])
    picked = select_top(scores, np.ones_like(scores, bool), labels, top=2, per_label=True)
    # ivory's top 2: rows 0, 1; live_animal's top 2: rows 2, 0 -> row 0 once, with both labels (highest first)
    assert [(s.index, s.labels) for s in picked] == [(0, ("ivory", "live_animal")), (2, ("live_animal",)),
                                                    (1, ("ivory",))]
    assert picked[0].score == pytest.approx(0.9)


def test_eligible_rules():
    scores = np.array([[0.9, 0.1], [0.45, 0.3], [np.nan, np.nan]])
    flagged = np.array([[1, 0], [0, 0], [0, 0]], bool)
    review = np.array([[0, 0], [1, 0], [0, 0]], bool)
    assert eligible_mask(scores, flagged, review).tolist() == [[True, False], [True, False], [False, False]]
    assert eligible_mask(scores, flagged, review, "flagged").tolist() == flagged.tolist()
    assert eligible_mask(scores, flagged, review, "min-score", 0.3).tolist() == \
        [[True, False], [True, True], [False, False]]
    with pytest.raises(ValueError):
        eligible_mask(scores, flagged, review, "bogus")


def test_rate_intervals_bracket_the_rate_and_groups_widen_them():
    mask = np.zeros((400, 1), bool)
    mask[:40] = True                          # 10%
    (lo, hi), = rate_intervals(mask)
    assert lo < 0.1 < hi and hi - lo < 0.08
    groups = [f"g{i // 20}" for i in range(400)]   # the positives sit in two groups of 20
    (glo, ghi), = rate_intervals(mask, groups)
    assert ghi - glo > hi - lo
    assert rate_intervals(np.zeros((0, 2), bool)) == [None, None]


def test_known_mask_by_path_and_by_bytes(tmp_path):
    a = tmp_path / "a.jpg"
    make_photo(1).save(a)
    b = tmp_path / "b.jpg"
    make_photo(2).save(b)
    copy_of_a = tmp_path / "other" / "a-copy.jpg"
    copy_of_a.parent.mkdir()
    shutil.copy(a, copy_of_a)
    link = tmp_path / "link.jpg"
    os.symlink(b, link)
    c = tmp_path / "c.jpg"
    make_photo(3).save(c)
    c2 = tmp_path / "c2.jpg"
    shutil.copy(c, c2)
    in_target, repeat = known_mask([str(copy_of_a), str(link), str(c), str(c2)], [str(a), str(b)])
    assert in_target.tolist() == [True, True, False, False]
    assert repeat.tolist() == [False, False, False, True]


# ---- the command on a small world ------------------------------------------------------------------------

def _write_csv(path: Path, fields, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


@pytest.fixture
def world(tmp_path):
    """A training manifest (data/), a pool manifest (pool/) and a tiny model whose thresholds put about a third of
    the pool over the ivory threshold and another third in its review band."""
    data = tmp_path / "data"
    for i in range(4):
        (data / "img").mkdir(parents=True, exist_ok=True)
        make_photo(100 + i).save(data / "img" / f"t{i}.jpg", quality=92)
    train_rows = [{"image": "img/t0.jpg", "labels": "ivory", "split": "train", "license": "CC0"},
                  {"image": "img/t1.jpg", "labels": "live_animal", "split": "val", "license": "CC-BY"},
                  {"image": "img/t2.jpg", "labels": "", "split": "train", "license": "CC0"},
                  {"image": "img/t3.jpg", "labels": "", "split": "val", "license": ""}]
    train = _write_csv(data / "train.csv", ["image", "labels", "split", "license"], train_rows)

    pool_dir = tmp_path / "pool"
    (pool_dir / "img").mkdir(parents=True)
    rows = []
    for i in range(N_POOL):
        make_photo(i, size=(64, 48)).save(pool_dir / "img" / f"p{i:02d}.jpg", quality=90)
        rows.append({"image": f"img/p{i:02d}.jpg", "labels": "", "split": "train",
                     "source": "shop-a" if i % 2 else "shop-b", "license": f"L{i}", "kind": "everyday"})
    for i in (50, 51):   # positives: must be refused whatever their score
        make_photo(i, size=(64, 48)).save(pool_dir / "img" / f"pos{i}.jpg", quality=90)
        rows.append({"image": f"img/pos{i}.jpg", "labels": "ivory", "split": "train", "source": "shop-a",
                     "license": "", "kind": "x"})
    shutil.copy(data / "img" / "t2.jpg", pool_dir / "img" / "copy-of-t2.jpg")      # same bytes, other path
    rows.append({"image": "img/copy-of-t2.jpg", "labels": "", "split": "train", "source": "shop-c", "license": "",
                 "kind": "everyday"})
    rows.append({"image": "../data/img/t3.jpg", "labels": "", "split": "train", "source": "shop-c", "license": "",
                 "kind": "everyday"})                                                # same path as a training row
    pool = _write_csv(pool_dir / "manifest.csv", ["image", "labels", "split", "source", "license", "kind"], rows)

    probe = load_model(make_tiny_model(tmp_path / "probe.onnx"))
    ivory = sorted(p.scores["ivory"] for p in probe.predict([str(pool_dir / "img" / f"p{i:02d}.jpg")
                                                            for i in range(N_POOL)]))
    thr = {"ivory": (ivory[8] + ivory[9]) / 2, "live_animal": 0.999}
    lo = (ivory[3] + ivory[4]) / 2
    meta = tiny_metadata(thresholds=thr, review_bands={"ivory": [lo, thr["ivory"]],
                                                       "live_animal": [0.999, 0.999]})
    model = make_tiny_model(tmp_path / "model.onnx", metadata=meta)
    return {"tmp": tmp_path, "train": train, "train_rows": train_rows, "pool": pool, "pool_dir": pool_dir,
            "model": model}


def _mine(world, *extra, output=None):
    out = output or world["tmp"] / "out" / "round1.csv"
    argv = ["mine", str(world["model"]), "--pool", str(world["pool"]), "--into", str(world["train"]),
            "--output", str(out), "--no-progress", "--workers", "1", *extra]
    return cli_main(argv), out


def _expected(world, rule="band", min_score=None):
    """The selection worked out independently: score every negative pool photo not already in training."""
    model = load_model(world["model"])
    paths = [world["pool_dir"] / "img" / f"p{i:02d}.jpg" for i in range(N_POOL)]
    out = []
    for i, p in enumerate(model.predict([str(x) for x in paths])):
        if rule == "band":
            labs = set(p.flagged) | set(p.review)
        else:
            labs = {lab for lab, s in p.scores.items() if s >= min_score}
        if labs:
            best = max(labs, key=lambda lab: p.scores[lab])
            out.append((-p.scores[best], i, best, p.scores[best]))
    return [(f"p{i:02d}.jpg", lab, s) for _, i, lab, s in sorted(out)], model


def test_mine_picks_the_top_k_flagged_or_review_negatives_in_score_order(world, capsys):
    expected, model = _expected(world)
    assert 6 <= len(expected) <= 12          # the world is built so the rule matters: some photos are below it
    rc, out = _mine(world, "--top", "4")
    assert rc == EXIT_OK
    stdout = capsys.readouterr()
    table = read_manifest_table(out)
    mined = table.rows[len(world["train_rows"]):]
    assert [Path(r["image"]).name for r in mined] == [e[0] for e in expected[:4]]
    for r, (_, lab, score) in zip(mined, expected):
        assert r["labels"] == "" and r["split"] == "train" and r["mined_round"] == "1"
        assert r["mined_label"] == lab and float(r["mined_score"]) == pytest.approx(score, abs=1e-6)
        assert r["source"] in ("mined:shop-a", "mined:shop-b")
    assert mined[0]["license"].startswith("L") and "kind" not in table.fieldnames   # target columns only
    assert "round 1: 4 hard negative(s) mined" in stdout.out
    assert "2 pool row(s) carry positive labels" in stdout.err and "ivory 2" in stdout.err

    # without a cap every photo flagged or in the band; with --flagged-only only the flagged ones
    rc, out_all = _mine(world, "--top", "100", output=world["tmp"] / "out" / "all.csv")
    assert rc == EXIT_OK
    mined_all = read_manifest_table(out_all).rows[4:]
    assert [Path(r["image"]).name for r in mined_all] == [e[0] for e in expected]
    rc, out_f = _mine(world, "--flagged-only", output=world["tmp"] / "out" / "flagged.csv")
    names = [Path(r["image"]).name for r in read_manifest_table(out_f).rows[4:]]
    flagged = [e[0] for e in expected if e[2] >= model.thresholds[e[1]]]
    assert rc == EXIT_OK and names == flagged and 0 < len(flagged) < len(expected)


def test_positives_in_the_pool_and_photos_already_in_training_are_never_mined(world):
    rc, out = _mine(world, "--min-score", "0", "--top", "100")
    assert rc == EXIT_OK
    names = [Path(r["image"]).name for r in read_manifest_table(out).rows[4:]]
    assert sorted(names) == sorted(f"p{i:02d}.jpg" for i in range(N_POOL))   # every negative pool photo
    assert not any(n.startswith("pos") for n in names)
    assert "copy-of-t2.jpg" not in names and "t3.jpg" not in names
    report = json.loads(out.with_name("round1.mining-round.json").read_text())
    assert report["pool"]["positives_skipped"] == 2 and report["pool"]["positive_labels"] == {"ivory": 2}
    assert report["pool"]["already_in_training"] == 2 and report["pool"]["size"] == N_POOL + 2


def test_new_manifest_keeps_the_rows_and_its_relative_paths_resolve(world):
    rc, out = _mine(world, "--top", "5")
    assert rc == EXIT_OK
    table = read_manifest_table(out)
    assert table.fieldnames == ["image", "labels", "split", "license", "source", "mined_round", "mined_score",
                                "mined_label"]
    # the training rows: same files (paths re-based onto out/), same values in every column
    for i, orig in enumerate(world["train_rows"]):
        row = table.rows[i]
        assert not Path(row["image"]).is_absolute()
        assert table.image_path(i).resolve() == (world["train"].parent / orig["image"]).resolve()
        assert {k: row[k] for k in orig if k != "image"} == {k: v for k, v in orig.items() if k != "image"}
        assert row["mined_round"] == row["source"] == ""
    for i in range(4, len(table)):
        assert not Path(table.rows[i]["image"]).is_absolute() and table.image_path(i).is_file()
    m = read_manifest(out)          # the validated reader accepts it: files present, labels known, no duplicates
    assert len(m.samples) == 9 and sum(1 for s in m.samples if s.extra["source"].startswith("mined:")) == 5
    assert all(s.labels == () for s in m.samples if s.extra["source"].startswith("mined:"))

    # written beside the training manifest, its rows are byte for byte the same
    rc, same = _mine(world, "--top", "5", output=world["train"].with_name("train.round1.csv"))
    assert rc == EXIT_OK
    assert read_manifest_table(same).rows[:4] == [dict(r, source="", mined_round="", mined_score="", mined_label="")
                                                   for r in world["train_rows"]]


def test_the_next_round_counts_on_and_skips_what_was_mined(world):
    rc, first = _mine(world, "--top", "3")
    assert rc == EXIT_OK
    mined1 = {r["image"] for r in read_manifest_table(first).rows[4:]}
    out2 = world["tmp"] / "out" / "round2.csv"
    rc = cli_main(["mine", str(world["model"]), "--pool", str(world["pool"]), "--into", str(first), "--output",
                   str(out2), "--top", "3", "--no-progress"])
    assert rc == EXIT_OK
    rows = read_manifest_table(out2).rows
    assert len(rows) == 10 and {r["mined_round"] for r in rows[7:]} == {"2"}
    assert not mined1 & {r["image"] for r in rows[7:]}
    assert [r["mined_round"] for r in rows[4:7]] == ["1"] * 3          # earlier rounds kept as they were
    report = json.loads(out2.with_name("round2.mining-round.json").read_text())
    assert report["round"] == 2 and report["pool"]["already_in_training"] == 2 + 3
    assert report["per_label"]["ivory"]["unseen"]["n"] == N_POOL - 3


def test_round_report_fields(world):
    report_path = world["tmp"] / "reports" / "r1.json"
    rc, out = _mine(world, "--top", "4", "--report", str(report_path))
    assert rc == EXIT_OK
    rep = json.loads(report_path.read_text())
    assert rep["schema"] == SCHEMA and rep["round"] == 1
    assert rep["model"]["sha256"] == hashlib.sha256(world["model"].read_bytes()).hexdigest()
    assert rep["manifest"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert rep["manifest"]["path"] == str(out) and rep["manifest"]["rows"] == 8 and rep["manifest"]["mined_rows"] == 4
    assert rep["manifest"]["into_sha256"] == hashlib.sha256(world["train"].read_bytes()).hexdigest()
    assert rep["pool_size"] == N_POOL + 2 and rep["pool"]["rows"] == N_POOL + 4
    preds = load_model(world["model"]).predict(
        [str(world["pool_dir"] / "img" / f"p{i:02d}.jpg") for i in range(N_POOL)]
        + [str(world["pool_dir"] / "img" / "copy-of-t2.jpg"), str(world["train"].parent / "img" / "t3.jpg")])
    iv = rep["per_label"]["ivory"]
    assert iv["flagged"] == sum("ivory" in p.flagged for p in preds)
    assert iv["flag_rate"] == pytest.approx(iv["flagged"] / len(preds))
    assert iv["review_rate"] == pytest.approx(sum("ivory" in p.review for p in preds) / len(preds))
    lo, hi = iv["flag_rate_ci95"]
    assert lo <= iv["flag_rate"] <= hi and lo < hi
    assert iv["review_rate_ci95"][0] <= iv["review_rate"] <= iv["review_rate_ci95"][1]
    assert iv["selected"] + rep["per_label"]["live_animal"]["selected"] == rep["selected"]["total"] == 4
    q = iv["selected_score_quantiles"]
    assert q["min"] <= q["median"] <= q["max"] and q["min"] >= iv["review_band"][0]
    assert rep["intervals"]["confidence"] == 0.95 and rep["selection"]["rule"] == "band"
    assert rep["per_label"]["live_animal"]["selected_score_quantiles"] is None


def test_folder_pool_refuses_photos_in_label_folders(world, tmp_path):
    folder = tmp_path / "everyday"
    for i in range(5):
        (folder / "shop").mkdir(parents=True, exist_ok=True)
        make_photo(200 + i).save(folder / "shop" / f"x{i}.png")
    (folder / "ivory").mkdir()
    make_photo(300).save(folder / "ivory" / "carving.png")
    pool = read_pool(folder)
    assert len(pool.photos) == 5 and pool.positives_skipped == 1 and pool.name == "everyday"
    out = tmp_path / "o.csv"
    rc = cli_main(["mine", str(world["model"]), "--pool", str(folder), "--into", str(world["train"]), "--output",
                   str(out), "--min-score", "0", "--no-progress"])
    assert rc == EXIT_OK
    mined = read_manifest_table(out).rows[4:]
    assert len(mined) == 5 and {r["source"] for r in mined} == {"mined:everyday"}


def test_measure_only_and_pool_split(world):
    rc, out = _mine(world, "--top", "0", "--pool-split", "val")
    assert rc == EXIT_USAGE                      # every pool row is in train: nothing left to score
    rc, out = _mine(world, "--top", "0", "--pool-split", "train")
    assert rc == EXIT_OK and len(read_manifest_table(out)) == 4


def _one_line_error(capsys):
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and ": warning: " not in ln]
    assert len(err) == 1 and err[0].startswith("wildlife-vision mine:"), err
    return err[0]


@pytest.mark.parametrize("case, code, needle", [
    ("missing pool", EXIT_USAGE, "does not exist"),
    ("missing into", EXIT_USAGE, "--into"),
    ("output exists", EXIT_USAGE, "--overwrite"),
    ("output is a folder", EXIT_USAGE, "is a folder"),
    ("bad model", EXIT_MODEL, "cannot load the model"),
    ("all positives", EXIT_USAGE, "believed negative"),
    ("negative top", EXIT_USAGE, "--top"),
    ("min-score out of range", EXIT_USAGE, "--min-score"),
    ("bad split", EXIT_USAGE, "--split"),
    ("pool split on a folder", EXIT_USAGE, "--pool-split"),
    ("malformed into", EXIT_USAGE, "missing column"),
    ("unwritable output", EXIT_FAILURE, "cannot write"),
])
def test_bad_inputs_fail_with_one_line_and_the_shared_exit_code(world, capsys, case, code, needle):
    tmp = world["tmp"]
    model, pool, into, out = str(world["model"]), str(world["pool"]), str(world["train"]), str(tmp / "new.csv")
    extra = []
    if case == "missing pool":
        pool = str(tmp / "nope.csv")
    elif case == "missing into":
        into = str(tmp / "nope.csv")
    elif case == "output exists":
        Path(out).write_text("x")
    elif case == "output is a folder":
        out = str(tmp)
    elif case == "bad model":
        (tmp / "bad.onnx").write_bytes(b"not a model")
        model = str(tmp / "bad.onnx")
    elif case == "all positives":
        pool = str(_write_csv(tmp / "pos.csv", ["image", "labels"], [{"image": "data/img/t0.jpg", "labels": "ivory"}]))
    elif case == "negative top":
        extra = ["--top", "-1"]
    elif case == "min-score out of range":
        extra = ["--min-score", "2"]
    elif case == "bad split":
        extra = ["--split", "holdout"]
    elif case == "pool split on a folder":
        pool, extra = str(world["pool_dir"] / "img"), ["--pool-split", "train"]
    elif case == "malformed into":
        (tmp / "bad.csv").write_text("path,label\na.jpg,ivory\n")
        into = str(tmp / "bad.csv")
    elif case == "unwritable output":
        (tmp / "file").write_text("x")
        out = str(tmp / "file" / "new.csv")
    rc = cli_main(["mine", model, "--pool", pool, "--into", into, "--output", out, "--no-progress", *extra])
    assert rc == code
    assert needle in _one_line_error(capsys)


def test_the_command_is_registered():
    from wildlife_vision.cli import command_plugins

    assert "mine" in [name for name, _ in command_plugins()]


# ---- the rounds driver (bookkeeping only: a fake runner instead of the commands) ---------------------------

def _driver():
    spec = importlib.util.spec_from_file_location("hard_negative_rounds", ROOT / "benchmarks" / "hard_negative_rounds.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


class FakeCommands:
    """Writes what each command would write; fails the first attempt of round 2's training, leaving last.pt."""

    def __init__(self):
        self.calls = []
        self.failed_once = False

    def __call__(self, argv, log):
        self.calls.append(list(argv))
        out = lambda flag: Path(argv[argv.index(flag) + 1])  # noqa: E731
        cmd = argv[0]
        if cmd == "mine":
            r, top = int(argv[argv.index("--round") + 1]), int(argv[argv.index("--top") + 1])
            rate = 0.3 / r
            rep = {"schema": "wildlife-vision/mining-round/v1", "pool": {"split": "train"}, "pool_size": 100,
                   "selected": {"total": top},
                   "per_label": {"ivory": {"flag_rate": rate, "flag_rate_ci95": [rate - 0.05, rate + 0.05],
                                           "unseen": {"n": 90, "flag_rate": rate + 0.01,
                                                      "flag_rate_ci95": [rate - 0.04, rate + 0.06]}}}}
            out("--output").parent.mkdir(parents=True, exist_ok=True)
            out("--output").write_text("image,labels\n")
            out("--report").write_text(json.dumps(rep))
        elif cmd == "train":
            run = out("--output")
            run.mkdir(parents=True, exist_ok=True)
            if "round2" in str(run) and not self.failed_once:
                self.failed_once = True
                (run / "last.pt").write_text("x")
                return 1
            (run / "best.pt").write_text("x")
        elif cmd == "export":
            out("--output").write_text("onnx")
        elif cmd == "evaluate":
            r = int(out("--output").parent.name[len("round"):])
            rep = {"n_images": 50, "per_class": {"ivory": {"fpr": 0.1 - 0.02 * r, "recall": 0.9, "negatives": 30,
                                                           "support": 20, "ci95": {"fpr": [0.05, 0.15],
                                                                                   "recall": [0.8, 0.95]}}}}
            out("--output").mkdir(parents=True, exist_ok=True)
            (out("--output") / "report.json").write_text(json.dumps(rep))
        return 0


def test_driver_runs_resumes_and_tabulates(tmp_path):
    drv = _driver()
    cfg = {"output": str(tmp_path / "hn"), "model": "start.onnx", "pool": "pool.csv", "pool_split": "train",
           "train_manifest": "train.csv", "heldout": [["wt-val", "train.csv", "val"]], "rounds": 2, "top": 10,
           "train_args": ["--epochs", "1"], "export_args": [], "evaluate_args": [], "mine_args": []}
    fake = FakeCommands()
    assert drv.run_rounds(cfg, fake, log=lambda s: None) == 1           # round 2's training fails
    first = [tuple(c[:1]) + (c[c.index("--output") + 1],) for c in fake.calls]
    assert first[-1] == ("train", str(tmp_path / "hn" / "round2" / "run"))
    fake.calls.clear()
    assert drv.run_rounds(cfg, fake, log=lambda s: None) == 0           # continues at that step, with --resume
    assert fake.calls[0] == ["train", "--resume", "--output", str(tmp_path / "hn" / "round2" / "run")]
    assert [c[0] for c in fake.calls] == ["train", "export", "evaluate", "mine"]
    assert fake.calls[-1][fake.calls[-1].index("--top") + 1] == "0"      # the last model measured, nothing mined
    # round 2 mined into round 1's manifest with round 1's model
    res = json.loads((tmp_path / "hn" / "rounds.json").read_text())
    assert res["schema"] == drv.SCHEMA and [r["round"] for r in res["rounds"]] == [0, 1, 2]
    r0, r1, r2 = res["rounds"]
    assert r0["pool"]["ivory"]["flag_rate"]["value"] == pytest.approx(0.3)       # measured by round 1's mining
    assert r1["pool"]["ivory"]["flag_rate"]["value"] == pytest.approx(0.15)
    assert r2["pool"]["ivory"]["unseen_flag_rate"]["value"] == pytest.approx(0.3 / 3 + 0.01)
    assert r1["mined_this_round"] == 10 and r0["mined_this_round"] == 0
    assert r2["heldout"]["wt-val"]["per_label"]["ivory"]["negatives_flag_rate"] == {"value": pytest.approx(0.06),
                                                                                    "ci95": [0.05, 0.15]}
    md = (tmp_path / "hn" / "rounds.md").read_text()
    assert md.count("\n| ") == 4 and "30.0% [25.0, 35.0]" in md and "90.0% [80.0, 95.0]" in md
    fake.calls.clear()
    assert drv.run_rounds(cfg, fake, log=lambda s: None) == 0 and fake.calls == []   # all done: nothing re-runs
    assert drv.run_rounds(dict(cfg, top=5), fake, log=lambda s: None) == 2          # other settings: refused
    assert drv.run_rounds(dict(cfg, rounds=3), fake, log=lambda s: None) == 0       # more rounds: extends
    assert [c[0] for c in fake.calls] == ["mine", "train", "export", "evaluate", "mine"]
    with pytest.raises(ValueError):
        drv.parse_heldout("no-split.csv")

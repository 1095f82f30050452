"""Leakage-safe splits (by near-duplicate group and by column), leak checks, the manifest table (read, write)."""

from __future__ import annotations

import csv
import json
import os
import random
import stat
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from wildlife_vision.data.manifest import ManifestError, atomic_write_text, read_manifest_table, write_manifest
from wildlife_vision.data.splits import check_leaks, combine_groupings, split_by_group
from synthetic import NEAR_COPIES, write_scene
from wildlife_vision.cli import main


def _seller_manifest(tmp: Path, n_sellers: int = 60, seed: int = 0) -> Path:
    """Rows without images: sellers with 1-12 listings each, labels skewed per seller, a 'listing' column."""
    rng = random.Random(seed)
    rows = []
    for s in range(n_sellers):
        kind = rng.choice(["ivory", "ivory", "", "", "", "live_animal", "ivory;live_animal"])
        for k in range(rng.randint(1, 12)):
            lab = kind if rng.random() < 0.8 else rng.choice(["", "ivory", "live_animal"])
            rows.append({"image": f"img/{s}_{k}.jpg", "labels": lab, "split": "train", "seller": f"s{s}",
                         "listing": f"l{s}_{k // 3}"})
    write_manifest(tmp / "m.csv", ["image", "labels", "split", "seller", "listing"], rows)
    return tmp / "m.csv"


def _splits_of(path: Path, col: str):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    per = defaultdict(set)
    for r in rows:
        per[r[col]].add(r["split"])
    return rows, per


def test_split_by_column_has_no_leaks_is_stratified_and_deterministic(tmp_path, capsys):
    m = _seller_manifest(tmp_path)
    out1, out2, out3 = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    assert main(["data", "split", str(m), "--by", "seller", "--val", "0.15", "--test", "0.15", "--seed", "7",
                 "-o", str(out1)]) == 0
    assert "leaks after the split: seller: 0" in capsys.readouterr().out
    assert main(["data", "split", str(m), "--by", "seller", "--val", "0.15", "--test", "0.15", "--seed", "7",
                 "-o", str(out2)]) == 0
    assert main(["data", "split", str(m), "--by", "seller", "--val", "0.15", "--test", "0.15", "--seed", "8",
                 "-o", str(out3)]) == 0
    assert out1.read_text() == out2.read_text(), "same seed, same result"
    assert out1.read_text() != out3.read_text(), "another seed, another assignment"
    rows, per = _splits_of(out1, "seller")
    assert all(len(s) == 1 for s in per.values()), "a seller spans two splits"
    n = len(rows)
    counts = Counter(r["split"] for r in rows)
    assert set(counts) == {"train", "val", "test"}
    for s, frac in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        assert abs(counts[s] / n - frac) < 0.05, (s, counts)
    # stratified: each label's share in val/test is near the target too
    for lab in ("ivory", "live_animal"):
        tot = sum(1 for r in rows if lab in r["labels"].split(";"))
        for s, frac in (("val", 0.15), ("test", 0.15)):
            got = sum(1 for r in rows if r["split"] == s and lab in r["labels"].split(";"))
            assert abs(got / tot - frac) < 0.07, (lab, s, got, tot)
    # columns kept, in order, split column filled
    assert list(rows[0]) == ["image", "labels", "split", "seller", "listing"]
    # the source manifest is untouched
    assert set(r["split"] for r in csv.DictReader(open(m, newline=""))) == {"train"}


def test_split_combines_groupings_and_refuses_in_place_without_flag(tmp_path, capsys):
    m = _seller_manifest(tmp_path, seed=1)
    assert main(["data", "split", str(m), "--by", "listing,seller", "-o", str(m)]) == 2
    assert "--inplace" in capsys.readouterr().err
    assert main(["data", "split", str(m), "--by", "listing", "--by", "seller", "--inplace"]) == 0
    rows, per_seller = _splits_of(m, "seller")
    assert all(len(s) == 1 for s in per_seller.values())
    assert main(["data", "split", str(m), "--by", "nosuchcolumn", "-o", str(tmp_path / "x.csv")]) == 2
    assert "no column 'nosuchcolumn'" in capsys.readouterr().err


def test_freeze_keeps_a_held_back_split(tmp_path):
    m = _seller_manifest(tmp_path, seed=2)
    man = read_manifest_table(m)
    # hold back seller s0's rows as test
    rows = [dict(r, split="test" if r["seller"] == "s0" else "train") for r in man.rows]
    write_manifest(m, man.fieldnames, rows)
    out = tmp_path / "o.csv"
    assert main(["data", "split", str(m), "--by", "seller", "--freeze", "test", "-o", str(out)]) == 0
    got, _ = _splits_of(out, "seller")
    for r, before in zip(got, rows):
        if before["split"] == "test":
            assert r["split"] == "test"


def test_combine_groupings_unions_keys():
    comp = combine_groupings(5, [["a", "a", "", "b", None], ["", "x", "x", "", ""]])
    assert comp[0] == comp[1] == comp[2]
    assert len({comp[0], comp[3], comp[4]}) == 3


def test_split_by_group_keeps_groups_whole_with_big_groups(tmp_path):
    rows = [{"image": f"{i}.jpg", "labels": "ivory" if i % 3 == 0 else "", "split": ""} for i in range(200)]
    write_manifest(tmp_path / "m.csv", ["image", "labels", "split"], rows)
    man = read_manifest_table(tmp_path / "m.csv")
    comp = [i // 40 if i < 80 else i for i in range(200)]  # two groups of 40 rows, then singletons
    plan = split_by_group(man, comp, val=0.1, test=0.1, seed=0)
    by_comp = defaultdict(set)
    for c, s in zip(comp, plan.assignment):
        by_comp[c].add(s)
    assert all(len(v) == 1 for v in by_comp.values())
    assert plan.assignment[0] == "train" and plan.assignment[40] == "train"  # too big for a 10% split
    assert abs(plan.rows["val"] - 20) <= 2 and abs(plan.rows["test"] - 20) <= 2
    with pytest.raises(ValueError):
        split_by_group(man, comp, val=0.6, test=0.5)


def test_check_reports_a_planted_leak_with_counts(tmp_path, capsys):
    m = _seller_manifest(tmp_path, seed=3)
    out = tmp_path / "clean.csv"
    assert main(["data", "split", str(m), "--by", "seller", "-o", str(out), "--test", "0"]) == 0
    assert main(["data", "check", str(out), "--no-dedup", "--by", "seller"]) == 0
    capsys.readouterr()
    man = read_manifest_table(out)
    # plant: move one row of two different multi-row train sellers into val
    counts = Counter(r["seller"] for r in man.rows if r["split"] == "train")
    victims = [s for s, c in counts.items() if c >= 3][:2]
    moved = 0
    for r in man.rows:
        if r["seller"] in victims and r["split"] == "train" and moved < len(victims) and \
                not any(x["seller"] == r["seller"] and x["split"] == "val" for x in man.rows):
            r["split"] = "val"
            moved += 1
    write_manifest(out, man)
    code = main(["data", "check", str(out), "--no-dedup", "--by", "seller", "--json"])
    assert code == 1
    rep = json.loads(capsys.readouterr().out)
    g = rep["groupings"][0]
    assert rep["leaks"] is True and g["grouping"] == "seller"
    assert g["leaking_groups"] == 2
    assert g["rows_affected"] == sum(counts[v] for v in victims)
    assert g["rows_to_move"] == 2
    assert g["split_pairs"] == {"train-val": {"groups": 2, "rows": sum(counts[v] for v in victims)}}
    # human-readable form
    assert main(["data", "check", str(out), "--no-dedup", "--by", "seller"]) == 1
    text = capsys.readouterr().out
    assert "2 of" in text and "train-val: 2 groups" in text and "LEAKS FOUND" in text


def test_split_and_check_by_near_duplicate_group(tmp_path, capsys):
    rows = []
    for i in range(16):
        write_scene(tmp_path / f"o{i}.jpg", 300 + i)
        rows.append({"image": f"o{i}.jpg", "labels": "ivory" if i % 2 else "", "split": "train"})
    for k, name in enumerate(list(NEAR_COPIES)[:6]):
        write_scene(tmp_path / f"c{k}.jpg", 300 + k, transform=name)
        rows.append({"image": f"c{k}.jpg", "labels": "ivory" if k % 2 else "", "split": "val"})  # planted leaks
    write_manifest(tmp_path / "m.csv", ["image", "labels", "split"], rows)
    m = tmp_path / "m.csv"
    assert main(["data", "check", str(m), "--no-cache", "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    g = rep["groupings"][0]
    assert g["grouping"] == "group" and g["leaking_groups"] == 6 and g["rows_affected"] == 12
    assert g["split_pairs"]["train-val"]["groups"] == 6
    out = tmp_path / "s.csv"
    assert main(["data", "split", str(m), "--by", "group", "--val", "0.25", "--test", "0.25", "--seed", "3",
                 "--no-cache", "-o", str(out)]) == 0
    capsys.readouterr()
    got = list(csv.DictReader(open(out, newline="")))
    assert "dup_group" in got[0]
    split_of = {r["image"]: r["split"] for r in got}
    for k in range(6):
        assert split_of[f"o{k}.jpg"] == split_of[f"c{k}.jpg"]
    assert main(["data", "check", str(out), "--no-cache", "--recompute"]) == 0
    assert main(["data", "check", str(out)]) == 0  # uses the dup_group column


def test_manifest_table_round_trip_and_errors(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("\ufeffimage,labels,split,seller\na.jpg,ivory; live_animal,train,x\n\nb.jpg,,val,\n", encoding="utf-8")
    m = read_manifest_table(p)
    assert len(m) == 2 and m.labels(0) == ("ivory", "live_animal") and m.labels(1) == ()
    assert m.fieldnames == ["image", "labels", "split", "seller"]
    write_manifest(tmp_path / "o.csv", m)
    assert read_manifest_table(tmp_path / "o.csv").rows == m.rows
    (tmp_path / "bad.csv").write_text("path,label\nx.jpg,\n")
    with pytest.raises(ManifestError, match="missing column"):
        read_manifest_table(tmp_path / "bad.csv")
    with pytest.raises(ManifestError, match="not found"):
        read_manifest_table(tmp_path / "nope.csv")
    assert main(["data", "check", str(tmp_path / "nope.csv")]) == 2


def test_check_leaks_ignores_rows_without_split(tmp_path):
    write_manifest(tmp_path / "m.csv", ["image", "labels", "split", "seller"],
                   [{"image": "a", "labels": "", "split": "train", "seller": "x"},
                    {"image": "b", "labels": "", "split": "", "seller": "x"}])
    rep = check_leaks(read_manifest_table(tmp_path / "m.csv"), ["x", "x"], "seller")
    assert rep.groups == 1 and rep.leaking_groups == 0


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_manifests_and_reports_honour_the_umask(tmp_path, umask):
    """atomic_write_text goes through mkstemp (0600); `data split` and `data dedup` outputs still get 0666 & ~umask,
    as a plain open() would give them."""
    m = _seller_manifest(tmp_path, n_sellers=8)
    old = os.umask(umask)
    try:
        assert main(["data", "split", str(m), "--by", "seller", "-o", str(tmp_path / "split.csv")]) == 0
        assert main(["data", "dedup", str(m), "--no-cache", "--no-progress", "-o", str(tmp_path / "dedup.json"),
                     "--write-manifest", str(tmp_path / "dedup.csv")]) == 0
        atomic_write_text(tmp_path / "sub" / "x.txt", "x\n")
    finally:
        os.umask(old)
    for name in ("split.csv", "dedup.json", "dedup.csv", "sub/x.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_data_commands_use_the_shared_exit_codes_and_never_a_traceback(tmp_path, capsys):
    from wildlife_vision.exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

    def run(*args) -> int:
        code = main(["data", *map(str, args)])
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return code

    m = _seller_manifest(tmp_path, n_sellers=6)
    missing = tmp_path / "nope.csv"
    for sub in (["dedup", missing], ["split", missing, "-o", tmp_path / "o.csv"], ["check", missing, "--no-dedup",
                "--by", "seller"], ["stats", missing], ["labelstudio-import", tmp_path / "nope.json", "-o",
                tmp_path / "o.csv"], ["labelstudio-export", tmp_path / "nope.jsonl", "-o", tmp_path / "t.json"]):
        assert run(*sub) == EXIT_USAGE, sub
    assert run() == EXIT_USAGE                                                   # no subcommand
    assert run("split", m, "--by", "seller", "--val", "2", "-o", tmp_path / "o.csv") == EXIT_USAGE
    assert run("check", m, "--no-dedup", "--by", "seller") == EXIT_OK            # all rows in train
    assert run("split", m, "--by", "listing", "-o", tmp_path / "leaky.csv") == EXIT_OK
    assert run("check", tmp_path / "leaky.csv", "--no-dedup", "--by", "seller") == EXIT_FAILURE  # leaks
    (tmp_path / "a_file").write_text("x")
    blocked = tmp_path / "a_file" / "out.csv"                                    # its folder is a file
    assert run("split", m, "--by", "seller", "-o", blocked) == EXIT_FAILURE
    assert run("dedup", m, "--no-cache", "-o", tmp_path / "a_file" / "r.json") == EXIT_FAILURE
    assert run("dedup", m, "--no-cache", "-o", tmp_path / "r.json", "--write-manifest", blocked) == EXIT_FAILURE

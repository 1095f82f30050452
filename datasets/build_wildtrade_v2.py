"""Build the frozen, leakage-free wildtrade-v2 manifest (datasets/wildtrade-v2.csv) from the two folders beside
the checkout: ../shared/data/wildtrade-v1 (ivory, live_animal and their negatives) and ../shared/data/everyday-v1
(phone photos of second-hand clothes for sale, negatives for every label).

    python datasets/build_wildtrade_v2.py          # writes datasets/wildtrade-v2.csv, then checks it

What it does, with the project's own commands:
1. one table of both sets, image paths relative to datasets/; everyday rows get a ``sender`` column (from origin);
2. wildtrade-v1: ``wildlife-vision data split --by group --val 0.15 --test 0.15 --seed 0``: every near-duplicate
   group (perceptual hashes, ``data dedup``) goes whole into one split;
3. everyday-v1: ``data split --by sender --by group --val 0.12 --test 0.15`` (each sender whole in one split).
   everyday-v1's own train/val split is NOT kept: by the sender id in its ``origin`` column, 37 of its 77 senders
   have photos in both of its splits (``data check --by sender`` on it says so), so its val is not held out by
   sender. The two sets are split apart because a few senders hold hundreds of photos: split together with
   wildtrade-v1, whole senders crowd the test split;
4. a ``group`` column (near-duplicate group, else sender, else none) so that bootstrap intervals resample groups;
5. ``wildlife-vision data check --by sender`` must pass (exit 0).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
OUT = HERE / "wildtrade-v2.csv"
FIELDS = ["image", "labels", "split", "source", "license", "origin", "kind", "sender"]


def rows():
    for name, kind in (("wildtrade-v1", "wildtrade"), ("everyday-v1", "everyday")):
        folder = SHARED / name
        with open(folder / "manifest.csv", newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                everyday = kind == "everyday"
                sender = r["origin"].split()[1] if everyday and r["origin"].startswith("sender ") else ""
                yield {"image": f"../../shared/data/{name}/{r['image']}", "labels": r["labels"],
                       "split": "",  # assigned by data split below
                       "source": r["source"], "license": r["license"], "origin": r["origin"],
                       "kind": r.get("kind") or kind, "sender": f"everyday-{sender}" if sender else ""}


def run(*cmd: str) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _write(path: Path, fields, table) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(table)


def _read(path: Path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def main() -> int:
    everything = list(rows())
    parts = {"wildtrade": [r for r in everything if r["kind"] != "everyday"],
             "everyday": [r for r in everything if r["kind"] == "everyday"]}
    args = {"wildtrade": ["--by", "group", "--val", "0.15", "--test", "0.15"],
            "everyday": ["--by", "sender", "--by", "group", "--val", "0.12", "--test", "0.15"]}
    table = []
    for name, part in parts.items():
        src, dst = HERE / f"{name}.unsplit.csv", HERE / f"{name}.split.csv"
        _write(src, FIELDS, part)
        run("wildlife-vision", "data", "split", str(src), *args[name], "--seed", "0", "--output", str(dst))
        fields, got = _read(dst)
        table += got
        src.unlink()
        dst.unlink()
    fields = FIELDS + ["dup_group"]
    for r in table:
        # duplicate-group ids are per data split run: make them unique over the two sets
        r["dup_group"] = f"{r['kind']}-{r['dup_group']}" if r.get("dup_group") else ""
        r["group"] = r["dup_group"] or r["sender"]
    _write(OUT, fields + ["group"], table)
    # the check recomputes near-duplicate groups over both sets together, so a duplicate across them would show
    run("wildlife-vision", "data", "check", str(OUT), "--by", "sender")
    run("wildlife-vision", "data", "check", str(OUT), "--by", "sender", "--recompute")
    run("wildlife-vision", "data", "stats", str(OUT), "--no-decode")
    return 0


if __name__ == "__main__":
    sys.exit(main())

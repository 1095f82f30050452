"""Split assignment, one function per kind, and cross-split leak checks.

* :func:`split_by_group` (``data split``): a leakage-safe train/val/test split of a manifest table in which
  every group goes whole into one split, as described below.
* :func:`fill_missing_splits` (training, export, benchmark): validated samples without a split get one; when
  the manifest has no ``val`` rows at all, a deterministic split by image-path hash.

A *grouping* gives every row a group key: near-duplicate groups from :mod:`wildlife_vision.data.dedup`
(``group``), or the value of any manifest column (``seller``, ``listing``, ``source``...). Several
groupings are combined by union (rows linked by any of them share a group). A row with no key (not
in any duplicate group, or an empty column value) is a group of its own.

Assignment: every group goes whole into one split. Groups are visited largest first (ties in an
order shuffled by ``seed``), and each goes to the split where adding it increases the squared
deviation from the target label counts the least, each label weighted by 1/its total count (rare
labels count more; rows without labels count as the pseudo-label ``(none)``), plus the same for the
split's row count. That fills splits towards their targets for every label at once, as far as
whole groups allow, and is deterministic for a given seed.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from wildlife_vision.data.dedup import UnionFind
from wildlife_vision.data.manifest import ManifestTable, Sample

NONE_LABEL = "(none)"
SPLIT_ORDER = ("train", "val", "test")


def combine_groupings(n: int, groupings: Sequence[Sequence[Optional[str]]]) -> List[int]:
    """Union of several groupings (each a key per row, None/'' = no key) -> a component id per row."""
    uf = UnionFind(n)
    for keys in groupings:
        first: Dict[str, int] = {}
        for i, k in enumerate(keys):
            if k is None or k == "":
                continue
            k = str(k)
            if k in first:
                uf.union(first[k], i)
            else:
                first[k] = i
    return [uf.find(i) for i in range(n)]


def _row_label_keys(manifest: ManifestTable, i: int) -> Tuple[str, ...]:
    labs = manifest.labels(i)
    return labs if labs else (NONE_LABEL,)


@dataclass
class SplitPlan:
    assignment: List[str]                          # split per row
    targets: Dict[str, float]                      # fraction per split
    counts: Dict[str, Counter] = field(default_factory=dict)   # split -> label -> rows
    rows: Dict[str, int] = field(default_factory=dict)
    groups: Dict[str, int] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)


def split_by_group(manifest: ManifestTable, component: Sequence[int], val: float = 0.1, test: float = 0.1,
                   seed: int = 0, freeze: Iterable[str] = ()) -> SplitPlan:
    """Assign each group (rows sharing a ``component`` id) to train/val/test as described in the module docstring.

    ``freeze``: split names whose current rows keep their split; a group that contains such a row goes
    wholly to that split (so no new leak is created towards it).
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"--val and --test must be fractions with val + test < 1, got val={val}, test={test}")
    targets = {"train": 1.0 - val - test, "val": float(val), "test": float(test)}
    splits = [s for s in SPLIT_ORDER if targets[s] > 0]
    freeze = [f for f in freeze if f]
    n = len(manifest)
    current = manifest.column("split") if "split" in manifest.fieldnames else [""] * n

    members: Dict[int, List[int]] = defaultdict(list)
    for i, c in enumerate(component):
        members[c].append(i)
    label_total: Counter = Counter()
    for i in range(n):
        label_total.update(_row_label_keys(manifest, i))
    labels = sorted(label_total)
    target_lab = {s: {lab: targets[s] * label_total[lab] for lab in labels} for s in splits}
    target_rows = {s: targets[s] * n for s in splits}
    cur_lab = {s: Counter() for s in splits}
    cur_rows = {s: 0 for s in splits}
    assignment = [""] * n
    plan = SplitPlan(assignment=assignment, targets={s: targets[s] for s in splits})

    def place(rows: List[int], s: str) -> None:
        for i in rows:
            assignment[i] = s
            cur_lab.setdefault(s, Counter()).update(_row_label_keys(manifest, i))
        cur_rows[s] = cur_rows.get(s, 0) + len(rows)

    rng = random.Random(seed)
    keys = sorted(members)
    rng.shuffle(keys)
    free: List[int] = []
    for k in keys:
        rows = members[k]
        frozen = [current[i] for i in rows if current[i] in freeze]
        if not frozen:
            free.append(k)
            continue
        fs = list(dict.fromkeys(frozen))
        if len(fs) > 1:
            plan.warnings.append(f"rows {rows} are one group but frozen in several splits {fs}; "
                                 f"frozen rows keep their splits (this group still leaks), the others go to {fs[0]}")
            for i in rows:
                assignment[i] = current[i] if current[i] in freeze else fs[0]
            for i in rows:
                cur_lab.setdefault(assignment[i], Counter()).update(_row_label_keys(manifest, i))
                cur_rows[assignment[i]] = cur_rows.get(assignment[i], 0) + 1
        else:
            place(rows, fs[0])
    free.sort(key=lambda k: -len(members[k]))  # stable: ties keep the seeded order

    for k in free:
        rows = members[k]
        c = Counter()
        for i in rows:
            c.update(_row_label_keys(manifest, i))
        best, best_cost = None, None
        for s in splits:
            cost = 0.0
            for lab, x in c.items():
                dev = cur_lab[s][lab] - target_lab[s][lab]
                cost += (x * x + 2 * x * dev) / label_total[lab]
            dev = cur_rows[s] - target_rows[s]
            cost += (len(rows) ** 2 + 2 * len(rows) * dev) / n
            if best_cost is None or cost < best_cost - 1e-12:
                best, best_cost = s, cost
        place(rows, best)

    used = [s for s in SPLIT_ORDER if s in cur_rows] + [s for s in cur_rows if s not in SPLIT_ORDER]
    plan.counts = {s: cur_lab.get(s, Counter()) for s in used}
    plan.rows = {s: cur_rows.get(s, 0) for s in used}
    comp_split: Dict[str, set] = defaultdict(set)
    for i, c in enumerate(component):
        comp_split[assignment[i]].add(c)
    plan.groups = {s: len(comp_split[s]) for s in used}
    return plan


# ---- training samples without a split ----------------------------------------------------------------

def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64


def fill_missing_splits(samples: Sequence[Sample], val_fraction: float) -> Tuple[List[Sample], Optional[str]]:
    """Give unassigned rows a split; if there are no ``val`` rows at all, make a deterministic split.

    The split is a hash of the image path, so it is the same on every machine and run. Returns the samples and
    a message describing what was done (None when the manifest's own split was used as is).
    """
    has_val = any(s.split == "val" for s in samples)
    out: List[Sample] = []
    moved = Counter()
    for s in samples:
        if s.split == "test" or (has_val and s.split == "train"):
            out.append(s)
            continue
        if has_val and s.split == "val":
            out.append(s)
            continue
        new = "val" if _unit_hash(s.image) < val_fraction else "train"
        if has_val and s.split == "":
            new = "train"  # the manifest has its own val rows: unassigned rows train
        moved[new] += 1
        out.append(replace(s, split=new))
    if not moved:
        return out, None
    if has_val:
        return out, f"{moved['train']} row(s) without a split were used for training"
    return out, (f"the manifest has no validation rows: made a deterministic split by image-path hash, "
                 f"{moved['train']} train / {moved['val']} val ({val_fraction:.0%})")


def label_counts(samples: Iterable[Sample], labels: Sequence[str]) -> Dict[str, int]:
    c = Counter(lab for s in samples for lab in s.labels)
    return {lab: int(c[lab]) for lab in labels}


# ---- leak check ---------------------------------------------------------------------------------

@dataclass
class LeakReport:
    grouping: str
    groups: int                      # groups with 2+ rows
    leaking_groups: int              # groups whose rows lie in 2+ splits
    rows_affected: int               # rows in leaking groups
    rows_to_move: int                # rows outside each leaking group's largest split
    pairs: Dict[str, Dict[str, int]] # "train-val" -> {"groups": .., "rows": ..}
    examples: List[Dict[str, object]]

    def to_dict(self) -> Dict[str, object]:
        return {"grouping": self.grouping, "groups": self.groups, "leaking_groups": self.leaking_groups,
                "rows_affected": self.rows_affected, "rows_to_move": self.rows_to_move, "split_pairs": self.pairs,
                "examples": self.examples}


def _pair_name(a: str, b: str) -> str:
    order = {s: k for k, s in enumerate(SPLIT_ORDER)}
    a, b = sorted((a, b), key=lambda s: (order.get(s, 99), s))
    return f"{a}-{b}"


def check_leaks(manifest: ManifestTable, keys: Sequence[Optional[str]], grouping: str, split_column: str = "split",
                max_examples: int = 20) -> LeakReport:
    """Groups (rows sharing a non-empty key) whose rows fall in more than one split. Rows without a split are ignored."""
    splits = manifest.column(split_column)
    members: Dict[str, List[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        if k is not None and k != "":
            members[str(k)].append(i)
    multi = {k: rows for k, rows in members.items() if len(rows) > 1}
    leaking = 0
    rows_affected = 0
    to_move = 0
    pairs: Dict[str, Dict[str, int]] = {}
    examples = []
    for k, rows in multi.items():
        per = Counter(splits[i] for i in rows if splits[i])
        if len(per) < 2:
            continue
        leaking += 1
        rows_affected += sum(per.values())
        to_move += sum(per.values()) - max(per.values())
        names = sorted(per)
        for x in range(len(names)):
            for y in range(x + 1, len(names)):
                p = pairs.setdefault(_pair_name(names[x], names[y]), {"groups": 0, "rows": 0})
                p["groups"] += 1
                p["rows"] += per[names[x]] + per[names[y]]
        if len(examples) < max_examples:
            examples.append({"key": k, "rows": rows, "images": [manifest.rows[i]["image"] for i in rows],
                             "splits": {s: c for s, c in sorted(per.items())}})
    return LeakReport(grouping, len(multi), leaking, rows_affected, to_move, dict(sorted(pairs.items())), examples)


def format_leaks(rep: LeakReport) -> str:
    if not rep.leaking_groups:
        return f"{rep.grouping}: no leaks ({rep.groups} groups of 2+ rows, each within one split)"
    lines = [f"{rep.grouping}: {rep.leaking_groups} of {rep.groups} groups span more than one split, "
             f"{rep.rows_affected} rows affected ({rep.rows_to_move} would have to move)"]
    for name, p in rep.pairs.items():
        lines.append(f"  {name}: {p['groups']} groups, {p['rows']} rows")
    for ex in rep.examples[:5]:
        lines.append(f"  e.g. {rep.grouping}={ex['key']}: " + ", ".join(
            f"{s}:{c}" for s, c in ex["splits"].items()) + f" ({', '.join(ex['images'][:3])}"
            + (", ..." if len(ex["images"]) > 3 else "") + ")")
    return "\n".join(lines)


def format_split_table(manifest: ManifestTable, assignment: Sequence[str]) -> str:
    """Per-split, per-label row counts (and each split's share of the label)."""
    labels = manifest.all_labels() + [NONE_LABEL]
    per: Dict[str, Counter] = defaultdict(Counter)
    rows: Counter = Counter()
    for i, s in enumerate(assignment):
        s = s or "(no split)"
        rows[s] += 1
        per[s].update(_row_label_keys(manifest, i))
    order = [s for s in SPLIT_ORDER if s in rows] + sorted(s for s in rows if s not in SPLIT_ORDER)
    total = Counter()
    for s in order:
        total.update(per[s])
    w = max([len(x) for x in labels + ["label"]]) + 2
    head = "label".ljust(w) + "".join(f"{s:>16}" for s in order)
    out = [head]
    n = len(assignment)
    out.append("(rows)".ljust(w) + "".join(f"{rows[s]:>8} {rows[s] / max(n, 1):>6.1%}" for s in order))
    for lab in labels:
        if not total[lab]:
            continue
        out.append(lab.ljust(w) + "".join(f"{per[s][lab]:>8} {per[s][lab] / total[lab]:>6.1%}" for s in order))
    return "\n".join(out)


__all__ = ["combine_groupings", "split_by_group", "fill_missing_splits", "label_counts", "SplitPlan", "check_leaks",
           "LeakReport", "format_leaks", "format_split_table", "NONE_LABEL"]

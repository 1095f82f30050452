"""Exact and near-duplicate photo detection for a manifest, and the versioned report it writes.

Pipeline (see ``docs/data-curation.md`` for the measurements behind the defaults):

1. :func:`wildlife_vision.data.hashing.scan_paths` fingerprints every file: sha256 of the bytes and
   64- and 256-bit pHashes of 11 windows of the photo.
2. Exact duplicates: rows naming the same file, and files with the same sha256.
3. Near duplicates, candidate stage: for every pair of photos, the smallest 64-bit pHash distance
   over the window pairs in :data:`COMBOS` (whole photo against each window of the other, both ways,
   and each window against the same window). Found without Python loops over pairs: blocks of rows
   against all later rows, XOR and popcount in numpy, in ``workers`` threads (numpy releases the
   GIL). A pair is a candidate when that distance is at most ``threshold`` (of 64 bits).
4. Verification: a candidate is kept when, for some window pair within ``threshold``, the 256-bit
   pHash distance of the same windows is at most ``verify_threshold`` (of 256 bits).
5. Optional: pairs whose model embeddings (the ``embedding`` output of an exported model) have
   cosine similarity of at least ``embedding_threshold``.
6. Union-find over rows joins all of the above into groups.

Why not multi-index hashing: it only guarantees pairs within a few bits (k+1 exact chunks of 64 bits
are 6-bit chunks for k=10, whose buckets hold thousands of photos each), so at the distances that
near-copies need a blocked brute force in numpy is both simpler and faster (about a nanosecond per
pair and window combination; see ``benchmarks/dedup_scaling.py``).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from wildlife_vision.data.hashing import N_WINDOWS, ScanResult, popcount, scan_paths
from wildlife_vision.data.manifest import ManifestTable, atomic_write_text
from wildlife_vision.progress import track

log = logging.getLogger(__name__)

SCHEMA = "wildlife-vision/dedup/v1"
DEFAULT_THRESHOLD = 10          # of 64 bits, on the best window pair
DEFAULT_VERIFY_THRESHOLD = 40   # of 256 bits, on a window pair within the threshold
DEFAULT_EMBEDDING_THRESHOLD = 0.95

WINDOW_NAMES = ("whole", "centre90", "centre80", "corner-tl90", "corner-tr90", "corner-bl90", "corner-br90",
                "cut-left5", "cut-right5", "cut-top5", "cut-bottom5")
assert len(WINDOW_NAMES) == N_WINDOWS

#: window pairs compared: (window of photo a, window of photo b)
COMBOS: Tuple[Tuple[int, int], ...] = tuple(
    [(0, j) for j in range(N_WINDOWS)] + [(j, 0) for j in range(1, N_WINDOWS)]
    + [(j, j) for j in range(1, N_WINDOWS)])


class UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, x: int) -> int:
        p = self.parent
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:
            p[x], x = root, p[x]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb

    def components(self) -> Dict[int, List[int]]:
        out: Dict[int, List[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return out


# ---- pair search ------------------------------------------------------------------------------

ROW_BLOCK = 64      # rows of a block: with COL_BLOCK, the work arrays stay in the CPU cache (2 MB + 2 x 256 kB)
COL_BLOCK = 4096


def _search_rows(p64: np.ndarray, pT: np.ndarray, a0: int, a1: int, threshold: int, combos,
                 col_block: int = COL_BLOCK) -> Tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (a, b) with a0 <= a < a1 and a < b whose smallest 64-bit distance over ``combos`` is <= threshold."""
    n = p64.shape[0]
    rows = p64[a0:a1]
    r = a1 - a0
    x = np.empty((r, col_block), dtype=np.uint64)
    c = np.empty((r, col_block), dtype=np.uint8)
    best = np.empty((r, col_block), dtype=np.uint8)
    has_bc = hasattr(np, "bitwise_count")
    out_a: List[np.ndarray] = []
    out_b: List[np.ndarray] = []
    for b0 in range(a0, n, col_block):
        b1 = min(n, b0 + col_block)
        m = b1 - b0
        xv, cv, bv = x[:, :m], c[:, :m], best[:, :m]
        for k, (i, j) in enumerate(combos):
            np.bitwise_xor(rows[:, i, None], pT[j, None, b0:b1], out=xv)
            target = bv if k == 0 else cv
            if has_bc:
                np.bitwise_count(xv, out=target)
            else:
                target[...] = popcount(xv)
            if k:
                np.minimum(bv, cv, out=bv)
        mask = bv <= threshold
        if b0 < a1:  # the block touches the diagonal: keep the strict upper triangle only
            mask &= (np.arange(b0, b1)[None, :] > np.arange(a0, a1)[:, None])
        if mask.any():
            ra, kb = np.nonzero(mask)
            out_a.append(ra + a0)
            out_b.append(kb + b0)
    if not out_a:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_a).astype(np.int64), np.concatenate(out_b).astype(np.int64)


def candidate_pairs(p64: np.ndarray, threshold: int = DEFAULT_THRESHOLD, workers: int = 1,
                    combos=COMBOS, progress: bool = False, block: int = ROW_BLOCK) -> Tuple[np.ndarray, np.ndarray]:
    """All pairs (a < b) of rows of ``p64`` (n, windows) whose best window-pair distance is <= ``threshold``."""
    p64 = np.ascontiguousarray(p64, dtype=np.uint64)
    n = p64.shape[0]
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    pT = np.ascontiguousarray(p64.T)  # (windows, n): each window's hashes contiguous
    tasks = [(s, min(n, s + block)) for s in range(0, n, block)]
    out_a: List[np.ndarray] = []
    out_b: List[np.ndarray] = []
    if workers and workers > 1:
        with ThreadPoolExecutor(max_workers=int(workers)) as pool:
            futs = [pool.submit(_search_rows, p64, pT, s, e, threshold, combos) for s, e in tasks]
            for f in track(futs, len(futs), "pair search", unit="block", enabled=progress):
                a, b = f.result()
                out_a.append(a)
                out_b.append(b)
    else:
        for s, e in track(tasks, len(tasks), "pair search", unit="block", enabled=progress):
            a, b = _search_rows(p64, pT, s, e, threshold, combos)
            out_a.append(a)
            out_b.append(b)
    return np.concatenate(out_a), np.concatenate(out_b)


def verify_pairs(p64: np.ndarray, p256: np.ndarray, a: np.ndarray, b: np.ndarray,
                 threshold: int = DEFAULT_THRESHOLD, verify_threshold: int = DEFAULT_VERIFY_THRESHOLD,
                 combos=COMBOS) -> Dict[str, np.ndarray]:
    """For candidate pairs, the best window pair that passes both thresholds.

    Returns arrays (one entry per candidate): ``ok`` (bool), ``d64`` and ``d256`` (distances of the
    chosen window pair; for pairs that fail, of the window pair with the smallest 256-bit distance among
    those within ``threshold``), ``wa``/``wb`` (window indices).
    """
    m = len(a)
    best_key = np.full(m, np.iinfo(np.int64).max, dtype=np.int64)
    d64 = np.full(m, 64, dtype=np.int64)
    d256 = np.full(m, 256, dtype=np.int64)
    wa = np.zeros(m, dtype=np.int64)
    wb = np.zeros(m, dtype=np.int64)
    for i, j in combos:
        x64 = popcount(p64[a, i] ^ p64[b, j]).astype(np.int64)
        x256 = popcount(p256[a, i] ^ p256[b, j]).sum(axis=-1, dtype=np.int64)
        within = x64 <= threshold
        # prefer window pairs that pass the verification, then the smallest 256-bit distance
        key = np.where(within, x256 * 100 + x64, np.iinfo(np.int64).max)
        upd = key < best_key
        best_key[upd] = key[upd]
        d64[upd], d256[upd], wa[upd], wb[upd] = x64[upd], x256[upd], i, j
    ok = (d64 <= threshold) & (d256 <= verify_threshold)
    return {"ok": ok, "d64": d64, "d256": d256, "wa": wa, "wb": wb}


def embedding_pairs(emb: np.ndarray, threshold: float = DEFAULT_EMBEDDING_THRESHOLD,
                    block: int = 1024) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (a < b) whose embeddings have cosine similarity >= ``threshold``; blocked matrix products."""
    e = np.asarray(emb, dtype=np.float32)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    n = e.shape[0]
    A, B, S = [], [], []
    for s in range(0, n, block):
        sim = e[s:s + block] @ e[s:].T
        r = np.arange(sim.shape[0])[:, None]
        k = np.arange(sim.shape[1])[None, :]
        ra, kb = np.nonzero((sim >= threshold) & (k > r))
        A.append(ra + s)
        B.append(kb + s)
        S.append(sim[ra, kb])
    if not A:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(A).astype(np.int64), np.concatenate(B).astype(np.int64), np.concatenate(S)


def compute_embeddings(model_path: os.PathLike, paths: Sequence[str], batch_size: int = 32,
                       progress: bool = False, workers: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Embeddings from the ``embedding`` output of an exported model (:meth:`wildlife_vision.Model.embed_iter`):
    (array (n, d), ok mask (n,)); rows of photos that could not be embedded are zero and not ok.

    Raises :class:`~wildlife_vision.errors.EmbeddingUnavailable` when the model has no ``embedding`` output.
    """
    from wildlife_vision.model import load_model

    model = load_model(model_path)
    results = model.embed_iter(list(paths), batch_size=batch_size, workers=max(1, int(workers)))
    n = len(paths)
    ok = np.zeros(n, dtype=bool)
    emb: Optional[np.ndarray] = None
    for i, res in enumerate(track(results, n, "embeddings", enabled=progress)):
        if res.vector is None:
            continue
        if emb is None:
            emb = np.zeros((n, res.vector.shape[0]), dtype=np.float32)
        emb[i] = res.vector
        ok[i] = True
    if emb is None:
        emb = np.zeros((n, 1), dtype=np.float32)
    return emb, ok


# ---- grouping and report ---------------------------------------------------------------------

@dataclass
class DedupParams:
    threshold: int = DEFAULT_THRESHOLD
    verify_threshold: int = DEFAULT_VERIFY_THRESHOLD
    embedding_model: Optional[str] = None
    embedding_threshold: float = DEFAULT_EMBEDDING_THRESHOLD
    workers: int = 1

    def to_dict(self) -> Dict[str, Any]:
        return {"hash": "windowed pHash (64-bit candidates, 256-bit verification)",
                "windows": list(WINDOW_NAMES), "threshold": self.threshold, "threshold_of": 64,
                "verify_threshold": self.verify_threshold, "verify_threshold_of": 256,
                "embedding_model": self.embedding_model,
                "embedding_threshold": self.embedding_threshold if self.embedding_model else None}


@dataclass
class DedupResult:
    manifest: ManifestTable
    scan: ScanResult
    groups: List[Dict[str, Any]]
    group_of_row: List[Optional[int]]
    summary: Dict[str, Any]
    params: DedupParams
    decode_failures: List[Dict[str, Any]] = field(default_factory=list)

    def report(self) -> Dict[str, Any]:
        return {
            "schema": SCHEMA,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "manifest": str(self.manifest.path) if self.manifest.path else None,
            "rows_are": "0-based data rows of the manifest (CSV line = row + 2)",
            "params": self.params.to_dict(),
            "summary": self.summary,
            "groups": self.groups,
            "decode_failures": self.decode_failures,
        }

    def write_report(self, path: os.PathLike) -> Path:
        return atomic_write_text(path, json.dumps(self.report(), indent=1) + "\n")

    def dup_group_column(self) -> List[str]:
        return ["" if g is None else str(g) for g in self.group_of_row]


def find_duplicates(manifest: ManifestTable, params: Optional[DedupParams] = None, cache: Optional[os.PathLike] = None,
                    progress: bool = False, scan: Optional[ScanResult] = None) -> DedupResult:
    """Fingerprint every row's image and group exact and near duplicates (see the module docstring)."""
    params = params or DedupParams()
    t_start = time.perf_counter()
    n_rows = len(manifest)
    row_paths = [str(manifest.image_path(i)) for i in range(n_rows)]
    if scan is None:
        scan = scan_paths(row_paths, workers=params.workers, progress=progress, cache=cache)
    t_scan = time.perf_counter() - t_start

    # unique files (a path listed twice is one file)
    file_index: Dict[str, int] = {}
    file_rows: List[List[int]] = []
    for i, p in enumerate(row_paths):
        k = file_index.setdefault(os.path.normpath(p), len(file_rows))
        if k == len(file_rows):
            file_rows.append([])
        file_rows[k].append(i)
    first_row = np.array([rows[0] for rows in file_rows], dtype=np.int64)
    ok_files = np.nonzero(scan.ok[first_row])[0]

    uf = UnionFind(n_rows)
    edges: List[Tuple[int, int, Dict[str, Any]]] = []
    for rows in file_rows:
        for r in rows[1:]:
            uf.union(rows[0], r)
            edges.append((rows[0], r, {"method": "same-file"}))
    by_sha: Dict[str, int] = {}
    for f, rows in enumerate(file_rows):
        sha = scan.sha256[rows[0]]
        if not sha:
            continue
        if sha in by_sha:
            uf.union(by_sha[sha], rows[0])
            edges.append((by_sha[sha], rows[0], {"method": "sha256"}))
        else:
            by_sha[sha] = rows[0]

    t0 = time.perf_counter()
    p64 = scan.p64[first_row[ok_files]]
    p256 = scan.p256[first_row[ok_files]]
    ca, cb = candidate_pairs(p64, params.threshold, workers=params.workers, progress=progress)
    ver = verify_pairs(p64, p256, ca, cb, params.threshold, params.verify_threshold)
    t_search = time.perf_counter() - t0
    n_near_pairs = 0
    for k in np.nonzero(ver["ok"])[0]:
        ra = int(first_row[ok_files[ca[k]]])
        rb = int(first_row[ok_files[cb[k]]])
        if scan.sha256[ra] and scan.sha256[ra] == scan.sha256[rb]:
            continue
        n_near_pairs += 1
        uf.union(ra, rb)
        edges.append((ra, rb, {"method": "phash", "distance": int(ver["d64"][k]),
                               "verify_distance": int(ver["d256"][k]),
                               "windows": [WINDOW_NAMES[ver["wa"][k]], WINDOW_NAMES[ver["wb"][k]]]}))

    t_emb = 0.0
    n_emb_pairs = 0
    if params.embedding_model:
        t1 = time.perf_counter()
        paths_ok = [row_paths[first_row[f]] for f in ok_files]
        emb, emb_ok = compute_embeddings(params.embedding_model, paths_ok, progress=progress, workers=params.workers)
        idx = np.nonzero(emb_ok)[0]
        ea, eb, es = embedding_pairs(emb[idx], params.embedding_threshold)
        for a, b, s in zip(ea, eb, es):
            ra = int(first_row[ok_files[idx[a]]])
            rb = int(first_row[ok_files[idx[b]]])
            n_emb_pairs += 1
            uf.union(ra, rb)
            edges.append((ra, rb, {"method": "embedding", "similarity": round(float(s), 4)}))
        t_emb = time.perf_counter() - t1

    groups, group_of_row = _build_groups(manifest, scan, uf, edges, row_paths)
    n_files = len(file_rows)
    failures = [{"row": int(first_row[f]), "image": manifest.rows[first_row[f]]["image"],
                 "error": scan.errors[first_row[f]]} for f in range(n_files) if not scan.ok[first_row[f]]]
    total = time.perf_counter() - t_start
    hashed = max(scan.hashed, 0)
    summary = {
        "photos": n_rows,
        "files": n_files,
        "decoded": int(len(ok_files)),
        "decode_failures": len(failures),
        "groups": len(groups),
        "exact_groups": sum(1 for g in groups if g["kind"] == "exact"),
        "near_groups": sum(1 for g in groups if g["kind"] == "near"),
        "rows_in_groups": sum(g["size"] for g in groups),
        "redundant_rows": sum(g["size"] - 1 for g in groups),
        "label_conflicts": sum(1 for g in groups if g["label_conflict"]),
        "cross_split_groups": sum(1 for g in groups if g["cross_split"]),
        "largest_group": max((g["size"] for g in groups), default=0),
        "candidate_pairs": int(len(ca)),
        "near_pairs": n_near_pairs,
        "embedding_pairs": n_emb_pairs,
        "timings": {
            "fingerprint_s": round(t_scan, 3),
            "files_fingerprinted": hashed,
            "files_from_cache": scan.reused,
            "fingerprint_ms_per_file": round(1000 * scan.seconds / hashed, 3) if hashed else None,
            "search_s": round(t_search, 3),
            "embedding_s": round(t_emb, 3) if params.embedding_model else None,
            "total_s": round(total, 3),
        },
    }
    return DedupResult(manifest, scan, groups, group_of_row, summary, params, failures)


def _build_groups(manifest: ManifestTable, scan: ScanResult, uf: UnionFind, edges, row_paths) -> Tuple[list, list]:
    comps = [sorted(rows) for rows in uf.components().values() if len(rows) > 1]
    comps.sort(key=lambda rows: rows[0])
    has_split = "split" in manifest.fieldnames
    group_of_row: List[Optional[int]] = [None] * len(manifest)
    root_to_gid = {}
    groups = []
    for gid, rows in enumerate(comps, start=1):
        for r in rows:
            group_of_row[r] = gid
        root_to_gid[uf.find(rows[0])] = gid
        labels = [";".join(manifest.labels(r)) for r in rows]
        splits = [manifest.rows[r].get("split", "") for r in rows] if has_split else []
        shas = {scan.sha256[r] for r in rows}
        groups.append({
            "id": gid,
            "kind": "exact" if len(shas) == 1 and "" not in shas else "near",
            "size": len(rows),
            "rows": rows,
            "images": [manifest.rows[r]["image"] for r in rows],
            "labels": labels,
            "splits": splits,
            "label_conflict": len({frozenset(manifest.labels(r)) for r in rows}) > 1,
            "cross_split": len({s for s in splits if s}) > 1,
            "same_file": len({os.path.normpath(row_paths[r]) for r in rows}) < len(rows),
            "max_distance": 0,
            "max_verify_distance": 0,
            "min_embedding_similarity": None,
            "pairs": [],
        })
    for a, b, info in edges:
        g = groups[root_to_gid[uf.find(a)] - 1]
        if "distance" in info:
            g["max_distance"] = max(g["max_distance"], info["distance"])
            g["max_verify_distance"] = max(g["max_verify_distance"], info["verify_distance"])
        if "similarity" in info:
            s = g["min_embedding_similarity"]
            g["min_embedding_similarity"] = info["similarity"] if s is None else min(s, info["similarity"])
        if len(g["pairs"]) < 100:
            g["pairs"].append({"rows": [a, b], **info})
    return groups, group_of_row


def load_report(path: os.PathLike) -> Dict[str, Any]:
    """Read a dedup report, checking its schema."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a dedup report (expected schema {SCHEMA!r}, found "
                         f"{data.get('schema') if isinstance(data, dict) else type(data).__name__!r})")
    return data


def groups_from_report(report: Dict[str, Any], manifest: ManifestTable) -> List[Optional[int]]:
    """Group id per manifest row from a report, matching rows by image path (so a re-ordered manifest still works)."""
    by_image: Dict[str, List[int]] = {}
    for g in report.get("groups", []):
        for img in g["images"]:
            by_image.setdefault(img, []).append(int(g["id"]))
    out: List[Optional[int]] = []
    for r in manifest.rows:
        ids = by_image.get(r["image"])
        out.append(ids[0] if ids else None)
    return out


def format_summary(result: DedupResult) -> str:
    s = result.summary
    t = s["timings"]
    lines = [
        f"photos: {s['photos']} rows, {s['files']} files, {s['decoded']} decoded, {s['decode_failures']} failed to decode",
        f"duplicate groups: {s['groups']} ({s['exact_groups']} exact, {s['near_groups']} near), "
        f"{s['rows_in_groups']} rows in groups ({s['redundant_rows']} redundant), largest {s['largest_group']}",
        f"label conflicts: {s['label_conflicts']} groups; cross-split groups: {s['cross_split_groups']}",
        f"pairs: {s['candidate_pairs']} candidates, {s['near_pairs']} near-duplicate pairs after verification"
        + (f", {s['embedding_pairs']} by embedding" if result.params.embedding_model else ""),
        f"time: fingerprints {t['fingerprint_s']:.2f} s ({t['files_fingerprinted']} files"
        + (f", {t['fingerprint_ms_per_file']:.2f} ms each" if t["fingerprint_ms_per_file"] else "")
        + f", {t['files_from_cache']} from cache), pair search {t['search_s']:.2f} s"
        + (f", embeddings {t['embedding_s']:.2f} s" if t.get("embedding_s") is not None else "")
        + f", total {t['total_s']:.2f} s",
    ]
    shown = 0
    for g in result.groups:
        if g["label_conflict"] or g["cross_split"]:
            if shown == 0:
                lines.append("groups with a label conflict or spanning splits (first 20):")
            if shown < 20:
                members = ", ".join(
                    f"row {r} {img} [{lab or '-'}]{'/' + sp if sp else ''}"
                    for r, img, lab, sp in zip(g["rows"], g["images"], g["labels"], g["splits"] or [""] * g["size"]))
                flags = "+".join(f for f, on in (("label-conflict", g["label_conflict"]),
                                                  ("cross-split", g["cross_split"])) if on)
                lines.append(f"  group {g['id']} ({g['kind']}, {flags}): {members}")
            shown += 1
    if not result.groups:
        lines.append("no duplicates found")
    return "\n".join(lines)


__all__ = ["SCHEMA", "COMBOS", "WINDOW_NAMES", "DedupParams", "DedupResult", "find_duplicates", "candidate_pairs",
           "verify_pairs", "embedding_pairs", "compute_embeddings", "UnionFind",
           "load_report", "groups_from_report", "format_summary", "DEFAULT_THRESHOLD", "DEFAULT_VERIFY_THRESHOLD",
           "DEFAULT_EMBEDDING_THRESHOLD"]

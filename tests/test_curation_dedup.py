"""Near-duplicate detection on generated photos and their near-copies; the dedup report and CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from synthetic import NEAR_COPIES, scene, write_scene
from wildlife_vision.data.dedup import (SCHEMA, DedupParams, candidate_pairs, embedding_pairs, find_duplicates,
                                     verify_pairs)
from wildlife_vision.data.hashing import dct_matrix, hash_image, phash64, scan_file, scan_paths
from wildlife_vision.data.manifest import read_manifest_table, write_manifest
from wildlife_vision.cli import main


def _manifest(tmp: Path, rows, extra=("split",)) -> Path:
    fields = ["image", "labels", *extra]
    write_manifest(tmp / "manifest.csv", fields, [dict(zip(fields, r)) for r in rows])
    return tmp / "manifest.csv"


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory):
    """12 distinct originals; originals 0..7 each get one near-copy (every transform once); two exact copies."""
    tmp = tmp_path_factory.mktemp("photos")
    rows = []
    for i in range(12):
        write_scene(tmp / "img" / f"orig_{i:02d}.jpg", seed=100 + i)
        rows.append([f"img/orig_{i:02d}.jpg", "ivory" if i % 2 else "", "train"])
    for k, name in enumerate(NEAR_COPIES):
        write_scene(tmp / "img" / f"copy_{k:02d}_{name}.jpg", seed=100 + k, transform=name)
        rows.append([f"img/copy_{k:02d}_{name}.jpg", "ivory" if k % 2 else "", "val" if k == 3 else "train"])
    shutil.copy(tmp / "img" / "orig_10.jpg", tmp / "img" / "exact_10.jpg")
    rows.append(["img/exact_10.jpg", "live_animal", "train"])  # exact copy of an unlabelled photo: a conflict
    rows.append(["img/orig_11.jpg", "ivory", "test"])  # the same path listed twice
    return _manifest(tmp, rows), rows


def test_dct_matrix_is_orthonormal_and_phash_is_stable():
    d = dct_matrix(32)
    assert np.allclose(d @ d.T, np.eye(32), atol=1e-10)
    x = np.random.default_rng(0).uniform(0, 255, (32, 32))
    assert phash64(x) == phash64(x * 0.5 + 20)  # brightness/contrast changes keep the hash


def test_every_near_copy_matches_its_original_and_distinct_photos_do_not():
    n = 30
    originals = [scene(i) for i in range(n)]
    hashes = [hash_image(im) for im in originals]
    p64 = np.stack([h[0] for h in hashes])
    p256 = np.stack([h[1] for h in hashes])
    a, b = candidate_pairs(p64)
    v = verify_pairs(p64, p256, a, b)
    assert int(v["ok"].sum()) == 0, "distinct generated photos must not be grouped"
    for name, transform in NEAR_COPIES.items():
        for i in range(0, n, 3):
            c64, c256 = hash_image(transform(originals[i]))
            P, Q = np.stack([p64[i], c64]), np.stack([p256[i], c256])
            a, b = candidate_pairs(P)
            v = verify_pairs(P, Q, a, b)
            assert len(a) == 1 and v["ok"][0], f"{name} copy of photo {i} not matched (d64={v['d64']}, d256={v['d256']})"


def test_pair_search_equals_brute_force_and_threads_agree():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2 ** 63, size=(300, 11), dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, size=(300, 11)).astype(np.uint64)
    p = base.copy()
    p[150:] = base[:150] ^ flips[:150]  # rows i and i+150 differ by one bit per window
    a1, b1 = candidate_pairs(p, threshold=3, workers=1, block=16)
    a2, b2 = candidate_pairs(p, threshold=3, workers=2, block=7)
    got1 = set(zip(a1.tolist(), b1.tolist()))
    assert got1 == set(zip(a2.tolist(), b2.tolist()))
    assert {(i, i + 150) for i in range(150)} <= got1
    # brute force over the same window combinations
    from wildlife_vision.data.dedup import COMBOS
    d = np.full((300, 300), 99)
    for i, j in COMBOS:
        d = np.minimum(d, np.bitwise_count(p[:, i, None] ^ p[None, :, j]))
    iu = np.triu_indices(300, 1)
    assert got1 == {(int(x), int(y)) for x, y in zip(*iu) if d[x, y] <= 3}


def test_find_duplicates_groups_near_copies_exact_copies_and_conflicts(photo_set):
    path, rows = photo_set
    m = read_manifest_table(path)
    res = find_duplicates(m, DedupParams())
    groups = {frozenset(g["images"]) for g in res.groups}
    for k, name in enumerate(NEAR_COPIES):
        assert frozenset({f"img/orig_{k:02d}.jpg", f"img/copy_{k:02d}_{name}.jpg"}) in groups, name
    exact = [g for g in res.groups if "img/exact_10.jpg" in g["images"]]
    assert len(exact) == 1 and exact[0]["kind"] == "exact" and exact[0]["label_conflict"]
    same = [g for g in res.groups if g["same_file"]]
    assert len(same) == 1 and same[0]["images"] == ["img/orig_11.jpg", "img/orig_11.jpg"]
    assert same[0]["cross_split"] and not same[0]["label_conflict"]
    s = res.summary
    assert s["groups"] == len(NEAR_COPIES) + 2
    assert s["exact_groups"] == 2 and s["near_groups"] == len(NEAR_COPIES)
    assert s["label_conflicts"] == 1
    # the crop-10pct-corner copy (k=3) is in val, its original in train
    assert s["cross_split_groups"] == 2
    # originals 8..11 and their rows are not in any near group
    assert res.group_of_row[8] is None and res.group_of_row[9] is None


def test_dedup_cli_writes_versioned_report_and_manifest(photo_set, tmp_path, capsys):
    path, rows = photo_set
    out = tmp_path / "r.json"
    code = main(["data", "dedup", str(path), "--output", str(out), "--write-manifest", str(tmp_path / "m.csv"),
                 "--no-cache", "--workers", "1"])
    assert code == 0
    text = capsys.readouterr().out
    assert "label conflicts: 1" in text and "exact" in text
    rep = json.loads(out.read_text())
    assert rep["schema"] == SCHEMA
    assert rep["summary"]["groups"] == len(NEAR_COPIES) + 2
    g = rep["groups"][0]
    for key in ("id", "kind", "rows", "images", "labels", "splits", "label_conflict", "max_distance", "cross_split"):
        assert key in g
    with open(tmp_path / "m.csv", newline="") as f:
        out_rows = list(csv.DictReader(f))
    assert list(out_rows[0]) == ["image", "labels", "split", "dup_group"]
    assert sum(1 for r in out_rows if r["dup_group"]) == rep["summary"]["rows_in_groups"]


def test_decode_failures_are_reported_not_fatal(tmp_path):
    write_scene(tmp_path / "a.jpg", 1)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    m = read_manifest_table(_manifest(tmp_path, [["a.jpg", "", "train"], ["broken.jpg", "", "train"],
                                           ["truncated.jpg", "", "val"], ["missing.jpg", "", "val"]]))
    res = find_duplicates(m)
    assert res.summary["decode_failures"] == 3
    assert {f["image"] for f in res.decode_failures} == {"broken.jpg", "truncated.jpg", "missing.jpg"}
    assert res.groups == []
    assert "not found" in scan_file(str(tmp_path / "missing.jpg")).error


def test_fingerprint_cache_is_reused_and_refreshed(tmp_path):
    paths = [write_scene(tmp_path / f"{i}.jpg", i) for i in range(3)]
    cache = tmp_path / "c.npz"
    r1 = scan_paths(paths, cache=cache)
    assert r1.reused == 0 and cache.is_file()
    r2 = scan_paths(paths, cache=cache)
    assert r2.reused == 3 and np.array_equal(r1.p64, r2.p64) and r1.sha256 == r2.sha256
    write_scene(paths[0], 99)  # changed file: rehashed
    r3 = scan_paths(paths, cache=cache)
    assert r3.reused == 2 and r3.sha256[0] != r1.sha256[0]


def test_embedding_similarity_needs_an_embedding_output(photo_set, tmp_path, capsys):
    from helpers import make_tiny_model

    path, _ = photo_set
    model = make_tiny_model(tmp_path / "tiny.onnx")
    code = main(["data", "dedup", str(path), "-o", str(tmp_path / "r.json"), "--model", str(model), "--no-cache"])
    assert code == 2
    assert "no 'embedding' output" in capsys.readouterr().err


def test_embedding_similarity_joins_photos_when_the_model_has_embeddings(tmp_path):
    from helpers import make_tiny_model

    model = make_tiny_model(tmp_path / "emb.onnx", embedding=True)
    write_scene(tmp_path / "a.jpg", 5)
    img = Image.open(tmp_path / "a.jpg").convert("RGB")
    w, h = img.size
    # a 30% crop of a blurred copy: beyond what the hash windows cover
    img.filter(ImageFilter.GaussianBlur(6)).crop((int(w * .15), int(h * .15), int(w * .85), int(h * .85))).save(
        tmp_path / "a_blur_crop30.jpg")
    write_scene(tmp_path / "b.jpg", 6)
    m = read_manifest_table(_manifest(tmp_path, [["a.jpg", "", ""], ["a_blur_crop30.jpg", "", ""], ["b.jpg", "", ""]]))
    no_emb = find_duplicates(m, DedupParams())
    assert no_emb.groups == []
    res = find_duplicates(m, DedupParams(embedding_model=str(model), embedding_threshold=0.9))
    assert res.summary["embedding_pairs"] >= 1
    assert res.summary["timings"]["embedding_s"] is not None
    assert any(p["method"] == "embedding" for g in res.groups for p in g["pairs"])


def test_embedding_pairs_blocked_cosine():
    e = np.array([[1, 0], [0.99, 0.05], [0, 1], [0, -1]], dtype=np.float32)
    a, b, s = embedding_pairs(e, 0.95, block=1)
    assert list(zip(a.tolist(), b.tolist())) == [(0, 1)] and s[0] > 0.95


@pytest.mark.shared_data
def test_real_data_duplicate_is_found(wildtrade_manifest, tmp_path):
    """The data card says one image appears twice; dedup must report it (an exact group), among its groups."""
    m = read_manifest_table(wildtrade_manifest)
    res = find_duplicates(m, DedupParams(workers=2))
    exact = [g for g in res.groups if g["kind"] == "exact"]
    assert any(g["same_file"] and g["images"][0] == "images/met-museum/46f02f5032d09dc0.jpg" for g in exact)
    assert res.summary["decode_failures"] == 0
    assert res.summary["photos"] == len(m)


def test_popcount_lookup_table_matches_bitwise_count():
    from wildlife_vision.data.hashing import _popcount_lut

    x = np.random.default_rng(1).integers(0, 2 ** 63, size=(7, 5), dtype=np.uint64) * np.uint64(3)
    assert np.array_equal(_popcount_lut(x), np.bitwise_count(x))

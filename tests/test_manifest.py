"""Manifest reading and validation: one readable report with every problem, folder trees, splits, hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from helpers import make_photo
from wildlife_vision.data.manifest import TAXONOMY, ManifestError, read_manifest, targets_for
from wildlife_vision.data.splits import fill_missing_splits

REPO = Path(__file__).resolve().parents[1]


def _photos(folder: Path, names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        make_photo(i, (40, 32)).save(folder / name, "JPEG")


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_valid_manifest_keeps_extra_columns_and_orders_labels_by_taxonomy(tmp_path):
    _photos(tmp_path / "img", ["a.jpg", "b.jpg", "c.jpg"])
    m = _write(tmp_path / "m.csv", "image,labels,split,source\n"
                                   "img/a.jpg,live_animal;ivory,train,shop1\n"
                                   "img/b.jpg,,val,shop2\n"
                                   "img/c.jpg,ivory,train,shop1\n")
    man = read_manifest(m)
    assert man.labels == ("ivory", "live_animal")
    assert man.columns == ("source",)
    assert [s.extra["source"] for s in man.samples] == ["shop1", "shop2", "shop1"]
    assert man.samples[1].labels == () and man.samples[1].split == "val"
    assert man.sha256 == hashlib.sha256(m.read_bytes()).hexdigest()
    assert targets_for(man.samples, man.labels).tolist() == [[1, 1], [0, 0], [1, 0]]
    assert man.report.ok and not man.report.issues


def test_every_problem_is_reported_together(tmp_path):
    _photos(tmp_path, ["ok.jpg", "dup.jpg", "same.jpg"])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (tmp_path / "notes.jpg").write_text("<html>oops</html>")
    text = ("image,labels,split\n"
            "ok.jpg,ivory,train\n"
            "missing.jpg,ivory,train\n"
            "broken.jpg,live_animal,train\n"
            "notes.jpg,,train\n"
            "ok.jpg,unicorn_horn,train\n"          # unknown label (and a duplicate path with other labels)
            "dup.jpg,ivory,train\n"
            "dup.jpg,live_animal,val\n"            # duplicate with different labels -> error
            "same.jpg,ivory,train\n"
            "same.jpg,ivory,train\n"               # exact duplicate -> warning, dropped
            "x.jpg,ivory,holdout\n")               # bad split
    m = _write(tmp_path / "m.csv", text)
    with pytest.raises(ManifestError) as exc:
        read_manifest(m)
    report = exc.value.report
    kinds = {i.kind for i in report.errors}
    assert {"missing file", "unreadable image", "unknown label", "duplicate row", "bad split"} <= kinds
    assert any(i.kind == "duplicate row" for i in report.warnings)
    assert report.rows == 10
    msg = str(exc.value)
    assert "missing.jpg" in msg and "unicorn_horn" in msg and "line 3" in msg and "HTML" in msg
    assert "Traceback" not in msg and "nothing was trained" in msg


def test_non_utf8_manifest_is_reported_with_the_line(tmp_path):
    _photos(tmp_path, ["caf\u00e9.jpg", "b.jpg"])
    m = _write(tmp_path / "m.csv", "image,labels,split\ncaf\u00e9.jpg,ivory,train\nb.jpg,,val\n", encoding="latin-1")
    with pytest.raises(ManifestError) as exc:
        read_manifest(m)
    errs = [i for i in exc.value.report.errors if i.kind == "encoding"]
    assert len(errs) == 1 and errs[0].line == 2
    assert "UTF-8" in str(exc.value) and "0xe9" in str(exc.value)


def test_utf8_bom_and_unicode_paths_are_fine(tmp_path):
    _photos(tmp_path, ["\u8c61\u7259.jpg"])
    m = _write(tmp_path / "m.csv", "\ufeffimage,labels\n\u8c61\u7259.jpg,ivory\n")
    assert read_manifest(m).samples[0].labels == ("ivory",)


@pytest.mark.parametrize("text,kind", [
    ("path,labels\na.jpg,ivory\n", "header"),
    ("", "empty manifest"),
    ("image,labels\na.jpg,ivory,extra\n", "csv syntax"),
])
def test_structural_problems(tmp_path, text, kind):
    _photos(tmp_path, ["a.jpg"])
    with pytest.raises(ManifestError) as exc:
        read_manifest(_write(tmp_path / "m.csv", text))
    assert kind in {i.kind for i in exc.value.report.errors}


def test_missing_manifest_is_a_report_not_a_traceback(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")


@pytest.mark.parametrize("cell,suggestion", [
    ("ivroy", "ivory"),
    ('"ivory,live_animal"', "ivory;live_animal"),     # a quoted comma: one unknown label
    ('"ivory, live_anmal"', "ivory;live_animal"),     # and a typo in one of them
    ("live_animals", "live_animal"),
])
def test_a_label_typo_gets_a_suggestion_and_the_separator_hint(tmp_path, cell, suggestion):
    _photos(tmp_path, ["a.jpg"])
    with pytest.raises(ManifestError) as exc:
        read_manifest(_write(tmp_path / "m.csv", f"image,labels\na.jpg,{cell}\n"))
    (issue,) = [i for i in exc.value.report.errors if i.kind == "unknown label"]
    assert f"did you mean '{suggestion}'?" in issue.message and "labels are separated by ';'" in issue.message
    assert f"did you mean '{suggestion}'?" in str(exc.value)


def test_labels_separated_by_unquoted_commas_get_the_separator_hint(tmp_path):
    _photos(tmp_path, ["a.jpg"])
    with pytest.raises(ManifestError) as exc:
        read_manifest(_write(tmp_path / "m.csv", "image,labels,split\na.jpg,ivory,live_animal,train\n"))
    (issue,) = exc.value.report.errors
    assert issue.kind == "csv syntax" and "separated by ';', not ','" in issue.message
    assert "did you mean 'ivory;live_animal'?" in issue.message


def test_an_unknown_label_far_from_every_known_one_gets_no_guess(tmp_path):
    _photos(tmp_path, ["a.jpg"])
    with pytest.raises(ManifestError) as exc:
        read_manifest(_write(tmp_path / "m.csv", "image,labels\na.jpg,dragon\n"))
    assert "did you mean" not in str(exc.value) and "separated by ';'" in str(exc.value)


def test_explicit_labels_ignore_other_taxonomy_labels_and_accept_custom_ones(tmp_path):
    _photos(tmp_path, ["a.jpg", "b.jpg"])
    m = _write(tmp_path / "m.csv", "image,labels\na.jpg,ivory;shark_fin\nb.jpg,live_animal\n")
    man = read_manifest(m, labels=["shark_fin", "ivory"])
    assert man.labels == ("shark_fin", "ivory")
    assert any(i.kind == "ignored label" and "live_animal" in i.message for i in man.report.warnings)
    with pytest.raises(ManifestError, match="shark_fin"):
        read_manifest(m)


def test_label_without_training_positives_is_warned(tmp_path):
    _photos(tmp_path, ["a.jpg", "b.jpg"])
    m = _write(tmp_path / "m.csv", "image,labels,split\na.jpg,,train\nb.jpg,ivory,val\n")
    man = read_manifest(m, labels=["ivory"])
    assert any(i.kind == "label without examples" for i in man.report.warnings)


def test_folder_per_class_tree_with_splits(tmp_path):
    _photos(tmp_path / "train" / "ivory", ["1.jpg", "2.jpg"])
    _photos(tmp_path / "train" / "none", ["3.jpg"])
    _photos(tmp_path / "val" / "ivory", ["4.jpg"])
    _photos(tmp_path / "val" / "negative", ["5.png"])
    man = read_manifest(tmp_path)
    assert man.labels == ("ivory",)
    assert sorted((s.split, s.labels) for s in man.samples) == [
        ("train", ()), ("train", ("ivory",)), ("train", ("ivory",)), ("val", ()), ("val", ("ivory",))]
    assert len(man.sha256) == 64 and man.columns == ("folder",)


def test_folder_tree_with_unknown_label_folder(tmp_path):
    _photos(tmp_path / "ivory", ["1.jpg"])
    _photos(tmp_path / "dragon_scale", ["2.jpg"])
    with pytest.raises(ManifestError, match="dragon_scale"):
        read_manifest(tmp_path)


def test_deterministic_split_when_there_is_no_val(tmp_path):
    names = [f"{i}.jpg" for i in range(60)]
    _photos(tmp_path, names)
    m = _write(tmp_path / "m.csv", "image,labels\n" + "".join(f"{n},ivory\n" for n in names))
    samples = read_manifest(m).samples
    a, note = fill_missing_splits(samples, 0.2)
    b, _ = fill_missing_splits(samples, 0.2)
    assert note and "deterministic" in note
    assert [s.split for s in a] == [s.split for s in b]
    n_val = sum(s.split == "val" for s in a)
    assert 4 <= n_val <= 20
    again, note2 = fill_missing_splits(a, 0.2)  # already split: kept as is
    assert note2 is None and [s.split for s in again] == [s.split for s in a]


def test_taxonomy_is_documented():
    text = (REPO / "datasets" / "taxonomy.md").read_text(encoding="utf-8")
    for label in TAXONOMY:
        assert f"`{label}`" in text


def test_real_manifest_validates(wildtrade_manifest):
    man = read_manifest(wildtrade_manifest)
    assert man.labels == ("ivory", "live_animal")
    assert len(man.split("train")) > 3000 and len(man.split("val")) > 400
    assert man.report.ok
    assert [i.kind for i in man.report.warnings] == ["duplicate row"]  # the one repeated image
    assert {"source", "license", "origin"} <= set(man.columns)

"""Edit-consistency training: edited twins share the original's augmentation draw, the Jensen-Shannon term
behaves like a divergence, the step uses it, and a run with --consistency trains and logs it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("albumentations")

from PIL import Image  # noqa: E402

from helpers import make_photo  # noqa: E402
from test_training_pipeline import train_args, write_synthetic_manifest  # noqa: E402


def test_bernoulli_js_is_a_bounded_divergence():
    from wildlife_vision_train.consistency import bernoulli_js

    a = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    assert float(bernoulli_js(a, a)) == pytest.approx(0.0, abs=1e-7)
    b = torch.tensor([[-2.0, 1.0], [0.5, -3.0]])
    js = float(bernoulli_js(a, b))
    assert 0 < js <= math.log(2)
    assert js == pytest.approx(float(bernoulli_js(b, a)), rel=1e-6)
    assert float(bernoulli_js(torch.tensor([[40.0]]), torch.tensor([[-40.0]]))) == pytest.approx(math.log(2), rel=1e-3)


def test_twins_are_the_edit_under_the_same_augmentation_draw(tmp_path):
    from wildlife_vision.data.manifest import Sample
    from wildlife_vision.preprocess import PreprocessConfig
    from wildlife_vision_train.augment import build_train_transform
    from wildlife_vision_train.config import AugCfg
    from wildlife_vision_train.consistency import edited_twin
    from wildlife_vision_train.data import ImageDataset, collate

    img = make_photo(3, (48, 48))
    assert edited_twin(img, seed=1, fraction=0.0) is None
    twin, name = edited_twin(img, seed=1, fraction=1.0, edits=("mirror",))
    assert name == "mirror" and np.array_equal(np.asarray(twin), np.asarray(img)[:, ::-1])

    path = tmp_path / "a.png"
    img.save(path)
    cfg = PreprocessConfig(input_size=(48, 48), crop_pct=1.0, interpolation="bilinear")
    # full-image crop, no flip: the augmentation is the same function for both views
    tf = build_train_transform(48, AugCfg(scale_min=1.0, hflip=0.0, color=0.8, blur=0.0, jpeg=0.0, perspective=0.0),
                               "bilinear")
    ds = ImageDataset([Sample(path=str(path), image="a.png", labels=(), split="train")], ["ivory"], cfg, tf,
                      twin_fraction=1.0)
    seen = set()
    for seed in range(30):
        x, _, _, t = ds[(0, seed)]
        assert t is not None and t.shape == x.shape
        got = edited_twin(img, seed, 1.0)
        seen.add(got[1])
        if got[1] == "mirror":  # same colour draw, mirrored pixels
            np.testing.assert_allclose(t.numpy(), x.numpy()[:, :, ::-1], atol=1e-5)
    assert len(seen) >= 4  # the edits are drawn at random
    half = ImageDataset(ds_samples := [Sample(path=str(path), image="a.png", labels=(), split="train")] * 40,
                        ["ivory"], cfg, tf, twin_fraction=0.5)
    batch = collate([half[(i, 1000 + i)] for i in range(len(ds_samples))])
    assert batch.twins is not None and 8 <= len(batch.twin_of) <= 32 and len(batch.twins) == len(batch.twin_of)


def test_step_adds_the_consistency_term():
    from wildlife_vision_train.step import TrainStep

    torch.manual_seed(0)

    def make(consistency):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        return TrainStep(model, torch.nn.BCEWithLogitsLoss(), opt, sched, torch.device("cpu"),
                         consistency=consistency)

    x = torch.randn(6, 3, 4, 4)
    y = torch.zeros(6, 2)
    twins, twin_of = torch.randn(3, 3, 4, 4), torch.tensor([0, 2, 4])
    plain = make(0.0)(x, y, twins, twin_of)
    step = make(5.0)
    with_js = step(x, y, twins, twin_of)
    assert step.last_consistency > 0 and with_js == pytest.approx(plain + 5.0 * step.last_consistency, rel=1e-4)
    same = make(5.0)
    assert same(x, y, x[twin_of], twin_of) == pytest.approx(plain, rel=1e-5)  # identical twins: no extra loss


def test_a_run_with_consistency_trains_and_logs_it(tmp_path):
    from wildlife_vision_train.cli import main
    from wildlife_vision_train.config import TrainConfig

    manifest = write_synthetic_manifest(tmp_path / "d", n_train=6, n_val=3)
    out = tmp_path / "run"
    assert main(train_args(manifest, out, "--epochs", "1", "--consistency", "2", "--consistency-fraction", "0.5")) == 0
    cfg = TrainConfig.load_yaml(out / "config.yaml")
    assert (cfg.aug.consistency, cfg.aug.consistency_fraction) == (2.0, 0.5)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert row["train_consistency_js"] > 0 and np.isfinite(row["train_loss"])
    assert "edit-consistency training: 50% of each batch gets an edited twin (any edit)" in (out / "train.log").read_text()


def test_consistency_edits_choose_the_twins_edits(tmp_path, monkeypatch):
    """--consistency-edits: every twin gets one of the named edits; the config keeps them, refuses unknown ones,
    and a config without them hashes as before the option existed."""
    import wildlife_vision_train.consistency as consistency
    from wildlife_vision_train.cli import main
    from wildlife_vision_train.config import ConfigError, TrainConfig

    drawn = []
    real = consistency.edited_twin

    def spy(img, seed, fraction, edits=consistency.TWIN_EDITS):
        got = real(img, seed, fraction, edits)
        if got is not None:
            drawn.append(got[1])
        return got

    monkeypatch.setattr(consistency, "edited_twin", spy)
    manifest = write_synthetic_manifest(tmp_path / "d", n_train=6, n_val=3)
    out = tmp_path / "run"
    assert main(train_args(manifest, out, "--epochs", "1", "--consistency", "2", "--consistency-fraction", "1.0",
                           "--consistency-edits", "JPEG, crop")) == 0
    cfg = TrainConfig.load_yaml(out / "config.yaml")
    assert cfg.aug.consistency_edits == ("jpeg", "crop")
    assert len(drawn) >= 12 and set(drawn) == {"jpeg", "crop"}
    assert "an edited twin (jpeg, crop), loss weight 2" in (out / "train.log").read_text()
    with pytest.raises(ConfigError, match="did you mean 'jpeg'"):
        cfg.replace("aug", consistency_edits=("jpg",)).validate()
    plain = cfg.replace("aug", consistency_edits=())
    older = plain.to_dict()
    del older["aug"]["consistency_edits"], older["model"]["input_lowpass"]
    assert TrainConfig.from_dict(older).sha256() == plain.sha256() != cfg.sha256()


def test_teacher_kl_pulls_both_views_to_the_teachers_mean_and_softening_does_not_pay():
    from wildlife_vision_train.consistency import bernoulli_js, teacher_kl

    t_a, t_b = torch.tensor([[4.0, -4.0]]), torch.tensor([[2.0, -2.0]])
    target = 0.5 * (torch.sigmoid(t_a) + torch.sigmoid(t_b))
    at_target = torch.log(target / (1 - target))
    assert float(teacher_kl(at_target, at_target, t_a, t_b)) == pytest.approx(0.0, abs=1e-6)
    sharp_a, sharp_b = torch.tensor([[3.0, -3.0]]), torch.tensor([[1.0, -1.0]])
    soft_a, soft_b = sharp_a / 4, sharp_b / 4  # the same decisions, logits 4x smaller
    assert float(bernoulli_js(soft_a, soft_b)) < float(bernoulli_js(sharp_a, sharp_b))  # JS rewards softening
    assert float(teacher_kl(soft_a, soft_b, t_a, t_b)) > float(teacher_kl(sharp_a, sharp_b, t_a, t_b))
    x = at_target.clone().requires_grad_(True)
    teacher_kl(x, x, t_a, t_b).backward()
    assert float(x.grad.abs().max()) < 1e-6  # the target is a minimum


def test_a_run_with_a_consistency_teacher_trains_and_refuses_a_teacher_of_other_labels(tmp_path, capsys):
    from wildlife_vision_train.cli import main
    from wildlife_vision_train.config import TrainConfig

    manifest = write_synthetic_manifest(tmp_path / "d", n_train=4, n_val=3)
    teacher = tmp_path / "teacher"
    assert main(train_args(manifest, teacher, "--epochs", "1")) == 0
    out = tmp_path / "student"
    assert main(train_args(manifest, out, "--epochs", "1", "--consistency", "2", "--consistency-fraction", "1.0",
                           "--consistency-teacher", str(teacher))) == 0
    assert TrainConfig.load_yaml(out / "config.yaml").aug.consistency_teacher == str(teacher)
    assert "pulled to the mean score of the frozen teacher" in (out / "train.log").read_text()
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert row["train_consistency_js"] > 0 and np.isfinite(row["train_loss"])
    assert main(train_args(manifest, tmp_path / "x", "--epochs", "1", "--consistency", "2", "--labels", "ivory",
                           "--consistency-teacher", str(teacher / "best.pt"))) == 2
    assert "this run trains ['ivory']" in capsys.readouterr().err
    assert main(train_args(manifest, tmp_path / "y", "--epochs", "1", "--consistency", "2",
                           "--consistency-teacher", str(tmp_path / "nope.pt"))) == 2

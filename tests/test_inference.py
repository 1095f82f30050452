"""The Python API: load_model, Model properties, predict/predict_iter and embed semantics, consistency, providers."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import wildlife_vision as wv
from wildlife_vision import model as model_mod
from wildlife_vision.errors import ModelLoadError

from helpers import make_photo, make_tiny_model, tiny_metadata


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture(scope="module")
def model(model_path):
    return wv.load_model(model_path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i in range(11):
        p = folder / f"p{i:02d}.{'png' if i % 2 else 'jpg'}"
        make_photo(i, (50 + 7 * i, 40 + 3 * i)).save(p)
        paths.append(str(p))
    return paths


# ---- loading and what the model says about itself ---------------------------------------------------------

def test_model_exposes_its_metadata(model, model_path):
    assert model.labels == ("ivory", "live_animal")
    assert model.thresholds == {"ivory": 0.5, "live_animal": 0.5}
    assert model.review_bands == {"ivory": (0.3, 0.5), "live_animal": (0.3, 0.5)}
    assert model.preprocess_config.input_size == (32, 32)
    assert model.metadata.backbone == "tiny-linear"
    assert (model.name, model.version) == ("tiny-test-model", "0.0.1")
    assert model.provider == "CPUExecutionProvider" and model.providers[0] == model.provider
    assert model.path == Path(model_path)
    assert "tiny-test-model" in repr(model) and "CPUExecutionProvider" in repr(model)
    assert model.session.get_inputs()[0].name == "pixel_values"


def test_public_api_is_small():
    assert set(wv.__all__) >= {"load_model", "Model", "Prediction", "ModelLoadError", "MetadataError",
                               "ImageDecodeError", "WildlifeVisionError"}


def test_default_model(tmp_path):
    """With no path: the shipped model when exported_models/DEFAULT exists, else an error that says what to do."""
    try:
        path = model_mod.default_model_path()
    except ModelLoadError as e:
        assert "load_model('model.onnx')" in str(e)
        with pytest.raises(ModelLoadError, match="no shipped default model"):
            wv.load_model()
        return
    m = wv.load_model()
    assert m.path == path
    pred = m.predict(make_photo(0))
    assert pred.ok and set(pred.scores) == set(m.labels)


@pytest.mark.parametrize("kwargs, match", [({"batch_size": 0}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
                                           ({"threads": -1}, "threads"), ({"providers": ["tpu-9000"]}, "unknown"),
                                           ({"providers": []}, "empty")])
def test_bad_load_arguments(model_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        wv.load_model(model_path, **kwargs)


# ---- providers ------------------------------------------------------------------------------------

def test_explicit_cpu_provider_and_threads(model_path):
    m = wv.load_model(model_path, providers=["cpu"], threads=1)
    assert m.provider == "CPUExecutionProvider"
    assert m.predict(make_photo(1)).ok


def test_cpu_sessions_do_not_spin_idle_threads(model_path):
    # decoding threads share the cores with onnxruntime's; spinning workers would take cycles from them
    m = wv.load_model(model_path, providers=["cpu"])
    assert m.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_requesting_a_missing_gpu_provider_warns_and_falls_back_to_cpu(model_path):
    with pytest.warns(RuntimeWarning, match="CUDAExecutionProvider.*not available.*falling back"):
        m = wv.load_model(model_path, providers=["cuda", "cpu"])
    assert m.provider == "CPUExecutionProvider"


def test_gpu_provider_that_fails_to_start_warns(model_path, monkeypatch):
    """onnxruntime lists CUDA but cannot start it (no driver): the session silently runs on CPU; we warn."""
    monkeypatch.setattr(model_mod, "available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = wv.load_model(model_path)  # default: CUDA when available
    assert m.provider == "CPUExecutionProvider"
    assert any(issubclass(w.category, RuntimeWarning) and "could not be initialised" in str(w.message)
               for w in caught), [str(w.message) for w in caught]


def test_default_providers_on_a_cpu_machine_do_not_warn(model_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        wv.load_model(model_path)


# ---- predict semantics ------------------------------------------------------------------------------

def test_flagged_and_review_follow_thresholds_and_bands(tmp_path):
    meta = tiny_metadata(thresholds={"ivory": 0.55, "live_animal": 0.9})
    meta["review_bands"] = {"ivory": [0.2, 0.55], "live_animal": [0.0, 0.9]}
    m = wv.load_model(make_tiny_model(tmp_path / "m.onnx", metadata=meta))
    preds = m.predict([make_photo(i, (40, 40)) for i in range(30)])
    seen_flag = seen_review = False
    for p in preds:
        for lab, s in p.scores.items():
            t, (low, _) = m.thresholds[lab], m.review_bands[lab]
            assert (lab in p.flagged) == (s >= t)
            assert (lab in p.review) == (low <= s < t)
            seen_flag |= lab in p.flagged
            seen_review |= lab in p.review
    assert seen_flag and seen_review


def test_single_input_returns_one_prediction_and_lists_return_lists(model, photos):
    assert isinstance(model.predict(photos[0]), wv.Prediction)
    assert isinstance(model.predict(Path(photos[0])), wv.Prediction)
    assert len(model.predict(photos[:3])) == 3
    assert len(model.predict(tuple(photos[:2]))) == 2
    assert len(model.predict(p for p in photos[:4])) == 4  # any iterable of inputs
    assert model.predict([]) == []


def test_predict_rejects_unsupported_types_before_scoring_anything(model, photos):
    with pytest.raises(TypeError, match="int"):
        model.predict(42)
    with pytest.raises(TypeError, match=r"dict at position 1"):
        model.predict([photos[0], {"url": "x"}])
    with pytest.raises(TypeError, match="dict"):
        model.predict({"url": photos[0]})  # not a list of its keys
    with open(photos[0], "rb") as f, pytest.raises(TypeError, match="BufferedReader"):
        model.predict(f)  # not a list of its lines


def test_predict_iter_reports_unsupported_types_as_that_inputs_error(model, photos):
    preds = list(model.predict_iter([photos[0], 42, photos[1]], batch_size=2))
    assert [p.ok for p in preds] == [True, False, True]
    assert preds[1].error_kind == "unsupported_type" and "int" in preds[1].error


def test_predict_iter_names_and_streaming(model, photos):
    names = [f"listing-{i}" for i in range(5)]
    preds = list(model.predict_iter(iter(photos[:5]), batch_size=2, workers=2, names=names))
    assert [p.input for p in preds] == names
    with pytest.raises(ValueError, match="fewer"):
        list(model.predict_iter(photos[:3], names=["a"]))
    gen = model.predict_iter(photos * 5, batch_size=2, workers=3)
    assert next(gen).ok
    gen.close()  # stopping early must not hang on the decode threads


def test_prediction_to_dict(model, photos):
    d = model.predict(photos[0]).to_dict()
    assert set(d) == {"input", "scores", "flagged", "review", "error", "error_kind"}
    bad = model.predict(b"nope").to_dict()
    assert bad["error"] and bad["scores"] == {} and bad["flagged"] == [] and bad["error_kind"] == "not_an_image"


# ---- consistency ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_same_image_as_path_bytes_pil_array_gets_identical_scores(model, tmp_path, fmt):
    data = encode(make_photo(7, (90, 70)), fmt)
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(data)
    decoded = Image.open(io.BytesIO(data))
    inputs = [str(path), path, data, bytearray(data), Image.open(io.BytesIO(data)), decoded.convert("RGB"),
              np.asarray(decoded.convert("RGB"))]
    preds = model.predict(inputs)
    assert all(p.ok for p in preds)
    assert all(p.scores == preds[0].scores for p in preds), [p.scores for p in preds]
    single = [model.predict(x).scores for x in inputs]
    assert all(s == preds[0].scores for s in single)


def test_batch_size_and_workers_do_not_change_scores(model, photos):
    ref = [p.scores for p in model.predict(photos, batch_size=1, workers=1)]
    for bs, workers in [(7, 1), (7, 3), (1, 3), (32, 2), (4, 4)]:
        assert [p.scores for p in model.predict(photos, batch_size=bs, workers=workers)] == ref, (bs, workers)


def test_bad_inputs_do_not_change_the_others_in_their_batch(model, photos):
    ref = model.predict(photos, batch_size=4)
    mixed = []
    for i, p in enumerate(photos):
        mixed.append(p)
        if i % 3 == 0:
            mixed += [b"", b"<html>", np.zeros((3, 3), np.float64), "/does/not/exist.jpg"]
    preds = model.predict(mixed, batch_size=4, workers=2)
    assert len(preds) == len(mixed)
    good = [p for p in preds if p.ok]
    assert [p.input for p in good] == photos
    assert [p.scores for p in good] == [p.scores for p in ref]
    assert sum(not p.ok for p in preds) == 4 * len(range(0, len(photos), 3))


def test_every_input_bad_still_yields_one_row_each(model):
    preds = model.predict([b"", b"x", "/nope.png"], batch_size=2)
    assert [p.error_kind for p in preds] == ["empty", "not_an_image", "not_found"]


# ---- failures inside inference -------------------------------------------------------------------------

def test_an_inference_failure_on_one_input_spares_the_rest(model_path, photos, monkeypatch):
    m = wv.load_model(model_path)
    real = m.run_batch
    poisoned = np.asarray(make_photo(99, (40, 40)))

    def flaky(batch):
        if any(np.allclose(x, m_poison) for x in batch):
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(batch)

    m_poison = wv.preprocess.preprocess(poisoned, m.preprocess_config)
    monkeypatch.setattr(m, "run_batch", flaky)
    preds = m.predict([photos[0], poisoned, photos[1]], batch_size=3)
    assert [p.ok for p in preds] == [True, False, True]
    assert preds[1].error_kind == "inference_failed" and "out of memory" in preds[1].error
    assert preds[0].scores == wv.load_model(model_path).predict(photos[0]).scores


def test_non_finite_scores_are_an_error_not_a_number(model_path, photos, monkeypatch):
    m = wv.load_model(model_path)
    monkeypatch.setattr(m, "run_batch", lambda b: np.full((len(b), 2), np.nan, np.float32))
    pred = m.predict(photos[0])
    assert pred.error_kind == "inference_failed" and "non-finite" in pred.error


def test_an_unexpected_preprocessing_bug_becomes_that_inputs_error(model, photos, monkeypatch):
    def boom(*a, **k):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(model_mod, "resize_and_crop_rgb", boom)  # a bug in the geometry step
    pred = model.predict(photos[0])
    assert pred.error_kind == "internal_error" and "ZeroDivisionError" in pred.error


# ---- embeddings -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def emb_model(tmp_path_factory):
    return wv.load_model(make_tiny_model(tmp_path_factory.mktemp("e") / "emb.onnx", embedding=True))


def _pooled(model, item) -> np.ndarray:
    """What the tiny model's embedding output computes: the preprocessed image average-pooled to 4x4, flattened."""
    x = wv.preprocess.preprocess(item, model.preprocess_config)
    return x.reshape(3, 4, 8, 4, 8).mean(axis=(2, 4)).reshape(-1)


def test_embed_one_input_returns_its_vector(emb_model, photos):
    assert emb_model.has_embedding
    vec = emb_model.embed(photos[0])
    assert isinstance(vec, np.ndarray) and vec.dtype == np.float32 and vec.shape == (48,)
    np.testing.assert_allclose(vec, _pooled(emb_model, photos[0]), rtol=1e-5, atol=1e-6)
    same = [emb_model.embed(x) for x in (Path(photos[0]).read_bytes(), Image.open(photos[0]),
                                           np.asarray(Image.open(photos[0]).convert("RGB")))]
    for v in same:
        np.testing.assert_array_equal(v, vec)
    with pytest.raises(wv.ImageDecodeError) as exc:
        emb_model.embed(b"not an image")
    assert exc.value.kind == "not_an_image"


def test_embed_a_list_gives_one_result_each_and_bad_inputs_spare_the_rest(emb_model, photos):
    items = [photos[0], b"", photos[1], "/nope.png", photos[2]]
    res = emb_model.embed(items, batch_size=2, workers=2)
    assert [r.ok for r in res] == [True, False, True, False, True]
    assert [r.error_kind for r in res] == [None, "empty", None, "not_found", None]
    assert res[1].vector is None and res[0].input == photos[0]
    alone = [emb_model.embed(p) for p in (photos[0], photos[1], photos[2])]
    for r, v in zip((res[0], res[2], res[4]), alone):
        np.testing.assert_array_equal(r.vector, v)
    for bs, w in ((1, 1), (3, 1), (32, 3)):  # batching and threads do not change the vectors
        again = emb_model.embed(photos, batch_size=bs, workers=w)
        np.testing.assert_array_equal(np.stack([r.vector for r in again]),
                                      np.stack([r.vector for r in emb_model.embed(photos)]))
    with pytest.raises(TypeError, match="position 1"):
        emb_model.embed([photos[0], 42])


def test_embed_and_predict_share_one_loop(emb_model, photos, monkeypatch):
    """An inference failure on one input of a batch spares the rest for embeddings too (the same _score)."""
    seen = []
    real = emb_model.run_batch

    def spy(batch, output=None):
        seen.append((len(batch), output))
        if output == "embedding" and len(batch) > 1:
            raise RuntimeError("simulated batch failure")
        return real(batch, output)

    monkeypatch.setattr(emb_model, "run_batch", spy)
    res = emb_model.embed(photos[:3], batch_size=3)
    assert all(r.ok for r in res) and seen == [(3, "embedding"), (1, "embedding"), (1, "embedding"),
                                               (1, "embedding")]
    seen.clear()
    assert emb_model.predict(photos[0]).ok and seen == [(1, None)]  # the scores still come from the scores output


def test_embed_needs_an_embedding_output(model, photos):
    assert not model.has_embedding
    with pytest.raises(wv.EmbeddingUnavailable, match="no 'embedding' output") as exc:
        model.embed(photos[0])
    assert isinstance(exc.value, ModelLoadError)
    with pytest.raises(wv.EmbeddingUnavailable):
        model.embed_iter(iter([photos[0]]))  # at once, before reading any input


def test_non_finite_embeddings_are_an_error(emb_model, photos, monkeypatch):
    monkeypatch.setattr(emb_model, "run_batch", lambda b, output=None: np.full((len(b), 48), np.inf, np.float32))
    (res,) = emb_model.embed([photos[0]])
    assert res.error_kind == "inference_failed" and "non-finite" in res.error


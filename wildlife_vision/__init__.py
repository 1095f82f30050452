"""wildlife_vision: find illegal wildlife products in marketplace listing photos.

Small inference library (numpy, pillow, onnxruntime; never torch)::

    import wildlife_vision as wv
    model = wv.load_model()              # the shipped default model, or load_model("my.onnx")
    pred = model.predict("photo.jpg")    # or bytes, a PIL image, an RGB array, or a list of them
    pred.scores, pred.flagged, pred.review, pred.error
    vec = model.embed("photo.jpg")      # the model's embedding output (pooled features), float32
"""

from ._version import __version__
from .errors import EmbeddingUnavailable, ImageDecodeError, MetadataError, ModelLoadError, WildlifeVisionError
from .model import Embedding, Model, Prediction, load_model

__all__ = ["load_model", "Model", "Prediction", "Embedding", "WildlifeVisionError", "ModelLoadError", "MetadataError",
           "EmbeddingUnavailable", "ImageDecodeError", "__version__"]

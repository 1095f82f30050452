"""wildlife_vision: find illegal wildlife products in marketplace listing photos.

Small inference library (numpy, pillow, onnxruntime; never torch)::

    import wildlife_vision as wv
    model = wv.load_model()              # the shipped default model, or load_model("my.onnx")
    pred = model.predict("photo.jpg")    # or bytes, a PIL image, an RGB array, or a list of them
    pred.scores, pred.flagged, pred.review, pred.error
"""

from ._version import __version__
from .errors import ImageDecodeError, MetadataError, ModelLoadError, WildlifeVisionError
from .model import Model, Prediction, load_model

__all__ = ["load_model", "Model", "Prediction", "WildlifeVisionError", "ModelLoadError", "MetadataError",
           "ImageDecodeError", "__version__"]

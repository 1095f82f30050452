"""`wildlife-vision adapt`: new label heads on a model's frozen embeddings, without torch.

:mod:`.heads` fits one L2-regularised logistic regression per label on the ``embedding`` output (standardisation
folded into the weights, C by seeded k-fold CV on the train rows), :mod:`.graph` adds the heads to the parent's
ONNX graph so old and new labels are scored in one pass (the parent's scores unchanged), and :mod:`.cli` is the
command: embeddings through :meth:`wildlife_vision.Model.embed_iter`, thresholds and review bands on the val rows
with :func:`wildlife_vision.evaluation.calibrate.operating_points`, metrics with
:func:`wildlife_vision.evaluation.evaluate.build_report`, metadata with
:func:`wildlife_vision.metadata.write_metadata_bytes`. Needs the ``[adapt]`` extra (onnx, scikit-learn).
"""

"""Torch-free evaluation: metrics, thresholds, ONNX evaluation reports and model cards."""

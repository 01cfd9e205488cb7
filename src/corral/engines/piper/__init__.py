"""Piper: the handler that speaks with a Piper voice (ONNX through onnxruntime)."""

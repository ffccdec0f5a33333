"""Images and faces: decoding, cropping, face detection and the ONNX embedder.

Imports no other lookalike package: everything else builds on it.
"""

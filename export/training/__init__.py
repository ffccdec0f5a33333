"""Training the embedder (`lookalike train`): fine-tuning on identities and distilling
from a teacher, with their losses, chips and augmentation.

Apart from model building, ONNX conversion and quantisation (the rest of
``lookalike.export``), which read a trained checkpoint through
``lookalike.export.checkpoint`` and never import this package.
"""

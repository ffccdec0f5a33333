"""Build the Keras ResNet101 face embedder and export it to ONNX.

Every way into this component passes through here before TensorFlow is imported,
so this is where TensorFlow's C++ INFO and WARNING chatter is turned down; errors still show.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

"""Build the Keras ResNet101 face embedder and export it to ONNX."""

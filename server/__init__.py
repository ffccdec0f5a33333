"""The lookalike server: ONNX embedder, memory-mapped index, k-NN search, gRPC service."""

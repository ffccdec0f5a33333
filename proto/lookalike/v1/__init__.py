"""Generated protobuf and gRPC stubs of lookalike.v1 (see proto/generate.py)."""

"""The online path: the gRPC server, its search service and engine, batching, auth, telemetry."""

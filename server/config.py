"""The server's one configuration object, filled from flags over ``LOOKALIKE_*`` variables."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

# Kept free of numpy, onnxruntime and scikit-learn: the CLI reads these flags
# on a thin-client install too.
Device = Literal["auto", "cpu", "cuda"]
Algorithm = Literal["brute", "ball_tree", "kd_tree"]
DEFAULT_MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class ServerConfig:
    model: Path
    index: Path
    host: str = "[::]"
    port: int = 50051
    device: Device = "auto"
    knn_algorithm: Algorithm = "brute"
    max_k: int = 100
    max_message_bytes: int = 8 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_in_flight: int = 16
    thumbnail_size: int = 160
    grace_seconds: float = 10.0
    auth_token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServerConfig:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def env_default(name: str, default: object) -> object:
    """A flag's default: ``LOOKALIKE_<NAME>`` when set, else the built-in one."""
    return os.environ.get(f"LOOKALIKE_{name.upper()}", default)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `lookalike serve`, one per ServerConfig field."""
    d = ServerConfig.__dataclass_fields__
    parser.add_argument(
        "--model",
        type=Path,
        default=env_default("model", None),
        required="LOOKALIKE_MODEL" not in os.environ,
        help="the ONNX embedder made by `lookalike export`",
    )
    parser.add_argument(
        "--index",
        type=Path,
        default=env_default("index", None),
        required="LOOKALIKE_INDEX" not in os.environ,
        help="the index folder made by `lookalike index` with the same model",
    )
    parser.add_argument(
        "--host",
        default=env_default("host", d["host"].default),
        help="address to listen on (default: all interfaces)",
    )
    parser.add_argument("--port", type=int, default=env_default("port", d["port"].default))
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default=env_default("device", d["device"].default),
        help="auto: CUDA when it loads, else CPU; cuda: fail unless CUDA loads",
    )
    parser.add_argument(
        "--knn-algorithm",
        choices=["brute", "ball_tree", "kd_tree"],
        default=env_default("knn_algorithm", d["knn_algorithm"].default),
        help="scikit-learn algorithm; brute keeps the matrix memory-mapped",
    )
    parser.add_argument("--max-k", type=int, default=env_default("max_k", d["max_k"].default))
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=env_default("max_message_bytes", d["max_message_bytes"].default),
        help="largest request accepted; larger ones get RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=env_default("max_pixels", d["max_pixels"].default),
        help="largest image (width x height) decoded; checked before decoding",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=env_default("max_in_flight", d["max_in_flight"].default),
        help="Search calls worked on at once; more get RESOURCE_EXHAUSTED at once",
    )
    parser.add_argument(
        "--thumbnail-size",
        type=int,
        default=env_default("thumbnail_size", d["thumbnail_size"].default),
        help="longest side of the thumbnails Search returns when asked",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=env_default("grace_seconds", d["grace_seconds"].default),
        help="how long calls in flight may finish after SIGTERM",
    )
    parser.add_argument(
        "--auth-token-file",
        type=Path,
        default=env_default("auth_token_file", None),
        help="require 'authorization: Bearer <token>' with the token in this file "
        "(health checks stay open)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=env_default("tls_cert", None),
        help="PEM certificate chain; with --tls-key, serve TLS only",
    )
    parser.add_argument(
        "--tls-key",
        type=Path,
        default=env_default("tls_key", None),
        help="PEM private key of --tls-cert",
    )

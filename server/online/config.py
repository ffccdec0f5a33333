"""The server's one configuration object.

Each setting is read, in rising precedence, from its default, an optional TOML
file (``--config`` or ``LOOKALIKE_CONFIG``), a ``LOOKALIKE_<NAME>`` variable,
and a flag. One table below drives all four, so they cannot drift apart.
Imports no onnxruntime, scikit-learn or pymilvus: `lookalike serve --help`
stays quick. The choices come from the Literal types of the modules that use
them.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, get_args

from lookalike.server.backends.base import (
    ALGORITHMS,
    BACKEND_NAMES,
    DEFAULT_ALGORITHM,
    DEFAULT_MILVUS_TIMEOUT_S,
    Algorithm,
    BackendName,
)
from lookalike.server.options import HELP
from lookalike.server.vision.embedder import DEVICES, Device
from lookalike.server.vision.imaging import DEFAULT_MAX_PIXELS

LogFormat = Literal["text", "json"]


class ConfigError(ValueError):
    """A setting that is unknown, missing, or of the wrong type; the message names it."""


POSITIVE = (
    "max_k",
    "max_query_faces",
    "max_message_bytes",
    "max_pixels",
    "max_in_flight",
    "max_open_calls",
    "max_batch",
    "model_instances",
    "thumbnail_size",
    "max_images_per_add",
    "max_ids_per_remove",
)
NOT_NEGATIVE = (
    "milvus_timeout_s",
    "batch_window_ms",
    "grace_seconds",
    "warmup_runs",
    "compact_after_rows",
    "follow_interval_s",
    "search_breadth",
)


# What each backend cannot start without.
NEEDED: dict[str, tuple[str, ...]] = {
    "memmap": ("model", "index"),
    "milvus": ("model", "milvus_uri", "collection"),
}


@dataclass(frozen=True)
class ServerConfig:
    model: Path
    index: Path | None = None
    backend: BackendName = "memmap"
    milvus_uri: str | None = None
    collection: str | None = None
    milvus_token_file: Path | None = None
    milvus_timeout_s: float = DEFAULT_MILVUS_TIMEOUT_S
    host: str = "[::]"
    port: int = 50051
    device: Device = "auto"
    threads: int | None = None
    knn_algorithm: Algorithm = DEFAULT_ALGORITHM
    search_breadth: int = 0
    max_k: int = 100
    max_query_faces: int = 10
    max_distance: float | None = None
    max_message_bytes: int = 8 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_in_flight: int = 16
    max_open_calls: int = 1000
    batch_window_ms: float = 2.0
    max_batch: int = 16
    model_instances: int = 1
    thumbnail_size: int = 160
    gallery_root: Path | None = None
    grace_seconds: float = 10.0
    warmup_runs: int = 3
    auth_token_file: Path | None = None
    admin_token_file: Path | None = None
    compact_after_rows: int = 10_000
    max_images_per_add: int = 64
    max_ids_per_remove: int = 1000
    follow_interval_s: float = 2.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    index_root: Path | None = None
    log_format: LogFormat = "text"

    def __post_init__(self) -> None:
        """Settings outside their range are refused at start, not met by each call
        (a thumbnail size of 0 failed every Search that asked for thumbnails)."""
        for name in POSITIVE:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in NOT_NEGATIVE:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.port <= 65_535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port}")
        if self.max_distance is not None and not self.max_distance > 0:
            raise ConfigError(f"--max-distance must be above 0, got {self.max_distance}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        missing = [name for name in NEEDED[self.backend] if getattr(self, name) is None]
        if missing:
            raise ConfigError(
                f"set {' and '.join('--' + m.replace('_', '-') for m in missing)} (or in the "
                f"config file, or {' / '.join('LOOKALIKE_' + m.upper() for m in missing)})"
            )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def to_toml(self) -> str:
        lines = []
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None:
                lines.append(f"# {field.name} is not set")
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                lines.append(f"{field.name} = {value}")
            else:
                lines.append(f'{field.name} = "{value}"')
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Setting:
    convert: Callable[[str], object]
    help: str
    choices: tuple[str, ...] | None = None


SETTINGS: dict[str, Setting] = {
    "model": Setting(Path, "the ONNX embedder made by `lookalike export`"),
    "index": Setting(Path, "the index folder made by `lookalike index` with the same model"),
    "backend": Setting(
        str,
        "memmap: search the mapped --index; milvus: search --collection in --milvus-uri",
        BACKEND_NAMES,
    ),
    "milvus_uri": Setting(str, HELP["milvus_uri"]),
    "collection": Setting(str, HELP["collection"]),
    "milvus_token_file": Setting(Path, HELP["milvus_token_file"]),
    "milvus_timeout_s": Setting(float, HELP["milvus_timeout_s"]),
    "host": Setting(str, "address to listen on (default: all interfaces)"),
    "port": Setting(int, "port to listen on"),
    "device": Setting(str, HELP["device"], DEVICES),
    "threads": Setting(
        int,
        "threads of onnxruntime's intra-op pool (default: the container's CPU quota, "
        "cgroup cpu.max, else the CPUs this process may use)",
    ),
    "knn_algorithm": Setting(str, HELP["knn_algorithm"], ALGORITHMS),
    "search_breadth": Setting(
        int,
        "how wide an approximate index (`lookalike index --index-type`) searches: IVF lists "
        "visited (nprobe) or HNSW candidates kept (efSearch); wider finds more of the true "
        "neighbours, slower. A Search may ask for up to 16 times this (SearchRequest."
        "search_breadth). Default: 0, the breadth the index chose for its size; exact "
        "indexes ignore it",
    ),
    "max_k": Setting(int, "largest k a Search may ask for"),
    "max_query_faces": Setting(
        int,
        "most faces of one query photo a Search searches (SearchRequest.faces, mode all); "
        "each face is embedded and searched within the call's deadline and worker slot",
    ),
    "max_distance": Setting(
        float,
        "drop matches farther than this unless a Search asks for its own limit "
        "(`lookalike eval` prints its operating point; default: no limit)",
    ),
    "max_message_bytes": Setting(int, "largest request; larger get RESOURCE_EXHAUSTED"),
    "max_pixels": Setting(int, "largest image (width x height), checked before decoding"),
    "max_in_flight": Setting(int, "searches worked on at once; more get RESOURCE_EXHAUSTED"),
    "max_open_calls": Setting(
        int,
        "calls open at once, counting those still sending their request (they hold no "
        "thread); past it every call, health included, gets RESOURCE_EXHAUSTED",
    ),
    "batch_window_ms": Setting(
        float,
        "how long a search waits for others to share its "
        "embedder run and k-NN call (0: only those already queued)",
    ),
    "max_batch": Setting(int, "most searches in one embedder run"),
    "model_instances": Setting(
        int,
        "embedder runs at once, each on a batch of its own; --threads then defaults to the "
        "CPU budget shared among them. 2 on 2 CPUs served 1.2x the face-model searches at "
        "concurrency 16, and one search alone took 4-5 ms longer (the ResNet's 1.5x as "
        "long; docs/BENCHMARKS.md)",
    ),
    "thumbnail_size": Setting(int, "longest side of the thumbnails Search returns when asked"),
    "gallery_root": Setting(
        Path,
        "the gallery folder that thumbnails are read from and AddImages/RemoveImages change, "
        "where the index's manifest names another (an index built on another machine)",
    ),
    "grace_seconds": Setting(float, "how long calls in flight may finish after SIGTERM"),
    "warmup_runs": Setting(int, "embedder runs before health turns SERVING"),
    "auth_token_file": Setting(
        Path,
        "require 'authorization: Bearer <token>' with the token "
        "in this file (health checks stay open)",
    ),
    "admin_token_file": Setting(
        Path,
        "AddImages, RemoveImages, ListImages, CompactIndex and ReloadIndex need "
        "'authorization: Bearer <token>' with the token in this file; unset, they are "
        "allowed from this machine (loopback) only",
    ),
    "compact_after_rows": Setting(
        int,
        "fold added and removed rows into a new index version once this many are pending "
        "(0: only on `lookalike compact`)",
    ),
    "max_images_per_add": Setting(
        int,
        "most images one AddImages call may carry (more get INVALID_ARGUMENT; the client "
        "library sends larger sets in several calls)",
    ),
    "max_ids_per_remove": Setting(
        int, "most ids, labels and images together in one RemoveImages call"
    ),
    "follow_interval_s": Setting(
        float,
        "how often a server that follows another server's gallery (read-only, because "
        "that server holds the gallery's writer lock) reads its published changes",
    ),
    "tls_cert": Setting(Path, "PEM certificate chain; with --tls-key, serve TLS only"),
    "tls_key": Setting(Path, "PEM private key of --tls-cert"),
    "metrics_port": Setting(int, "serve Prometheus metrics over HTTP on this port (off if unset)"),
    "metrics_host": Setting(str, HELP["metrics_host"]),
    "index_root": Setting(Path, HELP["index_root"]),
    "log_format": Setting(str, "text or json, one line per call", get_args(LogFormat)),
}


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; every default is None so that only given flags override."""
    parser.add_argument(
        "--config", type=Path, default=None, help="TOML file of settings (env LOOKALIKE_CONFIG)"
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration as TOML and exit",
    )
    defaults = {field.name: field.default for field in fields(ServerConfig)}
    for name, setting in SETTINGS.items():
        default = defaults.get(name)
        shown = "" if default is None or "default" in setting.help else f" (default: {default})"
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=setting.convert,
            default=None,
            choices=setting.choices,
            help=f"{setting.help}{shown}; env LOOKALIKE_{name.upper()}".replace("%", "%%"),
        )


def _convert(name: str, value: object, source: str) -> object:
    if name not in SETTINGS:
        raise ConfigError(f"{source}: unknown setting {name!r}; known: {', '.join(SETTINGS)}")
    setting = SETTINGS[name]
    try:
        converted = setting.convert(str(value))
    except ValueError:
        raise ConfigError(f"{source}: {name} = {value!r} is not a valid value") from None
    if setting.choices and converted not in setting.choices:
        raise ConfigError(f"{source}: {name} must be one of {', '.join(setting.choices)}")
    return converted


def load_config(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> ServerConfig:
    """Defaults < TOML file < LOOKALIKE_* environment < flags."""
    values: dict[str, object] = {}
    config_file = args.config or environ.get("LOOKALIKE_CONFIG")
    if config_file:
        try:
            table = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"cannot read config file {config_file}: {error}") from None
        for name, value in table.items():
            values[name] = _convert(name, value, str(config_file))
    for name in SETTINGS:
        variable = f"LOOKALIKE_{name.upper()}"
        if variable in environ:
            values[name] = _convert(name, environ[variable], variable)
    for name in SETTINGS:
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    values.setdefault("model", None)  # a missing model is named by __post_init__, not a TypeError
    return ServerConfig(**values)  # type: ignore[arg-type]

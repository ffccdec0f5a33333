"""The ONNX face embedder on onnxruntime, on the GPU when one is really there."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from lookalike.server.vision.cpus import CpuBudget, default_threads
from lookalike.server.vision.imaging import Crop

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class ModelError(RuntimeError):
    """The model file is missing, unreadable, or not a lookalike embedder."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256: what ties an index to its model."""
    return file_sha256(path)[:16]


@dataclass(frozen=True)
class ModelInfo:
    """What the ONNX file says about itself (its metadata) and its fingerprint."""

    name: str
    fingerprint: str
    input_size: int
    embedding_size: int
    weights: str
    path: Path
    crop: Crop | None  # the crop the model was trained with, when it was


def requested_providers(device: Device) -> list[str]:
    """Providers to ask onnxruntime for, in priority order."""
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        return [CUDA]
    return [CUDA, CPU]


class Embedder:
    """Runs the exported ResNet101: pixels in, one 2048-d float32 row per image out.

    onnxruntime-gpu falls back to the CPU on its own when CUDA cannot load, so
    the provider in use is read back from the session, never assumed.
    """

    def __init__(
        self,
        model_path: Path,
        device: Device = "auto",
        threads: int | None = None,
        instances: int = 1,
    ) -> None:
        """``threads``: onnxruntime's intra-op pool; None: the CPU quota (vision.cpus),
        shared by the ``instances`` runs a server makes at once."""
        import onnxruntime as ort

        if not model_path.is_file():
            raise ModelError(f"model file not found: {model_path}")
        if threads is not None and threads < 1:
            raise ModelError(f"--threads must be at least 1, got {threads}")
        budget = (
            default_threads().shared(instances)
            if threads is None
            else CpuBudget(threads, "--threads")
        )
        self.threads = budget.threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = budget.threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=requested_providers(device)
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load model {model_path}: {error}") from None
        self.providers: list[str] = self._session.get_providers()
        self.provider: str = self.providers[0]
        if device == "cuda" and self.provider != CUDA:
            raise ModelError(
                "--device cuda was asked for but the CUDA execution provider could not load "
                f"(session runs on {self.provider}); check the CUDA and cuDNN libraries, "
                "or use --device auto"
            )
        if CUDA in requested_providers(device) and self.provider != CUDA:
            log.warning("the CUDA execution provider did not load; running on %s", self.provider)
        self.input_name = self._session.get_inputs()[0].name
        self.info = self._read_info(model_path)
        log.info(
            "embedder %s (%s) on %s, %d intra-op threads (%s)",
            self.info.name,
            self.info.fingerprint,
            self.provider,
            self.threads,
            budget.source,
        )

    def _read_info(self, model_path: Path) -> ModelInfo:
        meta = self._session.get_modelmeta().custom_metadata_map
        try:
            return ModelInfo(
                name=meta["lookalike.model_name"],
                fingerprint=file_fingerprint(model_path),
                input_size=int(meta["lookalike.input_size"]),
                embedding_size=int(meta["lookalike.embedding_size"]),
                weights=meta.get("lookalike.weights", "unknown"),
                path=model_path,
                crop=Crop.from_dict(json.loads(meta["lookalike.crop"]))
                if "lookalike.crop" in meta
                else None,
            )
        except (KeyError, ValueError, TypeError) as error:
            raise ModelError(
                f"{model_path} lacks lookalike metadata ({error}); "
                "export it with `lookalike export`"
            ) from None

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """(n, size, size, 3) RGB 0..255 to (n, embedding_size) float32, C-contiguous.

        float32 and C order matter downstream: scikit-learn keeps its fast
        brute-force path only when the query matches the matrix's dtype.
        """
        batch = np.ascontiguousarray(pixels, dtype=np.float32)
        (features,) = self._session.run(None, {self.input_name: batch})
        return np.ascontiguousarray(features, dtype=np.float32)

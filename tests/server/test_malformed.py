"""Bad input: every RPC sent malformed requests (empty, of the wrong type, huge, with NUL
bytes and non-ASCII digits, images of every mode Pillow reads), bad images and k, and
unusual but valid images. None may answer UNKNOWN or name a server path, and the server
keeps serving."""

from __future__ import annotations

import io
import itertools

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from lookalike.client import LookalikeError, SearchClient
from lookalike.v1 import search_pb2
from tests.imagegen import GOOD, encode, photo, png_declaring
from tests.serving import running_server

SERVICE = "/lookalike.v1.SearchService/"
MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB")
MODES += ("HSV", "I", "F", "I;16", "I;16B", "I;16L", "I;16N")
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")


def images_of_every_mode() -> list[bytes]:
    """One small image per (mode, format) Pillow can write, plus broken ones."""
    found = []
    for mode, fmt in itertools.product(MODES, FORMATS):
        stream = io.BytesIO()
        try:
            Image.new(mode, (48, 40)).save(stream, fmt)
        except (OSError, ValueError, KeyError):
            continue
        found.append(stream.getvalue())
    good = found[0]
    found += [b"", b"\0" * 64, b"not an image", good[: len(good) // 2], "²".encode()]
    bomb = io.BytesIO()
    Image.new("1", (30_000, 30_000)).save(bomb, "PNG")  # 900 MP declared, 100 kB sent
    found.append(bomb.getvalue())
    return found


def requests() -> list[tuple[str, bytes]]:
    """(method, serialized request): each RPC's malformed cases."""
    text = ["", "\0", "²", "٣", "a\0b", "../../etc/passwd", "/", ".", "x" * 100_000, "\u202e"]
    R = search_pb2  # noqa: N806
    cases: list[tuple[str, object]] = []
    images = images_of_every_mode()
    cases += [("Search", R.SearchRequest(image=image, k=3, thumbnails=True)) for image in images]
    cases += [  # every image in one call: one bad image fails alone
        ("AddImages", R.AddImagesRequest(images=[R.NewImage(image=i, label="m") for i in images])),
        ("RemoveImages", R.RemoveImagesRequest(images=images)),
    ]
    cases += [
        ("Search", R.SearchRequest()),
        ("Search", R.SearchRequest(image=b"x", k=-1)),
        ("Search", R.SearchRequest(image=b"x", k=2**31 - 1)),
        ("Search", R.SearchRequest(image=b"x", k=3, max_distance=float("nan"))),
        ("Search", R.SearchRequest(image=b"x", k=3, max_distance=-1)),
        ("AddImages", R.AddImagesRequest()),
        ("RemoveImages", R.RemoveImagesRequest()),
        ("RemoveImages", R.RemoveImagesRequest(ids=["x"] * 100_000)),
        ("ListImages", R.ListImagesRequest(page_size=-1)),
        ("ListImages", R.ListImagesRequest(page_size=2**31 - 1)),
        ("CompactIndex", R.CompactIndexRequest()),
        ("GetInfo", R.GetInfoRequest()),
    ]
    for value in text:
        cases += [
            ("AddImages", R.AddImagesRequest(images=[R.NewImage(image=b"x", label=value)])),
            (
                "AddImages",
                R.AddImagesRequest(images=[R.NewImage(image=b"x", label="a", external_id=value)]),
            ),
            ("RemoveImages", R.RemoveImagesRequest(ids=[value], labels=[value])),
            ("ListImages", R.ListImagesRequest(label=value, page_token=value)),
            ("ReloadIndex", R.ReloadIndexRequest(index_path=value)),
        ]
    serialized = [(method, message.SerializeToString()) for method, message in cases]
    for method in ("Search", "GetInfo", "ReloadIndex", "AddImages", "RemoveImages"):
        serialized += [
            (method, b"\xff\xff\xff\xff"),  # not a protobuf message
            (method, search_pb2.NewImage(label="a").SerializeToString()),  # another type
            (method, b"\x0a\x03\xff\xfe\xfd"),  # a string field that is not UTF-8
        ]
    return serialized


@pytest.fixture
def served(own_gallery, embedder, tmp_path):
    _, index = own_gallery
    settings = {"index_root": index.parent, "max_message_bytes": 4 << 20}
    with running_server(embedder, index, **settings) as server:
        yield f"127.0.0.1:{server.port}", str(tmp_path)


def test_no_malformed_request_answers_unknown_or_names_a_server_path(served):
    target, private = served
    answers: dict[str, set[str]] = {}
    with grpc.insecure_channel(target) as channel:
        for method, body in requests():
            call = channel.unary_unary(SERVICE + method)  # bytes in, bytes out
            try:
                call(body, timeout=60)
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as error:
                code, details = error.code(), error.details() or ""
            assert code != grpc.StatusCode.UNKNOWN, (method, body[:40], details)
            for leak in (private, "Errno", "Traceback", "/tmp/"):
                assert leak not in details, (method, details)
            answers.setdefault(method, set()).add(code.name)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert "INVALID_ARGUMENT" in answers["Search"] and "INVALID_ARGUMENT" in answers["ListImages"]


BAD_INPUTS = {
    "empty": (b"", 5, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    "not an image": (b"%PDF-1.4 hello", 5, grpc.StatusCode.INVALID_ARGUMENT, "not an image"),
    "truncated jpeg": (GOOD[: len(GOOD) // 2], 5, grpc.StatusCode.INVALID_ARGUMENT, "truncated"),
    "truncated png": (
        encode(photo(), "PNG")[:300],
        5,
        grpc.StatusCode.INVALID_ARGUMENT,
        "truncated",
    ),
    "decompression bomb": (
        png_declaring(30_000, 30_000),
        5,
        grpc.StatusCode.INVALID_ARGUMENT,
        "limit",
    ),
    "k zero": (GOOD, 0, grpc.StatusCode.INVALID_ARGUMENT, "k must be between 1 and 100"),
    "k negative": (GOOD, -1, grpc.StatusCode.INVALID_ARGUMENT, "k must be between 1 and 100"),
    "k over max": (GOOD, 101, grpc.StatusCode.INVALID_ARGUMENT, "k must be between 1 and 100"),
    "too large": (b"\0" * (9 << 20), 5, grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
}


UNUSUAL_GOOD = {
    "cmyk": encode(photo().convert("CMYK"), "JPEG"),
    "16-bit": encode(Image.fromarray(np.full((40, 40), 51_000, np.uint16)), "PNG"),
    "palette": encode(photo().convert("P"), "PNG"),
    "alpha": encode(photo().convert("RGBA"), "PNG"),
    "grayscale": encode(photo().convert("L"), "JPEG"),
    "animated gif": encode(photo(), "GIF", save_all=True, append_images=[photo((120, 90))]),
    "webp": encode(photo(), "WEBP"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_gets_its_status_and_the_server_keeps_serving(server_target, case):
    data, k, code, message = BAD_INPUTS[case]
    with SearchClient(server_target) as client:
        with pytest.raises(LookalikeError) as raised:
            client.search(data, k=k)
        assert raised.value.code == code
        assert message in raised.value.message
        assert len(client.search(GOOD, k=3).matches) == 3


@pytest.mark.parametrize("case", UNUSUAL_GOOD, ids=list(UNUSUAL_GOOD))
def test_unusual_but_valid_images_are_searched(server_target, case):
    with SearchClient(server_target) as client:
        assert len(client.search(UNUSUAL_GOOD[case], k=2).matches) == 2

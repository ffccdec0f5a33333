"""max_distance: a photo of nobody in the gallery gets "no match within D", not k strangers."""

from __future__ import annotations

import math
import subprocess

import grpc
import pytest
from PIL import Image

from lookalike.client import LookalikeError, SearchClient
from lookalike.v1 import search_pb2, search_pb2_grpc
from tests.imagegen import encode, noise_image
from tests.serving import LOOKALIKE, in_process_server


@pytest.fixture(scope="module")
def limited_target(embedder, index_dir, gallery_dir):
    """A real server whose default limit sits between a photo's 2nd and 3rd neighbours."""
    query = gallery_dir / "person_04" / "person_04_0001.jpg"
    with in_process_server(embedder, index_dir) as target, SearchClient(target) as client:
        distances = [m.distance for m in client.search(query, k=3).matches]
    limit = (distances[1] + distances[2]) / 2
    with in_process_server(embedder, index_dir, max_distance=limit) as target:
        yield target, limit, query


def test_the_server_default_drops_far_matches(limited_target):
    target, limit, query = limited_target
    with SearchClient(target) as client:
        result = client.search(query, k=10)
        assert len(result.matches) == 2 and all(m.distance <= limit for m in result.matches)
        assert math.isclose(result.max_distance, limit, rel_tol=1e-6)
        assert math.isclose(client.info().max_distance, limit, rel_tol=1e-6)
        wider = client.search(query, k=10, max_distance=limit * 100)  # the call's own limit wins
        assert len(wider.matches) == 10


def test_nan_and_negative_limits_are_invalid_arguments(limited_target):
    target, _, query = limited_target
    with grpc.insecure_channel(target) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        for bad in (float("nan"), -0.5):
            with pytest.raises(grpc.RpcError) as error:
                stub.Search(
                    search_pb2.SearchRequest(image=query.read_bytes(), k=3, max_distance=bad),
                    timeout=30,
                )
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "max_distance" in error.value.details()
    with SearchClient(target) as client, pytest.raises(LookalikeError):
        client.search(query, k=3, max_distance=-1)


def test_cli_and_sheet_say_no_match_within_the_limit(limited_target, tmp_path):
    target, limit, _ = limited_target
    stranger = tmp_path / "stranger.png"
    stranger.write_bytes(encode(noise_image((96, 96), seed=7), "PNG"))
    sheet = tmp_path / "sheet.png"
    result = subprocess.run(
        [*LOOKALIKE, "search", str(stranger), "--server", target, "--sheet", str(sheet)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"no match within {float(f'{limit:.7g}'):g}"
    with Image.open(sheet) as image:
        assert image.width >= 2 * 160  # the query and the "no match" cell
    as_json = subprocess.run(
        [*LOOKALIKE, "search", str(stranger), "--server", target, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert '"matches": []' in as_json.stdout

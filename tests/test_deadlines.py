"""Calls without a deadline (grpcurl, Go and Java stubs by default, a Python stub without
``timeout``) are calls without a limit, not errors."""

from __future__ import annotations

import grpc

from lookalike.v1 import search_pb2, search_pb2_grpc


def test_search_info_and_reload_answer_without_a_deadline(server_target, gallery_dir):
    query = (gallery_dir / "person_04" / "person_04_0002.jpg").read_bytes()
    with grpc.insecure_channel(server_target) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        found = stub.Search(search_pb2.SearchRequest(image=query, k=2))  # no timeout
        info = stub.GetInfo(search_pb2.GetInfoRequest())
        reloaded = stub.ReloadIndex(search_pb2.ReloadIndexRequest())
    assert found.matches[0].path == "person_04/person_04_0002.jpg"
    assert info.gallery_size == reloaded.gallery_size > 0

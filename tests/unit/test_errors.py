"""The error table: every failure a handler lets out gets a status other than UNKNOWN, and
only the kinds written for callers carry their own text (no model or server needed)."""

from __future__ import annotations

import grpc
import pytest

from lookalike.server.backends.base import BackendFailed, BackendUnavailable, ReadOnlyGallery
from lookalike.server.index.store import InvalidIndexError
from lookalike.server.online.errors import Refused, answer_for
from lookalike.server.online.reloads import ReloadBusy, ReloadRefused
from lookalike.server.vision.imaging import ImageError

SECRET = "/srv/private/index.changes http://milvus.internal:19530"
RPCS = ("Search", "GetInfo", "ReloadIndex", "AddImages", "RemoveImages", "ListImages")
RPCS += ("CompactIndex",)
PRIVATE = [
    OSError(2, "No such file or directory", SECRET),
    PermissionError(13, "Permission denied", SECRET),
    InvalidIndexError(SECRET),
    BackendUnavailable(SECRET),  # Milvus' own error text, with its URI
    BackendFailed(SECRET),
    ReadOnlyGallery(SECRET),
    ValueError(SECRET),
    KeyError(SECRET),
    RuntimeError(SECRET),
    RecursionError(SECRET),
]


@pytest.mark.parametrize("rpc", RPCS)
@pytest.mark.parametrize("error", PRIVATE, ids=lambda e: type(e).__name__)
def test_no_answer_is_unknown_or_carries_a_server_errors_text(error, rpc):
    answer = answer_for(error, rpc)
    assert answer.code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK)
    assert "private" not in answer.message and "milvus.internal" not in answer.message


def test_errors_written_for_callers_keep_their_text_and_code():
    assert answer_for(ImageError("the image is empty"), "Search").message == (
        "bad image: the image is empty"
    )
    refused = answer_for(Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy"), "Search")
    assert (refused.code, refused.message) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")
    assert answer_for(ReloadRefused("no"), "ReloadIndex").code == grpc.StatusCode.PERMISSION_DENIED
    assert answer_for(ReloadBusy("later"), "ReloadIndex").code == grpc.StatusCode.ABORTED


def test_a_reload_failure_says_the_old_index_is_kept_and_a_change_failure_may_be_resent():
    kept = answer_for(InvalidIndexError(SECRET), "ReloadIndex")
    assert kept.code == grpc.StatusCode.FAILED_PRECONDITION and "kept the old index" in kept.message
    stored = answer_for(OSError(28, "No space left on device", SECRET), "AddImages")
    assert stored.code == grpc.StatusCode.INTERNAL and "sent again" in stored.message
    unforeseen = answer_for(KeyError(SECRET), "Search")
    assert unforeseen.code == grpc.StatusCode.INTERNAL and unforeseen.trace

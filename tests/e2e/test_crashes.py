"""A server process killed (SIGKILL, or a crash at a set step) keeps what it acknowledged:
an add or a removal answered before kill -9, and an erasure whose compaction died after its
switch, cleaned up at the next start."""

from __future__ import annotations

import signal
import subprocess

import pytest

from lookalike.client import LookalikeError, NewImage, SearchClient
from lookalike.common.files import CRASH_AT
from tests.imagegen import person_jpeg
from tests.serving import (
    LOOKALIKE,
    free_port,
    ids_found,
    ids_listed,
    start_server_process,
    wait_until_serving,
)


def labels_found(client: SearchClient, query: bytes) -> set[str]:
    return {match.label for match in client.search(query, k=100).matches}


@pytest.mark.parametrize("change", ["add", "remove"])
def test_kill_9_right_after_an_acknowledged_change_keeps_it(live, onnx_model, change, tmp_path):
    root, index, settings = live
    if settings:  # Milvus Lite allows one process a folder: load it from another one
        uri = str(tmp_path / "own.db")
        subprocess.run(
            [*LOOKALIKE, "to-milvus", str(index), "--milvus-uri", uri, "--collection", "live"],
            check=True,
            capture_output=True,
            timeout=300,
        )
        settings = {**settings, "milvus_uri": uri}
    extra = [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]
    port = free_port()
    target = f"127.0.0.1:{port}"
    for attempt in range(2):
        process = start_server_process(onnx_model, index, port, *extra)
        try:
            wait_until_serving(target, process)
            with SearchClient(target) as client:
                if attempt == 0 and change == "add":
                    (added,) = client.add_images([NewImage(person_jpeg(9), "new_9", "ext-9")])
                    assert added.result == "added"
                elif attempt == 0:
                    (gone,) = client.remove_images(ids=["person_02_0002"])
                    assert gone.result == "removed"
                else:
                    pending = {e.path: e.pending for e in client.list_images()}
                    found = labels_found(client, person_jpeg(9))
                    if change == "add":
                        assert "new_9/ext-9.jpg" in pending and "new_9" in found
                    else:
                        assert "person_02/person_02_0002.jpg" not in pending
                        query = (root / "person_02" / "person_02_0002.jpg").read_bytes()
                        top = client.search(query, k=1).matches[0]
                        assert top.path != "person_02/person_02_0002.jpg"
        finally:
            process.send_signal(signal.SIGKILL if attempt == 0 else signal.SIGTERM)
            process.communicate(timeout=60)
        assert process.returncode == (-signal.SIGKILL if attempt == 0 else 0)


def test_a_compaction_killed_after_its_switch_is_cleaned_up_at_the_next_start(
    onnx_model, own_gallery, tmp_path
):
    """Failed before: the version holding the erased rows stayed on disk, a second
    CompactIndex folded 0 rows and left it, and the server never cleaned it up."""
    root, index = own_gallery
    erased = (root / "person_01" / "person_01_0001.jpg").read_bytes()
    port = free_port()
    target = f"127.0.0.1:{port}"
    server = start_server_process(
        onnx_model, index, port, "--compact-after-rows", "0", env={CRASH_AT: "index-switched"}
    )
    try:
        wait_until_serving(target, server)
        with SearchClient(target, retries=0) as client:
            (x,) = client.remove_images(images=[erased], delete_files=True)[0].removed
            with pytest.raises(LookalikeError):
                client.compact()  # the server dies between the switch and the cleanup
        assert server.wait(timeout=30) == 86
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()
    versions = index.parent / ".idx.versions"
    assert len(list(versions.iterdir())) == 2  # the old version, erased row and all
    server = start_server_process(onnx_model, index, port)
    try:
        wait_until_serving(target, server)
        assert [v.name for v in versions.iterdir()] == [index.resolve().name]
        with SearchClient(target) as client:
            assert x.id not in ids_listed(client) | ids_found(client, erased)
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)

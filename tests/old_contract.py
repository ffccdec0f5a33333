"""The contract as an old client has it: SearchRequest and SearchResponse before faces
could be chosen, compiled by protoc into a descriptor pool of their own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

# SearchRequest and SearchResponse as the contract had them before faces could be
# chosen (proto/lookalike/v1/search.proto at the commit before issue #28): what an old
# client was generated from.
OLD_CONTRACT = """
syntax = "proto3";
package lookalike.v1;
service SearchService {
  rpc Search(SearchRequest) returns (SearchResponse);
}
message SearchRequest {
  bytes image = 1; int32 k = 2; bool thumbnails = 3; float max_distance = 4;
  int32 search_breadth = 5;
}
message Match {
  int32 rank = 1; string id = 2; string label = 3; string path = 4; float distance = 5;
  bytes thumbnail_jpeg = 6; string note = 7;
}
message CropBox {
  int32 left = 1; int32 top = 2; int32 right = 3; int32 bottom = 4;
  int32 image_width = 5; int32 image_height = 6;
}
message Timings {
  double decode_ms = 1; double embed_ms = 2; double search_ms = 3; double total_ms = 4;
}
message SearchResponse {
  repeated Match matches = 1; string model_fingerprint = 2; string index_version = 3;
  Timings timings = 4; CropBox query_crop = 5; string crop_note = 6; float max_distance = 7;
}
"""


def old_messages(folder: Path) -> dict[str, type]:
    """SearchRequest and SearchResponse of the old contract (protoc runs in a subprocess:
    in a process that has loaded TensorFlow it can crash)."""
    (folder / "lookalike" / "v1").mkdir(parents=True, exist_ok=True)
    (folder / "lookalike" / "v1" / "old.proto").write_text(OLD_CONTRACT)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{folder}",
            f"--descriptor_set_out={folder / 'old.pb'}",
            "lookalike/v1/old.proto",
        ],
        check=True,
        timeout=120,
    )
    files = descriptor_pb2.FileDescriptorSet.FromString((folder / "old.pb").read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"lookalike.v1.{name}"))
        for name in ("SearchRequest", "SearchResponse")
    }

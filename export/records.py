"""A trained model and its training record, published together, without Keras.

The record (the JSON that says how a checkpoint was trained: crop, size, weights)
lies beside the file the checkpoint's link resolves to, so that it always belongs to
that file. Publishing needs only a way to write the model file, so this module
imports no TensorFlow: the publish's crash tests run it in processes of their own,
each in under a second.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lookalike.common import versions
from lookalike.server.vision.embedder import file_sha256


def training_record(checkpoint: Path) -> Path:
    """The training record of ``checkpoint``: beside the file its link resolves to."""
    real = checkpoint.resolve() if checkpoint.is_symlink() else checkpoint
    return real.with_name(real.name + ".json")


def publish_with_record(
    out: Path, record: dict[str, object], write: Callable[[Path], None]
) -> Path:
    """Publish the file ``write`` makes at ``out``, with ``record``, both switched in by
    one atomic rename.

    ``out`` links to the file in a version folder that also holds the record
    (common/versions.py), so a kill at any step leaves the old pair or the new
    one; ``out.json`` links to the record for people to read.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    link = out.with_name(out.name + ".json")
    versions.recover(out)
    versions.recover(link)
    for stray in out.parent.glob(f".{out.name}.staging-*"):
        shutil.rmtree(stray, ignore_errors=True)  # a publish killed before it placed them
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    staging.chmod(0o755)
    write(staging / out.name)
    (staging / training_record(Path(out.name)).name).write_text(json.dumps(record, indent=2))
    stamp = time.strftime("%Y%m%dT%H%M%SZ-", time.gmtime())
    version = stamp + file_sha256(staging / out.name)[:8]
    folder = versions.publish_version(staging, out, version, "model", member=out.name)
    versions.point(link, training_record(folder / out.name), "record")
    return out

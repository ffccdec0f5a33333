"""Putting a finished index where servers look, durably and in one atomic step.

The served path links into a folder of versions beside it (common/versions.py):
a build's staged folder becomes a new version, and one rename of the link
serves it. A kill at any step of ``STEPS`` leaves the old or the new index
served, whole. ``recover`` tidies what a kill left.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from lookalike.common import versions

log = logging.getLogger(__name__)

KIND = "index"
# Named steps of a publish, for LOOKALIKE_CRASH_AT (see common/files.py).
STEPS = tuple(f"{KIND}-{step}" for step in versions.STEPS)


def publish(staging: Path, out: Path, version: str) -> None:
    """Serve the finished index in ``staging`` at ``out``; the old one stays until after."""
    versions.publish_version(staging, out, version, KIND)


def compaction_staging(out: Path) -> Path:
    """Where a compaction of the index served at ``out`` writes its new version."""
    return out.parent / f".{out.name}.compacting"


def recover_gallery(out: Path) -> None:
    """What a writer does when it takes a gallery: finish or roll back what a killed
    compaction or publish left (its staging folder, versions not served, which may
    hold rows erased since), so no erased face stays on disk in an old version."""
    staging = compaction_staging(out)
    if staging.exists():
        shutil.rmtree(staging)
        log.warning("removed the staging folder of an interrupted compaction of %s", out)
    recover(out)


def recover(out: Path) -> None:
    """Undo what a killed publish left: stray links and versions not served."""
    versions.recover(out)

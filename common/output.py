"""What a command prints as its result: one line for people, or JSON with ``--json``."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@functools.cache
def lookalike_version() -> str:
    """The installed distribution's version (`lookalike --version`, GetInfo): read once, so
    it is the version this process loaded, and a GetInfo does not parse the package's
    metadata file (0.4 ms of a 0.7 ms call)."""
    try:
        return version("lookalike")
    except PackageNotFoundError:
        return "unknown"


def as_json(result: Any) -> Mapping[str, Any]:
    """A dataclass or mapping as a JSON-ready dict (paths and the like become strings)."""
    body = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(result)
    return json.loads(json.dumps(body, default=str))


def emit(wants_json: bool, text: str, result: Any) -> None:
    """Print ``result`` as indented JSON when asked for, else ``text``."""
    print(json.dumps(as_json(result), indent=2) if wants_json else text)


def bar_disable(progress: bool) -> bool | None:
    """tqdm's ``disable``: True turns a bar off; None lets tqdm turn it off when its output
    (stderr) is not a terminal, so logs and pipes get no carriage-return noise."""
    return None if progress else True

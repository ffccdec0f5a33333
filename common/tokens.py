"""Reading a secret from a file: the one way every token reaches lookalike.

Tokens come from files, never flags or environment values, so they stay out of
process listings and logs.
"""

from __future__ import annotations

from pathlib import Path


class TokenFileError(ValueError):
    """The token file cannot be read or is empty; the message names it."""


def read_token(path: Path, what: str = "token") -> str:
    """The file's content without surrounding whitespace; ``what`` names it in errors."""
    try:
        token = path.read_text().strip()
    except OSError as error:
        raise TokenFileError(f"cannot read the {what} file {path}: {error}") from None
    if not token:
        raise TokenFileError(f"the {what} file {path} is empty")
    return token

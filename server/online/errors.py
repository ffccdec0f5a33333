"""One table from what went wrong in a call to the status its caller is told.

Every handler runs inside the interceptor (``server/online/interceptor.py``),
which answers any exception a handler lets out by this table: its status code,
a public message, and how loudly the server logs it. A message is public only
where the table says so: an exception's own text goes to the caller only for
the kinds written for callers (``Refused``, ``ImageError``, ``ReloadRefused``,
``ReloadBusy``), never for OS, index or backend errors, which name server paths
and URIs. So no call ends with UNKNOWN, and no server path reaches a caller, by
construction rather than by each handler remembering to.
"""

from __future__ import annotations

import logging
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import grpc

from lookalike.server.backends.base import BackendFailed, BackendUnavailable, ReadOnlyGallery
from lookalike.server.index.store import InvalidIndexError
from lookalike.server.online.batcher import DeadlinePassed
from lookalike.server.online.calls import CallEnded
from lookalike.server.online.reloads import ReloadBusy, ReloadRefused
from lookalike.server.vision.imaging import ImageError

Code = grpc.StatusCode
INTERNAL_MESSAGE = "internal error; the server's log has the details"


class Refused(Exception):
    """A call turned away for a reason its caller should read; the message is public."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    message: str  # public; "{error}" only in rows of exceptions written for callers
    level: int  # how loudly the server logs it
    trace: bool = False  # log the traceback too: a failure nobody foresaw


@dataclass(frozen=True)
class Row:
    kinds: tuple[type[BaseException], ...]
    answer: Answer
    rpcs: frozenset[str] = frozenset()  # only for these RPCs; empty: for all


DEADLINE = Answer(Code.DEADLINE_EXCEEDED, "the deadline passed", logging.INFO)
KEPT = "kept the old index: "

# First match wins: RPC-specific rows before general ones, subclasses before bases.
TABLE: tuple[Row, ...] = (
    Row((CallEnded, DeadlinePassed, FutureTimeout), DEADLINE),
    Row((ImageError,), Answer(Code.INVALID_ARGUMENT, "bad image: {error}", logging.INFO)),
    Row((ReloadRefused,), Answer(Code.PERMISSION_DENIED, "{error}", logging.WARNING)),
    Row((ReloadBusy,), Answer(Code.ABORTED, "{error}", logging.WARNING)),
    Row(
        (ReadOnlyGallery,),
        Answer(
            Code.FAILED_PRECONDITION,
            "this server follows a gallery that another server writes (read-only here): "
            "send changes to that server",
            logging.WARNING,
        ),
    ),
    Row(
        (BackendUnavailable,),
        Answer(
            Code.UNAVAILABLE,
            KEPT + "the search backend did not answer; retry shortly",
            logging.WARNING,
        ),
        frozenset({"ReloadIndex"}),
    ),
    Row(
        (OSError,),
        Answer(
            Code.FAILED_PRECONDITION,
            KEPT + "the server cannot read it (the server's log says why)",
            logging.ERROR,
        ),
        frozenset({"ReloadIndex"}),
    ),
    Row(
        (InvalidIndexError, BackendFailed),
        Answer(
            Code.FAILED_PRECONDITION,
            KEPT + "it is missing, damaged, or of another model (the server's log says which)",
            logging.ERROR,
        ),
        frozenset({"ReloadIndex"}),
    ),
    Row(
        (Exception,),  # e.g. rows of another size than the model's embeddings
        Answer(
            Code.FAILED_PRECONDITION,
            KEPT + "it cannot be searched with the served model (the server's log says why)",
            logging.ERROR,
        ),
        frozenset({"ReloadIndex"}),
    ),
    Row(
        (BackendUnavailable,),
        Answer(
            Code.UNAVAILABLE, "the search backend did not answer; retry shortly", logging.WARNING
        ),
    ),
    Row(
        (BackendFailed,),
        Answer(
            Code.FAILED_PRECONDITION,
            "the search backend refused the call; retrying will not help until an operator "
            "fixes it (the server's log says why)",
            logging.ERROR,
        ),
    ),
    Row(
        (InvalidIndexError,),
        Answer(
            Code.FAILED_PRECONDITION,
            "the index on disk is damaged or changed under the server; nothing was changed "
            "(the server's log says why)",
            logging.ERROR,
        ),
    ),
    Row(
        (OSError,),
        Answer(
            Code.INTERNAL,
            "the server could not read or store a file; nothing was half-done, and the call "
            "may be sent again (the server's log says why)",
            logging.ERROR,
        ),
    ),
    Row((Exception,), Answer(Code.INTERNAL, INTERNAL_MESSAGE, logging.ERROR, trace=True)),
)


def answer_for(error: BaseException, rpc: str) -> Answer:
    """The status, public message and log level for ``error`` raised in ``rpc``."""
    if isinstance(error, Refused):  # a handler's own answer: its code and its text
        return Answer(error.code, str(error), logging.INFO)
    for row in TABLE:
        if isinstance(error, row.kinds) and (not row.rpcs or rpc in row.rpcs):
            answer = row.answer
            return Answer(
                answer.code, answer.message.format(error=error), answer.level, answer.trace
            )
    return Answer(Code.INTERNAL, INTERNAL_MESSAGE, logging.ERROR, trace=True)

"""One error tree. The class says what the caller should do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class EventFlowError(Exception):
    """Base class of every error EventFlow raises on purpose."""


class TransientError(EventFlowError):
    """Retry later: a dependency is unavailable or a step may succeed next time."""


class DependencyUnavailable(TransientError):
    """PostgreSQL or Redis did not answer."""

    def __init__(self, dependency: str, detail: str = "") -> None:
        self.dependency = dependency
        super().__init__(f"{dependency} unavailable{': ' + detail if detail else ''}")


class PermanentError(EventFlowError):
    """Retrying cannot help: dead-letter the event now."""


def errors_text(errors: Sequence[Mapping[str, Any]]) -> str:
    """Errors in pydantic's shape as one line: ``loc.path: message; ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors
    )


class InvalidEvent(PermanentError):
    """The event breaks a validation rule. ``errors`` use pydantic's error shape."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__(errors_text(errors) or "invalid event")


class UnknownSchema(InvalidEvent):
    """The event names a type or version that is not registered (or not loaded
    yet, in a process that has not refreshed its registry)."""


class UndecodableMessage(PermanentError):
    """A stream entry that is not an EventFlow message at all."""


class Overloaded(EventFlowError):
    """Consumers are too far behind; the client should retry after a delay."""


class FencedOut(EventFlowError):
    """A worker tried to commit a batch of a partition it no longer owns."""


class LeaseLost(FencedOut):
    """A worker tried to read from a partition whose lease it no longer holds."""


def short_reason(exc: BaseException) -> str:
    """What a client may see of a dependency failure: a category, never the
    server's own message (it may name hosts, users or data)."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionError | OSError):
        return "unreachable"
    if isinstance(exc, DependencyUnavailable):
        return "unavailable"
    return f"error ({type(exc).__name__})"

"""Which failures are transient, and the backoff policy for them (tenacity)."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from eventflow.config import Settings
from eventflow.errors import TransientError
from eventflow.metrics import Metrics

log = logging.getLogger(__name__)

# SQLSTATE classes worth retrying: connection, operator intervention (shutdown,
# starting up), insufficient resources, transaction rollback (deadlock, serialization).
TRANSIENT_SQLSTATE_CLASSES = ("08", "57", "53", "40")


def _sqlstate(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str):
            return state
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


def _in_redis_connection(exc: BaseException) -> bool:
    """Raised while redis-py's connection code was writing or reading."""
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if name.endswith("/redis/asyncio/connection.py"):
            return True
        tb = tb.tb_next
    return False


def is_transient(exc: BaseException) -> bool:
    """True for failures that may go away by themselves."""
    if isinstance(exc, TransientError | OSError | TimeoutError):
        return True
    if isinstance(
        exc,
        RedisConnectionError
        | RedisTimeoutError
        | BusyLoadingError
        # A Redis Cluster while a master fails over: slots briefly unserved.
        | ClusterDownError
        | SlotNotCoveredError
        | TryAgainError,
    ):
        return True
    if isinstance(exc, AttributeError | RuntimeError) and _in_redis_connection(exc):
        # redis-py's cluster client can tear a connection down while another task
        # writes to it when it reloads the slot map (a failover): the write then
        # fails inside the connection (no writer, closed transport). Try again.
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, InterfaceError):
            return True
        state = _sqlstate(exc)
        if state is not None:
            return state[:2] in TRANSIENT_SQLSTATE_CLASSES
        return isinstance(exc, OperationalError)
    # asyncpg's own errors reach us unwrapped when a connection is being made
    # (CannotConnectNowError, 57P03: the server is starting up or shutting down).
    if isinstance(exc, asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = _sqlstate(exc)
        return state is not None and state[:2] in TRANSIENT_SQLSTATE_CLASSES
    return False


def retrying(settings: Settings, metrics: Metrics, operation: str) -> AsyncRetrying:
    """Exponential backoff with jitter, bounded in attempts and total time."""

    def before_sleep(state: RetryCallState) -> None:
        metrics.retries.labels(operation).inc()
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        log.warning(
            "transient failure, retrying",
            extra={
                "operation": operation,
                "attempt": state.attempt_number,
                "error": f"{type(error).__name__}: {error}"[:300],
            },
        )

    kwargs: dict[str, Any] = {
        "stop": stop_after_attempt(settings.retry_attempts)
        | stop_after_delay(settings.retry_max_s * settings.retry_attempts),
        "wait": wait_exponential_jitter(
            multiplier=settings.retry_initial_s,
            max=settings.retry_max_s,
            jitter=settings.retry_initial_s,
        ),
        "retry": retry_if_exception(is_transient),
        "before_sleep": before_sleep,
        "reraise": True,
    }
    return AsyncRetrying(**kwargs)

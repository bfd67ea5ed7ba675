"""Retry a store write that failed for a passing reason (a dropped connection, an object store's 5xx).

Unit and marker writes are idempotent (whole shard objects, whole markers), so trying again is
always safe. Only infrastructure errors are retried: a missing path, a denied permission or a
Python error in our own code fails at once (docs/design.md: data bugs are never retried).

Example::

    with_retries(lambda: fs.pipe_file(path, data), "marker of unit 000042")
"""

from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

log = logging.getLogger("attnsim")
T = TypeVar("T")

# Seconds to wait before each new try. The object-store clients retry a few times themselves
# within about a second; four tries over ~7 s more ride out a short outage without hiding a long one.
RETRY_DELAYS = (0.5, 1.5, 5.0)

_NOT_TRANSIENT = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling", "500", "502", "503", "504"}


def _client_transient_types() -> tuple[type, ...]:
    """Connection-level errors of the object-store clients, where they are installed."""
    found: list[type] = []
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError

        found += [BotoConnectionError, HTTPClientError]
    except ImportError:
        pass
    try:
        from aiohttp import ClientConnectionError, ClientPayloadError

        found += [ClientConnectionError, ClientPayloadError]
    except ImportError:
        pass
    return tuple(found)


def is_transient(error: BaseException | None) -> bool:
    """True for errors worth trying again: I/O and network failures, an object store's 5xx.

    A missing path or a denied permission does not go away by waiting, and a Python error in our
    own code is a bug: neither is retried (docs/design.md: only infrastructure failures are retried).
    """
    for _ in range(5):  # follow the cause chain a little: clients wrap each other's errors
        if error is None or isinstance(error, _NOT_TRANSIENT):
            return False
        if isinstance(error, (OSError, ConnectionError, TimeoutError, *_client_transient_types())):
            return True
        code = getattr(error, "response", None)
        if isinstance(code, dict) and str(code.get("Error", {}).get("Code", "")) in _TRANSIENT_CODES:
            return True  # botocore ClientError that s3fs did not translate
        error = error.__cause__ or error.__context__
    return False


def with_retries(fn: Callable[[], T], what: str, delays: tuple[float, ...] | None = None) -> T:
    """Call fn; while it fails with a transient error, wait the next delay and call it again."""
    delays = RETRY_DELAYS if delays is None else delays
    for attempt, delay in enumerate((*delays, None)):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - anything not transient is re-raised at once
            if delay is None or not is_transient(e):
                raise
            log.warning(
                "writing %s failed (%s: %s); try %d of %d in %.1f s",
                what,
                type(e).__name__,
                str(e)[:160],
                attempt + 2,
                len(delays) + 1,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")

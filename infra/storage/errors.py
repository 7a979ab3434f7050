"""Errors of the artifact stores, and the one place that tells a passing outage from a lasting fault.

Callers must keep the two apart: a key that does not exist, or a write the store refuses, will fail the same way
next time, so a training run built on it fails for good; a throttled, timed-out or unreachable store may answer
the same call a moment later, so the event that needed it is retried by the outcome policy instead of being
turned into a failed run and committed. ClickHouse draws the same line in ``infra/clickhouse/errors.py``.

S3's classification is botocore's own (the lists its "standard" retry mode retries on), so an error that boto3's
built-in retries already gave up on is still called transient here exactly when boto3 would have retried it.
"""

from __future__ import annotations

import errno
import functools

# errno values of a local or network filesystem (NFS, a FUSE-mounted bucket) that mean "not now", not "never".
_TRANSIENT_ERRNOS = frozenset({
    errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE, errno.ECONNRESET,
    errno.ECONNREFUSED, errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTDOWN, errno.EHOSTUNREACH,
})


class StorageError(Exception):
    """An artifact could not be read or written; the message names the key and the store."""

    is_transient = False


class StorageUnavailable(StorageError):
    """The store did not answer (throttled, timed out, unreachable): the same call may succeed later."""

    is_transient = True


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` from a store call may go away by itself (retry) rather than never (fail)."""
    return bool(getattr(exc, "is_transient", False)) and isinstance(exc, StorageError)


@functools.lru_cache(maxsize=1)
def _s3_lists() -> tuple[frozenset[str], frozenset[int], tuple[type[BaseException], ...]]:
    from botocore.retries.standard import (
        ThrottledRetryableChecker,
        ThrottlingStatusCodeChecker,
        TransientRetryableChecker,
    )

    codes = frozenset(TransientRetryableChecker._TRANSIENT_ERROR_CODES) | frozenset(
        ThrottledRetryableChecker._THROTTLED_ERROR_CODES) | {"SlowDown", "ServiceUnavailable", "InternalError"}
    statuses = frozenset(TransientRetryableChecker._TRANSIENT_STATUS_CODES) | frozenset(
        ThrottlingStatusCodeChecker._THROTTLING_STATUS_CODES)
    return codes, statuses, tuple(TransientRetryableChecker._TRANSIENT_EXCEPTION_CLS)


def s3_code_is_transient(code: str | None, status: int | None = None) -> bool:
    """botocore's verdict on an S3 error code (and HTTP status): throttling, timeouts and 5xx are transient."""
    codes, statuses, _ = _s3_lists()
    return code in codes or status in statuses


def s3_is_transient(exc: BaseException) -> bool:
    """botocore's verdict on ``exc``: connection and read errors, and transient answers (above)."""
    if isinstance(exc, _s3_lists()[2]):
        return True
    response = getattr(exc, "response", None) or {}
    return s3_code_is_transient(response.get("Error", {}).get("Code"),
                                response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


def os_error(what: str, exc: OSError) -> StorageError:
    """A filesystem error as a store error, transient where its errno says the filesystem may recover."""
    cls = StorageUnavailable if exc.errno in _TRANSIENT_ERRNOS else StorageError
    return cls(f"{what}: {exc.strerror or exc}")

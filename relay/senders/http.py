"""What the HTTP destinations share: turning a failed response into a DeliveryError."""

from __future__ import annotations

import email.utils
import time

import aiohttp

from relay.senders.base import DeliveryError

# One table for every HTTP destination. 408, 425 and 429 ask for a later try; so do
# server errors. Any other 4xx means the request itself is wrong and will stay wrong.
_RETRYABLE_4XX = frozenset({408, 425, 429})


def is_retryable_status(status: int) -> bool:
    """Return whether an HTTP status is worth retrying."""
    return status >= 500 or status in _RETRYABLE_4XX


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Return a `Retry-After` header's delay in seconds (delta-seconds or HTTP-date)."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(seconds, 0.0)


def status_error(
    service: str, status: int, detail: str, retry_after_s: float | None
) -> DeliveryError:
    """Return the DeliveryError for an HTTP answer that was not a success."""
    message = f"{service} answered {status}" + (f": {detail}" if detail else "")
    return DeliveryError(
        message, retryable=is_retryable_status(status), retry_after_s=retry_after_s
    )


def connection_error(service: str, exc: BaseException) -> DeliveryError:
    """Return the (retryable) DeliveryError for a network failure, without the URL."""
    if isinstance(exc, TimeoutError):
        return DeliveryError(f"{service} timed out", retryable=True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return DeliveryError(
            f"cannot connect to {service}: {exc.os_error.strerror or exc.os_error}", retryable=True
        )
    # aiohttp's messages can contain the request URL, which holds the webhook token.
    return DeliveryError(f"{service} request failed: {type(exc).__name__}", retryable=True)

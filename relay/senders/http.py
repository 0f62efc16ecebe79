"""What the HTTP destinations share: turning a failed response into a DeliveryError."""

from __future__ import annotations

import email.utils
import html
import json
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence

import aiohttp
import yarl

from relay.senders.base import DeliveryError
from relay.senders.console import printable

# One table for every HTTP destination. 408, 425 and 429 ask for a later try; so do
# server errors. Any other 4xx means the request itself is wrong and will stay wrong.
_RETRYABLE_4XX = frozenset({408, 425, 429})


def is_retryable_status(status: int) -> bool:
    """Return whether an HTTP status is worth retrying."""
    return status >= 500 or status in _RETRYABLE_4XX


# A service's wait is honoured up to this: a wait of days (or `inf`) from a broken or
# hostile endpoint must not stop a destination for good.
MAX_RETRY_AFTER_S = 3600.0
_SECONDS = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")  # ASCII digits only: float() takes "inf", "1_0"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Return a `Retry-After` header's delay in seconds (delta-seconds or HTTP-date),
    capped at MAX_RETRY_AFTER_S; None when it says nothing usable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if _SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, OverflowError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return capped_delay(seconds)


def capped_delay(seconds: float) -> float | None:
    """A delay a service asked for, within 0 and MAX_RETRY_AFTER_S; None when it is no
    number (NaN): a broken or hostile answer must not pause a destination for ever."""
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


ANSWER_READ_LIMIT = 4096  # bytes of a refusing answer read; the rest is not needed


async def answer_start(response: aiohttp.ClientResponse) -> str:
    """Read the start of a refusing answer only: a huge error page costs no memory."""
    raw = await response.content.read(ANSWER_READ_LIMIT)
    return raw.decode("utf-8", "replace")  # for a record a person reads: no charset games


DETAIL_LIMIT = 200  # how much of a refusing answer goes into the attempt record


def answer_detail(text: str, secrets: Sequence[str]) -> str:
    """Return the start of a refusing answer for the attempt record: one printable line,
    with every secret the request carried masked. The whole text is made one line and
    masked before the cut: a cut made first, in the raw text or in a window, could split
    a secret that whitespace, or masks shorter than what they hide, then pulled up
    within the limit."""
    line = _one_line(text)
    forms = {_one_line(form) for value in secrets for form in _echoed_forms(value)}
    for value in sorted(forms, key=len, reverse=True):
        if value:
            line = line.replace(value, "<secret>")
    return line[:DETAIL_LIMIT]


def _echoed_forms(secret: str) -> set[str]:
    """A secret as an answer may echo it: as sent, inside a JSON string (PHP escapes / as
    well), in HTML, or percent-encoded."""
    in_json = json.dumps(secret)[1:-1]
    return {
        secret,
        in_json,
        in_json.replace("/", "\\/"),
        html.escape(secret),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
    }


def _one_line(text: str) -> str:
    """Printable, each run of whitespace one space: how an answer is shown, and how a
    secret in it then reads."""
    return " ".join(printable(text).split())


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


async def post_once(
    http: aiohttp.ClientSession | None,
    url: str | yarl.URL,
    body: bytes,
    headers: Mapping[str, str],
    *,
    service: str,
    secrets: Callable[[], Iterable[str]],
    redirect_key: str,
) -> None:
    """POST once, following no redirect; return on a 2xx, else raise the DeliveryError of
    the shared table, its detail masked of `secrets()` (what of the request is secret)."""
    if http is None:
        raise DeliveryError("no HTTP session", retryable=False)
    try:
        async with http.post(url, data=body, headers=headers, allow_redirects=False) as response:
            if 200 <= response.status < 300:
                return
            detail = answer_detail(await answer_start(response), list(secrets()))
            if 300 <= response.status < 400:
                redirect = f"redirects are not followed; set {redirect_key} to where it points"
                detail = redirect + (f" ({detail})" if detail else "")
            retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
            raise status_error(service, response.status, detail, retry_after_s)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise connection_error(service, exc) from None

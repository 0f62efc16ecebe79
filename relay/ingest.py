"""The webhook handler: verify, parse, dedupe, route, store, answer."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import NoReturn

from aiohttp import web

from relay.activity.tally import tally_of
from relay.config.model import Config
from relay.conversations.watch import Observation, is_signal_event_id, observation_of
from relay.events import (
    MAX_EVENT_ID_LENGTH,
    Event,
    EventError,
    body_event_id,
    is_valid_event_id,
    parse_account_event,
    parse_session_event,
)
from relay.request_record import record_request
from relay.rules import Dispatch, Router
from relay.state import RelayState
from relay.store import Delivery, NewDelivery, NewEvent, StoreUnavailable
from relay.verify import (
    ACCOUNT_DELIVERY_HEADER,
    ACCOUNT_SIGNATURE_HEADER,
    ACCOUNT_TIMESTAMP_HEADER,
    account_signed_content,
    client_address,
    header_problem,
    in_networks,
    signature_matches,
)

log = logging.getLogger("relay.ingest")

EVENT_ID_HEADERS = ("X-bitHuman-Event-Id", "webhook-id")
MAX_TIMESTAMP_DIGITS = 12
_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


class Rejected(Exception):
    """A request relay will not accept; becomes a JSON error answer."""

    def __init__(self, status: int, message: str, reason: str, event: Event | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason  # the relay_rejected_requests_total label
        self.event = event  # when the body parsed before the rejection


def _answer(document: dict[str, object], status: int) -> web.Response:
    """Answer with a JSON document: what web.json_response does, at half its cost."""
    body = json.dumps(document).encode("utf-8")
    return web.Response(body=body, status=status, headers=_JSON_HEADERS)


def _reject(status: int, message: str, reason: str, event: Event | None = None) -> NoReturn:
    raise Rejected(status, message, reason, event)


def event_type_label(event: Event | None) -> str:
    """Return a bounded metric label for an event's type."""
    return event.kind[:64] if event is not None else "unknown"


def _check_client(request: web.Request, config: Config) -> None:
    allow = config.verify.allow_ips
    if allow is None:
        return
    # Every X-Forwarded-For line, in order: a proxy may add its own line after the client's.
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", [])) or None
    address = client_address(request.remote, forwarded, config.verify.trusted_proxies)
    if address is None or not in_networks(address, allow):
        _reject(403, f"client address {address} is not allowed", "ip_not_allowed")


def _check_content_type(request: web.Request) -> None:
    if request.content_type != "application/json":
        shown = request.headers.get("Content-Type", "none")[:100]
        _reject(415, f"Content-Type must be application/json, got {shown}", "content_type")


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        _reject(413, f"body is larger than {limit} bytes", "body_too_large")


async def _read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """Read the body, refusing it past `limit` bytes or `timeout_s` seconds.

    A sender that trickles its body must not hold a connection forever.
    """
    if request.content_length is not None:
        _check_size(request.content_length, limit)
        if request.content.is_eof():
            # The usual case: the whole (small) body came with the headers. No wait, so no
            # timer to set up on the hot path. The length is checked again after reading:
            # a compressed body (Content-Encoding) is larger than its Content-Length.
            whole = await request.read()
            _check_size(len(whole), limit)
            return whole
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_chunked(64 * 1024):
                body += chunk
                _check_size(len(body), limit)
    except TimeoutError:
        _reject(408, f"body not received within {timeout_s:g}s", "body_timeout")
    return bytes(body)


def _check_session_authentication(request: web.Request, body: bytes, config: Config) -> None:
    problem = header_problem(request.headers, config.verify.headers)
    if problem is not None:
        _reject(401, problem, "header")
    if not config.verify.secrets:
        return
    header = config.verify.signature_header
    presented = request.headers.get(header)
    if presented is None:
        _reject(401, f"missing {header} header", "signature")
    if not signature_matches(body, presented, config.verify.secrets):
        _reject(401, "invalid signature", "signature")


def _header_id(request: web.Request, names: tuple[str, ...]) -> str | None:
    """Return the first of the named headers that is present, checked, or None."""
    for name in names:
        value = request.headers.get(name)
        if value is not None:
            value = value.strip()
            if not is_valid_event_id(value):
                _reject(
                    400,
                    f"header {name} must be 1 to {MAX_EVENT_ID_LENGTH} printable characters",
                    "invalid_event_id",
                )
            return value
    return None


def _check_age(
    timestamp: float, now: float, max_age_s: float, what: str, event: Event | None
) -> None:
    if max_age_s and abs(now - timestamp) > max_age_s:
        shown = f"{what} {timestamp:.0f} is more than {max_age_s:g}s from now ({now:.0f})"
        _reject(400, shown, "too_old_or_new", event)


def _parse_session(request: web.Request, body: bytes, config: Config, now: float) -> Event:
    _check_session_authentication(request, body, config)
    event_id = _header_id(request, EVENT_ID_HEADERS) or body_event_id(body)
    try:
        event = parse_session_event(body, event_id=event_id, received_at=now)
    except EventError as exc:
        _reject(400, str(exc), "invalid_event")
    _check_age(event.timestamp, now, config.verify.max_age_s, "timestamp", event)
    return event


def _parse_account(request: web.Request, body: bytes, config: Config, now: float) -> Event:
    """Verify and parse an account webhook: SPEC 1.2, `verify.account` only."""
    account = config.verify.account
    if not account.secrets:
        _reject(
            401,
            "account webhooks need verify.account.secrets (the whsec_ secret bitHuman "
            "returned when the webhook was registered)",
            "account_not_configured",
        )
    stamp = request.headers[ACCOUNT_TIMESTAMP_HEADER].strip()
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > MAX_TIMESTAMP_DIGITS:
        _reject(400, f"header {ACCOUNT_TIMESTAMP_HEADER} must be Unix seconds", "invalid_event")
    presented = request.headers.get(ACCOUNT_SIGNATURE_HEADER)
    if presented is None:
        _reject(401, f"missing {ACCOUNT_SIGNATURE_HEADER} header", "signature")
    if not signature_matches(account_signed_content(stamp, body), presented, account.secrets):
        _reject(401, "invalid signature", "signature")
    # The signature covers the timestamp, so it is checked first: a forged timestamp is a
    # bad signature, a genuine old one a replay.
    _check_age(int(stamp), now, account.max_age_s, ACCOUNT_TIMESTAMP_HEADER, None)
    event_id = _header_id(request, (ACCOUNT_DELIVERY_HEADER,))
    try:
        return parse_account_event(body, event_id=event_id)
    except EventError as exc:
        _reject(400, str(exc), "invalid_event")


def deliveries_for(event: Event, dispatches: list[Dispatch]) -> list[NewDelivery]:
    """Return what the store keeps of an event's routing: a conversation's deliveries to a
    destination go out in order, one at a time."""
    session_key = event.session or event.event_id
    return [
        NewDelivery(d.destination, d.rule, d.template, session_key, d.digest_s) for d in dispatches
    ]


def _not_handed(deliveries: list[NewDelivery], claimed: tuple[Delivery, ...]) -> list[str]:
    """The destinations of an accept's deliveries that it did not hand to a lane (a
    session's next delivery, a digest, one no lane of this process was parked for):
    their lanes look for them."""
    if not claimed:
        return [d.destination for d in deliveries]
    handed = Counter(d.destination for d in claimed)
    left = []
    for d in deliveries:
        if handed[d.destination]:
            handed[d.destination] -= 1
        else:
            left.append(d.destination)
    return left


async def _accept(
    state: RelayState, config: Config, router: Router, event: Event, new: NewEvent
) -> web.Response:
    if is_signal_event_id(event.event_id):
        message = f"event id {event.event_id!r} is reserved for relay's conversation signals"
        _reject(400, message, "invalid_event_id", event)
    routing = router.routing(event)
    deliveries = deliveries_for(event, routing.dispatches)
    watching = config.conversations
    windows = None if watching is None else (watching.unanswered_after_s, watching.ended_after_s)
    observation = observation_of(event, windows)
    if isinstance(observation, Observation) and config.console is not None:
        # Its conversation's transcript lists it (SPEC 8.1): kept while a console can show
        # it and relay watches conversations (the watch's purge forgets the transcript).
        # (The constructor, not dataclasses.replace: this is every event's path.)
        new = NewEvent(
            new.event_id, new.body, new.received_at, new.request, observation.conversation
        )
    worker = state.worker
    # An idle lane of this process sends its delivery without a claim of its own.
    claim = None if worker is None else worker.claim_at_accept(d.destination for d in deliveries)
    claimed: tuple[Delivery, ...] | None = None  # None: not known
    try:
        result = await state.store.accept(
            new,
            deliveries,
            dedupe_window_s=config.delivery.dedupe_window_s,
            observation=observation,
            tally=tally_of(event, routing.matched, config.console),
            claim=claim,
        )
        claimed = result.claimed
    except StoreUnavailable as exc:
        log.error("store unavailable, answering 503: %s", exc, extra={"event_id": event.event_id})
        _reject(503, "store unavailable, retry later", "store_unavailable", event)
    finally:
        if claim is not None and worker is not None:
            worker.handed(claim, claimed)
    extra = {"event_id": event.event_id}
    if result.duplicate:
        state.metrics.events.labels(event_type_label(event), "duplicate").inc()
        log.debug("duplicate %s ignored", event.event_type, extra=extra)
        return _answer({"status": "duplicate", "event_id": event.event_id}, 200)
    state.metrics.events.labels(event_type_label(event), "accepted").inc()
    # Per-event success lines are debug: at hundreds of events a second they would cost
    # more than the rest of the request. Metrics count them; --log-level debug shows them.
    log.debug("accepted %s for %d destination(s)", event.event_type, len(deliveries), extra=extra)
    if worker is not None:
        worker.wake(_not_handed(deliveries, claimed or ()))
    # 200, not 202: bitHuman counts any other answer as a failed delivery.
    return _answer(
        {"status": "accepted", "event_id": event.event_id, "deliveries": len(deliveries)}, 200
    )


async def handle_webhook(request: web.Request, state: RelayState) -> web.Response:
    """Answer one webhook POST as SPEC section 2 says."""
    response = await _handle(request, state)
    if state.draining:
        # A load balancer must not send its next request on this connection: relay is
        # about to close its listener.
        response.force_close()
    return response


async def _handle(request: web.Request, state: RelayState) -> web.Response:
    config, router = state.config, state.router  # once: a reload must not mix two configs
    try:
        _check_client(request, config)
        _check_content_type(request)
        server = config.server
        body = await _read_body(request, server.max_body_bytes, server.read_timeout_s)
        now = state.clock()
        # An account webhook is told apart by its timestamp header (SPEC 1.2).
        account = ACCOUNT_TIMESTAMP_HEADER in request.headers
        if account:
            event = _parse_account(request, body, config, now)
        else:
            event = _parse_session(request, body, config, now)
        # Verified: what mattered of the request is kept with the event, for the console.
        kept = record_request(request.headers, request.remote, config.verify, account=account)
        new = NewEvent(event.event_id, body, now, kept)
        return await _accept(state, config, router, event, new)
    except Rejected as rejected:
        state.metrics.rejected.labels(rejected.reason).inc()
        state.metrics.events.labels(event_type_label(rejected.event), "rejected").inc()
        extra = {"event_id": rejected.event.event_id} if rejected.event else {}
        log.warning(
            "rejected request from %s: %d %s",
            request.remote,
            rejected.status,
            rejected.message,
            extra=extra,
        )
        return _answer({"error": rejected.message}, rejected.status)

"""Conversations at one destination: a notification's thread, the thread a first send
started, and the parent message's count of replies (SPEC 4.1)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable

from relay.delivery.context import Worker, log
from relay.delivery.stored import until_stored
from relay.notification import Notification
from relay.senders.base import DeliveryError, Sent
from relay.store import Delivery, StoreUnavailable

# A conversation's parent message shows its count and last activity: updated at most this
# often, however fast the conversation goes (Slack paces chat.update like any message).
PARENT_UPDATE_EVERY_S = 2.0


def conversation_key(conversation: str) -> str:
    """Return the store's key of a conversation: a session id may be 10 KB of anything."""
    return hashlib.sha256(conversation.encode("utf-8", "replace")).hexdigest()


async def in_thread(worker: Worker, notification: Notification, delivery: Delivery) -> Notification:
    """Give a notification its conversation's thread when its rule has `thread: session`."""
    rule = worker.config.rules_by_name.get(delivery.rule)
    conversation = notification.event.session
    if rule is None or rule.thread is None or conversation is None:
        return notification
    key = conversation_key(conversation)
    try:
        thread = await worker.store.thread(delivery.destination, key)
    except StoreUnavailable as exc:
        raise DeliveryError(f"cannot read the thread map: {exc}", retryable=True) from None
    return dataclasses.replace(
        notification, conversation=conversation, thread=thread, broadcast=rule.broadcast
    )


class Conversations:
    """One destination's thread bookkeeping after each send, and its parent updates."""

    def __init__(
        self, worker: Worker, destination: str, wait_for_turn: Callable[[], Awaitable[bool]]
    ) -> None:
        self._worker = worker
        self._destination = destination
        self._wait_for_turn = wait_for_turn  # the lane's pacing, which updates share
        # Conversation key -> (its thread, how many messages, last activity): the parent
        # updates not made yet; only the latest of each counts.
        self._parent_updates: dict[str, tuple[str, int, float]] = {}
        self._updater: asyncio.Task[None] | None = None

    async def after_send(self, notification: Notification, sent: Sent) -> None:
        """After a send in a conversation: keep the thread it started, or count the reply."""
        if notification.conversation is None:
            return
        key = conversation_key(notification.conversation)
        store = self._worker.store
        if sent.thread is None:
            if notification.thread is not None:
                await self._count_reply(key, notification.thread)
            return
        # Kept before this send is recorded, so the session's next notification, which
        # waits for that record, finds it: a store that fails here is tried again until
        # it answers, or a second thread would start.
        now, thread = self._worker.clock(), sent.thread
        if sent.replaces_thread:
            await self._keep(lambda: store.replace_thread(self._destination, key, thread, now))
        else:
            await self._keep(lambda: store.start_thread(self._destination, key, thread, now))

    async def _keep(self, write: Callable[[], Awaitable[object]]) -> None:
        """Write a conversation's thread, trying again while the store is unavailable.

        The send stays in flight meanwhile: its lease is renewed, and its session's next
        notification is not claimed, so nothing goes out unthreaded. Only a stop gives up.
        """
        extra = {"destination": self._destination}

        def keep_trying(exc: StoreUnavailable) -> bool:
            if self._worker.stopping:
                log.error("could not keep a conversation's thread: %s", exc, extra=extra)
                return False
            log.warning("cannot keep a conversation's thread yet: %s", exc, extra=extra)
            return True

        await until_stored(write, keep_trying, self._pause)

    async def _pause(self, seconds: float) -> None:
        """Wait, unless the worker stops first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._worker.stopped.wait(), timeout=seconds)

    @property
    def idle(self) -> bool:
        """No parent update is waiting or being made."""
        return not self._parent_updates and (self._updater is None or self._updater.done())

    async def stop(self) -> None:
        """Drop the parent updates not made yet: a parent's count is cosmetic, not worth
        a wait at shutdown."""
        if self._updater is not None:
            self._updater.cancel()
            await asyncio.gather(self._updater, return_exceptions=True)

    async def _count_reply(self, key: str, thread: str) -> None:
        """Count a reply, which also keeps its thread from the retention purge, and have
        its parent show the count soon (debounced) where the destination shows one."""
        worker = self._worker
        try:
            messages = await worker.store.count_message(self._destination, key, worker.clock())
        except StoreUnavailable:
            return  # the next reply counts again
        sender = worker.senders.get(self._destination)
        if sender is None or not sender.updates_parents:
            return
        self._parent_updates[key] = (thread, messages, worker.clock())
        if self._updater is None or self._updater.done():
            self._updater = asyncio.create_task(
                self._update_parents(), name=f"relay-parents-{self._destination}"
            )

    async def _update_parents(self) -> None:
        worker = self._worker
        while self._parent_updates and not worker.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.stopped.wait(), timeout=PARENT_UPDATE_EVERY_S)
            pending, self._parent_updates = self._parent_updates, {}
            for thread, messages, last_activity in pending.values():
                sender = worker.senders.get(self._destination)
                if sender is None or not await self._wait_for_turn():
                    return
                try:
                    update = sender.update_parent(thread, messages, last_activity)
                    await asyncio.wait_for(update, timeout=worker.config.delivery.timeout_s)
                except (DeliveryError, TimeoutError) as exc:
                    extra = {"destination": self._destination}
                    log.warning("could not update a conversation's parent: %s", exc, extra=extra)
                except Exception:  # a count is cosmetic: no surprise may end the updates
                    extra = {"destination": self._destination}
                    log.exception("could not update a conversation's parent", extra=extra)

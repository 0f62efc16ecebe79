"""Delivery: from a stored delivery to a sent notification, at least once (SPEC 5).

Where each thing happens:

- `worker.py`: the DeliveryWorker. It starts a lane for each destination with work (one
  the store has deliveries queued for, a removed destination's included, to dead-letter
  them; one its process accepts deliveries for), renews the leases of every send in
  flight, swaps config and senders on reload, and stops: nothing new goes out, in-flight
  sends finish (one on the wire is never cut off), claims are released.
- `lane.py`: a destination's Lane. It claims due deliveries with a lease, keeps up to
  `delivery.concurrency` sends in flight (each of a different session, each session in
  order), and waits out pauses (a 429) and pacing (the store's shared token bucket).
- `attempt.py`: one attempt. It builds the notification (the stored event, the rule's
  template, a digest's transcript, the conversation's thread), sends it within
  `delivery.timeout`, and records the outcome: sent, retried or dead (asking the store
  again until it takes it).
- `conversations.py`: threads (SPEC 4.1): which thread a notification goes in, the thread a
  conversation's first send started, and the parent's count, updated at most every 2 s.
- `digests.py`: a digest's transcript (SPEC 4.2).
- `stored.py`: a write of what a send did (its thread, its outcome), asked again while the
  store cannot take it.
- `retry.py`: the RetryPolicy, exponential backoff with jitter; `Retry-After` wins.
- `context.py`: the Worker protocol the others read (store, config, senders, clock).

A delivery moves worker -> lane (claimed) -> attempt (built, sent) -> conversations (thread
kept) -> attempt (recorded) -> lane (slot free, the session's next one claimed). Imports
flow the same way, from worker down to context; nothing below `delivery/` imports it.
"""

from relay.delivery.context import Clock
from relay.delivery.conversations import PARENT_UPDATE_EVERY_S, conversation_key
from relay.delivery.retry import RetryPolicy
from relay.delivery.worker import DeliveryWorker

__all__ = ["PARENT_UPDATE_EVERY_S", "Clock", "DeliveryWorker", "RetryPolicy", "conversation_key"]

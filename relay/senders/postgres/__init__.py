"""The postgres destination (SPEC 4.3): one row per event, inserted at most once."""

from relay.senders.postgres.sender import PostgresSender

__all__ = ["PostgresSender"]

"""Conversation signals (SPEC 4.4): relay watches each conversation and raises events of
its own when a visitor gets no answer and when a conversation ends."""

"""The `conversations` section (SPEC 4.4): off when absent, defaults, and exact errors."""

from __future__ import annotations

import pytest

from relay.config import ConfigError, load_text
from relay.config.model import ConversationsConfig


def load(text: str) -> ConversationsConfig | None:
    return load_text(text, "relay.yaml", {}).conversations


def test_absent_is_off() -> None:
    assert load("rules: []\n") is None


@pytest.mark.parametrize("text", ["conversations:\n", "conversations: {}\n"])
def test_an_empty_section_turns_signals_on_with_the_defaults(text: str) -> None:
    assert load(text) == ConversationsConfig(unanswered_after_s=120.0, ended_after_s=600.0)


def test_windows_and_zero_for_never() -> None:
    found = load("conversations:\n  unanswered_after: 45s\n  ended_after: 0\n")
    assert found == ConversationsConfig(unanswered_after_s=45.0, ended_after_s=0.0)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "conversations:\n  unanswered_after: soon\n",
            "relay.yaml:2: conversations.unanswered_after: expected a duration like 500ms,"
            " 30s, 5m or 24h, got 'soon'",
        ),
        (
            "conversations:\n  ended_after: 30d\n",
            "relay.yaml:2: conversations.ended_after: must be at most 7d (0 turns it off), got 30d",
        ),
        (
            "conversations:\n  unanswered_after: 500ms\n",
            "relay.yaml:2: conversations.unanswered_after: must be at least 1s (0 turns it"
            " off), got 0.5s",
        ),
        (
            "conversations:\n  unanswerd_after: 2m\n",
            'relay.yaml:2: conversations: unknown key "unanswerd_after" (did you mean'
            ' "unanswered_after"?)',
        ),
        ("conversations: 2m\n", "relay.yaml:1: conversations: expected a mapping, got a string"),
        (
            "store:\n  retention: 5m\nconversations:\n  ended_after: 1d\n",
            "relay.yaml:4: conversations: a window of 1d is longer than store.retention (5m):"
            " a conversation's watch would be forgotten before its signal is due",
        ),
    ],
)
def test_errors_name_the_key_and_the_line(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(text)
    assert str(raised.value) == error

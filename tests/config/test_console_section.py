"""The `console` section (SPEC 3, 8): its listener, credentials and history, exact errors."""

from __future__ import annotations

import pytest

from relay.config import ConfigError, load_text
from relay.config.model import ConsoleConfig
from relay.secrets import Secret

ENV = {"RELAY_CONSOLE_PASSWORD": "console-pass-7f3a"}


def load(text: str) -> ConsoleConfig | None:
    return load_text(text, "relay.yaml", ENV).console


def test_absent_is_off() -> None:
    assert load("rules: []\n") is None


def test_defaults_and_values() -> None:
    found = load('console:\n  password: "${RELAY_CONSOLE_PASSWORD}"\n')
    assert found == ConsoleConfig(password=Secret("console-pass-7f3a"))
    assert (found.host, found.port, found.username, found.history_s) == (
        "127.0.0.1",
        8081,
        "relay",
        30 * 86400.0,
    )
    found = load('console:\n  listen: "[::1]:0"\n  username: ops\n  password: x\n  history: 7d\n')
    assert found is not None
    assert (found.host, found.port, found.username, found.history_s) == (
        "::1",
        0,
        "ops",
        7 * 86400.0,
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "console:\n  listen: 127.0.0.1:8081\n",
            'relay.yaml:2: console: missing required key "password"',
        ),
        (
            "console:\n  listen: localhost\n  password: x\n",
            'relay.yaml:2: console.listen: expected HOST:PORT like 127.0.0.1:8081, got "localhost"',
        ),
        (
            "console:\n  username: 'a:b'\n  password: x\n",
            'relay.yaml:2: console.username: must not contain ":"',
        ),
        (
            "console:\n  password: x\n  history: 30m\n",
            "relay.yaml:3: console.history: must be between 1h and 400d",
        ),
        (
            "server:\n  port: 8081\nconsole:\n  password: x\n",
            "relay.yaml:4: console.listen: the console needs a port of its own, not the webhook"
            " port 8081",
        ),
    ],
)
def test_errors_name_the_key_and_the_line(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(text)
    assert str(raised.value) == error


def test_the_password_never_shows() -> None:
    config = load_text('console:\n  password: "${RELAY_CONSOLE_PASSWORD}"\n', "relay.yaml", ENV)
    assert "console-pass-7f3a" not in repr(config)

"""relay.config: strict loading, exact error texts (one small file per case), secrets kept out."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from relay.config import ConfigError, ConfigIssue, load, load_text
from relay.config.model import (
    AccountVerifyConfig,
    AllCondition,
    AnyCondition,
    BackoffConfig,
    ConsoleDestination,
    DeliveryConfig,
    DiscordDestination,
    EmailDestination,
    FieldCondition,
    GlobCondition,
    MessageCondition,
    NotCondition,
    Rule,
    ServerConfig,
    SlackDestination,
    SmtpConfig,
    StoreConfig,
    TlsConfig,
)
from relay.secrets import Secret
from relay.templates import render

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTDATA = "config/testdata"

FULL_ENV = {
    "BITHUMAN_WEBHOOK_SECRET": "s3cret-signing",
    "RELAY_TOKEN": "s3cret-relay-token",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/s3cret-slack",
    "SLACK_BOT_TOKEN": "xoxb-s3cret-bot",
    "DISCORD_WEBHOOK_URL": "https://discord.com/api/webhooks/1/s3cret-discord",
    "SMTP_PASSWORD": "s3cret-smtp",
    "BITHUMAN_ACCOUNT_WEBHOOK_SECRET": "whsec_s3cret-account",
}


@pytest.fixture(autouse=True)
def repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the repository root so error texts name `config/testdata/...`."""
    monkeypatch.chdir(REPO_ROOT)
    for name in (*FULL_ENV, "PORT", "BITHUMAN_OLD_SECRET", "PRICE"):
        monkeypatch.delenv(name, raising=False)


def load_error(path: str) -> str:
    """Load a file that must fail and return the full error text."""
    with pytest.raises(ConfigError) as caught:
        load(path)
    return str(caught.value)


def text_error(text: str, env: dict[str, str] | None = None) -> str:
    """Load config text that must fail and return the full error text."""
    with pytest.raises(ConfigError) as caught:
        load_text(text, "relay.yaml", env or {})
    return str(caught.value)


# One file per error case ------------------------------------------------------------------

ERROR_CASES = {
    "unknown-key-top": ':1: unknown key "serer" (did you mean "server"?)',
    "unknown-key-server": ':3: server: unknown key "prot" (did you mean "port"?)',
    "unknown-key-tls": ':4: server.tls: unknown key "key_fiel" (did you mean "key_file"?)',
    "unknown-key-verify": ':2: verify: unknown key "secret" (did you mean "secrets"?)',
    "unknown-key-account": (':4: verify.account: unknown key "max_ag" (did you mean "max_age"?)'),
    "account-max-age-zero": (
        ":5: verify.account.max_age: must be longer than 0 (it is the replay window; default 5m)"
    ),
    "unknown-key-backoff": ':2: delivery.backoff: unknown key "mx" (did you mean "max"?)',
    "unknown-key-destination": (
        ':4: destinations.ops-slack: unknown key "webhook" (did you mean "webhook_url"?)'
    ),
    "unknown-key-smtp": ':4: destinations.mail.smtp: unknown key "hots" (did you mean "host"?)',
    "unknown-key-rule": ':5: rules[0]: unknown key "sendto" (did you mean "send_to"?)',
    "unknown-key-when": ':4: rules[0].when: unknown key "agnet" (did you mean "agent"?)',
    "unknown-key-message": (
        ':5: rules[0].when.message: unknown key "contain" (did you mean "contains"?)'
    ),
    "unknown-key-field": ':5: rules[0].when.field: unknown key "gtt" (did you mean "gt"?)',
    "unknown-key-template": ':3: templates.refund: unknown key "txt" (did you mean "text"?)',
    "unknown-destination": (
        ':5: rules[0].send_to[1]: unknown destination "ops-slak" (did you mean "ops-slack"?)'
    ),
    "unknown-template": ':5: rules[0].template: unknown template "refnd" (did you mean "refund"?)',
    "unknown-destination-type": (
        ':2: destinations.ops.type: unknown destination type "slak" (did you mean "slack"?)'
    ),
    "bad-regex": (
        ":9: rules[2].when.any[0].message.regex: invalid regular expression:"
        " missing ), unterminated subpattern at position 0"
    ),
    "bad-template": ":6: templates.refund.text: template error: unexpected '}'",
    "template-unknown-name": (
        ':3: templates.refund.title: template error: unknown name "agnt_id" (did you mean'
        ' "agent_id"?); a template sees agent_id, created, data, event, event_id, event_type,'
        " id, timestamp"
    ),
    "bad-duration": (
        ":2: verify.max_age: expected a duration like 500ms, 30s, 5m or 24h, got '5 minutes'"
    ),
    "bad-retention": ":2: store.retention: a duration cannot be negative, got -1",
    "bad-cidr": (
        ":4: verify.allow_ips[1]: expected an IP address or CIDR like 10.0.0.0/8,"
        ' got "10.0.0.300/24"'
    ),
    "slack-webhook-and-token": ":3: destinations.ops: set exactly one of webhook_url or token",
    "email-login-tls-none": (
        ":4: destinations.mail.smtp.tls: a login needs tls: starttls or tls"
        " (tls: none would send the password in clear)"
    ),
    "duplicate-key": ':4: server: duplicate key "port" (first on line 2)',
    "yaml-syntax": ":3: invalid YAML: expected <block end>, but found '<block mapping start>'",
    "env-unset": (":6: verify.secrets[0]: environment variable BITHUMAN_WEBHOOK_SECRET is not set"),
    "store-redis": ':2: store.url: the Redis database must be a number, got "zero"',
    "top-level-list": ":1: expected a mapping, got a list",
    "backoff-order": ":2: delivery.backoff: first must not be longer than max",
    "workers-zero": ":2: server.workers: must be from 1 to 64, got 0",
    "workers-port-zero": (
        ":3: server.workers: 4 workers share server.port, which must then be set:"
        " 0 would give each worker a port of its own"
    ),
}


@pytest.mark.parametrize("name", ERROR_CASES)
def test_error_case(name: str) -> None:
    path = f"{TESTDATA}/{name}.yaml"
    assert load_error(path) == path + ERROR_CASES[name]


MULTI_ERROR_CASES = {
    "three-errors": [
        ":2: server.port: must be from 0 to 65535, got 70000",
        (
            ':4: store.url: unsupported store url "postgres:…":'
            " expected sqlite:PATH, redis:// or rediss://"
        ),
        ':6: destinations.chat: missing required key "webhook_url"',
    ],
    "wrong-types": [
        ":2: server.port: expected an integer, got a string",
        ":3: server.tls: expected a mapping, got a string",
        ":5: delivery.max_attempts: must be at least 1, got 0",
        ":9: rules[0].send_to: expected a list, got a mapping",
        ":10: rules[0].stop: expected true or false, got a string",
    ],
    "field-ops": [
        ":6: rules[0].when.field: needs exactly one of equals, in, regex, exists, gt, gte, lt, lte",
        ":9: rules[1].when.field.path:"
        ' expected a dotted path like "data.message", got "data..count"',
        ":9: rules[1].when.field.gt: expected a number, got a boolean",
        ":12: rules[2].when.message:"
        " needs at least one of contains, contains_any, contains_all, regex, equals",
    ],
    "rule-names": [
        ":6: rules[1].send_to: must not be empty",
        ':7: rules[2].name: duplicate rule name "joins" (also rules[0])',
    ],
    "email-incomplete": [
        ':3: destinations.mail: missing required key "from"',
        ":4: destinations.mail.smtp: set both username and password, or neither",
        ":5: destinations.mail.to: must not be empty",
    ],
    # Limits of one key are checked with the others of their section, not after them.
    "limits-with-other-errors": [
        ":2: server.port: must be from 0 to 65535, got 70000",
        ":3: server.read_timeout: must be longer than 0",
        ':5: verify.account: unknown key "secret" (did you mean "secrets"?)',
        ":5: verify.account.max_age: must be longer than 0 (it is the replay window; default 5m)",
        ":7: delivery.concurrency: must be from 1 to 256, got 0",
        ":8: delivery.lease: must be at least 1s",
        ":9: delivery.backoff: first must not be longer than max",
    ],
    "slack-token-no-channel": [
        ':2: destinations.bot: missing required key "channel" (a token posts to a named channel)',
        ":3: destinations.hook.channel:"
        " channel is only used with token: a webhook posts to its own channel",
    ],
}


@pytest.mark.parametrize("name", MULTI_ERROR_CASES)
def test_every_error_is_reported_in_file_order(name: str) -> None:
    path = f"{TESTDATA}/{name}.yaml"
    assert load_error(path).splitlines() == [path + line for line in MULTI_ERROR_CASES[name]]


def test_error_carries_structured_issues() -> None:
    with pytest.raises(ConfigError) as caught:
        load(f"{TESTDATA}/three-errors.yaml")
    first = caught.value.issues[0]
    assert first == ConfigIssue(
        f"{TESTDATA}/three-errors.yaml", 2, "server.port", "must be from 0 to 65535, got 70000"
    )
    assert len(caught.value.issues) == 3


def test_unreadable_file() -> None:
    assert load_error("config/testdata/missing.yaml") == (
        "config/testdata/missing.yaml: cannot read: No such file or directory"
    )


# The environment --------------------------------------------------------------------------


def test_env_value_is_substituted() -> None:
    config = load_text('verify: { secrets: ["${KEY}"] }', "relay.yaml", {"KEY": "abc"})
    assert config.verify.secrets == (Secret("abc"),)


@pytest.mark.parametrize(
    ("env", "port"), [({}, 8081), ({"PORT": ""}, 8081), ({"PORT": "9000"}, 9000)]
)
def test_env_default_and_retyping(env: dict[str, str], port: int) -> None:
    # A quoted reference still becomes an integer: values are typed after substitution.
    config = load_text('server: { port: "${PORT:-8081}" }', "relay.yaml", env)
    assert config.server.port == port


def test_env_value_cannot_change_structure() -> None:
    env = {"HOST": "x\nport: 1", "NAME": "[a, b]"}
    config = load_text("server: { host: '${HOST}', path: '/${NAME}' }", "relay.yaml", env)
    assert config.server.host == "x\nport: 1"
    assert config.server.path == "/[a, b]"
    assert config.server.port == 8080


def test_env_empty_default_and_literal() -> None:
    text = "server: { host: 'h${EMPTY:-}', path: '/$${NOT_A_VAR}' }"
    config = load_text(text, "relay.yaml", {})
    assert config.server.host == "h"
    assert config.server.path == "/${NOT_A_VAR}"


def test_env_unset_and_malformed_references() -> None:
    text = "server:\n  host: ${A}-${B}\n  path: /${bad\n"
    assert text_error(text).splitlines() == [
        "relay.yaml:2: server.host: environment variable A is not set",
        "relay.yaml:2: server.host: environment variable B is not set",
        "relay.yaml:3: server.path: bad environment reference: write ${NAME} or ${NAME:-default}",
    ]


def test_env_set_but_empty_secret() -> None:
    text = 'verify: { secrets: ["${KEY}"] }'
    assert text_error(text, {"KEY": ""}) == (
        "relay.yaml:1: verify.secrets[0]: must not be empty (is its environment variable empty?)"
    )


def test_env_defaults_to_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "7000")
    assert load_text("server: { port: '${PORT}' }", "relay.yaml").server.port == 7000


# Secrets ----------------------------------------------------------------------------------


def test_secrets_never_appear_in_errors() -> None:
    text = load_error(f"{TESTDATA}/leaky-secrets.yaml")
    assert len(text.splitlines()) == 4
    assert "s3cret" not in text
    assert "value not shown" in text


def test_secrets_never_appear_in_config_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FULL_ENV.items():
        monkeypatch.setenv(name, value)
    shown = repr(load(f"{TESTDATA}/full.yaml"))
    assert "s3cret" not in shown
    assert "old-secret" not in shown
    assert "<secret>" in shown


def test_yaml_syntax_error_does_not_quote_the_line() -> None:
    # PyYAML's own message quotes the offending line, which may hold a secret.
    text = text_error('verify:\n  secrets: ["s3cret-value"\n  x: 1\n')
    assert "s3cret" not in text
    assert text.startswith("relay.yaml:3: invalid YAML: ")


# Valid files ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "---\n", "~\n", "null\n"])
def test_a_file_with_no_settings_is_an_error(text: str) -> None:
    """Nearly always a file caught empty: as a reload, it would turn verification and
    every rule off; the running config stays instead."""
    with pytest.raises(ConfigError) as caught:
        load_text(text, "relay.yaml", {})
    assert str(caught.value) == "relay.yaml: the file holds no settings (is it empty?)"


def test_a_file_of_empty_sections_is_all_defaults() -> None:
    config = load_text("server:\n", "relay.yaml", {})
    assert config.server == ServerConfig()
    assert config.store == StoreConfig()
    assert config.store.retention_s == 7 * 86400.0
    assert config.rules == ()
    assert dict(config.destinations) == {}


def test_empty_sections_are_defaults() -> None:
    config = load_text("server:\nverify:\nrules:\n", "relay.yaml", {})
    assert config.server == ServerConfig()
    assert config.verify.allow_ips is None


@pytest.mark.parametrize("spelling", ["room_join", "room.join", "Room_Join"])
def test_event_spellings_normalise(spelling: str) -> None:
    text = (
        "destinations: { out: { type: console } }\n"
        f"rules: [ {{ when: {{ event: {spelling} }}, send_to: out }} ]"
    )
    rule = load_text(text, "relay.yaml", {}).rules[0]
    assert rule.when == AllCondition((GlobCondition("event", ("room.join",)),))
    assert rule.name == "rules[0]"


def test_full_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FULL_ENV.items():
        monkeypatch.setenv(name, value)
    config = load(f"{TESTDATA}/full.yaml")
    assert config.source == f"{TESTDATA}/full.yaml"
    assert config.server == ServerConfig(
        host="0.0.0.0",
        port=9090,
        path="/hooks/bithuman",
        max_body_bytes=2048,
        tls=TlsConfig("/etc/relay/tls.crt", "/etc/relay/tls.key"),
        shutdown_timeout_s=0.5,
    )
    verify = config.verify
    assert verify.secrets == (Secret("s3cret-signing"), Secret("old-secret"))
    assert verify.signature_header == "X-Signature"
    assert dict(verify.headers) == {"Authorization": Secret("Bearer s3cret-relay-token")}
    assert verify.allow_ips == (
        ipaddress.ip_network("52.14.127.0/24"),
        ipaddress.ip_network("18.216.155.7/32"),
    )
    assert verify.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1"),
    )
    assert verify.max_age_s == 300.0
    assert verify.account == AccountVerifyConfig(
        secrets=(Secret("whsec_s3cret-account"),), max_age_s=600.0
    )
    assert config.store == StoreConfig("sqlite:/var/lib/relay/relay.db", retention_s=30 * 86400.0)
    assert config.delivery == DeliveryConfig(3, BackoffConfig(2.0, 3600.0), 43200.0)
    assert dict(config.destinations) == {
        "ops-slack": SlackDestination(
            "ops-slack", webhook_url=Secret(FULL_ENV["SLACK_WEBHOOK_URL"])
        ),
        "support": SlackDestination(
            "support",
            token=Secret("xoxb-s3cret-bot"),
            channel="#support",
            api_url="http://127.0.0.1:9999/api/",
        ),
        "community": DiscordDestination("community", Secret(FULL_ENV["DISCORD_WEBHOOK_URL"])),
        "mail": EmailDestination(
            "mail",
            smtp=SmtpConfig(
                "smtp.example.com", 465, "tls", "relay", Secret("s3cret-smtp"), timeout_s=60.0
            ),
            from_addr="relay <relay@example.com>",
            to=("support@example.com", "Ops <ops@example.com>"),
        ),
        "plain-mail": EmailDestination(
            "plain-mail",
            smtp=SmtpConfig("localhost"),
            from_addr="relay@example.com",
            to=("ops@example.com",),
        ),
        "stdout": ConsoleDestination("stdout"),
    }
    assert config.rules[0] == Rule(
        "joins",
        AllCondition((GlobCondition("event", ("room.join", "room.leave")),)),
        ("ops-slack",),
    )
    assert config.rules[1] == Rule(
        name="refunds",
        when=AllCondition(
            (
                GlobCondition("event", ("chat.push",)),
                GlobCondition("agent", ("agent_abc123", "agent_sales_*")),
                GlobCondition("role", ("user",)),
                GlobCondition("room", ("room-*",)),
                GlobCondition("session", ("sess_1",)),
                MessageCondition(contains_any=("refund", "cancel my order")),
            )
        ),
        send_to=("mail", "support"),
        template="refund",
        stop=True,
    )
    assert config.rules[2] == Rule(
        "angry",
        AllCondition(
            (
                AnyCondition(
                    (
                        AllCondition(
                            (MessageCondition(regex=re.compile(r"(?i)\b(terrible|worst)\b")),)
                        ),
                        AllCondition((FieldCondition("data.participant_count", "gte", 10),)),
                    )
                ),
                NotCondition(AllCondition((GlobCondition("agent", ("agent_test_*",)),))),
            )
        ),
        ("community",),
    )
    assert config.rules[3] == Rule(
        "rules[3]",
        AllCondition(
            (
                AllCondition(
                    (
                        AllCondition(
                            (
                                MessageCondition(
                                    contains="Price",
                                    contains_all=("a", "b"),
                                    equals="Price ab",
                                    case_sensitive=True,
                                ),
                            )
                        ),
                        AllCondition((FieldCondition("data.tier", "in", ("gold", 2, True)),)),
                        AllCondition((FieldCondition("data.vip", "exists", True),)),
                        AllCondition((FieldCondition("data.score", "lt", 0.5),)),
                        AllCondition((FieldCondition("data.name", "regex", re.compile("^A")),)),
                        AllCondition((FieldCondition("data.kind", "equals", None),)),
                    )
                ),
            )
        ),
        ("stdout",),
    )
    assert config.rules[4] == Rule("everything", AllCondition(()), ("stdout", "plain-mail"))
    assert list(config.templates) == ["refund", "short"]
    refund = config.templates["refund"]
    context = {"agent_id": "agent_1", "data": {"message": "hi", "session_id": "s1"}}
    assert refund.title is not None and refund.text is not None
    assert render(refund.title, context) == "Refund request from agent_1"
    assert render(refund.text, context) == "hi (session s1) costs ${PRICE}"
    assert config.templates["short"].title is None

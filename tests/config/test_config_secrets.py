"""relay.config: a secret mistyped in relay.yaml is rejected by an error that names its
line and key path, and shows no part of the secret (YAML tags and aliases, a password
holding a raw URL delimiter)."""

from __future__ import annotations

import pytest

from relay.config import ConfigError, load_text


def load_error(text: str) -> str:
    """Load config text that must fail and return the full error text."""
    with pytest.raises(ConfigError) as caught:
        load_text(text, "relay.yaml", {})
    return str(caught.value)


def assert_hidden(secret: str, text: str) -> None:
    """Neither the secret nor any 6-character piece of it is in the text."""
    pieces = [secret[start : start + 6] for start in range(len(secret) - 5)]
    assert [piece for piece in pieces if piece in text] == [], text


TAGGED = "expected a string, got a value with a YAML tag (quote the value if it starts with '!')"


@pytest.mark.parametrize(
    ("text", "secret", "error"),
    [
        (
            "console:\n  password: !C0nsolePw\n",
            "C0nsolePw",
            f"relay.yaml:2: console.password: {TAGGED}",
        ),
        (
            "console:\n  password: !!C0nsolePw\n",
            "C0nsolePw",
            f"relay.yaml:2: console.password: {TAGGED}",
        ),
        (
            "verify:\n  secrets:\n    - !Xk9whsekritvalue\n",
            "Xk9whsekritvalue",
            f"relay.yaml:3: verify.secrets[0]: {TAGGED}",
        ),
        (
            "destinations:\n"
            "  crm:\n"
            "    type: webhook\n"
            "    url: https://crm.example.com/hook\n"
            "    headers:\n"
            "      Authorization: !sk_live_51Habc\n"
            "rules: [{ name: all, send_to: [crm] }]\n",
            "sk_live_51Habc",
            f"relay.yaml:6: destinations.crm.headers.Authorization: {TAGGED}",
        ),
    ],
)
def test_a_secret_read_as_a_yaml_tag_is_not_shown(text: str, secret: str, error: str) -> None:
    shown = load_error(text)

    assert shown == error
    assert_hidden(secret, shown)


@pytest.mark.parametrize(
    ("text", "secret", "error"),
    [
        (
            "console:\n  password: *C0nsolePw\n",
            "C0nsolePw",
            "relay.yaml:2: invalid YAML: an undefined alias (a value starting with '*'; quote it)",
        ),
        (
            "verify:\n  secrets:\n    - *Tr0ub4dor3x\n",
            "Tr0ub4dor3x",
            "relay.yaml:3: invalid YAML: an undefined alias (a value starting with '*'; quote it)",
        ),
        (
            "console:\n  password: !Pw9!xyzsecret\n",
            "Pw9!xyzsecret",
            "relay.yaml:2: invalid YAML: an undefined tag handle"
            " (a value starting with '!'; quote it)",
        ),
        (
            "console:\n  username: &C0nsolePw admin\n  password: &C0nsolePw pw\n",
            "C0nsolePw",
            "relay.yaml:3: invalid YAML: a duplicate anchor (a value starting with '&'; quote it)",
        ),
    ],
)
def test_a_secret_read_as_a_yaml_alias_or_handle_is_not_shown(
    text: str, secret: str, error: str
) -> None:
    shown = load_error(text)

    assert shown == error
    assert_hidden(secret, shown)


def test_a_yaml_syntax_error_still_names_its_character() -> None:
    # One character is what PyYAML quotes, and what the reader needs to find the mistake.
    assert load_error("console:\n  password: @C0nsolePw\n") == (
        "relay.yaml:2: invalid YAML: found character '@' that cannot start any token"
    )


REDIS_SLASH = "store.url: the Redis URL's password holds a raw '/', '?' or '#':"
REDIS_ENCODE = " percent-encode it (%2F, %3F, %23; value not shown)"


@pytest.mark.parametrize("delimiter", ["/", "?", "#"])
def test_a_redis_password_holding_a_url_delimiter_is_not_shown(delimiter: str) -> None:
    password = f"123{delimiter}Sekr3tTail"
    shown = load_error(f"store:\n  url: redis://default:{password}@redis:6379/0\n")

    assert shown == f"relay.yaml:2: {REDIS_SLASH}{REDIS_ENCODE}"
    assert_hidden(password, shown)
    assert_hidden("Sekr3tTail@redis", shown)


def test_a_percent_encoded_redis_password_loads() -> None:
    url = "redis://default:123%2FSekr3tTail@redis:6379/0"
    assert load_text(f"store:\n  url: {url}\n", "relay.yaml", {}).store.url == url


def postgres(dsn: str) -> str:
    return (
        "destinations:\n"
        "  db:\n"
        "    type: postgres\n"
        f'    dsn: "{dsn}"\n'
        "rules: [{ name: all, send_to: [db] }]\n"
    )


PG_SLASH = (
    "relay.yaml:4: destinations.db.dsn: its password holds a /: percent-encode it"
    " (/ is %2F, @ is %40; value not shown)"
)


@pytest.mark.parametrize(
    ("dsn", "password"),
    [
        ("postgresql://relay:Xy9/kQ2+Sekrit@db.internal:5432/bithuman", "Xy9/kQ2+Sekrit"),
        ("postgres://relay:Xy9/kQ2+Sekrit@db.internal/bithuman?sslmode=require", "Xy9/kQ2+Sekrit"),
        ("postgresql://relay:p@ssw/ord-Sekrit@db.internal/bithuman", "p@ssw/ord-Sekrit"),
        ("postgresql://relay:Xy9kQ2Sekrit/@db.internal/bithuman", "Xy9kQ2Sekrit/"),
    ],
)
def test_a_postgres_password_holding_a_slash_is_not_shown(dsn: str, password: str) -> None:
    # libpq reads the text after the / as the database name, which `relay route` shows.
    shown = load_error(postgres(dsn))

    assert shown == PG_SLASH
    assert_hidden(password, shown)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://relay:Xy9%2FkQ2+Sekrit@db.internal:5432/bithuman",
        # libpq ends the userinfo at its @, not at a ? or #: these passwords read right.
        "postgresql://relay:Xy9?kQ2Sekrit@db.internal:5432/bithuman",
        "postgresql://relay:Xy9#kQ2Sekrit@db.internal:5432/bithuman",
        # An @ in the query string is a parameter's value, not a password's end.
        "postgresql://db.internal:5432/bithuman?password=a/b@c",
        "postgresql://relay@db.internal/bithuman?application_name=a@b",
        "host=db.internal dbname=bithuman user=relay password=Xy9/kQ2@Sekrit",
    ],
)
def test_a_postgres_dsn_libpq_reads_right_loads(dsn: str) -> None:
    config = load_text(postgres(dsn), "relay.yaml", {})
    assert config.destinations["db"].type == "postgres"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('console:\n  password: "   "\n', "relay.yaml:2: console.password"),
        ('verify:\n  secrets: ["\\t "]\n', "relay.yaml:2: verify.secrets[0]"),
    ],
)
def test_a_secret_of_only_whitespace_is_refused(text: str, error: str) -> None:
    assert load_error(text) == f"{error}: must not be only whitespace (value not shown)"


@pytest.mark.parametrize(
    "tagged", ["!!int Sekrit-new-value", "!!float Sekrit", "!!bool Sekritly", "!!int ''"]
)
def test_a_standard_tag_that_cannot_read_its_value_is_an_error_not_a_crash(tagged: str) -> None:
    shown = load_error(f"verify:\n  headers:\n    X-Webhook-Secret: {tagged}\n")
    assert shown == (
        "relay.yaml:3: verify.headers.X-Webhook-Secret: expected a string,"
        " got a value its YAML tag cannot read"
    )
    assert_hidden("Sekrit-new-value", shown)

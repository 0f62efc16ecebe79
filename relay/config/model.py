"""The validated, typed form of relay.yaml. Built by the loader, read everywhere else."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jinja2

from relay.secrets import Secret, without_password

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str
    key_file: str


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/webhook"
    max_body_bytes: int = 1024 * 1024
    tls: TlsConfig | None = None
    shutdown_timeout_s: float = 10.0
    # After SIGTERM, how long relay goes on as usual, /readyz answering 503, before it
    # stops: long enough for a load balancer's health check to send events elsewhere.
    drain_grace_s: float = 0.0
    read_timeout_s: float = 10.0  # for a request's headers, and again for its body
    max_connections: int = 1000  # open connections; more are answered 503 at once
    # Processes serving the port together (relay/workers.py); max_connections is each one's.
    workers: int = 1


@dataclass(frozen=True)
class AccountVerifyConfig:
    """`verify.account`: account webhooks (SPEC 1.2), signed over timestamp and body."""

    secrets: tuple[Secret, ...] = ()  # the whsec_… values; empty: account webhooks get 401
    max_age_s: float = 300.0  # the replay window


@dataclass(frozen=True)
class VerifyConfig:
    secrets: tuple[Secret, ...] = ()
    signature_header: str = "X-bitHuman-Signature"
    headers: Mapping[str, Secret] = field(default_factory=dict)
    allow_ips: tuple[IPNetwork, ...] | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    max_age_s: float = 0.0
    account: AccountVerifyConfig = field(default_factory=AccountVerifyConfig)

    @property
    def authenticates_sessions(self) -> bool:
        """Whether session events must prove anything: required headers or a signature."""
        return bool(self.headers or self.secrets)


@dataclass(frozen=True)
class StoreConfig:
    url: str = "sqlite:relay-data/relay.db"  # a Redis URL may hold a password: see __repr__
    # How long finished deliveries and their events are kept (0: for ever).
    retention_s: float = 7 * 86400.0

    def __repr__(self) -> str:
        return f"StoreConfig(url={without_password(self.url)!r}, retention_s={self.retention_s!r})"


@dataclass(frozen=True)
class BackoffConfig:
    first_s: float = 1.0
    max_s: float = 600.0


@dataclass(frozen=True)
class DeliveryConfig:
    max_attempts: int = 8
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    dedupe_window_s: float = 86400.0
    timeout_s: float = 30.0
    concurrency: int = 4  # sends in flight per destination, each of a different session
    # How long a claim on a delivery lasts unless renewed: when a relay process dies, the
    # others send what it held once this has passed.
    lease_s: float = 10.0


@dataclass(frozen=True)
class ConversationsConfig:
    """`conversations`: relay watches each conversation and raises events (SPEC 4.4)."""

    # A visitor message with no agent message after it for this long raises
    # conversation.unanswered; 0: never.
    unanswered_after_s: float = 120.0
    # No event of the conversation for this long raises conversation.ended; 0: never.
    ended_after_s: float = 600.0


@dataclass(frozen=True)
class ConsoleConfig:
    """`console`: the web console (SPEC 8), on a listener of its own, behind Basic auth."""

    password: Secret
    host: str = "127.0.0.1"
    port: int = 8081
    username: str = "relay"
    history_s: float = 30 * 86400.0  # how long the activity figures are kept (SPEC 8.1)


# Destinations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsoleDestination:
    name: str
    type: Literal["console"] = "console"


@dataclass(frozen=True)
class SlackDestination:
    name: str
    webhook_url: Secret | None = None
    token: Secret | None = None
    channel: str | None = None
    api_url: str = "https://slack.com/api/"
    max_per_second: float = 1.0  # Slack's guidance: about one message a second per channel
    type: Literal["slack"] = "slack"


@dataclass(frozen=True)
class DiscordDestination:
    name: str
    webhook_url: Secret
    forum: bool = False  # a forum channel: every post is a thread (thread_name, thread_id)
    type: Literal["discord"] = "discord"


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 587
    tls: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: Secret | None = None
    timeout_s: float = 30.0


@dataclass(frozen=True)
class EmailDestination:
    name: str
    smtp: SmtpConfig
    from_addr: str
    to: tuple[str, ...]
    type: Literal["email"] = "email"


@dataclass(frozen=True)
class WebhookDestination:
    """Any HTTP endpoint (a CRM, a data loader): the event, signed the Standard Webhooks way."""

    name: str
    url: Secret  # a hook URL often carries a token in its path or query
    secret: Secret | None = None  # whsec_…: sign each request (webhook-signature)
    headers: Mapping[str, Secret] = field(default_factory=dict)  # values are credentials
    body: jinja2.Template | None = None  # renders JSON; None: the event as received
    type: Literal["webhook"] = "webhook"


@dataclass(frozen=True)
class TeamsDestination:
    """A Microsoft Teams Workflows webhook: one message carrying an Adaptive Card."""

    name: str
    webhook_url: Secret  # the Workflows URL carries its signature (sig=…) in the query
    type: Literal["teams"] = "teams"


# What a `columns` entry may take besides a dotted path into the event (SPEC 4.3).
COLUMN_VALUES = ("event_id", "event_type", "agent_id", "timestamp", "received_at", "payload")


@dataclass(frozen=True)
class PostgresDestination:
    """Log each event as a row in a PostgreSQL table (SPEC 4.3)."""

    name: str
    dsn: Secret  # holds the password
    table: tuple[str, ...] = ("relay_events",)  # (name,) or (schema, name)
    # Column -> what goes in it (one of COLUMN_VALUES or a dotted path); None: relay's
    # own table, created when absent.
    columns: Mapping[str, str] | None = None
    type: Literal["postgres"] = "postgres"


Destination = (
    ConsoleDestination
    | SlackDestination
    | DiscordDestination
    | EmailDestination
    | WebhookDestination
    | TeamsDestination
    | PostgresDestination
)


# Rule conditions: a small typed tree that relay.rules evaluates --------------------------

GlobKey = Literal["event", "agent", "role", "room", "session"]


@dataclass(frozen=True)
class GlobCondition:
    """`event`, `agent`, `role`, `room` or `session`: any of the patterns, `*` globs."""

    key: GlobKey
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class MessageCondition:
    """`message`: every test given must hold on `data.message`."""

    contains: str | None = None
    contains_any: tuple[str, ...] | None = None
    contains_all: tuple[str, ...] | None = None
    regex: re.Pattern[str] | None = None
    equals: str | None = None
    case_sensitive: bool = False


FieldOp = Literal["equals", "in", "regex", "exists", "gt", "gte", "lt", "lte"]


@dataclass(frozen=True)
class FieldCondition:
    """`field`: one test on the value at a dotted path into the event."""

    path: str
    op: FieldOp
    value: Any  # a compiled pattern for `regex`, a tuple for `in`, a bool for `exists`


@dataclass(frozen=True)
class AllCondition:
    """Every condition holds; a `when` mapping is one of these, and so is an empty `when`."""

    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyCondition:
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class NotCondition:
    condition: Condition


Condition = (
    GlobCondition | MessageCondition | FieldCondition | AllCondition | AnyCondition | NotCondition
)


@dataclass(frozen=True)
class Rule:
    name: str
    when: AllCondition
    send_to: tuple[str, ...]
    template: str | None = None
    stop: bool = False
    thread: Literal["session"] | None = None  # one thread per conversation and destination
    broadcast: bool = False  # with thread: a reply is also shown in the channel
    # One notification per conversation, this long after its first event (SPEC 4.2).
    digest_s: float | None = None


@dataclass(frozen=True)
class Template:
    """A rule's title and text, compiled at load by relay.templates."""

    name: str
    title: jinja2.Template | None
    text: jinja2.Template | None


@dataclass(frozen=True)
class Config:
    source: str
    server: ServerConfig = field(default_factory=ServerConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    destinations: Mapping[str, Destination] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    templates: Mapping[str, Template] = field(default_factory=dict)
    conversations: ConversationsConfig | None = None  # None: no signals are raised
    console: ConsoleConfig | None = None  # None: no console listener
    # Each rule by its name (names are unique): a delivery names the rule that decided it.
    rules_by_name: Mapping[str, Rule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {rule.name: rule for rule in self.rules}
        object.__setattr__(self, "rules_by_name", by_name)  # the dataclass is frozen

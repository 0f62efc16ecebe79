"""A fake Teams Workflows trigger on 127.0.0.1: records what it receives, answers from a script.

The real trigger ("When a Teams webhook request is received") answers 202 Accepted with an
empty body as soon as it has queued the flow run; the flow posts the card to the channel
afterwards, so its own failures never reach the sender.
"""

from __future__ import annotations

import functools
import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from jsonschema import validators  # type: ignore[import-untyped]

from tests.support.local_server import serve_locally

# Shaped like a Workflows URL: the query's sig= is the credential.
WORKFLOW_PATH = "/workflows/0f1e2d3c4b5a/triggers/manual/paths/invoke"
SIGNATURE = "tEaMsSiGnAtUrE-0123456789_abcdefXYZ"
QUERY = f"api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={SIGNATURE}"


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


ACCEPTED = Reply(202)


@dataclass(frozen=True)
class Received:
    """One request as the fake saw it."""

    path_qs: str  # the path and query exactly as sent, still percent-encoded
    headers: dict[str, str]
    raw: bytes
    body: Any  # the parsed JSON, or None when the body was not JSON
    status: int  # what the fake answered

    def card(self) -> dict[str, Any]:
        """Return the Adaptive Card the message carries."""
        [attachment] = self.body["attachments"]
        return dict(attachment["content"])


class FakeTeams:
    """POST to any path: the script's next answer, else 202 Accepted with an empty body."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._script: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> FakeTeams:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await serve_locally(app)
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WORKFLOW_PATH}?{QUERY}"

    def script(self, *answers: int | Reply) -> None:
        """Queue answers for the next requests; a bare status answers with an empty body."""
        self._script.extend(a if isinstance(a, Reply) else Reply(a) for a in answers)

    @property
    def delivered(self) -> list[Received]:
        """The requests answered with a 2xx."""
        return [r for r in self.requests if 200 <= r.status < 300]

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        reply = self._script.popleft() if self._script else ACCEPTED
        self.requests.append(
            Received(request.raw_path, dict(request.headers), raw, body, reply.status)
        )
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)


# Microsoft's published Adaptive Card schema (MIT), kept in tests/schemas so a clone of relay
# tests on its own.
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas/adaptive-card-1.5.schema.json"


@functools.cache
def card_validator() -> Any:
    """The Adaptive Card 1.5 schema's validator (the draft its $schema names), formats checked."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator_class = validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def card_errors(card: Any) -> list[str]:
    """Return why a card does not match the schema, as "path: reason"; [] when it does.

    The schema picks each element's definition by anyOf, whose own message only says "not
    valid under any of the given schemas": the reasons are those of the branch for the
    element's `type`.
    """
    return sorted({r for error in card_validator().iter_errors(card) for r in _reasons(error)})


def _reasons(error: Any) -> list[str]:
    if not error.context:
        return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"]
    branches: dict[Any, list[Any]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    typed = [subs for subs in branches.values() if not any(map(_other_type, subs))]
    return [r for subs in typed or branches.values() for sub in subs for r in _reasons(sub)]


def _other_type(error: Any) -> bool:
    """The error says the element is of another `type` than this branch's."""
    return bool(error.validator == "enum" and list(error.absolute_path)[-1:] == ["type"])

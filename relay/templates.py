"""The sandboxed Jinja2 environment that renders rule templates."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Sandboxed because templates see untrusted event content; strict so a typo in a
# template is an error instead of an empty string. Autoescape is off: each destination
# escapes the rendered text for its own markup (Slack mrkdwn, HTML, Discord markdown).
ENVIRONMENT = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=False,
)


def _undefined(value: object) -> object:
    """Let `tojson` fail on a missing name as any other use does, naming it (json's own
    error would say only that StrictUndefined is not serializable)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# NaN and Infinity are not JSON (an event may carry 1e400, which Python reads as inf).
ENVIRONMENT.policies["json.dumps_kwargs"] = {
    "sort_keys": True,
    "default": _undefined,
    "allow_nan": False,
}


def compile_template(source: str) -> jinja2.Template:
    """Compile a template, raising jinja2.TemplateSyntaxError with its line on error."""
    return ENVIRONMENT.from_string(source)


def unknown_names(source: str, known: Collection[str]) -> list[str]:
    """Return the top-level names a template reads that are neither in `known` nor
    Jinja's own (range, loop…) nor set by the template itself, in sorted order."""
    read = jinja2.meta.find_undeclared_variables(ENVIRONMENT.parse(source))
    return sorted(read - set(known) - set(ENVIRONMENT.globals))


def render(template: jinja2.Template, context: dict[str, Any]) -> str:
    """Render a template against an event context."""
    return template.render(context)


class TemplateFailed(Exception):
    """A template could not render for an event (a missing name, a bad value)."""


class NotJson(TemplateFailed):
    """A template that must give JSON rendered something else."""


# What rendering can raise on one event's values, besides Jinja's own errors: the sandbox
# lets a template compute, and a computation can fail.
RENDER_ERRORS = (
    jinja2.TemplateError,
    TypeError,
    ValueError,
    LookupError,
    ArithmeticError,
    RecursionError,  # a macro that calls itself
)


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def render_json(template: jinja2.Template, context: dict[str, Any]) -> bytes:
    """Render a template that must give JSON; raise TemplateFailed or NotJson saying why."""
    try:
        text = render(template, context)
        body = text.encode()  # a lone surrogate in an event's text cannot be sent
    except RENDER_ERRORS as exc:
        raise TemplateFailed(f"failed: {exc}") from None
    try:
        json.loads(text, parse_constant=_not_json)
    except ValueError as exc:
        # Nearly always a value spliced in as text: a quote or newline in it breaks the JSON.
        raise NotJson(
            f"did not render valid JSON: {exc} (write {{{{ value | tojson }}}} to put a value"
            " in JSON)"
        ) from None
    return body

"""The sandboxed Jinja2 environment that renders rule templates."""

from __future__ import annotations

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

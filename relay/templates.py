"""The sandboxed Jinja2 environment that renders rule templates."""

from __future__ import annotations

from typing import Any

import jinja2
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


def render(template: jinja2.Template, context: dict[str, Any]) -> str:
    """Render a template against an event context."""
    return template.render(context)

"""Read a Jinja template from relay.yaml: compiled, and its names checked, at load."""

from __future__ import annotations

import jinja2
import yaml

from relay.config.yamlnodes import Context, Invalid, did_you_mean, string
from relay.events import CONTEXT_NAMES
from relay.templates import compile_template, unknown_names


def template(ctx: Context, node: yaml.Node, path: str) -> jinja2.Template:
    """Read and compile a template; a syntax error or an unknown name is an error here."""
    source = string(ctx, node, path)
    try:
        compiled = compile_template(source)
    except jinja2.TemplateSyntaxError as exc:
        # A block scalar (`text: |`) starts on the line after its indicator.
        block = isinstance(node, yaml.ScalarNode) and node.style in ("|", ">")
        offset = (exc.lineno or 1) - 1 + (1 if block else 0)
        ctx.error(node, path, f"template error: {exc.message}", offset)
        raise Invalid from None
    # A misspelt name would fail every event at delivery: caught here instead. (What is
    # inside `data` depends on the event, so a missing data field can only show then.)
    unknown = unknown_names(source, CONTEXT_NAMES)
    if unknown:
        name = unknown[0]
        ctx.error(
            node,
            path,
            f'template error: unknown name "{name}"{did_you_mean(name, CONTEXT_NAMES)};'
            f" a template sees {', '.join(sorted(CONTEXT_NAMES))}",
        )
        raise Invalid from None
    return compiled

"""Read a postgres destination (SPEC 4.3): its DSN, table and columns, checked at load."""

from __future__ import annotations

import re

import yaml

from relay.config.model import COLUMN_VALUES, PostgresDestination
from relay.config.yamlnodes import Context, Invalid, Section, nonempty_string, secret
from relay.secrets import Secret

# PostgreSQL's plain identifiers, as SPEC 4.3 allows them; longer ones it would cut.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_IDENTIFIER = 63
DEFAULT_TABLE: tuple[str, ...] = ("relay_events",)


def read_postgres(section: Section, name: str) -> PostgresDestination:
    """Build a postgres destination from its section; every problem is reported."""
    dsn = section.require("dsn", _dsn)
    table = section.get("table", _table, DEFAULT_TABLE)
    columns = section.opt("columns", _columns)
    if dsn is None:
        raise Invalid
    return PostgresDestination(name, dsn=dsn, table=table, columns=columns)


def _folded(name: str) -> str:
    """Read a name as PostgreSQL reads one unquoted (`MyEvents` is `myevents`): it is then
    the table a user made with the same words in SQL, though relay quotes it."""
    return name.lower()


def identifier_problem(value: str) -> str | None:
    """Say why a name is not a plain identifier; None when it is one."""
    if len(value) > MAX_IDENTIFIER:
        return f"is longer than {MAX_IDENTIFIER} characters"
    if _IDENTIFIER.fullmatch(value) is None:
        return "is not a plain identifier (letters, digits and _, not starting with a digit)"
    return None


def _dsn(ctx: Context, node: yaml.Node, path: str) -> Secret:
    """Read a libpq connection string or URL; an error never shows it (it holds a password)."""
    value = secret(ctx, node, path)
    from psycopg.conninfo import conninfo_to_dict  # only configs with a database pay for it

    try:
        info = conninfo_to_dict(value.reveal())
    except Exception:  # psycopg.ProgrammingError; its text may quote the string
        ctx.fail(
            node,
            path,
            "is not a PostgreSQL connection string (postgresql://user:password@host:5432/db"
            " or host=… dbname=…; value not shown: it holds a password)",
        )
    if "@" in str(info.get("host", "")):
        # libpq would take the rest of the password for the host, and say it in errors.
        ctx.fail(node, path, "its password holds an @: write it %40 (value not shown)")
    if _password_holds_a_slash(value.reveal()):
        # libpq would end the host at the /, and take the rest of the password for the
        # database's name, which `relay route` and errors show.
        ctx.fail(
            node,
            path,
            "its password holds a /: percent-encode it (/ is %2F, @ is %40; value not shown)",
        )
    return value


def _password_holds_a_slash(dsn: str) -> bool:
    """Tell whether a postgresql:// URL's database name (after its first /, up to the
    query) holds an @: the end of a password, cut at a raw / in it. libpq ends the
    userinfo at its @ and not at a ? or #, so those read right."""
    scheme, separator, rest = dsn.partition("://")
    if not separator or scheme not in ("postgresql", "postgres"):
        return False  # key=value form: the password is its own value
    return "@" in rest.partition("/")[2].partition("?")[0]


def _table(ctx: Context, node: yaml.Node, path: str) -> tuple[str, ...]:
    value = nonempty_string(ctx, node, path)
    parts = tuple(_folded(part) for part in value.split("."))
    if len(parts) > 2:
        ctx.fail(node, path, f'"{value}": a table is "name" or "schema.name"')
    for part in parts:
        problem = identifier_problem(part)
        if problem is not None:
            ctx.fail(node, path, f'"{value}": "{part}" {problem}')
    return parts


def _columns(ctx: Context, node: yaml.Node, path: str) -> dict[str, str]:
    section = Section(ctx, node, path, None)
    columns: dict[str, str] = {}
    for column, value_node, column_path in section.entries():
        problem = identifier_problem(column)
        if problem is not None:
            ctx.error(value_node, column_path, f'column "{column}" {problem}')
            continue
        value = section.opt(column, _column_value)
        if value is not None:
            columns[_folded(column)] = value
    if next(section.entries(), None) is None:
        section.error("must name at least one column")
    elif "event_id" not in columns.values() and not section.failed:
        section.error(
            "no column takes event_id: relay needs one, with a unique index, so a delivery"
            " repeated after a crash inserts nothing more (add e.g. delivery_key: event_id)"
        )
    section.done()
    return columns


def _column_value(ctx: Context, node: yaml.Node, path: str) -> str:
    """Read what a column takes: one of relay's values, or a dotted path into the event."""
    value = nonempty_string(ctx, node, path)
    if value in COLUMN_VALUES:
        return value
    if not all(part.strip() == part and part for part in value.split(".")):
        ctx.fail(
            node,
            path,
            f'"{value}" is neither a dotted path into the event (data.session_id) nor one of'
            f" {', '.join(COLUMN_VALUES)}",
        )
    return value

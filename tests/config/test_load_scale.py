"""relay.config at scale: libyaml reads as PyYAML does, the collector is left as found,
and hints for unknown names cost a bounded number of comparisons."""

from __future__ import annotations

import contextlib
import gc
from pathlib import Path

import pytest
import yaml

from relay.config import ConfigError, load_text
from relay.config.loader import HINT_BUDGET

REPO_ROOT = Path(__file__).resolve().parents[2]
FILES = [
    *sorted((REPO_ROOT / "config" / "testdata").glob("*.yaml")),
    REPO_ROOT / "relay.yaml.example",
]

Shape = tuple[object, ...]


def shape(node: yaml.Node) -> Shape:
    """Return what the loader reads of a node: its kind, tag, line and value, all the way down."""
    head = (type(node).__name__, node.tag, node.start_mark.line)
    if isinstance(node, yaml.ScalarNode):
        return (*head, node.value)
    if isinstance(node, yaml.SequenceNode):
        return (*head, tuple(shape(item) for item in node.value))
    return (*head, tuple((shape(key), shape(value)) for key, value in node.value))


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")
@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_libyaml_composes_what_the_python_parser_does(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    try:
        expected = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        # Not YAML: libyaml refuses it too, and the loader then words the error with the
        # Python parser (tests/config say what it says).
        with pytest.raises(yaml.YAMLError):
            yaml.compose(text, Loader=yaml.CSafeLoader)
        return
    got = yaml.compose(text, Loader=yaml.CSafeLoader)
    assert expected is not None
    assert got is not None
    assert shape(got) == shape(expected)


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("text", ["rules: []\n", "rules: [ { send_to: [nowhere] } ]\n"])
def test_a_load_leaves_the_collector_as_it_found_it(enabled: bool, text: str) -> None:
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        with contextlib.suppress(ConfigError):
            load_text(text, "relay.yaml", {})
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


def many_rules(count: int, send_to: str) -> str:
    destinations = "".join(f"  customer-{i:04d}: {{ type: console }}\n" for i in range(count))
    rules = "".join(
        f"  - {{ name: r{i}, send_to: [ {send_to.format(i=i)} ] }}\n" for i in range(count)
    )
    return f"destinations:\n{destinations}rules:\n{rules}"


def test_a_name_missing_from_every_rule_is_hinted_in_each() -> None:
    # A destination renamed, every rule still naming it: one lookup, every error hinted.
    with pytest.raises(ConfigError) as caught:
        load_text(many_rules(2000, "customer-0001x"), "relay.yaml", {})
    assert len(caught.value.issues) == 2000
    for issue in caught.value.issues:
        assert issue.message.endswith('"customer-0001x" (did you mean "customer-0001"?)')


def test_hints_for_many_unknown_names_stay_within_the_budget() -> None:
    # Each rule names a destination of its own, misspelled: hints for all of them would be
    # rules x destinations comparisons; the first get theirs, the rest are named plainly.
    count = 1000
    with pytest.raises(ConfigError) as caught:
        load_text(many_rules(count, "custome-{i:04d}"), "relay.yaml", {})
    issues = caught.value.issues
    hinted = [issue for issue in issues if "did you mean" in issue.message]
    assert len(issues) == count
    assert len(hinted) == HINT_BUDGET // count
    assert hinted[0].message == (
        'unknown destination "custome-0000" (did you mean "customer-0000"?)'
    )
    assert issues[-1].message == 'unknown destination "custome-0999"'

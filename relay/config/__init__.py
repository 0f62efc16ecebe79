"""relay.yaml: load(path) -> Config, or ConfigError naming file, line and key for each problem."""

from relay.config.errors import ConfigError, ConfigIssue
from relay.config.loader import load, load_text
from relay.config.model import Config

__all__ = ["Config", "ConfigError", "ConfigIssue", "load", "load_text"]

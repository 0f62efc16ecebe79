"""relay: a self-hosted webhook relay for bitHuman avatar events."""

__version__ = "0.1.0"

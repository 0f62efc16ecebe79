"""The console's activity figures (SPEC 8.1): counters kept as events are accepted."""

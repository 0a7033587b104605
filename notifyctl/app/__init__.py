"""Use cases: what a command does, as a library call (no printing)."""

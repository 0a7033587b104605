"""The HTTP clients providers send through."""

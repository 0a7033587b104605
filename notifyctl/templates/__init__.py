"""Sandboxed Jinja2 templates: parts per channel, locales, versions."""

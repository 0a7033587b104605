"""notifyctl: multi-channel notifications from the command line, without losing or repeating any."""

__version__ = "0.1.0"

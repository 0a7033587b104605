"""Settings of `notifyctl serve` (the `[server]` table of notifyctl.toml)."""

from __future__ import annotations

from notifyctl.settings import AWS_SNS_HOSTS, DEFAULT_HELP_TEXT, ServerSettings, Settings

__all__ = ["AWS_SNS_HOSTS", "DEFAULT_HELP_TEXT", "ServerSettings", "server_settings"]


def server_settings(settings: Settings) -> ServerSettings:
    """The `[server]` table of the configuration."""
    return settings.server

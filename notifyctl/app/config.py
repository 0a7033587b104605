"""The effective settings, key by key, with where each came from and every secret masked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from notifyctl.security.redaction import MASK, configured_secrets, is_secret_key, redact_secrets
from notifyctl.settings import Settings

DEFAULT = "default"
FOUND_BY = {
    "--config": "the --config option",
    "NOTIFYCTL_CONFIG": "environment NOTIFYCTL_CONFIG",
    "working directory": "notifyctl.toml in the working directory or its nearest parent with one",
    "user config": "the user's config directory ($XDG_CONFIG_HOME/notifyctl)",
    "none": "no notifyctl.toml found: the embedded defaults",
}


@dataclass(frozen=True)
class Setting:
    """One effective setting: its dotted key, its value (secrets masked) and its origin."""

    key: str
    value: Any
    origin: str


def _flatten(prefix: str, node: Any, out: dict[str, Any]) -> None:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), value, out)
    else:
        out[prefix] = node


def _masked(key: str, value: Any, secrets: list[str]) -> Any:
    """A secret-named key's value as ***; any other text scrubbed of secret shapes and values."""
    if is_secret_key(key.rpartition(".")[2]) and value not in (None, "", []):
        return [MASK] * len(value) if isinstance(value, list) else MASK
    if isinstance(value, str):
        return redact_secrets(value, secrets)
    if isinstance(value, list):
        return [redact_secrets(v, secrets) if isinstance(v, str) else v for v in value]
    return value


def _origin(key: str, origins: dict[str, str]) -> str:
    """The origin of `key`, or of the nearest enclosing key given as a whole (a table, a list)."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        found = origins.get(".".join(parts[:end]))
        if found is not None:
            return found
    return DEFAULT


def effective_settings(settings: Settings) -> list[Setting]:
    """Every setting as it applies, then the paths it resolves to (database, state directory)."""
    secrets = configured_secrets(settings)
    flat: dict[str, Any] = {}
    _flatten("", settings.model_dump(mode="json"), flat)
    origins = settings.origins
    shown = [Setting(key, _masked(key, value, secrets), _origin(key, origins)) for key, value in sorted(flat.items())]
    database_origin = _origin("database", origins)
    if database_origin == DEFAULT and settings.home_state_dir is not None:
        database_origin = "default for a configuration in the user's config directory ($XDG_STATE_HOME/notifyctl)"
    elif database_origin == DEFAULT:
        database_origin = "default (notifyctl.db next to the configuration, or in the working directory)"
    resolved = [
        Setting("(config file)", settings.source, FOUND_BY.get(settings.found_by, settings.found_by)),
        Setting("(database path)", str(settings.database_path), database_origin),
        Setting("(state directory)", str(settings.state_path), "next to the database"),
        Setting("(templates path)", str(settings.templates_path), _origin("templates_dir", origins)),
    ]
    return resolved + shown

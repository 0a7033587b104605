"""Turning an outbox row into a rendered Envelope for a provider."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

from notifyctl.errors import TemplateError
from notifyctl.models import Envelope, User, trusted
from notifyctl.security.unsubscribe import unsubscribe_url
from notifyctl.settings import Settings
from notifyctl.store.db import loads
from notifyctl.templates.store import TemplateStore
from notifyctl.templates.template import Template


class EnvelopeBuilder:
    def __init__(
        self,
        settings: Settings,
        templates: TemplateStore,
        run_data: dict[str, Any],
        allow_template_change: bool = False,
        *,
        unsubscribe_secret: str,
    ) -> None:
        """`unsubscribe_secret`: the installation's current secret (store/secrets.py), read once per engine."""
        self.settings = settings
        self.unsubscribe_secret = unsubscribe_secret
        self.public_url = settings.public_base_url
        self.templates = templates
        self.run_data = run_data
        self.allow_template_change = allow_template_change
        self._loaded: dict[str, Template] = {}
        self._reloaded: set[tuple[str, str]] = set()
        self._needs_unsubscribe: dict[tuple[str, str, str, str], bool] = {}
        self._now_second = -1
        self._now_text = ""

    def template(self, name: str, version: str) -> Template:
        """Loaded once per version: TemplateStore.get() re-checks the files, too slow per message. A row
        pinned to another version than the one cached (a long-lived `serve` run after an edit) reloads."""
        cached = self._loaded.get(name)
        if cached is None or (cached.version != version and (name, version) not in self._reloaded):
            self._reloaded.add((name, version))  # once: the files may simply not have that version any more
            cached = self._loaded[name] = self.templates.get(name)
        return cached

    def needs_unsubscribe(self, template: Template, channel: str, category: str) -> bool:
        """Whether the unsubscribe link (an HMAC per message) is needed: by the template or a header."""
        key = (template.name, template.version, channel, category)
        needed = self._needs_unsubscribe.get(key)
        if needed is None:
            needed = "unsubscribe_url" in template.required_variables(channel) or (
                channel == "email" and self.settings.category(category).list_unsubscribe
            )
            self._needs_unsubscribe[key] = needed
        return needed

    def context(self, row: sqlite3.Row, user: User | None, with_unsubscribe: bool = True) -> dict[str, Any]:
        who = row["user_id"] or row["address"] or ""
        context: dict[str, Any] = dict(self.run_data)
        if user is not None:
            context.update(user.attributes)
            context.update(
                user_id=user.user_id, email=user.email, phone=user.phone, locale=user.locale, timezone=user.timezone
            )
        else:
            context.update(user_id=row["user_id"], email=None, phone=None, locale=row["locale"], timezone=None)
        context.update(loads(row["data"]) or {})
        if row["channel"] == "email" and not context.get("email"):
            context["email"] = row["address"]
        if row["channel"] == "sms" and not context.get("phone"):
            context["phone"] = row["address"]
        if with_unsubscribe:
            context["unsubscribe_url"] = unsubscribe_url(
                self.public_url, self.unsubscribe_secret, who, row["channel"], row["category"]
            )
        context.update(
            run_id=row["run_id"],
            event_id=row["event_id"],
            template=row["template"],
            now=self._now(),
        )
        return context

    def _now(self) -> str:
        """The `now` variable of templates (to the second), formatted once per second."""
        second = int(time.time())
        if second != self._now_second:
            self._now_second = second
            self._now_text = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")
        return self._now_text

    def build(
        self, row: sqlite3.Row, user: User | None, secrets: list[str], client_cert: str | None = None
    ) -> Envelope:
        template = self.template(row["template"], row["template_version"])
        if template.version != row["template_version"] and not self.allow_template_change:
            raise TemplateError(
                f"changed since the run was planned (version {row['template_version']} → {template.version})",
                template=row["template"],
            )
        context = self.context(row, user, self.needs_unsubscribe(template, row["channel"], row["category"]))
        parts = template.render(row["channel"], row["locale"], context)
        headers: dict[str, str] = {}
        if row["channel"] == "email" and self.settings.category(row["category"]).list_unsubscribe:
            headers["List-Unsubscribe"] = f"<{context['unsubscribe_url']}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        # trusted: every field comes from the outbox row or the renderer, already validated.
        return trusted(
            Envelope,
            delivery_id=row["id"],
            run_id=row["run_id"],
            channel=row["channel"],
            user_id=row["user_id"],
            address=row["address"],
            template=row["template"],
            template_version=template.version,
            category=row["category"],
            idempotency_key=row["idempotency_key"],
            message_id=row["message_id"],
            parts=parts,
            headers=headers,
            signing_secrets=secrets,
            client_cert=client_cert,
            recipient_timezone=user.timezone if user else None,
            recipient_phone=user.phone if user else None,
        )

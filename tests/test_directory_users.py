"""directory.get_users: whole users for planning, and without contacts for the engine's feeder."""

from __future__ import annotations

from pathlib import Path

from notifyctl.app.context import Context
from notifyctl.models import User
from notifyctl.settings import load_settings
from notifyctl.store import directory
from tests.workspace import make_workspace


def test_get_users_with_and_without_contacts(tmp_path: Path) -> None:
    ctx = Context.open(load_settings(make_workspace(tmp_path).config))
    ada = User(
        user_id="u1",
        email="ada@example.com",
        timezone="Europe/Paris",
        push_tokens=["t1", "t2"],
        webhook_url="https://hooks.example.com/ada",
        webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        attributes={"first_name": "Ada"},
    )
    directory.upsert_users(ctx.conn, [ada, User(user_id="u2")])
    whole = directory.get_users(ctx.conn, ["u1", "u2", "u1", "missing"])
    assert set(whole) == {"u1", "u2"}
    assert whole["u1"].push_tokens == ["t1", "t2"]
    assert whole["u1"].webhook_url == "https://hooks.example.com/ada"
    light = directory.get_users(ctx.conn, ["u1", "u2"], contacts=False)
    assert light["u1"].push_tokens == [] and light["u1"].webhook_url is None and light["u1"].webhook_secret is None
    same = {"user_id", "email", "phone", "locale", "timezone", "attributes"}
    assert light["u1"].model_dump(include=same) == whole["u1"].model_dump(include=same)
    assert light["u2"].model_dump() == whole["u2"].model_dump()
    ctx.conn.close()


def test_get_contacts_is_what_get_users_says_of_contacts(tmp_path: Path) -> None:
    """The planner's joined read gives each user's addresses, locale and time zone exactly as the
    whole users have them: an endpoint only while it is not disabled, push tokens in device order."""
    ctx = Context.open(load_settings(make_workspace(tmp_path).config))
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    users = [
        User(user_id="u1", email="ada@example.com", locale="fr", timezone="Europe/Paris", push_tokens=["t2", "t1"]),
        User(user_id="u2"),
        User(user_id="u3", phone="+14155550100", webhook_url="https://hooks.example.com/3", webhook_secret=secret),
        User(user_id="u4", webhook_url="https://hooks.example.com/4", webhook_secret=secret),
    ]
    directory.upsert_users(ctx.conn, users)
    with ctx.conn:
        ctx.conn.execute("UPDATE endpoints SET disabled_at = '2026-01-01T00:00:00+00:00' WHERE user_id = 'u4'")
    ids = ["u1", "u2", "u3", "u4", "u1", "missing"]
    whole = directory.get_users(ctx.conn, ids)
    contacts = directory.get_contacts(ctx.conn, ids, push_tokens=True)
    assert set(contacts) == set(whole) == {"u1", "u2", "u3", "u4"}
    for user_id, user in whole.items():
        fields = user.model_dump(include={"user_id", "email", "phone", "locale", "timezone", "webhook_url"})
        assert contacts[user_id]._asdict() == {**fields, "push_tokens": user.push_tokens}
    assert contacts["u3"].webhook_url == "https://hooks.example.com/3" and contacts["u4"].webhook_url is None
    assert directory.get_contacts(ctx.conn, ["u1"], push_tokens=False)["u1"].push_tokens == []
    ctx.conn.close()

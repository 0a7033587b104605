"""directory.get_users: whole users for planning, and without contacts for the engine's feeder."""

from __future__ import annotations

from pathlib import Path

from notifyctl.models import User
from notifyctl.operations import Context
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

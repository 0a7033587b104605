"""The installation's own secret (store/secrets.py): random per database and kept in it, or
configured; a secret that was replaced keeps its erasure hashes matching for good and its
unsubscribe links working for `unsubscribe_grace_days`; and a database written by the previous
release, which signed with its built-in default, keeps both on the upgrade.

The fixture tests/fixtures/upgrade_default_secret/ is a workspace made by the CLI of bea677a with
no unsubscribe_secret configured (build.sh beside it says how): one marketing email in its outbox
folder, to ada@example.com, whose List-Unsubscribe link that release signed with its default, and a
forgotten user whose address (grace@example.com) it kept suppressed as a hash keyed by it.

    git -C /work/main worktree add /work/wt-old bea677a
    cd /work/wt-old && python3 -m venv .venv && .venv/bin/pip install -q -e .
    bash tests/fixtures/upgrade_default_secret/build.sh /work/wt-old/.venv/bin /tmp/notifyctl-secret-fixture
    cp /tmp/notifyctl-secret-fixture/notifyctl.{db,toml} tests/fixtures/upgrade_default_secret/
    cp -r /tmp/notifyctl-secret-fixture/{outbox,templates} tests/fixtures/upgrade_default_secret/
"""

from __future__ import annotations

import email
import email.policy
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from notifyctl.app import optouts
from notifyctl.app.doctor import check_config
from notifyctl.models import User
from notifyctl.policy.decide import Policy
from notifyctl.security.unsubscribe import make_token, read_token
from notifyctl.settings import Settings, load_settings
from notifyctl.store import directory
from notifyctl.store.db import connect
from notifyctl.store.secrets import PREVIOUS_RELEASE_DEFAULT, installation_secret
from tests.test_server_harness import running
from tests.workspace import Workspace

FIXTURE = Path(__file__).parent / "fixtures" / "upgrade_default_secret"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def settings_of(tmp_path: Path, text: str = "") -> Settings:
    path = tmp_path / "notifyctl.toml"
    path.write_text('database = "notifyctl.db"\n' + text, encoding="utf-8")
    return load_settings(path, environ={})


def suppressed(conn: sqlite3.Connection, settings: Settings, address: str) -> str | None:
    return (
        Policy(settings, conn).decide(channel="email", category="transactional", address=address, user_id=None).reason
    )


def test_a_new_database_makes_its_own_random_secret_and_keeps_it(tmp_path: Path) -> None:
    settings = settings_of(tmp_path)
    first = installation_secret(connect(settings.database_path), settings)
    again = installation_secret(connect(settings.database_path), settings_of(tmp_path))

    assert again == first and first.older == ()
    assert len(first.current) >= 40 and first.current != PREVIOUS_RELEASE_DEFAULT
    other = tmp_path / "other"
    other.mkdir()
    other_settings = settings_of(other)
    assert installation_secret(connect(other_settings.database_path), other_settings).current != first.current


def test_a_configured_secret_signs_and_the_one_it_replaced_keeps_verifying(tmp_path: Path) -> None:
    generated_settings = settings_of(tmp_path)
    conn = connect(generated_settings.database_path)
    generated = installation_secret(conn, generated_settings, now=NOW).current
    directory.upsert_users(conn, [User(user_id="grace", email="grace@example.com")])
    optouts.forget(conn, generated_settings, "grace")  # hashed under the generated secret's key

    configured_settings = settings_of(tmp_path, 'unsubscribe_secret = "configured-0123456789abcdef"\n')
    configured = installation_secret(conn, configured_settings, now=NOW + timedelta(days=1))

    assert configured.current == "configured-0123456789abcdef"
    assert [secret for secret, _ in configured.older] == [generated]
    assert suppressed(conn, configured_settings, "grace@example.com") == "suppressed:erased"
    token = make_token(generated, "ada", "email", "marketing")
    within, after = NOW + timedelta(days=30), NOW + timedelta(days=31, seconds=1)
    assert read_token(configured.link_secrets(within, 30), token) == ("ada", "email", "marketing")
    assert read_token(configured.link_secrets(after, 30), token) is None
    assert read_token(configured.link_secrets(within, 0), token) is None

    # The configured secret is never copied into the database: a fingerprint and a derived key only.
    directory.upsert_users(conn, [User(user_id="hopper", email="hopper@example.com")])
    optouts.forget(conn, configured_settings, "hopper")  # hashed under the configured secret's key
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert b"configured-0123456789abcdef" not in Path(configured_settings.database_path).read_bytes()
    configured_link = make_token("configured-0123456789abcdef", "ada", "email", "marketing")

    # The configured secret goes away: the generated one signs again; every erasure hash still
    # matches; the configured one's links verify only while unsubscribe_previous_secrets lists it.
    back = installation_secret(conn, generated_settings, now=NOW + timedelta(days=2))
    assert back.current == generated and back.older == ()
    assert suppressed(conn, generated_settings, "grace@example.com") == "suppressed:erased"
    assert suppressed(conn, generated_settings, "hopper@example.com") == "suppressed:erased"
    assert read_token(back.link_secrets(within, 30), configured_link) is None
    listed = settings_of(tmp_path, 'unsubscribe_previous_secrets = ["configured-0123456789abcdef"]\n')
    fallback = installation_secret(conn, listed, now=NOW + timedelta(days=90))
    assert fallback.current == generated
    assert read_token(fallback.link_secrets(NOW + timedelta(days=90), 30), configured_link) == (
        "ada",
        "email",
        "marketing",
    )


# --- the upgrade from the previous release -------------------------------------------------------


@pytest.fixture
def old(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("build.sh"))
    return Workspace(root)


def old_link(ws: Workspace) -> str:
    [eml] = list((ws.root / "outbox").glob("*.eml"))
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    return str(message["List-Unsubscribe"]).strip("<>").rsplit("/u/", 1)[1]


def test_the_fixture_is_what_the_previous_release_left(old: Workspace) -> None:
    assert "unsubscribe_secret" not in old.config.read_text()
    assert read_token([PREVIOUS_RELEASE_DEFAULT], old_link(old)) == ("ada", "email", "marketing")
    with old.db() as conn:
        migrations = {row[0] for row in conn.execute("SELECT name FROM migrations")}
        hashes = conn.execute("SELECT channel, reason FROM suppression_hashes").fetchall()
    assert "0004_receipt_indexes" in migrations and "0006_installation_secrets" not in migrations
    assert [tuple(row) for row in hashes] == [("email", "erased")]


def test_an_upgraded_database_keeps_its_erasure_hashes_and_signs_with_a_random_secret(old: Workspace) -> None:
    # A user brought back with the forgotten address: the hash the old release keyed still matches.
    old.write("users.csv", "user_id,email,locale,first_name\ngrace-again,grace@example.com,en,Grace\n")
    assert old.cli("users", "import", "users.csv").exit_code == 0
    welcome = ["send", "-t", "welcome", "--channel", "email", "--data", '{"product_name": "A"}']
    result = old.cli(*welcome, "-u", "grace-again")
    assert result.exit_code == 0, result.output
    with old.db() as conn:
        reasons = [row[0] for row in conn.execute("SELECT reason FROM deliveries WHERE user_id='grace-again'")]
        secrets = [tuple(row) for row in conn.execute("SELECT origin, retired IS NULL FROM installation_secrets")]
    assert reasons == ["suppressed:erased"]
    assert secrets == [("previous release", 0), ("generated", 1)]

    # New links are signed with the installation's own random secret, never the old default.
    assert old.cli(*welcome, "-u", "ada", "--event-id", "again").exit_code == 0
    emls = sorted((old.root / "outbox").glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    new = email.message_from_bytes(emls[-1].read_bytes(), policy=email.policy.default)
    token = str(new["List-Unsubscribe"]).strip("<>").rsplit("/u/", 1)[1]
    settings = load_settings(old.config, environ={})
    current = installation_secret(connect(settings.database_path), settings)
    assert current.current != PREVIOUS_RELEASE_DEFAULT
    assert read_token([current.current], token) == ("ada", "email", "marketing")
    assert read_token([PREVIOUS_RELEASE_DEFAULT], token) is None


async def test_links_the_previous_release_sent_work_during_the_grace_period(old: Workspace) -> None:
    token = old_link(old)
    async with (
        running(old) as srv,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client,
        client.post(f"{srv.url}/u/{token}", data=ONE_CLICK, allow_redirects=False) as resp,
    ):
        assert resp.status == 200, await resp.text()
    with old.db() as conn:
        pref = conn.execute("SELECT enabled, source FROM preferences WHERE user_id='ada'").fetchone()
    assert tuple(pref) == (0, "unsubscribe")


async def test_links_the_previous_release_sent_stop_working_after_the_grace_period(old: Workspace) -> None:
    config = old.config.read_text().replace("processes = 1\n", "processes = 1\nunsubscribe_grace_days = 0\n")
    old.config.write_text(config)
    token = old_link(old)
    async with running(old) as srv, aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        async with client.post(f"{srv.url}/u/{token}", data=ONE_CLICK, allow_redirects=False) as resp:
            assert resp.status == 404
        fresh = make_token(srv.ctx.secret.current, "ada", "email", "marketing")
        async with client.post(f"{srv.url}/u/{fresh}", data=ONE_CLICK, allow_redirects=False) as resp:
            assert resp.status == 200
    with old.db() as conn:
        assert conn.execute("SELECT count(*) FROM suppression_hashes").fetchone()[0] == 1  # erasure kept


@pytest.mark.parametrize(
    ("line", "status", "message"),
    [
        pytest.param("", "ok", "unsubscribe links are signed with this installation's own random secret", id="own"),
        pytest.param('unsubscribe_secret = "change-me-unsubscribe-secret"', "fail", "published in notifyctl's examples",
                     id="the-old-built-in-default"),
        pytest.param('unsubscribe_secret = "change-me"', "fail", "published in notifyctl's examples", id="old-example"),
        pytest.param('unsubscribe_secret = "short"', "warn", "shorter than 16 characters", id="short"),
    ],
)  # fmt: skip
async def test_doctor_on_the_unsubscribe_secret(tmp_path: Path, line: str, status: str, message: str) -> None:
    settings = settings_of(tmp_path, line + "\n")
    [check] = [c for c in check_config(settings) if c.message.startswith("unsubscribe")]
    assert check.status == status and message in check.message

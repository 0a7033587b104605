"""`notifyctl users import`: read and validate the file once, stage the valid rows, write them last.

The file is parsed a single time (`audience.iter_user_fields`). The valid users' fields go, in
marshalled chunks, to a helper process (`python -m notifyctl.intake.users_import`) that appends them to
a scratch SQLite database in a private temporary directory: staging runs on another core while
the file is still being read, and memory does not grow with the file. Only once the whole file
has been read, and only if no row was invalid (or invalid rows are to be skipped), are the staged
users copied into the directory by INSERT ... SELECT (no row passes through Python again): what
`directory.upsert_users` writes for each batch of `batch` valid users, in file order, one
transaction a batch, exactly as when each batch was upserted as it was read. No write lock is
held while parsing, and a bad row at the very end of the file still means nothing was written.

This module is the helper process's entry point too, so it imports little at the top.
"""

from __future__ import annotations

import marshal
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import notifyctl
from notifyctl.errors import NotifyctlError, RowError
from notifyctl.store.db import dumps, iso, transaction

if TYPE_CHECKING:
    from notifyctl.intake.audience import UserFields

BATCH = 5_000  # valid users per transaction (duplicates in a file resolve per batch, as ever)
STAGE_CHUNK = 1_000  # at most this many users are sent to the staging process at a time
MAX_REPORTED_ERRORS = 1000
_SCHEMA = "notifyctl_users_import"  # the scratch database, attached for the copy
_FRAME_HEADER = 8  # bytes: the length of each marshalled chunk, little-endian

# The scratch database. users.endpoint: NULL no endpoint (no webhook_url), 0 a new secret (an
# existing one is kept), 1 the secret the file gave. chunks: users and devices rows staged after
# each chunk (a batch ends at the end of a chunk).
_STAGE_SCHEMA = """
    CREATE TABLE users (user_id, email, phone, locale, timezone, webhook_url, attributes, secret, endpoint);
    CREATE TABLE devices (user_id, token);
    CREATE TABLE chunks (users, devices)"""
_NEW_SECRET, _GIVEN_SECRET = 0, 1

Counts = tuple[int, int]  # users and devices rows staged


class StagingError(NotifyctlError):
    """The staging process failed (a full disk, say); nothing was written."""


@dataclass
class StagedUsers:
    """The valid users of a file, staged; the invalid rows counted (the first MAX_REPORTED_ERRORS kept)."""

    path: Path
    batch: int = BATCH
    valid: int = 0
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0

    def write(self, conn: sqlite3.Connection) -> int:
        """Upsert every staged user into the directory, a batch per transaction; returns how many."""
        if not self.valid:
            return 0
        written = 0
        conn.execute(f"ATTACH DATABASE ? AS {_SCHEMA}", (str(self.path),))
        try:
            chunks: list[Counts] = [
                (users, devices)
                for users, devices in conn.execute(f"SELECT users, devices FROM {_SCHEMA}.chunks ORDER BY rowid")
            ]
            after: Counts = (0, 0)
            for i, upto in enumerate(chunks):
                if upto[0] % self.batch == 0 or i == len(chunks) - 1:
                    written += _copy(conn, after, upto)
                    after = upto
        finally:
            conn.execute(f"DETACH DATABASE {_SCHEMA}")
        return written


def _copy(conn: sqlite3.Connection, after: Counts, upto: Counts) -> int:
    """What `directory.upsert_users` writes for the staged users and devices with rowids in
    (after, upto], in its order; one transaction. Returns how many users."""
    from notifyctl.store import directory

    users = f"FROM {_SCHEMA}.users WHERE rowid > :low AND rowid <= :high"
    now = iso()
    with transaction(conn):
        conn.execute(
            f"INSERT INTO main.users ({directory.USERS_COLUMNS}) SELECT user_id, email, phone, locale, timezone,"
            f" webhook_url, attributes, :now, :now {users} {directory.USERS_ON_CONFLICT}",
            {"low": after[0], "high": upto[0], "now": now},
        )
        conn.execute(
            f"INSERT OR IGNORE INTO main.devices SELECT user_id, token, NULL, :now FROM {_SCHEMA}.devices"
            " WHERE rowid > :low AND rowid <= :high",
            {"low": after[1], "high": upto[1], "now": now},
        )
        for endpoint, on_conflict in (
            (_NEW_SECRET, directory.ENDPOINT_NEW_SECRET_ON_CONFLICT),
            (_GIVEN_SECRET, directory.ENDPOINT_GIVEN_SECRET_ON_CONFLICT),
        ):
            conn.execute(
                f"INSERT INTO main.endpoints (user_id, url, secret) SELECT user_id, webhook_url, secret {users}"
                f" AND endpoint = :endpoint {on_conflict}",
                {"low": after[0], "high": upto[0], "endpoint": endpoint},
            )
    return upto[0] - after[0]


@contextmanager
def staged_users(path: Path, *, batch: int = BATCH) -> Iterator[StagedUsers]:
    """Parse and validate `path` once, staging the valid users in batches of `batch`; the scratch
    database is deleted on exit."""
    from notifyctl.intake.audience import iter_user_fields

    with tempfile.TemporaryDirectory(prefix="notifyctl-users-") as scratch:
        staged = StagedUsers(Path(scratch) / "stage.sqlite", batch)
        with _Stager(staged.path, Path(scratch) / "stage.log") as stager:
            chunk: list[UserFields] = []
            for item in iter_user_fields(path):
                if isinstance(item, RowError):
                    staged.error_count += 1
                    if len(staged.errors) < MAX_REPORTED_ERRORS:
                        staged.errors.append(item)
                    continue
                chunk.append(item)
                # A chunk ends where a batch ends, too.
                if len(chunk) >= STAGE_CHUNK or (staged.valid + len(chunk)) % batch == 0:
                    stager.send(chunk)
                    staged.valid += len(chunk)
                    chunk = []
            if chunk:
                stager.send(chunk)
                staged.valid += len(chunk)
        yield staged


class _Stager:
    """The staging process, fed framed, marshalled chunks of users' fields on its stdin."""

    def __init__(self, stage: Path, log: Path) -> None:
        self.stage = stage
        self.log_path = log

    def __enter__(self) -> _Stager:
        # The very notifyctl this process runs, whatever the working directory.
        package_root = str(Path(notifyctl.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "notifyctl.intake.users_import", str(self.stage)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env=env,
        )
        assert self.process.stdin is not None
        self.pipe: IO[bytes] = self.process.stdin
        return self

    def send(self, chunk: list[UserFields]) -> None:
        data = marshal.dumps(chunk)
        try:
            self.pipe.write(len(data).to_bytes(_FRAME_HEADER, "little"))
            self.pipe.write(data)
        except BrokenPipeError:
            self._finish()  # raises StagingError with what the process said
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc_type is None:
            self._finish()
            return
        self.process.kill()
        self.process.wait()
        self.log.close()

    def _finish(self) -> None:
        with suppress(BrokenPipeError):
            self.pipe.close()
        code = self.process.wait()
        self.log.close()
        if code != 0:
            said = self.log_path.read_text(errors="replace").strip().splitlines()
            raise StagingError(f"staging the users failed (exit code {code}): {said[-1] if said else 'no message'}")


# --- the staging process ------------------------------------------------------------------------


def _stage(conn: sqlite3.Connection, users: Iterable[UserFields], new_secret: Callable[[], str]) -> Counts:
    """Append users (fields in `User` order) to the scratch tables; returns the rows added."""
    user_rows: list[tuple[Any, ...]] = []
    device_rows: list[tuple[str, str]] = []
    for user_id, email, phone, locale, timezone, push_tokens, webhook_url, webhook_secret, attributes in users:
        # As upsert_users: a given secret needs a URL; a URL without a secret gets a new one.
        secret: str | None = None
        endpoint: int | None = None
        if webhook_url and webhook_secret:
            secret, endpoint = webhook_secret, _GIVEN_SECRET
        elif webhook_url:
            secret, endpoint = new_secret(), _NEW_SECRET
        user_rows.append((user_id, email, phone, locale, timezone, webhook_url, dumps(attributes), secret, endpoint))
        if push_tokens:
            device_rows.extend((user_id, token) for token in push_tokens)
    conn.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", user_rows)
    conn.executemany("INSERT INTO devices VALUES (?, ?)", device_rows)
    return len(user_rows), len(device_rows)


def _new_secret() -> str:
    # Imported on first use: the directory module brings pydantic, which this process rarely needs.
    from notifyctl.store.directory import new_webhook_secret

    return new_webhook_secret()


def _stage_main(stage: str) -> None:
    """Read framed, marshalled chunks of `UserFields` from stdin into the scratch database."""
    source = sys.stdin.buffer
    conn = sqlite3.connect(stage, isolation_level=None)
    conn.executescript(f"PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; {_STAGE_SCHEMA}")
    users = devices = 0
    while header := source.read(_FRAME_HEADER):
        size = int.from_bytes(header, "little")
        data = source.read(size)
        if len(header) < _FRAME_HEADER or len(data) < size:
            raise SystemExit("truncated input")
        conn.execute("BEGIN")
        more_users, more_devices = _stage(conn, marshal.loads(data), _new_secret)
        users, devices = users + more_users, devices + more_devices
        conn.execute("INSERT INTO chunks VALUES (?, ?)", (users, devices))
        conn.execute("COMMIT")
    conn.close()


if __name__ == "__main__":
    _stage_main(sys.argv[1])

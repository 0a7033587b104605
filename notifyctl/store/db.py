"""Opening the SQLite database: WAL, private file mode, migrations, small helpers."""

from __future__ import annotations

import contextlib
import operator
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from notifyctl.errors import StorageError
from notifyctl.states import AttemptOutcome, DeliveryState, RunState
from notifyctl.store.schema import MIGRATIONS

T = TypeVar("T")

# The state enums are bound as their plain text: sqlite3 adapts any str subclass it has no adapter
# for through its adaptation protocol, which costs more than the statement's other values together
# (about 1.4 µs a value, measured; the planner binds one a delivery). The value is a C-level read.
for _enum in (DeliveryState, RunState, AttemptOutcome):
    sqlite3.register_adapter(_enum, operator.attrgetter("_value_"))


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None = None) -> str:
    """Timestamps are stored as ISO 8601 UTC text with microseconds (sortable)."""
    return (moment or utcnow()).astimezone(UTC).isoformat(timespec="microseconds")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


IN_CHUNK = 500  # values per `IN (…)` list: well under SQLite's limit on bound parameters


def in_chunks(values: Sequence[T], size: int = IN_CHUNK) -> Iterator[tuple[list[T], str]]:
    """`values` in chunks for `WHERE x IN (…)`, each with its placeholders ("?,?,…")."""
    for start in range(0, len(values), size):
        chunk = list(values[start : start + size])
        yield chunk, ",".join("?" * len(chunk))


# UPDATE … FROM (VALUES …) needs SQLite 3.33; older libraries get one statement per row.
UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)


MULTIROW = 250  # rows per multi-row statement, where SQLite allows that many bound values


def multirow_chunks(
    conn: sqlite3.Connection, rows: Sequence[T], columns: int, wanted: int = MULTIROW
) -> Iterator[tuple[list[T], str]]:
    """`rows` in chunks for multi-row statements of `columns` bound values a row, each with its
    `VALUES` list ("(?,?),(?,?),…"). A chunk keeps one row's worth of room for other values of the
    statement; SQLite before 3.32 allows only 999 values per statement."""
    size = max(1, min(wanted, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // columns - 1))
    row_marks = f"({','.join('?' * columns)})"
    for start in range(0, len(rows), size):
        chunk = list(rows[start : start + size])
        yield chunk, ",".join([row_marks] * len(chunk))


def dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def loads(text: str | bytes | None) -> Any:
    return orjson.loads(text) if text else None


def _create_private(path: Path) -> None:
    """Create the database file with mode 0600 before SQLite opens it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


# The write-ahead log size (pages) at which a busy writer's commit checkpoints it itself: only a
# backstop, a Checkpointer does it long before, outside the write lock.
BUSY_WRITER_AUTOCHECKPOINT = 10_000


def unwritable(path: Path, reason: object) -> StorageError:
    """The one-line error for a database notifyctl cannot create or write, with the fix."""
    return StorageError(
        f"cannot write the database {path} ({reason}): notifyctl writes it and its -wal and -shm files "
        f"in {path.parent}, which must be writable by this user; fix the permissions, or point "
        "`database` (NOTIFYCTL_DATABASE) at a writable place"
    )


# What SQLite says when the file or its folder cannot be written (or the file cannot be made).
_UNWRITABLE = ("readonly database", "unable to open database file", "disk i/o error")


def connect(path: Path, *, migrate: bool = True, autocheckpoint: int | None = None) -> sqlite3.Connection:
    """Open (and create, privately) the database and bring its schema up to date. `autocheckpoint`:
    see `Checkpointer` (SQLite's default is 1,000 pages). A file or folder that cannot be written
    is a StorageError saying so."""
    try:
        return _connect(path, migrate=migrate, autocheckpoint=autocheckpoint)
    except OSError as exc:
        raise unwritable(path, exc.strerror or exc) from None
    except sqlite3.OperationalError as exc:
        if any(text in str(exc).lower() for text in _UNWRITABLE):
            raise unwritable(path, exc) from None
        raise


def _connect(path: Path, *, migrate: bool, autocheckpoint: int | None) -> sqlite3.Connection:
    if str(path) != ":memory:":
        _create_private(path)
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash (kill -9); only an OS crash can lose the tail.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        if autocheckpoint is not None:
            conn.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
        if migrate:
            run_migrations(conn)
    except BaseException:
        conn.close()
        raise
    return conn


class WriteLock:
    """A queue for the busiest writers of one database file, across processes (flock on
    `<database>-writelock`), taken before their BEGIN IMMEDIATE.

    Several writers commit many times a second during a broadcast — a ledger per sender process
    and the planner. Left to SQLite, a writer that finds the database locked sleeps in its busy
    handler in growing steps (1, 2, 5, 10 … 100 ms) and misses the moment the lock is free: with
    two sender processes the ledgers spent about half of their time asleep there. Queued on a
    flock, a waiting writer wakes as soon as the holder commits. Only an optimisation: SQLite's own
    locking keeps the data correct, and writers that do not take this lock (or a system without
    flock) simply fall back to the busy handler. Never held while waiting for anything but SQLite.
    """

    def __init__(self, db_path: Path | str | None) -> None:
        """`None` (or an in-memory database): a lock that locks nothing."""
        self._fd: int | None = None
        if db_path is None or str(db_path) == ":memory:" or fcntl is None:
            return
        try:
            self._fd = os.open(f"{db_path}-writelock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            self._fd = None  # a read-only directory, say: the busy handler alone will do

    @contextmanager
    def held(self) -> Iterator[None]:
        fd = self._fd
        if fd is None or fcntl is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class Checkpointer:
    """Copies the write-ahead log back into the database every `every_s`, in a thread of its own.

    SQLite checkpoints in the commit that takes the log past 1,000 pages (4 MB), while that writer
    still holds the write lock: during a broadcast, the planner's and the ledgers' commits did it
    every few commits, and the other writers waited (a sibling sender's ledger spent half its time
    queued for the lock while the parent planned). Writers opened with
    `autocheckpoint=BUSY_WRITER_AUTOCHECKPOINT` leave it to this thread, whose PASSIVE checkpoints
    run beside them without the write lock."""

    def __init__(self, db_path: Path, every_s: float = 0.2) -> None:
        self._db_path = db_path
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0

    def start(self) -> None:
        if str(self._db_path) == ":memory:":
            return
        self._thread = threading.Thread(target=self._run, name="notifyctl-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        conn = sqlite3.connect(str(self._db_path), timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(self._every_s):
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
        finally:
            conn.close()


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error. Nested use is a savepoint."""
    if conn.in_transaction:
        name = f"sp_{id(conn)}_{os.urandom(4).hex()}"
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield conn
        except BaseException:
            conn.execute(f"ROLLBACK TO {name}")
            conn.execute(f"RELEASE {name}")
            raise
        conn.execute(f"RELEASE {name}")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def rolled_back(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... ROLLBACK whatever happens: real decisions, nothing kept (a dry run)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")


def run_migrations(conn: sqlite3.Connection) -> list[str]:
    """Apply the migrations not applied yet; returns their names."""
    conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied TEXT NOT NULL)")
    done = applied_migrations(conn)
    applied = []
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        with transaction(conn):
            if conn.execute("SELECT 1 FROM migrations WHERE name = ?", (name,)).fetchone():
                continue  # another process got there first
            for statement in sql.split(";") if isinstance(sql, str) else sql:
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO migrations VALUES (?, ?)", (name, iso()))
        applied.append(name)
    return applied


def applied_migrations(conn: sqlite3.Connection) -> set[str]:
    """The names of the migrations applied to the database (the table must exist)."""
    return {row[0] for row in conn.execute("SELECT name FROM migrations")}


def record_event(conn: sqlite3.Connection, kind: str, subject: str | None, detail: dict[str, Any]) -> None:
    """An audit event that is not a delivery (suppression added, preference changed, …)."""
    conn.execute(
        "INSERT INTO audit_events (ts, kind, subject, detail) VALUES (?, ?, ?, ?)",
        (iso(), kind, subject, dumps(detail)),
    )

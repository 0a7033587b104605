"""`notifyctl users import`: read and validate the file once, stage the valid rows, write them last.

The file is parsed a single time (`users.iter_user_fields`). The valid users' fields go, in
marshalled chunks, to a helper process (`python -m notifyctl.intake.users_import`) that appends them to
a scratch SQLite database in a private temporary directory: staging runs on another core while
the file is still being read, and memory does not grow with the file. Only once the whole file
has been read, and only if no row was invalid (or invalid rows are to be skipped), are the staged
users copied into the directory by INSERT ... SELECT (`store/staging.py`; no row passes through
Python again): what `directory.upsert_users` writes for each batch of `batch` valid users, in file
order, one transaction a batch, exactly as when each batch was upserted as it was read. No write lock is
held while parsing, and a bad row at the very end of the file still means nothing was written.

A user_id given twice in one file is an error of the later row, which names the earlier one's line
(as `broadcast` reports a repeated recipient): the staged rows are looked up once the file is
read, in the scratch database rather than in memory. With --skip-invalid the first row is kept.

This module is the helper process's entry point too, so it imports little at the top.
"""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

import notifyctl
from notifyctl.errors import NotifyctlError, RowError
from notifyctl.store.staging import Counts, UserFields, copy_staged, create_stage, drop_lines, duplicates, stage_chunk

if TYPE_CHECKING:
    import sqlite3

BATCH = 5_000  # valid users per transaction
STAGE_CHUNK = 1_000  # at most this many users are sent to the staging process at a time
MAX_REPORTED_ERRORS = 1000
_FRAME_HEADER = 8  # bytes: the length of each marshalled chunk, little-endian


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
        return copy_staged(conn, self.path, self.batch)


@contextmanager
def staged_users(path: Path, *, batch: int = BATCH, plain_http_hosts: Collection[str] = ()) -> Iterator[StagedUsers]:
    """Parse and validate `path` once, staging the valid users in batches of `batch`; the scratch
    database is deleted on exit. `plain_http_hosts`: where a webhook_url may be plain http://."""
    from notifyctl.intake.users import iter_user_lines

    with tempfile.TemporaryDirectory(prefix="notifyctl-users-") as scratch:
        staged = StagedUsers(Path(scratch) / "stage.sqlite", batch)
        with _Stager(staged.path, Path(scratch) / "stage.log") as stager:
            chunk: list[UserFields] = []
            lines: list[int] = []
            for line, _end, item in iter_user_lines(path, plain_http_hosts=plain_http_hosts):
                if isinstance(item, RowError):
                    staged.error_count += 1
                    if len(staged.errors) < MAX_REPORTED_ERRORS:
                        staged.errors.append(item)
                    continue
                chunk.append(item)
                lines.append(line)
                # A chunk ends where a batch ends, too.
                if len(chunk) >= STAGE_CHUNK or (staged.valid + len(chunk)) % batch == 0:
                    stager.send(chunk, lines)
                    staged.valid += len(chunk)
                    chunk, lines = [], []
            if chunk:
                stager.send(chunk, lines)
                staged.valid += len(chunk)
        _report_duplicates(staged)
        yield staged


def _report_duplicates(staged: StagedUsers) -> None:
    """A user_id given again is an error of the later row (the first is kept with --skip-invalid)."""
    repeated = duplicates(staged.path) if staged.valid > 1 else []
    if not repeated:
        return
    drop_lines(staged.path, [line for line, _first in repeated])
    staged.valid -= len(repeated)
    staged.error_count += len(repeated)
    staged.errors.extend(
        RowError(line, f"duplicate user_id, first given on line {first}", "user_id")
        for line, first in repeated[:MAX_REPORTED_ERRORS]
    )
    staged.errors.sort(key=lambda error: error.line)
    del staged.errors[MAX_REPORTED_ERRORS:]


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

    def send(self, chunk: list[UserFields], lines: list[int]) -> None:
        data = marshal.dumps((chunk, lines))
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


def _stage_main(stage: str) -> None:
    """Read framed, marshalled chunks of `UserFields` (with their lines) from stdin into the scratch database."""
    source = sys.stdin.buffer
    conn = create_stage(stage)
    staged: Counts = (0, 0)
    while header := source.read(_FRAME_HEADER):
        size = int.from_bytes(header, "little")
        data = source.read(size)
        if len(header) < _FRAME_HEADER or len(data) < size:
            raise SystemExit("truncated input")
        users, lines = marshal.loads(data)
        staged = stage_chunk(conn, users, lines, staged)
    conn.close()


if __name__ == "__main__":
    _stage_main(sys.argv[1])

"""`users import` reads the file once: the fast CSV path gives exactly what `iter_users` gives, and the
staged users are written all or nothing, as `directory.upsert_users` would write them."""

from __future__ import annotations

import contextlib
import csv
import io
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from notifyctl.errors import InputError, RowError
from notifyctl.intake import fast as fast_reader
from notifyctl.intake import lines, users_import
from notifyctl.intake.users import iter_user_fields, iter_users, user_fields
from notifyctl.store import directory
from notifyctl.store.db import connect
from tests.workspace import SINK_SECRET, Workspace, make_workspace

# --- the fast CSV path is the full path, faster ----------------------------------------------------


def _comparable(items: list[Any]) -> list[Any]:
    # Attributes are compared with their order (it is the order they are stored in).
    return [item if isinstance(item, RowError) else (*item[:-1], list(item[-1].items())) for item in items]


def _outcome(read: Callable[[], list[Any]]) -> tuple[str, Any]:
    try:
        return "rows", _comparable(read())
    except InputError as exc:
        return "input error", (str(exc), exc.rows)


def _full(path: Path, max_field_chars: int, plain_http_hosts: tuple[str, ...] = ()) -> list[Any]:
    return [
        user_fields(parsed.value) if parsed.value is not None else parsed.error
        for parsed in iter_users(path, max_field_chars=max_field_chars, plain_http_hosts=plain_http_hosts)
    ]


def _fast(path: Path, max_field_chars: int, plain_http_hosts: tuple[str, ...] = ()) -> list[Any]:
    return list(iter_user_fields(path, max_field_chars=max_field_chars, plain_http_hosts=plain_http_hosts))


@contextlib.contextmanager
def fast_path_limits(piece_bytes: int, max_line: int = 0) -> Iterator[None]:
    """The fast CSV readers with pieces of `piece_bytes` and, if given, lines of at most `max_line`
    bytes (small values make the piece and line edges show up in small files)."""
    with contextlib.ExitStack() as patches:
        patches.enter_context(mock.patch.object(lines, "_FAST_PIECE_BYTES", piece_bytes))
        if max_line:
            patches.enter_context(mock.patch.object(lines, "MAX_LINE_BYTES", max_line))
        yield


def assert_same(
    content: bytes,
    *,
    max_field_chars: int = 4096,
    piece_bytes: int = 1 << 18,
    max_line: int = 0,
    plain_http_hosts: tuple[str, ...] = (),
) -> None:
    with tempfile.TemporaryDirectory() as directory_:
        path = Path(directory_) / "users.csv"
        path.write_bytes(content)
        with fast_path_limits(piece_bytes, max_line):
            fast = _outcome(lambda: _fast(path, max_field_chars, plain_http_hosts))
            assert fast == _outcome(lambda: _full(path, max_field_chars, plain_http_hosts))


COLUMNS = [
    "user_id",
    "email",
    "phone",
    "locale",
    "timezone",
    "push_tokens",
    "webhook_url",
    "webhook_secret",
    "plan",
    "first name",
    "attributes",
]
CELLS = [
    "",
    " ",
    "u1",
    " u2 ",
    "u\x01",
    "u\u00a0x",
    "42",
    "ada@example.com",
    " Ada.Lovelace+news@Example.COM ",
    "nope",
    "user@@example.com",
    "josé@example.com",
    "user@bücher.example",
    "+1 415 555 2671",
    "+99 1",
    "en",
    "pt_br",
    "zh_hant_tw",
    "english",
    "Europe/Paris",
    "Mars/Olympus",
    "t1|t2;t1",
    "t 1",
    "https://hooks.example.com/x",
    "http://hooks.example.com/x",
    "HTTP://127.0.0.1:9/x",
    "ftp://hooks.example.com/x",
    "http://[::1",
    SINK_SECRET,
    "whsec_",
    "secret",
    "pro",
    "=1+1",
    'say "hi"',
    "a,b",
    "two\nlines",
    "cr\rinside",
    "x" * 20,
    "é" * 5,
    "\u2028",
]
RAW = [b"\n", b"\r\n", b"  ,  \n", b'"unterminated\n', b'a"b,c\n', b"\x00", b"\xff", b"\xef\xbb\xbf", b"\r"]
# Per column: good values and the bad ones next to them (a row's other cells must be valid for one
# cell to matter); any column also gets any of CELLS now and then.
COLUMN_CELLS = {
    "user_id": ["u1", " u2 ", "42", "u-3", "u\x7f", "\u00a0"],
    "email": [
        "",
        "ada@example.com",
        " Ada.Lovelace+news@Example.COM ",
        "user@bücher.example",
        "a@b",
        "x" * 65 + "@e.com",
    ],
    "phone": ["", "+1 415 555 2671", "+1 415"],
    "locale": ["", "en", "pt_br", "zh_hant_tw", "e"],
    "timezone": ["", "Europe/Paris", " UTC ", "utc"],
    "push_tokens": ["", "t1|t2;t1", " a ; b ", "|", "a\tb"],
    "webhook_url": [
        "",
        "https://hooks.example.com/x",
        " http://127.0.0.1:9/hook ",
        "http://[::1]:9/hook",
        "http://hooks.example.com/x",
        "https://h:99999/",
    ],
    "webhook_secret": ["", SINK_SECRET, " whsec_x ", "whsec_", " whsec_ ", "WHSEC_x"],
    "plan": ["pro", " pro ", ""],
}


@st.composite
def cells_for(draw: st.DrawFn, column: str) -> str:
    if column in COLUMN_CELLS and draw(st.integers(0, 4)):
        return draw(st.sampled_from(COLUMN_CELLS[column]))
    return draw(st.sampled_from(CELLS))


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    header = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=6, unique=True))
    if "user_id" not in header and draw(st.booleans()):
        header.insert(draw(st.integers(0, len(header))), "user_id")
    terminator = draw(st.sampled_from(["\n", "\r\n"]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=terminator)
    writer.writerow(header)
    content = out.getvalue().encode()
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 9)) == 0:
            content += draw(st.sampled_from(RAW))
            continue
        row = [draw(cells_for(column)) for column in header]
        row = row + draw(st.sampled_from([[], [], [], [], ["extra"]]))
        if draw(st.integers(0, 9)) == 0:
            row = row[:-1]
        out = io.StringIO()
        csv.writer(out, lineterminator=terminator).writerow(row)
        content += out.getvalue().encode()
    if draw(st.booleans()):
        content = content.rstrip(b"\r\n")
    return content


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content=csv_files(),
    max_field_chars=st.sampled_from([4096, 12]),
    piece_bytes=st.sampled_from([1 << 18, 64, 7]),
    max_line=st.sampled_from([0, 0, 60]),
    plain_http_hosts=st.sampled_from([(), ("127.0.0.1", "::1")]),
)
@example(
    content=b'user_id,email\nu1,a@example.com\n\nu2,"b@exa\nmple.com"\nu3\n',
    max_field_chars=4096,
    piece_bytes=16,
    max_line=0,
    plain_http_hosts=(),
)
@example(
    content=b"user_id,webhook_url\nu1,http://127.0.0.1:9/a\nu2,http://hooks.example.com/b\nu3,HTTP://[::1]/c\n",
    max_field_chars=4096,
    piece_bytes=1 << 18,
    max_line=0,
    plain_http_hosts=("127.0.0.1", "::1"),
)
def test_fast_path_reads_exactly_what_iter_users_reads(
    content: bytes, max_field_chars: int, piece_bytes: int, max_line: int, plain_http_hosts: tuple[str, ...]
) -> None:
    assert_same(
        content,
        max_field_chars=max_field_chars,
        piece_bytes=piece_bytes,
        max_line=max_line,
        plain_http_hosts=plain_http_hosts,
    )


@settings(max_examples=200, deadline=None)
@given(content=st.lists(st.sampled_from([b"user_id,email\n", *(c.encode() for c in CELLS), b",", *RAW]), max_size=30))
def test_fast_path_matches_on_arbitrary_fragments(content: list[bytes]) -> None:
    assert_same(b"".join(content), piece_bytes=16)


def test_a_clean_csv_never_takes_the_line_by_line_reader(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    rows = ["user_id,email,push_tokens,webhook_url,webhook_secret,plan"]
    rows += [f"u{i},u{i}@example.com,t{i}|x{i},https://h.example.com/{i},{SINK_SECRET},pro" for i in range(3000)]
    rows.append('u-last,"last@example.com",,,,"multi\nline plan"')
    path.write_text("\r\n".join(rows) + "\r\n")
    with mock.patch.object(fast_reader, "read_records", side_effect=AssertionError("slow path taken")):
        fast = list(iter_user_fields(path))
    assert _comparable(fast) == _comparable(_full(path, 4096))
    assert len(fast) == 3001 and not any(isinstance(item, RowError) for item in fast)


def test_the_line_by_line_reader_takes_over_after_the_last_user_given(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    rows = b"".join(b"u%d,u%d@example.com\n" % (i, i) for i in range(50))
    path.write_bytes(b"user_id,email\n" + rows + b"u\x00,x\nu-last,last@example.com\n")
    taken_over: list[int] = []
    records = fast_reader.read_records

    def recorded(*args: Any, **kwargs: Any) -> Any:
        taken_over.append(kwargs["start_offset"])
        return records(*args, **kwargs)

    with fast_path_limits(64), mock.patch.object(fast_reader, "read_records", side_effect=recorded):
        fast = list(iter_user_fields(path))
    assert len(taken_over) == 1 and 0 < taken_over[0] < path.stat().st_size  # not from the start
    assert len(fast) == 52 and isinstance(fast[50], RowError) and "NUL" in fast[50].reason
    assert _comparable(fast) == _comparable(_full(path, 4096))


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"user_id,email\nu1,a@example.com\nu2,\x00\nu3,c@example.com\n", id="nul"),
        pytest.param(b"user_id,email\nu1,a@example.com\nu2,\xff\nu3,c@example.com\n", id="bad-utf8"),
        pytest.param(b"user_id,email\nu1,a@example.com\nu2,\xef\xbb\xbf\nu3,c@example.com\n", id="stray-bom"),
        pytest.param(b'user_id,email\nu1,a@example.com\nu2,"x"y\nu3,c@example.com\n', id="malformed-csv"),
        pytest.param(b'user_id,email\nu1,a@example.com\nu2,"open\n', id="unterminated-quote"),
        pytest.param(b"\xef\xbb\xbfuser_id,email\nu1,a@example.com\n", id="leading-bom"),
        pytest.param(b"user_id,email\r\nu1,a@example.com\r\n\r\n  ,  \r\nu2,b@example.com", id="crlf-blank"),
        pytest.param(b"email\nx@example.com\n", id="no-user-id-column"),
        pytest.param(b"user_id,user_id\nu1,u2\n", id="duplicate-column"),
        pytest.param(b"", id="empty"),
    ],
)
def test_fast_path_hands_over_or_fails_as_iter_users_does(content: bytes) -> None:
    for piece_bytes in (1 << 18, 8):
        assert_same(content, piece_bytes=piece_bytes)


def test_over_long_lines_are_reported_as_iter_users_reports_them() -> None:
    long = b"x" * 100
    content = b"user_id,plan\nu1,a\nu2," + long + b"\nu3,c\n"
    assert_same(content, max_line=80)
    assert_same(content, max_line=80, piece_bytes=16)


# --- staged users are written all or nothing, as upsert_users writes them --------------------------


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


def _big_file(ws: Workspace, n: int, last: str) -> None:
    lines = ["user_id,email,webhook_url,plan"]
    lines += [f"u{i},u{i}@example.com,https://hooks.example.com/{i},pro" for i in range(n)]
    ws.write("users.csv", "\n".join([*lines, last]) + "\n")


def test_a_bad_row_at_the_end_of_a_large_file_means_nothing_is_written(ws: Workspace) -> None:
    _big_file(ws, 12_000, "u-bad,not-an-email,,free")

    result = ws.cli("users", "import", "users.csv")

    assert result.exit_code == 2
    assert "line 12002, field 'email'" in result.stderr and "nothing was imported" in result.stderr
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM endpoints").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM audit_events WHERE kind='users_import'").fetchone()[0] == 0

    skipped = ws.cli("users", "import", "users.csv", "--skip-invalid", "--json")

    assert skipped.exit_code == 1
    report = orjson.loads(skipped.stdout)
    assert report["imported"] == 12_000 and report["rejected_count"] == 1
    assert report["rejected"][0].startswith("line 12002, field 'email'")
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 12_000
        assert conn.execute("SELECT count(*) FROM endpoints").fetchone()[0] == 12_000
        (detail,) = conn.execute("SELECT detail FROM audit_events WHERE kind='users_import'").fetchone()
        assert orjson.loads(detail) == {"imported": 12_000, "rejected": 1}


def _tables(conn: sqlite3.Connection, generated: str = "generated") -> dict[str, list[tuple[Any, ...]]]:
    given = {SINK_SECRET, "whsec_second"}
    return {
        "users": [
            tuple(row)
            for row in conn.execute(
                "SELECT user_id, email, phone, locale, timezone, webhook_url, attributes FROM users ORDER BY user_id"
            )
        ],
        "devices": [
            tuple(row) for row in conn.execute("SELECT user_id, token, platform FROM devices ORDER BY user_id, token")
        ],
        "endpoints": [
            (user_id, url, secret if secret in given else generated)
            for user_id, url, secret in conn.execute("SELECT user_id, url, secret FROM endpoints ORDER BY user_id")
        ],
    }


FIRST = "user_id,email,phone,locale,timezone,push_tokens,webhook_url,webhook_secret,plan\n" + "".join(
    f"u{i},U{i}@Example.com,{'+1 415 555 2671' if i % 7 == 0 else ''},{'fr_ca' if i % 2 else ''},"
    f"{'Europe/Paris' if i % 3 == 0 else ''},{f't{i}|s{i}' if i % 4 == 0 else ''},"
    f"{f'https://hooks.example.com/{i}' if i % 5 else ''},{SINK_SECRET if i % 10 == 1 else ''},p{i}\n"
    for i in range(60)
)
HEADER = "user_id,email,phone,locale,timezone,push_tokens,webhook_url,webhook_secret,plan\n"
AGAIN = HEADER + f"u1,again@example.com,,,,t-again,https://hooks.example.com/again,{SINK_SECRET},again\n"
SECOND = (
    "user_id,email,push_tokens,webhook_url,webhook_secret\n"
    "u1,changed@example.com,t-new,https://hooks.example.com/moved,\n"  # keeps its secret
    "u11,,,https://hooks.example.com/11,whsec_second\n"  # a new secret
    "u2,,,https://hooks.example.com/2,\n"  # keeps its generated secret
    "u200,new@example.com,,,\n"
)


def _upsert_as_before(conn: sqlite3.Connection, path: Path, batch: int) -> None:
    """What `users import` did before staging: upsert_users for every `batch` valid users, in order."""
    users = [parsed.value for parsed in iter_users(path) if parsed.value is not None]
    for start in range(0, len(users), batch):
        directory.upsert_users(conn, users[start : start + batch])


# Ids given again by later files, with and without secrets: the outcome depends on the batches
# (upsert_users writes new-secret endpoints before given-secret ones), and must not change. (Within
# one file an id given twice is an error: see test_a_user_id_given_twice_in_one_file_is_refused.)
def _row(i: int) -> str:
    secret = SINK_SECRET if i % 3 == 0 else ""
    return f"u{i % 7},d{i}@example.com,,,,t{i % 4},https://hooks.example.com/d{i},{secret},d{i}\n"


AGAINS = [HEADER + "".join(_row(i) for i in range(start, min(start + 7, 40))) for start in range(0, 40, 7)]


@pytest.mark.parametrize(("batch", "chunk"), [(7, 3), (5, 5), (4, 1000), (5000, 1000)])
def test_staged_users_are_written_as_upsert_users_wrote_them_batch_by_batch(
    tmp_path: Path, batch: int, chunk: int
) -> None:
    conn, reference = connect(tmp_path / "staged.db"), connect(tmp_path / "reference.db")
    files = [("first.csv", FIRST), *((f"again-{i}.csv", text) for i, text in enumerate(AGAINS)), ("second.csv", SECOND)]
    for name, text in files:
        path = tmp_path / name
        path.write_text(text)
        with (
            mock.patch.object(users_import, "STAGE_CHUNK", chunk),
            users_import.staged_users(path, batch=batch) as staged,
        ):
            assert staged.error_count == 0
            assert staged.write(conn) == staged.valid == len(list(_valid(path)))
        _upsert_as_before(reference, path, batch)
    assert _tables(conn) == _tables(reference)


def test_a_re_import_updates_users_and_keeps_secrets_unless_given(ws: Workspace) -> None:
    for name, text in (("first.csv", FIRST), ("again.csv", AGAIN), ("second.csv", SECOND)):
        ws.write(name, text)
        assert ws.cli("users", "import", name).exit_code == 0
    with ws.db() as conn:
        imported = _tables(conn)
        secrets = dict(conn.execute("SELECT user_id, secret FROM endpoints").fetchall())
        emails = dict(conn.execute("SELECT user_id, email FROM users").fetchall())
    assert imported["devices"][:4] == [
        ("u0", "s0", None),
        ("u0", "t0", None),
        ("u1", "t-again", None),
        ("u1", "t-new", None),
    ]
    assert emails["u1"] == "changed@example.com" and emails["u200"] == "new@example.com"
    assert secrets["u1"] == SINK_SECRET and secrets["u11"] == "whsec_second"
    assert secrets["u2"].startswith("whsec_") and len(secrets["u2"]) > len("whsec_") + 20
    assert ("u1", "https://hooks.example.com/moved", SINK_SECRET) in imported["endpoints"]


def _valid(path: Path) -> Iterator[Any]:
    return (item for item in iter_user_fields(path) if not isinstance(item, RowError))


def test_a_failing_staging_process_is_an_error_and_nothing_is_written(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    _big_file(ws, 5_000, "u-last,last@example.com,,free")
    monkeypatch.setattr(sys, "executable", "/bin/false")

    result = ws.cli("users", "import", "users.csv")

    assert result.exit_code == 2
    assert "staging the users failed" in result.stderr
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0


def test_the_staging_process_refuses_a_truncated_stream(tmp_path: Path) -> None:
    stage = tmp_path / "stage.sqlite"
    frame = (1000).to_bytes(8, "little") + b"\x00" * 10
    done = subprocess.run(
        [sys.executable, "-m", "notifyctl.intake.users_import", str(stage)],
        input=frame,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0 and b"truncated input" in done.stderr


# --- rows refused at import: a user_id given twice, a webhook URL the provider would refuse ----------


def said(result: Any) -> str:
    """What a command wrote to stderr, as one line (Rich wraps long ones)."""
    return " ".join(str(result.stderr).split())


DOUBLED = {
    "users.csv": (
        "user_id,email,push_tokens\n"
        "u1,first@example.com,t-first\n"
        "u2,two@example.com,\n"
        "u3,three@example.com,\n"
        "u1,second@example.com,t-second\n"
        "u2,again@example.com,\n"
        "u1,third@example.com,\n"
    ),
    "users.jsonl": "".join(
        orjson.dumps(row).decode() + "\n"
        for row in [
            {"user_id": "u1", "email": "first@example.com", "push_tokens": ["t-first"]},
            {"user_id": "u2", "email": "two@example.com"},
            {"user_id": "u3", "email": "three@example.com"},
            {"user_id": "u1", "email": "second@example.com", "push_tokens": ["t-second"]},
            {"user_id": "u2", "email": "again@example.com"},
            {"user_id": "u1", "email": "third@example.com"},
        ]
    ),
}


@pytest.mark.parametrize("name", list(DOUBLED))
def test_a_user_id_given_twice_in_one_file_is_refused_with_both_lines(ws: Workspace, name: str) -> None:
    ws.write(name, DOUBLED[name])
    first_line = 2 if name.endswith(".csv") else 1  # the CSV header is line 1

    result = ws.cli("users", "import", name)

    assert result.exit_code == 2
    assert "3 invalid row(s); nothing was imported" in said(result)
    for line, first in ((3, 0), (4, 1), (5, 0)):  # rows 4, 5 and 6 repeat the ids of rows 1, 2 and 1
        at, earlier = first_line + line, first_line + first
        assert f"line {at}, field 'user_id': duplicate user_id, first given on line {earlier}" in said(result)
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0

    skipped = ws.cli("users", "import", name, "--skip-invalid", "--json")

    assert skipped.exit_code == 1
    report = orjson.loads(skipped.stdout)
    assert (report["imported"], report["rejected_count"]) == (3, 3)
    with ws.db() as conn:  # as broadcast does with a repeated recipient: the first row counts
        emails = dict(conn.execute("SELECT user_id, email FROM users").fetchall())
        tokens = [tuple(row) for row in conn.execute("SELECT user_id, token FROM devices")]
    assert emails == {"u1": "first@example.com", "u2": "two@example.com", "u3": "three@example.com"}
    assert tokens == [("u1", "t-first")]


@pytest.mark.parametrize(("batch", "chunk"), [(2, 1), (3, 2), (5000, 1000)])
def test_the_first_row_of_a_repeated_user_id_is_the_one_staged_whatever_the_batches(
    tmp_path: Path, batch: int, chunk: int
) -> None:
    path = tmp_path / "users.csv"
    path.write_text(HEADER + "".join(_row(i) for i in range(40)))  # u0..u6, each given several times
    conn, reference = connect(tmp_path / "staged.db"), connect(tmp_path / "reference.db")
    with mock.patch.object(users_import, "STAGE_CHUNK", chunk), users_import.staged_users(path, batch=batch) as staged:
        assert (staged.valid, staged.error_count) == (7, 33)
        assert staged.errors[0] == RowError(9, "duplicate user_id, first given on line 2", "user_id")
        assert staged.write(conn) == 7
    firsts = [parsed.value for parsed in iter_users(path) if parsed.value is not None][:7]
    directory.upsert_users(reference, firsts)
    assert _tables(conn) == _tables(reference)


def test_a_plain_http_webhook_url_is_refused_at_import_unless_the_webhook_provider_allows_its_host(
    ws: Workspace,
) -> None:
    # The workspace's webhook provider allows 127.0.0.1 and localhost over plain http (tests' sinks).
    ws.write(
        "users.csv",
        "user_id,webhook_url\n"
        "u1,https://hooks.example.com/1\n"
        "u2,http://127.0.0.1:9/2\n"
        "u3,http://hooks.example.com/3\n"
        "u4,HTTP://LOCALHOST:9/4\n"
        "u5,http://[::1]:9/5\n",
    )

    result = ws.cli("users", "import", "users.csv")

    assert result.exit_code == 2
    assert "2 invalid row(s); nothing was imported" in said(result)
    assert "line 4, field 'webhook_url': webhook_url must be https://" in said(result)
    assert "line 6, field 'webhook_url'" in said(result)
    skipped = ws.cli("users", "import", "users.csv", "--skip-invalid", "--json")
    assert skipped.exit_code == 1
    with ws.db() as conn:
        urls = dict(conn.execute("SELECT user_id, url FROM endpoints").fetchall())
    assert urls == {"u1": "https://hooks.example.com/1", "u2": "http://127.0.0.1:9/2", "u4": "HTTP://LOCALHOST:9/4"}


def test_without_a_webhook_provider_allowing_it_no_plain_http_url_is_imported(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, webhook={"allow_hosts": []})
    ws.write("users.csv", "user_id,webhook_url\nu1,http://127.0.0.1:9/1\nu2,https://hooks.example.com/2\n")
    result = ws.cli("users", "import", "users.csv")
    assert result.exit_code == 2 and "line 2, field 'webhook_url'" in said(result)

"""Console output for the CLI: the rule for piped output, tables, JSON, CSV and error reports.
Library code never prints; only the CLI calls these (progress bars: cli/progress.py).

The rule, the same for every command: `--json` prints JSON, anything else prints for people
(tables, text), on a terminal or not. Whether stdout is a terminal changes only presentation:
colours, progress bars (drawn only on a terminal) and `templates render`, which prints the
raw text when piped. A script that parses the output says so with `--json`, so a `| less`,
`| grep` or a cron mail never gets a different format from the one on the screen.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from notifyctl.errors import RowError
from notifyctl.states import DeliveryState

QUIET = False  # -q: the console for people prints nothing and no progress is drawn; errors still are

if TYPE_CHECKING:
    from rich.console import Console

    from notifyctl.security.redaction import mask_address as mask_address

    console: Console
    err_console: Console


def __getattr__(name: str) -> Any:
    """`console`, `err_console` and `mask_address`, made on first use: Rich and the redaction
    patterns cost tens of milliseconds of start-up that `send --json` never needs."""
    value: Any
    if name == "console":
        from rich.console import Console

        value = Console(quiet=QUIET)
    elif name == "err_console":
        from rich.console import Console

        value = Console(stderr=True)
    elif name == "mask_address":
        from notifyctl.security import redaction as redact

        value = redact.mask_address
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def set_quiet(quiet: bool) -> None:
    """-q: nothing for people on stdout and no progress bars (errors and --json output still)."""
    global QUIET
    QUIET = quiet
    made: Console | None = globals().get("console")
    if made is not None:
        made.quiet = quiet


def _console(name: str) -> Console:
    """The module's `console` or `err_console` (a bare name inside this module skips __getattr__)."""
    found: Console | None = globals().get(name)
    return found if found is not None else __getattr__(name)


# The states a run's summary shows, in this order (their names are the column titles).
OUTCOME_COLUMNS = (
    DeliveryState.sent,
    DeliveryState.skipped,
    DeliveryState.deferred,
    DeliveryState.dead,
    DeliveryState.in_doubt,
    DeliveryState.pending,
)
# Table columns that hold ids (besides "id" and "*_id"): never cut, never wrapped.
ID_COLUMNS = frozenset({"id", "run", "delivery", "user", "key", "name"})


def wants_json(json_flag: bool) -> bool:
    """The one rule for piped output: JSON exactly when --json is given (see the module docstring)."""
    return json_flag


def is_terminal() -> bool:
    """Is stdout a terminal (for presentation only: never for the choice of format)."""
    return sys.stdout.isatty()


def json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode()


def emit_json(value: Any) -> None:
    sys.stdout.write(json_text(value))
    sys.stdout.write("\n")


def csv_safe(value: Any) -> str:
    """Cells that a spreadsheet would run as a formula are quoted with a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def emit_csv(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> int:
    """CSV on stdout, a row at a time (any number of rows in flat memory); returns how many."""
    writer = csv.writer(sys.stdout)
    writer.writerow(columns)
    n = 0
    for row in rows:
        writer.writerow([csv_safe(row.get(c)) for c in columns])
        n += 1
    return n


def emit_json_array(rows: Iterable[Any]) -> int:
    """A JSON array on stdout, an element at a time (any number of rows in flat memory); returns how many."""
    write = sys.stdout.write
    write("[")
    n = 0
    for n, row in enumerate(rows, 1):
        write("\n  " if n == 1 else ",\n  ")
        write(orjson.dumps(row, option=orjson.OPT_NON_STR_KEYS, default=str).decode())
    write("\n]\n" if n else "]\n")
    return n


def is_id_column(name: str) -> bool:
    return name in ID_COLUMNS or name.endswith("_id")


# Below this many characters a wrapping column is hard to read: the rows are shown as records.
_READABLE = 9


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    caption: str | None = None,
    cut: Collection[str] = (),
) -> None:
    """A table for people. Id columns (ID_COLUMNS, `*_id`) are never cut: as wide as their longest
    value, not wrapped; the other columns wrap (long words fold) when the width runs short, except
    those in `cut` (free text such as an error message), kept to one line ending in "…". When even
    so the other columns would get fewer than _READABLE characters, each row is shown as a record
    (one "column  value" line per column, values wrapping) instead of a table."""
    from rich import box
    from rich.table import Table

    console = _console("console")
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    natural = [max([len(column), *(len(row[i]) for row in cells)]) for i, column in enumerate(columns)]
    needed = sum(
        w if is_id_column(c) else min(w, 12 if c in cut else _READABLE) for c, w in zip(columns, natural, strict=True)
    )
    if cells and needed + 2 * (len(columns) - 1) > console.width:
        _records(title, columns, cells, caption, cut)
        return
    # Cut columns share what the others leave on one line (at least 12 characters each).
    left = console.width - sum(w + 2 for c, w in zip(columns, natural, strict=True) if c not in cut)
    cut_width = max(12, left // max(1, sum(1 for c in columns if c in cut)) - 2)
    # No outer edge and one space between columns: the width goes to the cells.
    t = Table(
        title=title,
        caption=caption,
        show_lines=False,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )
    for i, column in enumerate(columns):
        if is_id_column(column):
            t.add_column(column, no_wrap=True, min_width=natural[i], overflow="fold")
        elif column in cut:
            t.add_column(column, no_wrap=True, overflow="ellipsis", max_width=cut_width)
        else:
            t.add_column(column, overflow="fold")
    for row in cells:
        t.add_row(*row)
    console.print(t)


def _records(
    title: str | None, columns: Sequence[str], cells: list[list[str]], caption: str | None, cut: Collection[str]
) -> None:
    """Rows too wide for the terminal: one block per row, a line per column, a blank line between."""
    from rich.table import Table

    grid = Table(title=title, caption=caption, box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for n, row in enumerate(cells):
        if n:
            grid.add_row("", "")
        for column, value in zip(columns, row, strict=True):
            grid.add_row(column, one_line(value, 200) if column in cut else value)
    _console("console").print(grid)


def when(iso: str | None) -> str:
    """An ISO time for a table cell: to the second, "2026-12-03 20:05:18Z" (JSON keeps it whole)."""
    if not iso:
        return ""
    text = iso.replace("T", " ", 1)
    if text.endswith("+00:00"):
        text = text[: -len("+00:00")].split(".")[0] + "Z"
    return text


def one_line(text: str | None, limit: int) -> str:
    """An error message or other free text for a table cell: one line, at most `limit` characters."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def error(message: str, rows: Sequence[RowError] = (), limit: int = 50) -> None:
    from rich.markup import escape

    err_console = _console("err_console")
    # soft_wrap: one line whatever the width, so that logs and scripts see the whole message.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    for row in rows[:limit]:
        err_console.print(f"  {row}", highlight=False, markup=False)
    if len(rows) > limit:
        err_console.print(f"  … and {len(rows) - limit} more", highlight=False)


def summary_table(title: str, counts: dict[str, dict[str, int]]) -> None:
    rows = []
    for channel in sorted(counts):
        states = counts[channel]
        rows.append([channel, *[states.get(c, 0) for c in OUTCOME_COLUMNS]])
    table(title, ["channel", *OUTCOME_COLUMNS], rows)

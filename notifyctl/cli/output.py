"""Console output for the CLI: tables, JSON, progress bars and error reports. Library code never
prints; only the CLI calls these."""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from notifyctl.errors import RowError
from notifyctl.states import DeliveryState

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from notifyctl.security.redaction import mask_address as mask_address

    console: Console
    err_console: Console


def __getattr__(name: str) -> Any:
    """`console`, `err_console` and `mask_address`, made on first use: Rich and the redaction
    patterns cost tens of milliseconds of start-up that `send --json` never needs."""
    value: Any
    if name == "console":
        from rich.console import Console

        value = Console()
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
# States still on their way: not done yet for a progress bar.
_UNDERWAY = (DeliveryState.pending, DeliveryState.inflight)


def emit_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode())
    sys.stdout.write("\n")


def csv_safe(value: Any) -> str:
    """Cells that a spreadsheet would run as a formula are quoted with a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def emit_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_safe(row.get(c)) for c in columns])
    sys.stdout.write(buffer.getvalue())


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    _console("console").print(t)


def error(message: str, rows: Sequence[RowError] = (), limit: int = 50) -> None:
    from rich.markup import escape

    err_console = _console("err_console")
    # soft_wrap: one line whatever the width, so that logs and scripts see the whole message.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    for row in rows[:limit]:
        err_console.print(f"  {row}", highlight=False, markup=False)
    if len(rows) > limit:
        err_console.print(f"  … and {len(rows) - limit} more", highlight=False)


class ChannelProgress:
    """The engine's Progress, drawn as one Rich bar per channel (sent, skipped, failed, rate)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.started = time.monotonic()
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.by_state: dict[str, dict[str, int]] = {}
        self._progress: Progress | None = None  # Rich only when drawn (it costs start-up time)
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.fields[channel]:<8}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn(
                    "sent [green]{task.fields[sent]}[/] skipped {task.fields[skipped]} "
                    "failed [red]{task.fields[failed]}[/] {task.fields[rate]}/s"
                ),
                TimeElapsedColumn(),
                console=_console("err_console"),
                transient=False,
            )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ChannelProgress:
        if self._progress is not None:
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)

    def _task(self, progress: Progress, channel: str) -> TaskID:
        if channel not in self._tasks:
            self._tasks[channel] = progress.add_task(
                channel, total=0, channel=channel, sent=0, skipped=0, failed=0, rate=0
            )
        return self._tasks[channel]

    def _refresh(self, channel: str) -> None:
        if self._progress is None:
            return
        states = self.by_state.get(channel, {})
        elapsed = max(1e-6, time.monotonic() - self.started)
        self._progress.update(
            self._task(self._progress, channel),
            total=self.totals.get(channel, 0),
            completed=self.done.get(channel, 0),
            sent=states.get(DeliveryState.sent, 0),
            skipped=states.get(DeliveryState.skipped, 0) + states.get(DeliveryState.deferred, 0),
            failed=states.get(DeliveryState.dead, 0) + states.get(DeliveryState.in_doubt, 0),
            rate=int(states.get(DeliveryState.sent, 0) / elapsed),
        )

    def planned(self, channel: str, state: str, n: int) -> None:
        self.totals[channel] = self.totals.get(channel, 0) + n
        if state not in _UNDERWAY:
            self.done[channel] = self.done.get(channel, 0) + n
            states = self.by_state.setdefault(channel, {})
            states[state] = states.get(state, 0) + n
        if self.enabled:
            self._refresh(channel)

    def sync(self, counts: dict[str, dict[str, int]]) -> None:
        """The whole run's counts from the database (sibling sender processes report there only)."""
        for channel, states in counts.items():
            self.totals[channel] = sum(states.values())
            self.by_state[channel] = {s: n for s, n in states.items() if s not in _UNDERWAY}
            self.done[channel] = sum(self.by_state[channel].values())
            if self.enabled:
                self._refresh(channel)

    def outcome(self, channel: str, state: str) -> None:
        self.done[channel] = self.done.get(channel, 0) + 1
        states = self.by_state.setdefault(channel, {})
        states[state] = states.get(state, 0) + 1
        if self.enabled:
            self._refresh(channel)


def summary_table(title: str, counts: dict[str, dict[str, int]]) -> None:
    rows = []
    for channel in sorted(counts):
        states = counts[channel]
        rows.append([channel, *[states.get(c, 0) for c in OUTCOME_COLUMNS]])
    table(title, ["channel", *OUTCOME_COLUMNS], rows)

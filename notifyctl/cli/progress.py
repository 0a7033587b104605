"""The progress of a run on a terminal: one Rich bar per channel, drawn on stderr.

The total of a channel is shown once the engine has planned the whole input (`counted`); until
then the bar says it is still counting rather than showing a total that keeps growing. The
columns fit the terminal: below 100 columns the bar is short and the per-state detail is left
out, so a 60-column terminal draws one line per channel.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from notifyctl.states import DeliveryState

if TYPE_CHECKING:
    from rich.progress import Progress, ProgressColumn, Task, TaskID
    from rich.text import Text

# States still on their way: not done yet for a progress bar.
_UNDERWAY = (DeliveryState.pending, DeliveryState.inflight)
# Below this width the bar is short and the per-state detail is left out.
_WIDE = 100


def progress_wanted(json_flag: bool) -> bool:
    """Bars only for a person at a terminal: never with --json, never into a file or pipe."""
    from notifyctl.cli import output

    return not json_flag and output.err_console.is_terminal


def _columns(width: int) -> list[ProgressColumn]:
    from rich.progress import BarColumn, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    class Count(ProgressColumn):
        """done/total, or done/counting… while the input is still being planned."""

        def render(self, task: Task) -> Text:
            from rich.text import Text

            total = "counting…" if task.total is None else str(int(task.total))
            return Text(f"{int(task.completed)}/{total}", no_wrap=True)

    eta = TimeRemainingColumn(compact=True, elapsed_when_finished=True)
    if width < _WIDE:
        return [
            TextColumn("[bold]{task.fields[channel]:<7.7}"),
            BarColumn(bar_width=10),
            Count(),
            TextColumn("failed [red]{task.fields[failed]}[/]"),
            TextColumn("ETA"),
            eta,
        ]
    return [
        TextColumn("[bold]{task.fields[channel]:<8}"),
        BarColumn(bar_width=30),
        Count(),
        TextColumn(
            "sent [green]{task.fields[sent]}[/] skipped {task.fields[skipped]} "
            "failed [red]{task.fields[failed]}[/] {task.fields[rate]}/s"
        ),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        eta,
    ]


class ChannelProgress:
    """The engine's Progress, drawn as one Rich bar per channel (sent, skipped, failed, rate, ETA)."""

    def __init__(self, enabled: bool) -> None:
        from notifyctl.cli import output

        enabled = enabled and not output.QUIET  # -q: no progress drawn
        self.enabled = enabled
        self.started = time.monotonic()
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.by_state: dict[str, dict[str, int]] = {}
        self.is_counted = False
        self._progress: Progress | None = None  # Rich only when drawn (it costs start-up time)
        if enabled:
            from rich.progress import Progress

            from notifyctl.cli import output

            console = output.err_console
            self._progress = Progress(*_columns(console.width), console=console, transient=False)
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
                channel, total=None, channel=channel, sent=0, skipped=0, failed=0, rate=0
            )
        return self._tasks[channel]

    def _refresh(self, channel: str) -> None:
        if self._progress is None:
            return
        states = self.by_state.get(channel, {})
        elapsed = max(1e-6, time.monotonic() - self.started)
        fields: dict[str, Any] = {
            "completed": self.done.get(channel, 0),
            "sent": states.get(DeliveryState.sent, 0),
            "skipped": states.get(DeliveryState.skipped, 0) + states.get(DeliveryState.deferred, 0),
            "failed": states.get(DeliveryState.dead, 0) + states.get(DeliveryState.in_doubt, 0),
            "rate": int(states.get(DeliveryState.sent, 0) / elapsed),
        }
        if self.is_counted:
            fields["total"] = self.totals.get(channel, 0)
        self._progress.update(self._task(self._progress, channel), **fields)

    def planned(self, channel: str, state: str, n: int) -> None:
        self.totals[channel] = self.totals.get(channel, 0) + n
        if state not in _UNDERWAY:
            self.done[channel] = self.done.get(channel, 0) + n
            states = self.by_state.setdefault(channel, {})
            states[state] = states.get(state, 0) + n
        if self.enabled:
            self._refresh(channel)

    def counted(self) -> None:
        """Everything is planned: the totals are final and the bars show them (and an ETA)."""
        self.is_counted = True
        if self.enabled:
            for channel in self.totals:
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

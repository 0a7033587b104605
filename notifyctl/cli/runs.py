"""`notifyctl runs list | show` and `notifyctl audit`: runs and the audit log."""

from __future__ import annotations

from typing import Annotated

import typer

from notifyctl.cli.common import JsonOpt, context, guarded
from notifyctl.errors import InputError

runs_app = typer.Typer(
    help="Runs (each send and broadcast).\n\nExample: notifyctl runs show RUN_ID", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add `audit` and the `runs` group to the notifyctl command."""
    app.add_typer(runs_app, name="runs")
    app.command()(audit)


@runs_app.command("list")
@guarded
def runs_list(
    cli: typer.Context,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """List runs, newest first.

    Example: notifyctl runs list --limit 10
    """
    from notifyctl.app.audit import recent_runs
    from notifyctl.cli import output

    with context(cli) as ctx:
        items = recent_runs(ctx, limit)
    if output.wants_json(json_out):
        output.emit_json([{**vars(r), "counts": counts} for r, counts in items])
        return
    output.table(
        "runs",
        ["run", "kind", "campaign", "template", "state", "deliveries", "created"],
        [
            (
                r.run_id,
                r.kind,
                r.campaign_id,
                r.template,
                r.state,
                sum(sum(s.values()) for s in counts.values()),
                output.when(r.created),
            )
            for r, counts in items
        ],
    )


@runs_app.command("show")
@guarded
def runs_show(cli: typer.Context, run_id: str, json_out: JsonOpt = False) -> None:
    """Counts per state and channel, rate, errors and times of one run.

    Example: notifyctl runs show run_20261121_ab12cd --json
    """
    from notifyctl.app.audit import run_details
    from notifyctl.cli import output

    with context(cli) as ctx:
        details = run_details(ctx, run_id)
    if output.wants_json(json_out):
        output.emit_json(details)
        return
    output.table(
        f"run {run_id}",
        ["field", "value"],
        [(k, v) for k, v in details.items() if k not in ("counts", "reasons", "errors")],
    )
    output.summary_table("deliveries", details["counts"])
    if details["reasons"]:
        output.table("reasons", ["state:reason", "count"], sorted(details["reasons"].items()))
    if details["errors"]:
        output.table("errors", ["class", "message", "count"], details["errors"])


@runs_app.command("cancel")
@guarded
def runs_cancel(cli: typer.Context, run_id: str, json_out: JsonOpt = False) -> None:
    """End a run that has not finished: its pending and deferred deliveries are skipped (cancelled),
    audited, and the run is never resumed. Refused for a finished run, and while another notifyctl
    process is sending it.

    Example: notifyctl runs cancel run_20261121_ab12cd
    """
    from notifyctl.app.cancel import cancel
    from notifyctl.cli import output

    with context(cli) as ctx:
        done = cancel(ctx, run_id)
    if json_out:
        output.emit_json({"run_id": done.run_id, "state": "cancelled", **vars(done)})
        return
    output.console.print(
        f"run {done.run_id} cancelled (was {done.previous_state}): {done.skipped} deliveries skipped (cancelled)"
    )
    if done.held_in_doubt:
        output.console.print(
            f"[yellow]{done.held_in_doubt} held in doubt[/]: they were in flight when the run stopped and may "
            f"have been delivered; see `notifyctl dlq list --run {done.run_id}`"
        )


# The table for people shows this many unless --limit says otherwise; exports have no default cap.
TABLE_LIMIT = 50
AUDIT_TABLE = ("id", "run_id", "user_id", "channel", "address", "state", "reason", "provider", "attempts", "updated")


@guarded
def audit(
    cli: typer.Context,
    run: Annotated[str | None, typer.Option(help="Only this run.")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user.")] = None,
    status: Annotated[str | None, typer.Option(help="Only this state (sent, skipped, dead, …).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    limit: Annotated[
        int | None,
        typer.Option(help=f"At most this many rows (0: all). Default: all for json/csv, {TABLE_LIMIT} for the table."),
    ] = None,
    newest_first: Annotated[
        bool, typer.Option("--newest-first/--oldest-first", help="Order by delivery id, newest or oldest first.")
    ] = True,
    redact: Annotated[bool, typer.Option(help="Mask addresses, for sharing.")] = False,
) -> None:
    """Every delivery with its decision, provider, message id, template version, attempts and times.
    json and csv export every matching row (streamed) unless --limit is given.

    Example: notifyctl audit --run run_20261121_ab12cd --status dead --format csv > dead.csv
    """
    from notifyctl.app.audit import AUDIT_COLUMNS, audit_count, audit_rows
    from notifyctl.cli import output
    from notifyctl.cli.output import when

    if fmt not in ("table", "json", "csv"):
        raise InputError("--format must be table, json or csv")
    if json_out:
        if fmt == "csv":
            raise InputError("--json and --format csv: choose one")
        fmt = "json"
    if limit is not None and limit < 0:
        raise InputError("--limit must be 0 (all) or more")
    if limit is None:
        limit = TABLE_LIMIT if fmt == "table" else 0
    filters = {"run_id": run, "user_id": user, "state": status}
    with context(cli) as ctx:
        rows = audit_rows(ctx, **filters, limit=limit, newest_first=newest_first)
        if redact:
            rows = ({**row, "address": output.mask_address(row["address"])} for row in rows)
        if fmt == "json":
            output.emit_json_array(rows)
        elif fmt == "csv":
            output.emit_csv(rows, AUDIT_COLUMNS)
        else:
            shown = [[when(r[c]) if c == "updated" else r[c] for c in AUDIT_TABLE] for r in rows]
            total = audit_count(ctx, **filters)
            caption = None
            if len(shown) < total:
                caption = (
                    f"showing {len(shown)} of {total} ({'newest' if newest_first else 'oldest'} first); "
                    "use --limit N (0: all), or --format csv to export"
                )
            output.table("audit", AUDIT_TABLE, shown, caption=caption)

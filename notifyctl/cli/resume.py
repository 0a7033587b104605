"""`notifyctl resume`: finish interrupted runs (or, from cron, every run that is due)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from notifyctl.cli.common import (
    EXIT_FAILED,
    JsonOpt,
    RedisOpt,
    guarded,
    machine_output,
    open_context,
    outcome_exit_code,
    outcome_payload,
    print_outcome,
    report_problems,
    run_async,
)
from notifyctl.errors import InputError, NotifyctlError

if TYPE_CHECKING:
    from notifyctl.pipeline.engine import Engine


def register(app: typer.Typer) -> None:
    """Add `resume` to the notifyctl command."""
    app.command()(resume)


@guarded
def resume(
    cli: typer.Context,
    run_id: Annotated[str | None, typer.Argument(help="The run to finish.")] = None,
    due: Annotated[
        bool,
        typer.Option(
            help="Finish every run that is interrupted, scheduled and due, or has "
            "deferred deliveries now due. Safe to run from cron every minute."
        ),
    ] = False,
    allow_template_change: Annotated[bool, typer.Option(help="Render the rest with the changed template.")] = False,
    redis: RedisOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Continue an interrupted run from where it stopped, without re-sending anything recorded.

    With --due every run that is due is processed; one that fails is named on stderr (its state
    `failed` with the reason when it had not been planned) and the others go on: exit 1.

    Example: notifyctl resume run_20261121_ab12cd
    (cron: * * * * * notifyctl --config /srv/notify/notifyctl.toml resume --due)
    """
    from notifyctl.app import resume as resuming
    from notifyctl.cli import output
    from notifyctl.cli.progress import ChannelProgress, progress_wanted

    machine = machine_output(json_out)
    if not due and not run_id:
        raise InputError("give a RUN id, or --due")
    engines: list[Engine] = []
    worst = 0
    crash: Exception | None = None
    payloads: list[dict[str, Any]] = []
    with open_context(cli, redis) as ctx:
        targets = resuming.due_runs(ctx) if due else [run_id or ""]
        for target in targets:
            try:
                with ChannelProgress(enabled=progress_wanted(json_out)) as progress:
                    result = run_async(
                        resuming.resume(
                            ctx,
                            target,
                            allow_template_change=allow_template_change,
                            progress=progress,
                            on_engine=engines.append,
                        ),
                        engines,
                    )
            except NotifyctlError as exc:
                if not due:
                    raise
                # From cron: one run that cannot go on must not hold back the others due.
                payloads.append({"run_id": target, "failed": str(exc)})
                output.error(f"run {target} failed: {exc}")
                worst = max(worst, EXIT_FAILED)
                continue
            except Exception as exc:  # a bug: the other runs go on, then it is reported as a crash
                if not due:
                    raise
                payloads.append({"run_id": target, "failed": f"crashed: {type(exc).__name__}"})
                crash = crash or exc
                continue
            if isinstance(result, resuming.ResumeSkipped):
                payloads.append({"run_id": target, "skipped": result.why})
                if not machine:
                    output.console.print(f"{target}: {result.why}")
                continue
            payloads.append(outcome_payload(result))
            if not machine:
                print_outcome(result, "resume")
            report_problems(result)
            worst = max(worst, outcome_exit_code(result))
            if engines and engines[-1].stopping.is_set():
                break
    if machine:
        output.emit_json({"resumed": payloads} if due else payloads[0])
    elif due and not targets:
        output.console.print("nothing is due")
    if crash is not None:
        raise crash  # the crash report and exit 70, after every other due run was worked on
    if worst:
        raise typer.Exit(worst)

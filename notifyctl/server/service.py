"""The pipeline behind `notifyctl serve`: one service-mode run, kept open for API submissions.

Accepted requests are planned into the outbox before the API answers 202, so a stop (SIGTERM,
crash) loses nothing: the run is left `interrupted` with its pending rows, and the next start
(or `notifyctl resume RUN`) finishes it. Earlier API runs left unfinished are resumed in the
background at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from notifyctl.app.context import Context
from notifyctl.app.resume import due_runs, resume
from notifyctl.errors import NotifyctlError
from notifyctl.models import RunState
from notifyctl.pipeline.engine import Engine
from notifyctl.pipeline.planner import PlanItem, PlanResult
from notifyctl.server.backlog import Backlog
from notifyctl.store import locks, runs

log = logging.getLogger("notifyctl.server")

API_RUN_KIND = "api"


class DeliveryService:
    """A long-lived run fed by a front door: `serve`'s API (kind "api"), or `consume`'s Kafka topic
    (kind "kafka"). Each kind resumes only its own earlier runs at start."""

    def __init__(self, ctx: Context, kind: str = API_RUN_KIND) -> None:
        self.ctx = ctx
        self.kind = kind
        self.run_id = ""
        self.engine: Engine | None = None
        self.backlog = Backlog()
        self._task: asyncio.Task[object] | None = None
        self._resume_engines: list[Engine] = []
        self._resume_tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return self.engine is not None and self._task is not None and not self._task.done()

    async def start(self) -> None:
        ctx = self.ctx
        earlier = [
            run_id
            for run_id in due_runs(ctx)
            if (run := runs.get_run(ctx.conn, run_id)) is not None and run.kind == self.kind
        ]
        self.run_id = runs.new_run_id(self.kind)
        runs.create_run(
            ctx.conn,
            run_id=self.run_id,
            kind=self.kind,
            template=f"({self.kind})",
            template_version="-",
            category="-",
            channels=sorted(ctx.settings.channels),
            state=RunState.running,
        )
        if not locks.acquire_lock(
            ctx.conn, f"run:{self.run_id}", owner="serve" if self.kind == API_RUN_KIND else self.kind
        ):
            raise NotifyctlError(f"run {self.run_id} is locked by another process")
        engine = ctx.engine(progress=self.backlog)
        # Whatever is accepted is committed before the 202, so the run counts as fully planned:
        # `notifyctl resume` (or the next start) can finish it from the outbox alone.
        engine.planner.plan_batch(self.run_id, [], planned=True)
        self.engine = engine
        self._task = asyncio.create_task(engine.run(self.run_id, None, service=True), name=f"{self.kind}-engine")
        ready = asyncio.ensure_future(engine.ready())
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            await self._task  # raises what stopped the engine from starting
            raise NotifyctlError("the delivery engine stopped before it was ready")
        for run_id in earlier:
            self._resume_tasks.append(asyncio.create_task(self._resume(run_id), name=f"resume-{run_id}"))

    async def _resume(self, run_id: str) -> None:
        try:
            result = await resume(self.ctx, run_id, on_engine=self._resume_engines.append)
        except NotifyctlError as exc:
            log.warning("could not resume earlier run", extra={"run_id": run_id, "error": str(exc)})
            return
        log.info("resumed earlier run", extra={"run_id": run_id, "state": getattr(result, "state", "skipped")})

    def unsettled(self) -> int:
        """The service run's deliveries accepted and not yet settled (server/backlog.py)."""
        return self.backlog.unsettled(self.ctx.conn, self.run_id)

    def planned_before(self, item: PlanItem) -> list[dict[str, Any]] | None:
        """The deliveries that already hold every idempotency key of `item` (Planner.planned_before)."""
        assert self.engine is not None
        return self.engine.planner.planned_before(item)

    def submit(self, items: list[PlanItem]) -> PlanResult:
        """Plan into the service run; the engine sends in the background."""
        assert self.engine is not None
        return self.engine.submit(self.run_id, items)

    def queue_depths(self) -> dict[str, int]:
        if self.engine is None:
            return {}
        return {channel: lane.queue.qsize() for channel, lane in self.engine.lanes.items()}

    async def stop(self, timeout_s: float = 10.0) -> None:
        """No new sends; requests in flight finish and are recorded; the rest stays pending."""
        for engine in [*([self.engine] if self.engine else []), *self._resume_engines]:
            engine.stop()
        tasks: list[asyncio.Task[object] | asyncio.Task[None]] = [*self._resume_tasks]
        if self._task is not None:
            tasks.append(self._task)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout_s)
            for task in late:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                    log.error("delivery engine failed", extra={"error": type(result).__name__})
        if self.run_id:
            with contextlib.suppress(Exception):
                locks.release_lock(self.ctx.conn, f"run:{self.run_id}")

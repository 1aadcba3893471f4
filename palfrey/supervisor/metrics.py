"""The supervisor's ``--metrics-bind``: its workers' numbers added up, plus its own.

Workers keep their counters in process (no I/O per request). At scrape
time the supervisor asks every serving worker for a snapshot over its
control channel and adds them up; a worker that has exited leaves its
counters behind (its final snapshot, sent as it finishes), so totals never
go down when a worker is replaced — Prometheus would read that as a reset.
The supervisor adds what only it knows: restarts by cause and the number of
workers serving.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

from palfrey.observability.metrics import Snapshot, by_label, merge, retire
from palfrey.supervisor.workers import Worker, WorkerState

if TYPE_CHECKING:
    from collections.abc import Iterable

#: How long a scrape waits for one worker's snapshot before using the last one it sent.
SNAPSHOT_TIMEOUT = 1.0


@attrs.define(slots=True, eq=False)
class WorkerMetrics:
    """Totals across workers, present and past; also the supervisor's health and readiness."""

    workers: set[Worker]
    stopped: trio.Event
    #: The counters of workers that have exited.
    retired: Snapshot = attrs.Factory(dict)
    restarts: dict[str, int] = attrs.Factory(dict)

    def count_restart(self, cause: str) -> None:
        """A worker is being replaced: ``crashed``, ``unhealthy``, ``max_requests``,
        ``lifetime``, ``max_rss``, ``restart`` (SIGHUP), ``reload`` or ``start_failed``."""
        self.restarts[cause] = self.restarts.get(cause, 0) + 1

    def worker_exited(self, worker: Worker) -> None:
        if worker.metrics is not None:
            self.retired = merge([self.retired, retire(worker.metrics)])

    async def collect(self) -> Snapshot:
        serving = [worker for worker in self.workers if _reports(worker)]
        snapshots: dict[Worker, Snapshot] = {}

        async def ask(worker: Worker) -> None:
            snapshot = await worker.request_metrics(SNAPSHOT_TIMEOUT)
            if snapshot is not None:
                snapshots[worker] = snapshot

        async with trio.open_nursery() as nursery:
            for worker in serving:
                nursery.start_soon(ask, worker)
        # A worker that exited meanwhile is already in ``retired``.
        live = (snapshot for worker, snapshot in snapshots.items() if worker in self.workers)
        own: Snapshot = {
            "palfrey_worker_restarts_total": by_label(self.restarts, "cause"),
            "palfrey_workers": {"": _count_serving(self.workers)},
        }
        return merge([self.retired, *live, own])

    def healthy(self) -> bool:
        # A worker draining on purpose is still alive: only readiness drops.
        return any(_reports(worker) for worker in self.workers)

    def ready(self) -> bool:
        return not self.stopped.is_set() and _count_serving(self.workers) > 0


def _reports(worker: Worker) -> bool:
    return worker.state is WorkerState.SERVING or worker.state is WorkerState.STOPPING


def _count_serving(workers: Iterable[Worker]) -> int:
    return sum(1 for worker in workers if worker.state is WorkerState.SERVING)

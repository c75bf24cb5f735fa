"""Bounded background jobs with progress (the admin API's broadcasts).

A :class:`JobManager` runs at most ``max_running`` jobs at once (a new one past
that is refused with :class:`JobsBusy`) and remembers the last ``keep``
finished ones. A job's work goes through :func:`for_each`, which runs at most
``concurrency`` steps at a time and counts each as done or failed, so
``GET /jobs/{id}`` can show how far it got.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

__all__ = ["Job", "JobManager", "JobStatus", "JobsBusy", "for_each"]

log = logging.getLogger("xmppd.admin.jobs")

JobStatus = Literal["running", "done", "failed", "cancelled"]
T = TypeVar("T")


class JobsBusy(Exception):
    """Too many jobs are running already."""


@dataclass
class Job:
    id: str
    kind: str
    total: int = 0
    done: int = 0
    failed: int = 0
    status: JobStatus = "running"
    created: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "pending": max(0, self.total - self.done - self.failed),
            "created": self.created,
            "finished": self.finished,
            "error": self.error,
        }


class JobManager:
    def __init__(self, keep: int = 100, max_running: int = 4) -> None:
        self.keep = keep
        self.max_running = max_running
        self._jobs: dict[str, Job] = {}  # insertion order: oldest first

    def running(self) -> int:
        return sum(1 for j in self._jobs.values() if j.status == "running")

    def submit(self, kind: str, work: Callable[[Job], Awaitable[None]], total: int = 0) -> Job:
        """Start ``work(job)`` in the background; raises :class:`JobsBusy` past the limit."""
        if self.running() >= self.max_running:
            raise JobsBusy(f"{self.max_running} jobs are running already")
        job = Job(id=uuid.uuid4().hex, kind=kind, total=total)
        self._jobs[job.id] = job
        self._evict()
        job.task = asyncio.get_running_loop().create_task(self._run(job, work))
        job.task.add_done_callback(lambda t: self._ended(job, t))
        return job

    async def _run(self, job: Job, work: Callable[[Job], Awaitable[None]]) -> None:
        try:
            await work(job)
        except Exception as exc:
            log.exception("admin job %s (%s) failed", job.id, job.kind)
            job.status = "failed"
            job.error = f"{type(exc).__name__}: {exc}"
        else:
            job.status = "done"

    @staticmethod
    def _ended(job: Job, task: asyncio.Task[None]) -> None:
        if task.cancelled():  # also when cancelled before it ever ran
            job.status = "cancelled"
        job.finished = time.time()
        job.task = None

    def _evict(self) -> None:
        finished = [j for j in self._jobs.values() if j.status != "running"]
        excess = len(self._jobs) - self.keep
        for j in finished[: max(0, excess)]:
            del self._jobs[j.id]

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def list(self) -> list[Job]:
        """Newest first."""
        return list(reversed(self._jobs.values()))

    def cancel(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None and job.task is not None:
            job.task.cancel()
        return job

    async def close(self) -> None:
        """Cancel every running job and wait for them."""
        tasks = [j.task for j in self._jobs.values() if j.task is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def for_each(
    job: Job, items: Iterable[T], step: Callable[[T], Awaitable[bool]], concurrency: int
) -> None:
    """Run ``step`` on every item, ``concurrency`` at a time, counting into ``job``.

    A step returning True counts as done; False or an exception as failed.
    """
    it = iter(items)

    async def worker() -> None:
        for item in it:  # the workers share one iterator
            try:
                ok = await step(item)
            except Exception:
                log.exception("admin job %s: a step failed", job.id)
                ok = False
            if ok:
                job.done += 1
            else:
                job.failed += 1

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))

"""A first-in, first-out job queue: every session's runs wait here for the one device.

A :class:`JobQueue` owns ``workers`` daemon threads (one by default: one model on one device, so
runs go one after the other). :meth:`JobQueue.submit` puts a function in the queue and returns its
:class:`Job` at once; a worker later calls ``fn(job)``. The function reports its progress with
:meth:`Job.report` and watches :attr:`Job.cancel_event` (the engine's samplers take it as
``cancel=`` and stop at the next diffusion step). The UI thread only *reads* a job (its ``status``,
``step``/``total``, :meth:`JobQueue.position`); nothing here imports Panel or the engine.

A job may deliver an intermediate result before it ends: :meth:`Job.publish` (worker thread)
stores it in :attr:`Job.partial` and bumps :attr:`Job.published`; the UI thread reads both at
once with :meth:`Job.latest` and shows what is new (e.g. the guided ensemble while the O−B
background pass still runs). A published result stays readable whatever the job's outcome:
a cancel or a failure afterwards withdraws nothing.

Outcomes: the function's return value goes to :attr:`Job.result` (status ``"done"``); an exception
goes to :attr:`Job.error` (status ``"failed"``, the worker carries on with the next job), except
when the job was cancelled, in which case the status is ``"cancelled"`` (the engine raises its
``Cancelled`` exception only after the event was set). Cancelling a queued job drops it at once.

:func:`shared_queue` is the process-wide queue all sessions share.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from typing import Any, Callable

__all__ = ["Job", "JobQueue", "shared_queue", "STATUSES"]

log = logging.getLogger(__name__)

#: Every status a job goes through: queued → running → done | failed | cancelled.
STATUSES = ("queued", "running", "done", "failed", "cancelled")
_FINISHED = frozenset({"done", "failed", "cancelled"})
_ids = itertools.count(1)


class Job:
    """One unit of work in a :class:`JobQueue` (made by :meth:`JobQueue.submit`).

    Attributes:
        id: Unique number of the job in this process.
        owner: Who submitted it (e.g. a session id).
        label: What it is, in words.
        status: ``"queued"``, ``"running"``, ``"done"``, ``"failed"`` or ``"cancelled"``.
        step, total: The progress last reported by the function (diffusion steps).
        result: What the function returned (status ``"done"``).
        partial: The last intermediate result published (:meth:`publish`), or None.
        published: How many intermediate results were published (0: none).
        published_at: :func:`time.monotonic` time of the last :meth:`publish` (None before).
        error: What it raised (``"failed"``, or ``"cancelled"`` when it stopped on a cancel).
        submitted, started, finished: :func:`time.monotonic` times (None until reached).
        cancel_event: Set by :meth:`cancel`; the function stops when it sees it.
    """

    def __init__(self, fn: Callable[["Job"], Any], *, queue: "JobQueue", owner: str = "", label: str = ""):
        self.id = next(_ids)
        self.owner = owner
        self.label = label
        self.status = "queued"
        self.step = 0
        self.total = 0
        self.result: Any = None
        self.error: BaseException | None = None
        self.partial: Any = None
        self.published = 0
        self.published_at: float | None = None
        self._partial_lock = threading.Lock()
        self.submitted = time.monotonic()
        self.started: float | None = None
        self.finished: float | None = None
        self.cancel_event = threading.Event()
        self._fn = fn
        self._queue = queue
        self._done = threading.Event()

    def __repr__(self) -> str:
        return f"Job(id={self.id}, owner={self.owner!r}, label={self.label!r}, status={self.status!r})"

    def report(self, step: int, total: int) -> None:
        """Record progress (called by the function, on the worker thread)."""

        self.step, self.total = int(step), int(total)

    def publish(self, value: Any) -> None:
        """Deliver an intermediate result (called by the function, on the worker thread); the job
        runs on. Readers see it through :meth:`latest`."""

        with self._partial_lock:
            self.partial = value
            self.published += 1
            self.published_at = time.monotonic()

    def latest(self) -> tuple[int, Any]:
        """``(published, partial)`` read together: how many intermediate results there were and
        the last one (``(0, None)`` before any)."""

        with self._partial_lock:
            return self.published, self.partial

    def cancel(self) -> None:
        """Drop the job if it is still queued; ask it to stop at its next step if it runs."""

        self.cancel_event.set()
        self._queue._drop(self)

    @property
    def is_finished(self) -> bool:
        """Done, failed or cancelled."""
        return self.status in _FINISHED

    @property
    def elapsed(self) -> float:
        """Seconds since the job started running (0 while queued; frozen once finished)."""

        if self.started is None:
            return 0.0
        return (self.finished if self.finished is not None else time.monotonic()) - self.started

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is finished (or ``timeout`` seconds); whether it finished."""

        return self._done.wait(timeout)

    def _finish(self, status: str) -> None:
        self.status = status
        self.finished = time.monotonic()
        self._done.set()


class JobQueue:
    """A FIFO queue of :class:`Job` served by ``workers`` daemon threads.

    Arguments:
        workers: Jobs that may run at the same time (1: one device, one run at a time).
    """

    def __init__(self, *, workers: int = 1):
        if int(workers) < 1:
            raise ValueError(f"a job queue needs at least one worker, got {workers}")
        self._pending: collections.deque[Job] = collections.deque()
        self._running: list[Job] = []
        self._lock = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"appa-job-worker-{k}", daemon=True)
                         for k in range(int(workers))]
        for thread in self._threads:
            thread.start()

    # -- submitting and reading ---------------------------------------------------------------

    def submit(self, fn: Callable[[Job], Any], *, owner: str = "", label: str = "") -> Job:
        """Queue ``fn``; a worker will call ``fn(job)``. Returns the job at once."""

        job = Job(fn, queue=self, owner=owner, label=label)
        with self._lock:
            if self._closed:
                raise RuntimeError("this job queue was shut down")
            self._pending.append(job)
            self._lock.notify()
        log.debug("queued %r (%d ahead)", job, self.position(job))
        return job

    def position(self, job: Job) -> int:
        """Number of jobs ahead of ``job`` (those running and those queued before it); 0 when
        it runs or is finished."""

        with self._lock:
            try:
                index = self._pending.index(job)
            except ValueError:
                return 0
            return index + len(self._running)

    def jobs(self, owner: str | None = None) -> list[Job]:
        """Jobs running, then queued (in order), optionally those of one ``owner``."""

        with self._lock:
            jobs = [*self._running, *self._pending]
        return [j for j in jobs if owner is None or j.owner == owner]

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._running)

    # -- stopping -----------------------------------------------------------------------------

    def _drop(self, job: Job) -> None:
        with self._lock:
            if job in self._pending:
                self._pending.remove(job)
                job._finish("cancelled")
                log.debug("dropped %r before it ran", job)

    def shutdown(self, *, cancel: bool = True, timeout: float | None = 30.0) -> None:
        """Stop accepting jobs and stop the workers.

        Arguments:
            cancel: Drop the queued jobs and ask the running ones to stop (True), or let the
                workers finish every job already queued (False).
            timeout: Seconds to wait for each worker (None: as long as it takes).
        """

        with self._lock:
            self._closed = True
            if cancel:
                while self._pending:
                    self._pending.popleft()._finish("cancelled")
                for job in self._running:
                    job.cancel_event.set()
            self._lock.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the workers --------------------------------------------------------------------------

    def _next(self) -> Job | None:
        with self._lock:
            while not self._pending and not self._closed:
                self._lock.wait()
            if not self._pending:
                return None  # closed and drained
            job = self._pending.popleft()
            self._running.append(job)
            job.status, job.started = "running", time.monotonic()
            return job

    def _work(self) -> None:
        while (job := self._next()) is not None:
            status = "done"
            try:
                job.result = job._fn(job)
            except BaseException as e:  # noqa: BLE001 - a failing job must not kill the worker
                job.error = e
                if job.cancel_event.is_set():
                    status = "cancelled"
                else:
                    status = "failed"
                    log.warning("job %r failed: %s: %s", job, type(e).__name__, e)
            else:
                if job.cancel_event.is_set():  # asked to stop, but it finished first: keep the result
                    log.debug("%r finished before its cancel took effect", job)
            finally:
                job._fn = None  # drop references held by the closure
            with self._lock:
                self._running.remove(job)
                job._finish(status)


_shared: JobQueue | None = None
_shared_lock = threading.Lock()


def shared_queue() -> JobQueue:
    """The process-wide queue (one worker: one device); every session submits its runs here."""

    global _shared
    with _shared_lock:
        if _shared is None or _shared.closed:
            _shared = JobQueue(workers=1)
        return _shared

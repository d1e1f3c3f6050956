"""The job queue: FIFO order, positions, cancel (queued and running), failures, owners, shutdown.

The jobs are small real functions that block on events, so every test controls exactly when each
job may finish (no sleeps to guess timings, apart from bounded waits).
"""

from __future__ import annotations

import threading

import pytest

from app.jobs import JobQueue, shared_queue

TIMEOUT = 10.0


def _blocker(gate: threading.Event, log: list | None = None, name: str = "", result=None):
    """A job function that records that it started, then waits for ``gate`` (or a cancel)."""

    def fn(job):
        if log is not None:
            log.append(name)
        while not gate.wait(0.01):
            if job.cancel_event.is_set():
                raise InterruptedError("stopped at the next step")
        return result

    return fn


@pytest.fixture
def queue():
    q = JobQueue(workers=1)
    yield q
    q.shutdown(cancel=True, timeout=TIMEOUT)


def _wait_status(job, status: str) -> None:
    for _ in range(int(TIMEOUT / 0.01)):
        if job.status == status:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{job} never reached {status!r}")


def test_fifo_order_and_results(queue):
    order: list[str] = []
    gate = threading.Event()
    jobs = [queue.submit(_blocker(gate, order, name, result=name.upper()), label=name) for name in "abcd"]
    gate.set()
    assert all(job.wait(TIMEOUT) for job in jobs)
    assert order == list("abcd")
    assert [job.status for job in jobs] == ["done"] * 4
    assert [job.result for job in jobs] == list("ABCD")
    # One worker: each job started after the previous one finished.
    for before, after in zip(jobs, jobs[1:]):
        assert before.finished <= after.started
    assert len(queue) == 0


def test_positions_follow_the_queue(queue):
    gates = [threading.Event() for _ in range(4)]
    jobs = [queue.submit(_blocker(g)) for g in gates]
    _wait_status(jobs[0], "running")
    assert [queue.position(j) for j in jobs] == [0, 1, 2, 3]
    assert len(queue) == 4 and [j.status for j in jobs] == ["running", "queued", "queued", "queued"]
    gates[0].set()
    _wait_status(jobs[1], "running")
    assert [queue.position(j) for j in jobs] == [0, 0, 1, 2]
    assert jobs[0].status == "done" and len(queue) == 3
    for g in gates:
        g.set()
    assert all(j.wait(TIMEOUT) for j in jobs)
    assert [queue.position(j) for j in jobs] == [0, 0, 0, 0]


def test_progress_reports_reach_the_job(queue):
    seen = threading.Event()
    gate = threading.Event()

    def fn(job):
        for i in range(1, 4):
            job.report(i, 3)
        seen.set()
        gate.wait(TIMEOUT)
        return "ok"

    job = queue.submit(fn)
    assert seen.wait(TIMEOUT)
    assert (job.step, job.total, job.status) == (3, 3, "running")
    assert job.elapsed >= 0
    gate.set()
    assert job.wait(TIMEOUT) and job.result == "ok"


def test_cancel_a_queued_job_drops_it_at_once(queue):
    order: list[str] = []
    gate = threading.Event()
    first = queue.submit(_blocker(gate, order, "first"))
    second = queue.submit(_blocker(gate, order, "second"))
    third = queue.submit(_blocker(gate, order, "third"))
    _wait_status(first, "running")
    second.cancel()
    assert second.status == "cancelled" and second.is_finished and second.wait(0)
    assert queue.position(third) == 1 and len(queue) == 2
    gate.set()
    assert third.wait(TIMEOUT) and first.wait(TIMEOUT)
    assert order == ["first", "third"]  # the cancelled job never ran
    assert second.started is None and second.error is None


def test_cancel_a_running_job_stops_it_and_the_next_one_runs(queue):
    never = threading.Event()
    running = queue.submit(_blocker(never))
    after = queue.submit(lambda job: 42)
    _wait_status(running, "running")
    running.cancel()
    assert running.wait(TIMEOUT)
    assert running.status == "cancelled" and isinstance(running.error, InterruptedError)
    assert after.wait(TIMEOUT) and after.status == "done" and after.result == 42


def test_a_failing_job_keeps_its_exception_and_the_worker_carries_on(queue):
    def boom(job):
        raise ValueError("bad input")

    failing = queue.submit(boom)
    exiting = queue.submit(lambda job: (_ for _ in ()).throw(SystemExit(3)))
    fine = queue.submit(lambda job: "still here")
    assert fine.wait(TIMEOUT)
    assert failing.status == "failed" and isinstance(failing.error, ValueError) and "bad input" in str(failing.error)
    assert exiting.status == "failed" and isinstance(exiting.error, SystemExit)
    assert fine.status == "done" and fine.result == "still here" and fine.error is None


def test_two_owners_interleaved_keep_fifo_order_and_their_own_results(queue):
    gate = threading.Event()
    order: list[str] = []
    jobs = []
    for k in range(6):
        owner = "alice" if k % 2 == 0 else "bob"
        jobs.append(queue.submit(_blocker(gate, order, f"{owner}-{k}", result=(owner, k)), owner=owner))
    _wait_status(jobs[0], "running")
    assert [j.id for j in queue.jobs("bob")] == [jobs[1].id, jobs[3].id, jobs[5].id]
    assert [queue.position(j) for j in queue.jobs("alice")] == [0, 2, 4]
    gate.set()
    assert all(j.wait(TIMEOUT) for j in jobs)
    assert order == [f"{'alice' if k % 2 == 0 else 'bob'}-{k}" for k in range(6)]
    assert all(j.result == (j.owner, k) for k, j in enumerate(jobs))


def test_shutdown_cancels_queued_and_running_jobs():
    q = JobQueue(workers=1)
    never = threading.Event()
    running = q.submit(_blocker(never))
    queued = q.submit(_blocker(never))
    _wait_status(running, "running")
    q.shutdown(cancel=True, timeout=TIMEOUT)
    assert running.status == "cancelled" and queued.status == "cancelled"
    assert not any(t.is_alive() for t in q._threads)
    with pytest.raises(RuntimeError, match="shut down"):
        q.submit(lambda job: None)


def test_shutdown_without_cancel_finishes_the_queued_jobs():
    q = JobQueue(workers=1)
    gate = threading.Event()
    jobs = [q.submit(_blocker(gate, result=k)) for k in range(3)]
    threading.Timer(0.05, gate.set).start()
    q.shutdown(cancel=False, timeout=TIMEOUT)
    assert [j.status for j in jobs] == ["done"] * 3 and [j.result for j in jobs] == [0, 1, 2]


def test_two_workers_run_two_jobs_at_once():
    q = JobQueue(workers=2)
    try:
        both = threading.Barrier(2, timeout=TIMEOUT)
        jobs = [q.submit(lambda job: both.wait()) for _ in range(2)]  # deadlocks with one worker
        assert all(j.wait(TIMEOUT) for j in jobs) and [j.status for j in jobs] == ["done", "done"]
    finally:
        q.shutdown()
    with pytest.raises(ValueError, match="at least one worker"):
        JobQueue(workers=0)


def test_shared_queue_is_one_per_process():
    a, b = shared_queue(), shared_queue()
    assert a is b and len(a._threads) == 1
    assert all(t.daemon for t in a._threads)


# -- intermediate results ---------------------------------------------------------------------


def test_a_published_result_is_read_while_the_job_runs(queue):
    published, gate = threading.Event(), threading.Event()

    def fn(job):
        job.publish("guided")
        published.set()
        gate.wait(TIMEOUT)
        job.publish("guided, again")
        return "final"

    job = queue.submit(fn)
    assert job.latest() in ((0, None), (1, "guided"))  # may already have published
    assert published.wait(TIMEOUT)
    assert job.latest() == (1, "guided") and job.partial == "guided" and job.status == "running"
    assert job.published_at is not None and job.started <= job.published_at
    gate.set()
    assert job.wait(TIMEOUT)
    assert job.latest() == (2, "guided, again") and (job.status, job.result) == ("done", "final")


def test_cancel_or_failure_after_a_publish_keeps_the_partial_result(queue):
    published, never = threading.Event(), threading.Event()

    def stopped(job):
        job.publish({"ensemble": 1})
        published.set()
        _blocker(never)(job)

    def failing(job):
        job.publish("half")
        raise RuntimeError("the second pass broke")

    job = queue.submit(stopped)
    assert published.wait(TIMEOUT)
    job.cancel()
    assert job.wait(TIMEOUT) and job.status == "cancelled"
    assert job.latest() == (1, {"ensemble": 1}) and job.result is None
    broken = queue.submit(failing)
    assert broken.wait(TIMEOUT) and broken.status == "failed" and broken.latest() == (1, "half")
    plain = queue.submit(lambda job: 1)
    assert plain.wait(TIMEOUT) and plain.latest() == (0, None) and plain.published_at is None


def test_latest_reads_the_count_and_the_value_together(queue):
    """A reader polling as fast as it can never sees a count with another publish's value."""

    n = 3000
    started = threading.Event()

    def fn(job):
        started.set()
        for k in range(1, n + 1):
            job.publish(k)

    job = queue.submit(fn)
    assert started.wait(TIMEOUT)
    seen = []
    while not job.is_finished:
        count, value = job.latest()
        seen.append((count, value))
    seen.append(job.latest())
    assert all(value == (count or None) for count, value in seen)
    assert seen[-1] == (n, n)

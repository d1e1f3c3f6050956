"""Running the model from a session: the run settings, the job in the queue and its progress.

:class:`RunState` builds a scenario from the observation editor (window and observers) and its own
settings (task, members, sampler, guidance, seed), checks it, and submits it to the job queue
(:mod:`app.jobs`) shared by every session, since there is one device. A worker thread runs it
(:func:`app.adapter.run_scenario`); the UI thread calls :meth:`RunState.poll` every ~250 ms to
copy the job's status, progress and place in the queue into parameters, and to hand the output
to :class:`~app.state.results.ResultsState`.

A run delivers twice: the guided ensemble as soon as it exists (the job publishes it, see
:meth:`app.jobs.Job.publish`; :meth:`ResultsState.set_output` shows it), then, when the O−B
background pass is over, the final output, of which only ``obs_background`` is new
(:meth:`ResultsState.add_background`: the observation-space diagnostics redraw, nothing else).
A cancel or a failure during the background pass leaves the guided ensemble shown, without O−B.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import Any

import param

from app import adapter
from app.jobs import Job, JobQueue, shared_queue
from app.state.notice import error, info, ok, warn

__all__ = ["RunState"]


def _run(engine, scenario, truth, job: Job):
    """What the worker runs: the scenario, reporting each diffusion step, publishing the guided
    ensemble before the background pass, and watching the cancel."""

    return adapter.run_scenario(engine, scenario, truth, progress=job.report, cancel=job.cancel_event,
                                publish=job.publish)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class RunState(param.Parameterized):
    """The run settings and the run in progress of one session.

    Arguments:
        editor: The session's :class:`~app.state.editor.ObservationEditor` (window, observers).
        truth: The session's :class:`~app.state.truth.TruthState` (values are simulated from it).
        results: Where a finished run's output goes.
        queue: The job queue (default: :func:`app.jobs.shared_queue`).
        engine: The loaded :class:`app.adapter.Engine`, or None (then nothing can run).
        owner: Who the jobs belong to (the session).
    """

    task = param.Selector(default="reanalysis", objects=["reanalysis", "filter", "forecast"], doc="What to sample")
    lead_hours = param.Integer(default=24, bounds=(1, 24 * 15), doc="Forecast lead time (hours)")
    members = param.Integer(default=8, bounds=(1, 64), doc="Ensemble size")
    steps = param.Integer(default=24, bounds=(2, 512), doc="Diffusion steps")
    sampler = param.Selector(default="ddim", objects=["ddim", "pc", "heun", "lms"], doc="Diffusion sampler")
    guidance = param.Selector(default="mmps", objects=["mmps", "dps"], doc="Guidance method")
    iterations = param.Integer(default=1, bounds=(1, 16), doc="MMPS solver iterations")
    seed = param.Integer(default=0, bounds=(0, 2**31 - 1), doc="Random seed (stations noise and sampler)")

    status = param.Selector(default="idle", objects=["idle", "queued", "running", "done", "failed", "cancelled"])
    step = param.Integer(default=0, doc="Diffusion steps done")
    total = param.Integer(default=0, doc="Diffusion steps in all")
    queue_position = param.Integer(default=0, doc="Runs ahead of this one in the queue")
    status_text = param.String(default="", doc="The status in words")
    notice = param.Parameter(default=None, doc="A Notice shown next to the Run button")
    available = param.Boolean(default=False, doc="A model is loaded")

    def __init__(self, *, editor=None, truth=None, results=None, queue: JobQueue | None = None,
                 engine: Any = None, owner: str = "", **params):
        super().__init__(**params)
        self.editor = editor
        self.truth = truth
        self.results = results
        self.queue = queue if queue is not None else shared_queue()
        self.owner = owner or f"session-{uuid.uuid4().hex[:8]}"
        self.engine = None
        self._job: Job | None = None
        self._delivered = True  # the job's outcome reached the results (or needs not)
        self._partials = 0  # intermediate results of the job shown so far
        self._partial = None  # the last one (an adapter.RunOutput without O-B)
        # Settings of an imported scenario that have no widget: kept so that a re-run reproduces it.
        self._corrections, self._delta, self._solver = 2, 0.1, "cg"
        self.set_engine(engine)

    def set_engine(self, engine) -> None:
        """Use a loaded model (or None)."""

        self.engine = engine
        self.available = engine is not None

    @property
    def job(self) -> Job | None:
        """The job of the last run (None before the first)."""
        return self._job

    @property
    def busy(self) -> bool:
        """A run of this session is queued or running."""
        return self._job is not None and not self._job.is_finished

    # -- settings -----------------------------------------------------------------------------

    def settings(self) -> dict:
        """The run settings as :class:`~appa_engine.observations.scenario.Scenario` keywords."""

        model = self.engine.model_name if self.engine is not None else (self.editor.settings.get("model", "default")
                                                                         if self.editor is not None else "default")
        return dict(
            task=self.task,
            lead_hours=int(self.lead_hours) if self.task == "forecast" else 0,
            members=int(self.members),
            sampler=adapter.SamplerSettings(name=self.sampler, steps=int(self.steps), corrections=self._corrections,
                                            delta=self._delta),
            guidance=adapter.GuidanceSettings(method=self.guidance, iterations=int(self.iterations),
                                              solver=self._solver),
            seed=int(self.seed),
            model=model,
        )

    def apply(self, settings: dict) -> None:
        """Take the settings of an imported scenario (``editor.settings``); values outside the
        widgets' ranges are clipped, with a warning."""

        if not settings:
            return
        changes: dict[str, Any] = {}
        clipped: list[str] = []

        def clip(name: str, value) -> None:
            lo, hi = self.param[name].bounds
            value = int(value)
            new = min(max(value, lo), hi)
            if new != value:
                clipped.append(f"{name} {value} → {new}")
            changes[name] = new

        if settings.get("task") in self.param.task.objects:
            changes["task"] = settings["task"]
        if settings.get("lead_hours"):
            clip("lead_hours", settings["lead_hours"])
        for name in ("members", "seed"):
            if settings.get(name) is not None:
                clip(name, settings[name])
        sampler = settings.get("sampler")
        if sampler is not None:
            if sampler.name in self.param.sampler.objects:
                changes["sampler"] = sampler.name
            clip("steps", sampler.steps)
            self._corrections, self._delta = int(sampler.corrections), float(sampler.delta)
        guidance = settings.get("guidance")
        if guidance is not None:
            changes["guidance"] = guidance.method
            clip("iterations", guidance.iterations)
            self._solver = guidance.solver
        self.param.update(changes)
        self.notice = warn("Some imported settings were outside the allowed range: " + ", ".join(clipped) + ".") \
            if clipped else None

    # -- running ------------------------------------------------------------------------------

    def start(self) -> bool:
        """Build the scenario, check it and queue it; False (with :attr:`notice`) when it cannot run."""

        self.poll()  # deliver a run that finished since the last poll
        if self.busy:
            self.notice = warn("A run of this session is already " + self._job.status
                               + ". Wait for it or cancel it first.")
            return False
        if self.engine is None:
            self.notice = error("No model is loaded, so nothing can run. Hint: start the app with --model "
                                "(e.g. appa serve --model default).")
            return False
        truth = self.truth.dataset if self.truth is not None else None
        try:
            scenario = self.editor.scenario(**self.settings())
            adapter.check_run(self.engine, scenario, truth)
        except adapter.AppaError as e:
            self.notice = error(e)
            return False
        self._job = self.queue.submit(functools.partial(_run, self.engine, scenario, truth), owner=self.owner,
                                      label=f"{scenario.task}, {_plural(scenario.members, 'member')}")
        self._delivered = False
        self._partials, self._partial = 0, None
        self.notice = None
        self.poll()
        return True

    def cancel(self) -> None:
        """Drop the queued run, or stop the running one at its next diffusion step."""

        if not self.busy:
            return
        self._job.cancel()
        self.poll()
        if self.busy:
            self.status_text = "Cancelling…"

    def poll(self) -> bool:
        """Copy the job's state into the parameters (UI thread); True while the run is busy.

        A guided ensemble the job has published since the last poll goes to the results at once
        (even when the job has finished since: a cancel or a failure of the background pass does
        not withdraw it)."""

        job = self._job
        if job is None:
            return False
        status = job.status  # one reading: the job may finish meanwhile (the next poll sees it)
        finished = status in ("done", "failed", "cancelled")
        if not self._delivered and not (status == "done" and self._partial is None):
            self._show_partial(job)  # (a run found done at once is shown whole, once)
        background = self._partial is not None  # the guided ensemble is shown: O-B is on its way
        updates = dict(status=status, step=job.step, total=job.total,
                       queue_position=self.queue.position(job) if status == "queued" else 0)
        if status == "queued":
            ahead = updates["queue_position"]
            updates["status_text"] = f"Queued: {_plural(ahead, 'run')} ahead" if ahead else "Queued: starting…"
        elif status == "running":
            if job.cancel_event.is_set():
                updates["status_text"] = "Cancelling…"
            elif job.total == 0:
                updates["status_text"] = f"Preparing the run ({job.elapsed:.0f} s)"
            elif job.step >= job.total:
                updates["status_text"] = f"Step {job.step} / {job.total}: finishing ({job.elapsed:.0f} s)"
            elif background:
                updates["status_text"] = (f"Step {job.step} / {job.total}: O−B background pass "
                                          f"({job.elapsed:.0f} s)")
            else:
                updates["status_text"] = f"Step {job.step} / {job.total} ({job.elapsed:.0f} s)"
        elif status == "done":
            first = self._first_seconds(job) if background else None
            updates["status_text"] = f"Done in {job.elapsed:.1f} s" + (
                f" (the ensemble after {first:.1f} s, then O−B)" if first is not None else "")
        elif status == "cancelled":
            if background:
                updates["status_text"] = (f"Cancelled during the O−B background pass (step {job.step} of "
                                          f"{job.total}): the ensemble is shown, O−B was not computed")
            else:
                updates["status_text"] = "Cancelled" + (f" after {job.step} of {job.total} steps"
                                                        if job.total else "")
        else:
            updates["status_text"] = ("Failed in the O−B background pass: the ensemble is shown, "
                                      "O−B was not computed" if background else "Failed")
        if finished and not self._delivered:
            self._delivered = True
            updates["notice"] = self._outcome(job)
        self.param.update(updates)
        return not finished

    def _show_partial(self, job: Job) -> None:
        count, partial = job.latest()
        if count <= self._partials or partial is None:
            return
        self._partials, self._partial = count, partial
        if self.results is not None:
            self.results.set_output(partial)

    @staticmethod
    def _first_seconds(job: Job) -> float | None:
        """Seconds from the start of the job to its first published result (None without one)."""

        if job.published_at is None or job.started is None:
            return None
        return job.published_at - job.started

    def _outcome(self, job: Job):
        partial = self._partial
        if job.status == "done":
            if self.results is not None:
                if partial is None:
                    self.results.set_output(job.result)
                elif not self.results.add_background(job.result, partial=partial):
                    return info(f"Done: {job.label} in {job.elapsed:.1f} s; its O−B was not shown, since "
                                "other results replaced the run's meanwhile.")
            return ok(f"Done: {job.label} in {job.elapsed:.1f} s.")
        if job.status == "cancelled":
            if partial is not None:
                return info("The O−B background pass was cancelled: the ensemble is shown without O−B.")
            return info("The run was cancelled.")
        e = job.error
        if partial is not None:
            reason = error(e).text if isinstance(e, adapter.AppaError) else f"{type(e).__name__}: {e}"
            return error(f"The O−B background pass failed (the ensemble is shown without O−B): {reason}")
        if isinstance(e, adapter.AppaError):
            return error(e)
        return error(f"The run failed: {type(e).__name__}: {e}")

    def wait(self, timeout: float = 120) -> None:
        """Poll until the run is finished (for tests and scripts)."""

        deadline = time.monotonic() + timeout
        while self.poll():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the run did not finish within {timeout} s")
            self._job.wait(0.05)
        self.poll()

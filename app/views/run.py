"""The run controls: sampler settings, Run and Cancel, the progress of the job and its place in
the queue.

A run is a job of the process-wide queue (:mod:`app.jobs`): the engine works on the queue's
worker thread while this session's page stays responsive. The view polls the job
(:meth:`~app.state.run.RunState.poll`, on the session's own thread) every 250 ms from a Panel
periodic callback started by *Run* and stopped as soon as the job is finished; the state copies
the job's step, queue position and status into parameters, which the widgets here follow.
"""

from __future__ import annotations

import panel as pn
from panel.io.callbacks import PeriodicCallback

from app.state import AppState
from app.views.base import NoticeAlert

__all__ = ["RunControls", "POLL_MS"]

#: How often a running job is polled, ms.
POLL_MS = 250
#: The Run button's icon, inline: an icon *name* makes Bokeh load the Tabler web font from a CDN,
#: which an offline server cannot reach (see app.server).
PLAY_ICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="currentColor">'
             '<path d="M7 4v16l13-8z"/></svg>')

_HELP = {"color": "#555", "font-size": "0.85em"}
_TASKS = {"Reanalysis (whole window)": "reanalysis", "Filtering (last state)": "filter", "Forecast": "forecast"}
_SAMPLERS = {"DDIM": "ddim", "Predictor-corrector (Appa)": "pc", "Heun (2nd order)": "heun",
             "Linear multistep": "lms"}


class RunControls(pn.viewable.Viewer):
    """Settings of a run, *Run* and *Cancel*, a progress bar and the run's status.

    *Run* is disabled while a run of this session is queued or running and when no model is
    loaded; *Cancel* only while one is.
    """

    def __init__(self, state: AppState, **params):
        super().__init__(**params)
        self.state = state
        self.run = run = state.run
        stretch = dict(sizing_mode="stretch_width")
        self._task = pn.widgets.Select.from_param(run.param.task, label="Task", options=_TASKS, **stretch)
        self._lead = pn.widgets.IntInput.from_param(run.param.lead_hours, label="Forecast lead (hours)", step=6,
                                                    **stretch)
        self._members = pn.widgets.IntInput.from_param(run.param.members, label="Members", width=120)
        self._steps = pn.widgets.IntInput.from_param(run.param.steps, label="Diffusion steps", width=120)
        self._sampler = pn.widgets.Select.from_param(run.param.sampler, label="Sampler", options=_SAMPLERS, **stretch)
        self._guidance = pn.widgets.RadioButtonGroup.from_param(
            run.param.guidance, label="Guidance", options={"MMPS": "mmps", "DPS": "dps"},
            color="primary", variant="outline", **stretch)
        self._iterations = pn.widgets.IntInput.from_param(run.param.iterations, label="Solver iterations (MMPS)",
                                                          **stretch)
        self._seed = pn.widgets.IntInput.from_param(run.param.seed, label="Random seed", **stretch)
        self._run = pn.widgets.Button(label="Run", color="primary", icon=PLAY_ICON, width=130)
        self._cancel = pn.widgets.Button(label="Cancel", color="danger", variant="outline", width=110)
        self._run.on_click(self._start)
        self._cancel.on_click(self._stop)
        self._progress = pn.indicators.Progress(name="Progress", value=0, max=1, bar_color="primary", visible=False,
                                                height=18, margin=(5, 10), **stretch)
        self._status = pn.pane.Markdown("", margin=(0, 10), **stretch)
        self._callback = None
        run.param.watch(self._update, ["status", "step", "total", "queue_position", "status_text", "available"])
        run.param.watch(self._update_task, ["task", "guidance"])
        self._update_task()
        self._update()
        advanced = pn.Card(
            self._sampler, self._guidance, self._iterations, self._seed,
            pn.pane.Markdown("MMPS (moment matching) follows the observations closely; DPS is cheaper and "
                             "looser. The same scenario and seed give the same ensemble.", styles=_HELP),
            title="Sampler and guidance", collapsed=True, margin=(5, 5), **stretch,
        )
        self._layout = pn.Column(
            pn.pane.Markdown("### Run", margin=(0, 10)),
            pn.pane.Markdown("Draw observers in the *Observations* tab, then **Run**: the guided sampler "
                             "proposes an ensemble of weather trajectories that agree with them.",
                             margin=(0, 10), styles=_HELP),
            self._task, self._lead, pn.Row(self._members, self._steps), advanced,
            pn.Row(self._run, self._cancel),
            self._progress, self._status,
            NoticeAlert(run, "notice"),
            **stretch,
        )

    def __panel__(self):
        return self._layout

    # -- actions --------------------------------------------------------------------------------

    def _start(self, _event=None) -> None:
        if self.run.start():
            self._start_polling()
        self._update()

    def _stop(self, _event=None) -> None:
        self.run.cancel()
        self._poll()

    def _start_polling(self) -> None:
        if self._callback is None:
            # A background callback: Panel marks the server busy during every other periodic
            # callback, which flashes the template's busy spinner in every open page four times a
            # second for the whole run. That animation cost a headless Chromium on the same
            # 2-core machine about a fifth of a core and slowed the engine's guided pass by about
            # a fifth (measured through Chromium as bench/app_latency.py does); the progress bar
            # already shows that a run is on.
            # (``background`` is a constructor keyword of PeriodicCallback that
            # ``pn.state.add_periodic_callback`` does not pass on;
            # tests/app/test_browser_run.py checks that polling leaves ``pn.state.busy`` alone.)
            self._callback = PeriodicCallback(callback=self._poll, period=POLL_MS, background=True)
            self._callback.start()

    def _poll(self) -> None:
        """Copy the job's progress into the state; stop polling once it is finished."""

        if not self.run.poll() and self._callback is not None:
            self._callback.stop()
            self._callback = None

    # -- display --------------------------------------------------------------------------------

    def _update_task(self, *_events) -> None:
        self._lead.visible = self.run.task == "forecast"
        self._iterations.disabled = self.run.guidance != "mmps"

    def _update(self, *_events) -> None:
        run = self.run
        busy = run.busy
        self._run.disabled = busy or not run.available
        self._cancel.disabled = not busy
        if run.status == "queued":
            self._progress.param.update(value=-1, active=True, visible=True)  # indeterminate while waiting
        elif run.status == "running":
            total = max(int(run.total), 1)
            if self._progress.max != total:  # the value is bounded by the maximum: set it first
                self._progress.param.update(value=0, max=total)
            self._progress.param.update(value=min(int(run.step), total), visible=True)
        else:
            self._progress.visible = False
        text = run.status_text
        if not run.available:
            text = text or "No model is loaded: runs are off (start the server with `--model`)."
        self._status.object = text

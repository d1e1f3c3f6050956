"""The state of one browser session: truth, globe, observation editor, model, run and results."""

from __future__ import annotations

import os
import uuid
from typing import Any

import param

from app import adapter
from app.jobs import JobQueue, shared_queue
from app.state.editor import ObservationEditor
from app.state.globe import GlobeState
from app.state.notice import error, warn
from app.state.results import ResultsState
from app.state.run import RunState
from app.state.truth import TruthState

__all__ = ["AppState"]


class AppState(param.Parameterized):
    """Everything one session shows and edits; one instance per browser session.

    The model is loaded with :func:`app.adapter.load_engine`, once per process: every session
    shares it (read-only), and runs of all sessions wait in one job queue.

    Arguments:
        truth: A path (or dataset) of the truth to show, or None.
        model: Path of a model package (or ``"default"``), or None (the app then says that no
            model is loaded).
        queue: The job queue runs go to (default: :func:`app.jobs.shared_queue`).
    """

    truth = param.ClassSelector(class_=TruthState)
    globe = param.ClassSelector(class_=GlobeState)
    editor = param.ClassSelector(class_=ObservationEditor)
    run = param.ClassSelector(class_=RunState)
    results = param.ClassSelector(class_=ResultsState)
    model = param.Parameter(default=None, doc="adapter.ModelStatus")
    model_notice = param.Parameter(default=None)
    engine = param.Parameter(default=None, doc="adapter.Engine, or None")
    view = param.Selector(default="truth", objects=["truth", "results"], doc="What the globe shows")

    def __init__(self, *, truth: Any = None, model: str | os.PathLike | None = None,
                 queue: JobQueue | None = None, **params):
        params.setdefault("truth", TruthState())
        params.setdefault("globe", GlobeState())
        params.setdefault("editor", ObservationEditor())
        params.setdefault("results", ResultsState())
        super().__init__(**params)
        self.session_id = f"session-{uuid.uuid4().hex[:8]}"
        if self.run is None:
            self.run = RunState(editor=self.editor, truth=self.truth, results=self.results,
                                queue=queue if queue is not None else shared_queue(), owner=self.session_id)
        self.truth.param.watch(self._on_truth, ["dataset"])
        self.editor.param.watch(self._on_settings, ["settings"], onlychanged=False)  # each import
        self.results.param.watch(self._on_result, ["revision"])
        self._load_model(model)
        if truth is not None:
            self.truth.load(truth)
        elif self.engine is not None:
            self._set_vocabulary()

    def _load_model(self, model) -> None:
        if model is None:
            self.model = adapter.describe_model(None)
            return
        try:
            self.engine = adapter.load_engine(model)
        except adapter.AppaError as e:
            self.model = adapter.describe_model(None)
            self.model_notice = error(e)
            return
        self.model = self.engine.status
        self.run.set_engine(self.engine)

    def _set_vocabulary(self) -> None:
        """Offer the editor the variables and levels of both the truth and the model (when known)."""

        ds, engine = self.truth.dataset, self.engine
        if ds is not None:
            variables = list(self.truth.param.variable.objects)
            levels = [float(p) for p in ds["level"].values] if "level" in ds.coords else []
            if engine is not None:
                variables = [v for v in variables if v in engine.variables]
                levels = [p for p in levels if int(p) in engine.levels]
            grid = engine.grid if engine is not None else self.truth.grid
            self.editor.set_vocabulary(variables, levels, grid=grid, start=self.truth.times[0])
            if engine is not None and self.truth.grid != engine.grid:
                self.model_notice = warn(
                    "The truth is on another grid than the model: observations cannot be simulated from it "
                    "and results are shown without truth. Hint: load a truth on the model's grid.")
        elif engine is not None:
            self.editor.set_vocabulary(list(engine.variables), [float(p) for p in engine.levels], grid=engine.grid)

    def _on_truth(self, *_events) -> None:
        if self.truth.dataset is not None:
            self._set_vocabulary()

    def _on_settings(self, *_events) -> None:
        self.run.apply(self.editor.settings)

    def _on_result(self, *_events) -> None:
        """A run's ensemble arrived (its guided ensemble, before O−B): the globe shows it."""

        if self.results.available:
            self.view = "results"

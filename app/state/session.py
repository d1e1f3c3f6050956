"""The state of one browser session: truth, globe, observation editor and model status."""

from __future__ import annotations

import os
from typing import Any

import param

from app import adapter
from app.state.editor import ObservationEditor
from app.state.globe import GlobeState
from app.state.notice import error
from app.state.truth import TruthState

__all__ = ["AppState"]


class AppState(param.Parameterized):
    """Everything one session shows and edits; one instance per browser session.

    Arguments:
        truth: A path (or dataset) of the truth to show, or None.
        model: Path of a model package, or None (the app then says that no model is loaded).
    """

    truth = param.ClassSelector(class_=TruthState)
    globe = param.ClassSelector(class_=GlobeState)
    editor = param.ClassSelector(class_=ObservationEditor)
    model = param.Parameter(default=None, doc="adapter.ModelStatus")
    model_notice = param.Parameter(default=None)

    def __init__(self, *, truth: Any = None, model: str | os.PathLike | None = None, **params):
        params.setdefault("truth", TruthState())
        params.setdefault("globe", GlobeState())
        params.setdefault("editor", ObservationEditor())
        super().__init__(**params)
        self.truth.param.watch(self._on_truth, ["dataset"])
        try:
            self.model = adapter.describe_model(model)
        except adapter.AppaError as e:
            self.model = adapter.describe_model(None)
            self.model_notice = error(e)
        if truth is not None:
            self.truth.load(truth)

    def _on_truth(self, *_events) -> None:
        ds = self.truth.dataset
        if ds is None:
            return
        levels = [float(p) for p in ds["level"].values] if "level" in ds.coords else []
        self.editor.set_vocabulary(list(self.truth.param.variable.objects), levels, grid=self.truth.grid,
                                   start=self.truth.times[0])

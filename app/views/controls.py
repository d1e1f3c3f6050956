"""Sidebar controls: what the globe shows (the truth, or a run's results: layer, member, variable,
level, time player) and how the globe is seen."""

from __future__ import annotations

from typing import ClassVar

import panel as pn

from app.state import AppState, GlobeState, TruthState
from app.views.base import NoticeAlert

__all__ = ["TruthControls", "ResultsControls", "ViewControls", "GlobeControls", "ModelStatusView", "TimePlayer",
           "time_player"]

#: Labels of the results layers, in the order of the buttons.
LAYER_LABELS = {"Mean": "mean", "Spread": "spread", "Member": "member", "Truth": "truth", "Error": "error"}


class TimePlayer(pn.widgets.Player):
    """A player whose steps are handled on the server's next tick, without Panel's debounce.

    Panel waits 50 ms (``_debounce``) before it handles a value sent by the browser, so that a
    dragged slider sends one change rather than many; a step of the player is one change, and
    those 50 ms were a quarter of a frame switch (``bench/app_latency.py``). The change is still
    handled by a timeout callback of the session (under the document's lock, as the globe's
    in-place frame update needs), and values that arrive while one is being handled are still
    merged into one.
    """

    _debounce: ClassVar[int] = 0


def time_player(owner, refresh: list[str]) -> pn.widgets.Player:
    """A player over ``owner.time_index`` (a :class:`~app.state.TruthState` or
    :class:`~app.state.ResultsState`) whose range is never empty.

    Not ``Player.from_param``: with one time (or none, before any run) the parameter's bounds are
    ``(0, 0)``, which the linked player copied into an empty range, start = end (Bokeh refuses
    that in a slider: validation error E-1021, EQUAL_SLIDER_START_END). This player keeps
    ``end >= 1`` and is disabled while there is a single time; it follows the parameter's bounds
    when ``owner`` changes any of ``refresh`` (a new dataset or output), and its value and the
    parameter follow each other.
    """

    player = TimePlayer(label="Time", start=0, end=1, value=0, interval=800, loop_policy="loop",
                        show_loop_controls=False, sizing_mode="stretch_width", width_policy="max")

    def sync(*_events) -> None:
        last = int(owner.param.time_index.bounds[1])
        player.param.update(end=max(last, 1), value=min(int(owner.time_index), max(last, 1)), disabled=last == 0)

    def pick(event) -> None:
        if event.new is not None and 0 <= event.new <= owner.param.time_index.bounds[1] \
                and event.new != owner.time_index:
            owner.time_index = int(event.new)

    player.param.watch(pick, "value")
    owner.param.watch(sync, ["time_index", *refresh])
    sync()
    return player


class TruthControls(pn.viewable.Viewer):
    """Variable and level selectors and a time player over the truth's times."""

    def __init__(self, truth: TruthState, **params):
        super().__init__(**params)
        self.truth = truth
        self._variable = pn.widgets.Select.from_param(truth.param.variable, label="Variable",
                                                      sizing_mode="stretch_width")
        self._level = pn.widgets.Select.from_param(truth.param.level, label="Level (hPa)", sizing_mode="stretch_width")
        self._player = time_player(truth, ["dataset"])
        self._time = pn.pane.Markdown("", margin=(0, 10))
        self._source = pn.pane.Markdown("", margin=(0, 10), styles={"color": "#666", "font-size": "0.85em"})
        truth.param.watch(self._update, ["variable", "time_index", "dataset", "source"])
        self._update()
        self._layout = pn.Column(
            pn.pane.Markdown("### Truth", margin=(0, 10)),
            self._variable, self._level, self._player, self._time, self._source,
            NoticeAlert(self.truth, "notice"),
            sizing_mode="stretch_width",
        )

    def _update(self, *_events) -> None:
        t = self.truth
        self._level.disabled = not t.has_levels
        self._time.object = f"**{t.time_label}**" if t.loaded else "No truth loaded."
        self._source.object = f"Truth: `{t.source}`" if t.source else ""

    def __panel__(self):
        return self._layout


class ResultsControls(pn.viewable.Viewer):
    """Layer (mean, spread, member, truth, error), member, variable, level and a time player over
    the run's times."""

    def __init__(self, state: AppState, **params):
        super().__init__(**params)
        self.results = r = state.results
        self._layer = pn.widgets.RadioButtonGroup(label="Layer", options=self._layer_options(), value=r.layer,
                                                  color="primary", variant="outline",
                                                  sizing_mode="stretch_width", margin=(5, 10))
        self._layer.param.watch(self._pick_layer, "value")
        # Not from_param: a one-member ensemble has bounds (0, 0), which Bokeh's slider refuses.
        self._member = pn.widgets.IntSlider(label="Member", start=0, end=1, value=0, sizing_mode="stretch_width")
        self._member.param.watch(self._pick_member, "value")
        # Not from_param: when a new output changes the options, a linked Select would write its first
        # option back into the state, over the variable and level the state has chosen.
        self._variable = pn.widgets.Select(label="Variable", sizing_mode="stretch_width")
        self._level = pn.widgets.Select(label="Level (hPa)", sizing_mode="stretch_width")
        self._variable.param.watch(lambda event: self._pick("variable", event.new), "value")
        self._level.param.watch(lambda event: self._pick("level", event.new), "value")
        self._player = time_player(r, ["output", "revision"])
        self._time = pn.pane.Markdown("", margin=(0, 10))
        self._help = pn.pane.Markdown("", margin=(0, 10), styles={"color": "#666", "font-size": "0.85em"})
        r.param.watch(self._update, ["layer", "member", "variable", "level", "revision", "output"])
        r.param.watch(self._update_time, ["time_index"])  # a frame of the player: only the label
        self._update()
        self._layout = pn.Column(
            pn.pane.Markdown("#### Layer", margin=(0, 10)), self._layer, self._member, self._help,
            self._variable, self._level, self._player, self._time,
            sizing_mode="stretch_width",
        )

    def _layer_options(self) -> dict[str, str]:
        layers = list(self.results.layers) if self.results.available else ["mean"]
        return {label: name for label, name in LAYER_LABELS.items() if name in layers}

    def _pick_layer(self, event) -> None:
        if event.new is not None and event.new != self.results.layer:
            self.results.layer = event.new

    def _pick(self, name: str, value) -> None:
        if value is not None and value != getattr(self.results, name) and value in self.results.param[name].objects:
            setattr(self.results, name, value)

    def _pick_member(self, event) -> None:
        if event.new is not None and event.new <= self.results.param.member.bounds[1]:
            self.results.member = int(event.new)

    def _update(self, *_events) -> None:
        r = self.results
        self._layer.param.update(options=self._layer_options(), value=r.layer)
        last = r.param.member.bounds[1]
        self._member.param.update(end=max(last, 1), value=r.member, disabled=last == 0,
                                  visible=r.layer == "member")
        self._variable.param.update(options=list(r.param.variable.objects), value=r.variable)
        self._level.param.update(options=list(r.param.level.objects), value=r.level, disabled=not r.has_levels)
        self._update_time()
        self._help.object = {
            "mean": "Mean of the ensemble members.",
            "spread": "Standard deviation of the members: where the observations leave the weather uncertain.",
            "member": "One trajectory of the ensemble.",
            "truth": "The truth the observations were simulated from.",
            "error": "Ensemble mean minus truth (red: too high, blue: too low).",
        }[r.layer]

    def _update_time(self, *_events) -> None:
        r = self.results
        self._time.object = f"**{r.time_label}**" if r.available else ""

    def __panel__(self):
        return self._layout


class ViewControls(pn.viewable.Viewer):
    """A *Truth / Results* switch (``state.view``) over the controls of what the globe shows;
    *Results* is disabled until a run has finished."""

    def __init__(self, state: AppState, **params):
        super().__init__(**params)
        self.state = state
        self._switch = pn.widgets.RadioButtonGroup.from_param(
            state.param.view, options={"Truth (draw)": "truth", "Results": "results"}, label="",
            color="primary", sizing_mode="stretch_width",
        )
        self._waiting = pn.pane.Markdown("Results appear here once a run has finished.", margin=(0, 10),
                                         styles={"color": "#666", "font-size": "0.85em"})
        # Viewers have no `visible`: the layouts around them are shown or hidden.
        self._truth = pn.Column(TruthControls(state.truth), margin=0, sizing_mode="stretch_width")
        self._results = pn.Column(ResultsControls(state), margin=0, sizing_mode="stretch_width")
        state.param.watch(self._update, ["view"])
        state.results.param.watch(self._update, ["output", "revision"])
        self._update()
        self._layout = pn.Column(
            pn.pane.Markdown("### Globe shows", margin=(0, 10)), self._switch, self._waiting,
            self._truth, self._results,
            sizing_mode="stretch_width",
        )

    def _update(self, *_events) -> None:
        available = self.state.results.available
        results = available and self.state.view == "results"
        self._switch.disabled = not available
        self._waiting.visible = not available
        self._truth.visible = not results
        self._results.visible = results

    def __panel__(self):
        return self._layout


class GlobeControls(pn.viewable.Viewer):
    """Globe or flat map, the point of view, and the layers shown."""

    def __init__(self, globe: GlobeState, **params):
        super().__init__(**params)
        self.globe = globe
        self._projection = pn.widgets.RadioButtonGroup.from_param(
            globe.param.projection, options={"Globe": "orthographic", "Flat map": "flat"}, label="",
            color="primary", variant="outline", sizing_mode="stretch_width",
        )
        self._lon = pn.widgets.FloatSlider.from_param(globe.param.central_longitude, label="Centre longitude (°E)",
                                                      throttled=True, sizing_mode="stretch_width")
        self._lat = pn.widgets.FloatSlider.from_param(globe.param.central_latitude, label="Centre latitude (°N)",
                                                      throttled=True, sizing_mode="stretch_width")
        self._layers = [
            pn.widgets.Checkbox.from_param(globe.param.show_field, label="Field (truth or results)"),
            pn.widgets.Checkbox.from_param(globe.param.show_footprints, label="Swath footprints"),
            pn.widgets.Checkbox.from_param(globe.param.show_coastlines, label="Coastlines"),
            pn.widgets.Checkbox.from_param(globe.param.show_graticule, label="Graticule (30°)"),
        ]
        globe.param.watch(self._update, ["projection"])
        self._update()
        self._layout = pn.Column(
            pn.pane.Markdown("### Globe", margin=(0, 10)),
            self._projection, self._lon, self._lat, *self._layers,
            sizing_mode="stretch_width",
        )

    def _update(self, *_events) -> None:
        self._lat.disabled = self.globe.projection != "orthographic"

    def __panel__(self):
        return self._layout


class ModelStatusView(pn.viewable.Viewer):
    """Which model the app runs (or that none is loaded)."""

    def __init__(self, state: AppState, **params):
        super().__init__(**params)
        self.state = state
        self._alert = pn.pane.Alert("", margin=(5, 5), sizing_mode="stretch_width")
        state.param.watch(self._update, ["model"])
        self._update()
        self._layout = pn.Column(
            pn.pane.Markdown("### Model", margin=(0, 10)), self._alert, NoticeAlert(state, "model_notice"),
            sizing_mode="stretch_width",
        )

    def _update(self, *_events) -> None:
        status = self.state.model
        self._alert.param.update(object=status.text, alert_type="success" if status.loaded else "warning")

    def __panel__(self):
        return self._layout

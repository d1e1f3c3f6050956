"""Sidebar controls: what truth is shown (variable, level, time player) and how the globe is seen."""

from __future__ import annotations

import panel as pn

from app.state import AppState, GlobeState, TruthState
from app.views.base import NoticeAlert

__all__ = ["TruthControls", "GlobeControls", "ModelStatusView"]


class TruthControls(pn.viewable.Viewer):
    """Variable and level selectors and a time player over the truth's times."""

    def __init__(self, truth: TruthState, **params):
        super().__init__(**params)
        self.truth = truth
        self._variable = pn.widgets.Select.from_param(truth.param.variable, name="Variable", sizing_mode="stretch_width")
        self._level = pn.widgets.Select.from_param(truth.param.level, name="Level (hPa)", sizing_mode="stretch_width")
        self._player = pn.widgets.Player.from_param(
            truth.param.time_index, name="Time", interval=800, loop_policy="loop", show_loop_controls=False,
            sizing_mode="stretch_width", width_policy="max",
        )
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


class GlobeControls(pn.viewable.Viewer):
    """Globe or flat map, the point of view, and the layers shown."""

    def __init__(self, globe: GlobeState, **params):
        super().__init__(**params)
        self.globe = globe
        self._projection = pn.widgets.RadioButtonGroup.from_param(
            globe.param.projection, options={"Globe": "orthographic", "Flat map": "flat"}, name="",
            button_type="primary", button_style="outline", sizing_mode="stretch_width",
        )
        self._lon = pn.widgets.FloatSlider.from_param(globe.param.central_longitude, name="Centre longitude (°E)",
                                                      throttled=True, sizing_mode="stretch_width")
        self._lat = pn.widgets.FloatSlider.from_param(globe.param.central_latitude, name="Centre latitude (°N)",
                                                      throttled=True, sizing_mode="stretch_width")
        self._layers = [
            pn.widgets.Checkbox.from_param(globe.param.show_field, name="Truth field"),
            pn.widgets.Checkbox.from_param(globe.param.show_footprints, name="Swath footprints"),
            pn.widgets.Checkbox.from_param(globe.param.show_coastlines, name="Coastlines"),
            pn.widgets.Checkbox.from_param(globe.param.show_graticule, name="Graticule (30°)"),
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

"""The Appa Studio app: one :class:`App` per browser session.

The page reads left to right as the user works: the sidebar holds the model, the run controls
(*Run*, progress, queue position) and what the globe shows (the truth, or the results of the last
run: layer, member, variable, level, time player); the globe is in the middle; the tabs hold the
observation editor (where observers are drawn), the results (meteogram, scores, diagnostics,
exports) and a short guide. When a run finishes the globe switches to its results and the
*Results* tab opens.

Serve it with ``appa serve --truth PATH`` (see :mod:`appa_engine.cli.serve`), or with Panel
directly (``APPA_TRUTH=PATH panel serve app/main.py``); importing this module starts nothing.
"""

from __future__ import annotations

import os
from typing import Any

import holoviews as hv
import panel as pn

from app.state import AppState
from app.views.about import AboutView
from app.views.controls import GlobeControls, ModelStatusView, ViewControls
from app.views.globe import GlobeView
from app.views.observations import ObservationsView
from app.views.results import ResultsView
from app.views.run import RunControls

__all__ = ["App", "create_app"]

ACCENT = "#1f5f8b"


class App(pn.viewable.Viewer):
    """The app of one session: globe and controls over an :class:`AppState`.

    Arguments:
        truth: Path (or dataset) of the truth to show, or None.
        model: Path of a model package, or None.
        state: An existing state (the other arguments are then ignored).
    """

    def __init__(self, *, truth: Any = None, model: Any = None, state: AppState | None = None, **params):
        super().__init__(**params)
        pn.extension("tabulator", notifications=True)
        hv.extension("bokeh", logo=False)
        # Canvas, not WebGL (HoloViews' default): every plot here is light (datashader makes the
        # images), a WebGL plot is blitted onto its canvas at every repaint, which costs 0.2-0.4 s per
        # frame of the player without a GPU (measured in Chromium, bench/app_latency.py), and a page
        # has a small budget of WebGL contexts (Chromium: 16) that the Results tab's plots would use up.
        hv.renderer("bokeh").webgl = False
        self.state = state if state is not None else AppState(truth=truth, model=model)
        self.globe = GlobeView(self.state)
        self.observations = ObservationsView(self.state)
        self.results = ResultsView(self.state)
        self.run = RunControls(self.state)
        self.tabs = pn.Tabs(
            ("Observations", self.observations),
            ("Results", self.results),
            ("About", AboutView()),
            dynamic=False, sizing_mode="stretch_width", min_width=420,
        )
        self.sidebar = [ModelStatusView(self.state), self.run, ViewControls(self.state),
                        GlobeControls(self.state.globe)]
        self.state.results.param.watch(self._on_result, ["revision"])

    def _on_result(self, *_events) -> None:
        """A new result: show the Results tab (the state has switched the globe to it)."""

        if self.state.results.available:
            self.tabs.active = 1

    def __panel__(self):
        return pn.Row(pn.Column(*self.sidebar, width=300), self.globe, self.tabs, sizing_mode="stretch_width")

    def template(self) -> pn.template.FastListTemplate:
        """The page: sidebar of controls, globe and tabs in the main area.

        It loads nothing from another host (the app runs offline): Panel's Fast design without its
        web font, and the system's fonts (see :mod:`app.server`).
        """

        from app.server import SYSTEM_FONT, OfflineFast

        return pn.template.FastListTemplate(
            title="Appa Studio",
            sidebar=self.sidebar,
            main=[pn.Row(self.globe, self.tabs, sizing_mode="stretch_width")],
            accent=ACCENT,
            sidebar_width=300,
            main_layout=None,
            design=OfflineFast,  # Fast links Open Sans from fonts.googleapis.com; this one does not
            font=SYSTEM_FONT,
            font_url="",  # nor does the template's own font link
            theme_toggle=False,
        )

    def servable(self, title: str | None = None, **kwargs):
        return self.template().servable(title=title, **kwargs)


def create_app(*, truth: Any = None, model: Any = None) -> pn.template.FastListTemplate:
    """A new app page (for ``pn.serve``: call once per session)."""

    return App(truth=truth, model=model).template()


if pn.state.served:
    App(truth=os.environ.get("APPA_TRUTH") or None, model=os.environ.get("APPA_MODEL") or None).servable()

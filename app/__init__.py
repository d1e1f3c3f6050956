"""Appa Studio: the Panel app (state ← views ← adapter).

- :mod:`app.state`: the state of a session in :class:`param.Parameterized` classes (no Panel):
  truth shown, globe view, observation editor and its observer drafts. Unit-tested without a
  browser.
- :mod:`app.views`: :class:`panel.viewable.Viewer` classes that compose widgets and plots (no
  numerics): the globe, the sidebar controls, the Observations, Results and About tabs.
- :mod:`app.adapter`: the one module that talks to the engine (:mod:`appa_engine`).
- :mod:`app.geo` and :mod:`app.plots`: display geometry (projections, coastlines, resampling
  onto the map) and the HoloViews elements built from it; :mod:`app.presets`: station networks.
- :mod:`app.main`: :class:`~app.main.App` (one per browser session) and the import-safe entry
  point; :mod:`app.server`: serving (``appa serve``).
"""

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

# Load pyproj's PROJ first: other wheels bundle their own PROJ, libcurl and OpenSSL (eccodes, loaded
# when xarray guesses a file's engine through cfgrib; netCDF4). When theirs load first, pyproj
# cannot create a CRS ("no database context") and the process aborts at exit ("double free or
# corruption"): found by bisecting the test suite (a NetCDF export, then a served page).
import pyproj  # noqa: E402,F401

"""The Results tab: what the last run produced, looked at from a point, over time and in
observation space, and its exports.

- **Summary** of the run (task, window, members, observations, sampler, seconds).
- **Meteogram** at the point picked on the globe (``results.point``): the members as a
  datashaded plume, the truth, the observations near the cell with their error bars.
- **Scores over time** of the variable and level shown: RMSE of the ensemble mean with the
  spread, CRPS, and the spread–skill ratio against its ideal 1; a dashed line marks the time the
  globe shows (:class:`TimeMarker`: it follows the time player without re-rendering the plots).
- **Observation space**, per observer (``results.observer``) and observed field: O−B and O−A
  on flat maps (diverging colours centred on 0) and as overlaid histograms, with their mean and
  standard deviation.
- **Exports**: the ensemble as zarr (zipped) or NetCDF, the scenario that reproduces the run
  (with its observation values), a PNG of the globe as it is shown (:mod:`app.figures`).

Everything drawn comes from :class:`~app.state.results.ResultsState` (a meteogram, DataFrames of
scores and innovations) through :mod:`app.plots`; this module only lays it out.
"""

from __future__ import annotations

import io
import logging
import weakref

import numpy as np
import panel as pn

from app import adapter, figures, plots
from app.state import AppState
from app.state.notice import error
from app.views.base import NoticeAlert, Watchers, change_models

__all__ = ["ResultsView", "Download", "TimeMarker"]

log = logging.getLogger(__name__)

_HELP = {"color": "#555", "font-size": "0.92em"}
_STRETCH = dict(sizing_mode="stretch_width")
_TASKS = {"reanalysis": "Reanalysis", "filter": "Filtering", "forecast": "Forecast"}


class Download(pn.widgets.FileDownload):
    """A download button whose callback may return None (nothing to download: the state has set a
    notice saying why), in which case nothing is sent to the browser."""

    def _sync_data(self, fileobj):
        if fileobj is None:
            return
        super()._sync_data(fileobj)


class TimeMarker:
    """A dashed vertical line at the time the globe shows, on every plot of the Results tab with a
    time axis (the meteogram and the scores).

    The line is a Bokeh ``Span`` that a plot hook (:meth:`hook`) adds when the plot is rendered;
    a new time (a frame of the player) moves every span in place: one number sent per plot. A
    marker drawn as a HoloViews ``DynamicMap`` re-rendered each plot's whole overlay instead,
    about 20 ms of server time per plot and frame, and a re-layout of the page in the browser.
    """

    TAG = "appa-time-marker"

    def __init__(self, results):
        self.results = results
        self._spans: weakref.WeakSet = weakref.WeakSet()
        results.param.watch(self._move, ["time_index", "revision"])

    @property
    def location(self) -> float | None:
        """The time shown, in Bokeh's datetime units (ms since 1970), or None without a result."""

        times = self.results.times
        if times is None or not times.size:
            return None
        i = min(max(int(self.results.time_index), 0), times.size - 1)
        return float(np.datetime64(times[i], "ms").astype(np.int64))

    def hook(self, plot, element) -> None:
        """HoloViews plot hook: add the span to the figure (once: hooks run again on updates)."""

        from bokeh.models import Span

        figure = plot.state
        if any(self.TAG in getattr(r, "tags", ()) for r in figure.center):
            return
        span = Span(location=self.location, dimension="height", line_color="#444444", line_dash="dashed",
                    line_width=1.2, tags=[self.TAG])
        figure.add_layout(span)
        self._spans.add(span)

    def _move(self, *_events) -> None:
        location = self.location
        change_models(list(self._spans), lambda span: setattr(span, "location", location))

    @property
    def spans(self) -> list:
        """The spans of the plots rendered so far (and still alive)."""

        return list(self._spans)


def _label_time(t) -> str:
    return np.datetime_as_string(np.datetime64(t, "m")).replace("T", " ")


class ResultsView(pn.viewable.Viewer):
    """The Results tab of one session (reads :attr:`AppState.results`)."""

    def __init__(self, state: AppState, **params):
        super().__init__(**params)
        self.state = state
        r = self.results = state.results
        self.watchers = Watchers()
        self._summary = pn.pane.Markdown("", margin=(0, 10), **_STRETCH)
        # Meteogram.
        self._meteogram_hint = pn.pane.Markdown("", margin=(0, 10), styles=_HELP, **_STRETCH)
        self._meteogram = pn.pane.HoloViews(None, linked_axes=False, margin=0, visible=False, **_STRETCH)
        # Scores.
        self._metrics_hint = pn.pane.Markdown("", margin=(0, 10), styles=_HELP, **_STRETCH)
        # One pane per panel: a HoloViews Layout of responsive overlays renders as a grid with
        # misplaced axes and titles (seen in Panel 1.9 / Bokeh 3).
        self._metrics = pn.Column(margin=0, visible=False, **_STRETCH)
        self.time_marker = TimeMarker(r)
        # Observation space.
        self._observer = pn.widgets.Select(label="Observer", options={"All observers": ""}, value="", width=220)
        self._observer.param.watch(self._pick_observer, "value")
        self._channel = pn.widgets.Select(label="Observed field", options=[], width=220)
        self._channel.param.watch(self._draw_diagnostics, "value")
        self._diag_hint = pn.pane.Markdown("", margin=(0, 10), styles=_HELP, **_STRETCH)
        self._maps = pn.Column(margin=0, visible=False, **_STRETCH)
        self._histogram = pn.pane.HoloViews(None, linked_axes=False, margin=0, visible=False, **_STRETCH)
        self._stats = pn.pane.Markdown("", margin=(0, 10), **_STRETCH)
        self._channels: dict[str, tuple[str, float | None]] = {}
        self._syncing = False
        # What each panel shows now: a panel is redrawn only when its key changes (one change of
        # the state fires several watchers).
        self._drawn: dict[str, tuple] = {}
        # Exports.
        self._downloads = {
            "zarr": Download(callback=lambda: self._export("zarr"), filename="appa-ensemble.zarr.zip",
                             label="Ensemble (zarr, zipped)", color="primary", variant="outline",
                             width=200),
            "netcdf": Download(callback=lambda: self._export("netcdf"), filename="appa-ensemble.nc",
                               label="Ensemble (NetCDF)", color="primary", variant="outline", width=200),
            "scenario": Download(callback=self._scenario, filename="appa-scenario.yaml", label="Scenario (YAML)",
                                 color="primary", variant="outline", width=200),
            "png": Download(callback=self._png, filename="appa-globe.png", label="Globe view (PNG)",
                            color="primary", variant="outline", width=200),
        }
        self._notice = NoticeAlert(r, "notice")
        self.watchers.adopt(self._notice)

        self.watchers.watch(r, self._refresh, ["revision"])
        self.watchers.watch(r, self._deferred(self._on_field), ["variable", "level"])
        self.watchers.watch(r, self._draw_meteogram, ["point"])
        self.watchers.watch(r, self._sync_observer, ["observer"])
        self.watchers.watch(r, self._draw_diagnostics, ["innovations_revision"])  # O−B arrived
        self.watchers.watch(state.run, self._draw_diagnostics, ["status"])  # O−B pending, or given up
        self._layout = self._build()
        self._refresh()

    def __panel__(self):
        return self._layout

    # -- refreshing ---------------------------------------------------------------------------

    def _refresh(self, *_events) -> None:
        """A new output (or none): everything is redrawn."""

        available = self.results.available
        for button in self._downloads.values():
            button.disabled = not available
        self._downloads["png"].disabled = not (available or self.state.truth.loaded)
        self._summary.object = self._summary_text()
        self._syncing = True
        try:
            self._observer.param.update(options=self._observer_options(), value=self.results.observer)
        finally:
            self._syncing = False
        self._deferred(self._on_field)()

    @staticmethod
    def _deferred(draw):
        """``draw``, run on the session's next tick when there is a session (at once otherwise).

        A new result or field redraws the globe and this tab, seconds of work: the globe is drawn
        first and sent to the browser, then this tab's plots (``pn.state.execute``).
        """

        def deferred(*_events) -> None:
            pn.state.execute(draw, schedule=True)

        return deferred

    def _on_field(self, *_events) -> None:
        self._draw_meteogram()
        self._draw_metrics()
        self._update_channels(prefer_shown=True)

    def _summary_text(self) -> str:
        r = self.results
        if not r.available:
            status = self.state.model
            return ("### Results\n\nNo run yet: design observations in the *Observations* tab, then press **Run**. "
                    "The ensemble then appears on the globe, and here: a "
                    "meteogram of any point you click, scores over time and the observation-space residuals.\n\n"
                    + (status.text if status is not None else ""))
        output = r.output
        ds, scenario = output.dataset, output.scenario
        times = r.times
        window = f"{_label_time(times[0])} – {_label_time(times[-1])} UTC" if times.size > 1 else \
            f"{_label_time(times[0])} UTC"
        n_obs = int(ds.sizes.get("obs", 0))
        observers = len(self.results.param.observer.objects) - 1
        task = _TASKS.get(scenario.task, scenario.task)
        if scenario.task == "forecast":
            task += f" ({scenario.lead_hours} h lead)"
        lines = [
            "### Results",
            f"**{task}** · {window} ({times.size} state{'s' if times.size != 1 else ''}) · "
            f"**{r.members}** member{'s' if r.members != 1 else ''} · "
            f"**{n_obs:,}** observation{'s' if n_obs != 1 else ''} from {observers} observer"
            f"{'s' if observers != 1 else ''} · {scenario.sampler.name.upper()}, {scenario.sampler.steps} steps, "
            f"{scenario.guidance.method.upper()} · seed {scenario.seed} · **{output.seconds:.1f} s**",
        ]
        if n_obs == 0:
            lines.append("*No observations: these are samples of the prior.*")
        if output.truth is None:
            lines.append("*No truth covers this run: scores and the truth/error layers are not available.*")
        return "\n\n".join(lines)

    # -- meteogram ----------------------------------------------------------------------------

    def _unchanged(self, panel: str, key: tuple) -> bool:
        if self._drawn.get(panel) == key:
            return True
        self._drawn[panel] = key
        return False

    def _draw_meteogram(self, *_events) -> None:
        r = self.results
        if self._unchanged("meteogram", (r.revision, r.variable, r.level, r.point)):
            return
        if not r.available:
            self._meteogram_hint.object = ""
            self._meteogram.param.update(object=None, visible=False)
            return
        if r.point is None:
            self._meteogram_hint.object = ("**Click the globe** (in the *Results* view) to see a meteogram of "
                                           "that point.")
            self._meteogram.param.update(object=None, visible=False)
            return
        try:
            m = r.meteogram()
        except adapter.AppaError as e:
            r.notice = error(e)
            m = None
        if m is None:
            self._meteogram.param.update(object=None, visible=False)
            return
        n_obs = len(m.obs)
        self._meteogram_hint.object = (
            f"Grid cell nearest to the click: {plots.lonlat_label(m.lon, m.lat)}. The plume's shade counts the "
            f"members through each pixel; {n_obs} observation{'s' if n_obs != 1 else ''} of this field within one "
            "grid spacing (±1 standard deviation).")
        meta = r.meta
        overlay = plots.meteogram_plot(m, long_name=meta.long_name if meta else None,
                                       hooks=[self.time_marker.hook])
        self._meteogram.param.update(object=overlay, visible=True)

    # -- scores -------------------------------------------------------------------------------

    def _draw_metrics(self) -> None:
        r = self.results
        if self._unchanged("metrics", (r.revision, r.variable, r.level)):
            return
        metrics = r.metrics() if r.available else None
        if metrics is None or not len(metrics):
            self._metrics_hint.object = "" if not r.available else \
                "Scores need the truth of this field over the run's window, which is not available."
            self._show(self._metrics, [])
            return
        meta = r.meta
        label = plots.channel_label(meta.long_name.capitalize(), r.level if r.has_levels else None)
        panels = plots.metric_panels(metrics, units=meta.units, label=label, hooks=[self.time_marker.hook])
        self._metrics_hint.object = (
            "Area-weighted over the globe. Spread–skill ratio √((M+1)/M)·spread/RMSE: below 1 the ensemble "
            "is over-confident, above 1 under-confident.")
        self._show(self._metrics, panels)

    @staticmethod
    def _show(column: pn.Column, plots_: list) -> None:
        """Show each plot in its own pane of ``column`` (hidden when there are none)."""

        column.param.update(objects=[pn.pane.HoloViews(p, linked_axes=False, margin=(0, 0, 10, 0), **_STRETCH)
                                     for p in plots_], visible=bool(plots_))

    # -- observation space --------------------------------------------------------------------

    def _observer_options(self) -> dict:
        names = [str(o) for o in self.results.param.observer.objects if o]
        return {"All observers": "", **{n: n for n in names}}

    def _sync_observer(self, *_events) -> None:
        self._syncing = True
        try:
            self._observer.value = self.results.observer
        finally:
            self._syncing = False
        self._update_channels(prefer_shown=True)

    def _pick_observer(self, event) -> None:
        if not self._syncing and event.new != self.results.observer:
            self.results.observer = event.new

    def _update_channels(self, *, prefer_shown: bool = False) -> None:
        """Offer the fields the observer observes; keep the current one, or the globe's field."""

        r = self.results
        table = r.innovations()
        self._channels = plots.innovation_channels(table)
        current = self._channel.value
        shown = plots.channel_label(r.variable, r.level if r.has_levels else None) if r.variable else None
        if prefer_shown and shown in self._channels:
            value = shown
        elif current in self._channels:
            value = current
        else:
            value = next(iter(self._channels), None)
        self._channel.param.update(options=list(self._channels), value=value)
        self._draw_diagnostics()

    def _draw_diagnostics(self, *_events) -> None:
        r = self.results
        key = self._channels.get(self._channel.value)
        pending = self.state.run.busy  # the run shown may still compute its O−B
        if self._unchanged("diagnostics", (r.revision, r.innovations_revision, r.observer, key, pending)):
            return
        if not r.available or key is None:
            self._clear_diagnostics("" if not r.available else "This run has no observations.")
            return
        table = plots.select_channel(r.innovations(), *key)
        variable = key[0]
        units = adapter.variable_meta(variable).units
        who = f"observer '{r.observer}'" if r.observer else "all observers"
        about = (f"Residuals of {len(table):,} observations of {who}: observed value minus the ensemble mean "
                 "of the observed quantity, before (O−B: the prior ensemble, unguided) and after (O−A) "
                 "assimilation.")
        has_background = np.isfinite(table["o_minus_b"].to_numpy(np.float64)).any()
        if pending and not has_background:
            # The guided ensemble was just published and its O−B follows in seconds: the plots
            # are drawn once, then. Drawn now as well, they cost the server 0.7 s (1.7 s while
            # the background pass ran, 2 cores) just when the globe and the scores are being
            # sent, and stepping through time had to wait for them.
            self._clear_diagnostics(about + " The maps and histograms appear when O−B is computed "
                                    "(the background pass of the run)…")
            return
        limit = plots.symmetric_limit(table["o_minus_b"], table["o_minus_a"])
        maps = [plots.innovation_map(table, column, limit=limit, units=units,
                                     title=f"{name} · {self._channel.value}")
                for column, name in plots.RESIDUALS.items()]
        self._show(self._maps, maps)
        self._histogram.param.update(object=plots.innovation_histograms(table, units=units), visible=True)
        summary = plots.innovation_summary(table)
        unit = plots.units_label(units)
        rows = "\n".join(f"| {name} | {int(row['n']):,} | {row['mean']:.4g} | {row['std']:.4g} |"
                         for name, row in summary.iterrows())
        header = f"| {self._channel.value} | n | mean ({unit}) | std ({unit}) |\n|---|---:|---:|---:|\n"
        self._stats.object = header + rows
        self._diag_hint.object = about + (
            "" if has_background else " This run has no background ensemble, so O−B is not available.")

    def _clear_diagnostics(self, hint: str) -> None:
        """No residual plots nor statistics, only ``hint``."""

        self._diag_hint.object = hint
        self._show(self._maps, [])
        self._histogram.param.update(object=None, visible=False)
        self._stats.object = ""

    # -- exports ------------------------------------------------------------------------------

    def _send(self, name: str, result: tuple[bytes, str] | None):
        if result is None:
            return None
        data, filename = result
        self._downloads[name].filename = filename
        self.results.notice = None
        return io.BytesIO(data)

    def _export(self, fmt: str):
        return self._send(fmt, self.results.export(fmt))

    def _scenario(self):
        return self._send("scenario", self.results.scenario_bytes())

    def _png(self):
        try:
            result = figures.current_view_png(self.state)
        except adapter.AppaError as e:
            self.results.notice = error(e)
            return None
        except Exception as e:  # a figure that cannot be drawn must not break the session
            log.exception("PNG export failed")
            self.results.notice = error(f"The PNG could not be drawn: {e}")
            return None
        return self._send("png", result)

    # -- layout -------------------------------------------------------------------------------

    def _build(self):
        d = self._downloads
        exports = pn.Column(
            pn.pane.Markdown("#### Exports", margin=(10, 10, 0, 10)),
            pn.FlexBox(d["zarr"], d["netcdf"], d["scenario"], d["png"]),
            pn.pane.Markdown("The ensemble files hold the members, the observations with their model equivalents "
                             "and the scenario (in the attributes); the scenario file re-runs with "
                             "`appa assimilate --scenario`. The PNG is the globe as shown.", styles=_HELP,
                             margin=(0, 10)),
            **_STRETCH,
        )
        return pn.Column(
            self._summary,
            self._notice,
            pn.pane.Markdown("#### Meteogram", margin=(10, 10, 0, 10)),
            self._meteogram_hint, self._meteogram,
            pn.pane.Markdown("#### Scores over time", margin=(10, 10, 0, 10)),
            self._metrics_hint, self._metrics,
            pn.pane.Markdown("#### Observation space: O−B and O−A", margin=(10, 10, 0, 10)),
            pn.Row(self._observer, self._channel),
            self._diag_hint, self._maps, self._histogram, self._stats,
            exports,
            **_STRETCH,
        )

"""The Observations tab: window, observers, the form of the observer being edited, presets,
uploads and scenario files. Widgets only: every edit goes to the :class:`ObservationEditor`."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import panel as pn

from app import plots
from app.state import KIND_LABELS, AppState, ObserverDraft, SatelliteDraft, StationsDraft, TrackDraft
from app.views.base import NoticeAlert, Watchers

__all__ = ["ObservationsView", "DraftForm"]

_STRETCH = {"sizing_mode": "stretch_width"}
_HELP = {"color": "#666", "font-size": "0.85em"}


class DraftForm(pn.viewable.Viewer):
    """The form of one observer: name, variables, levels, errors, times, and its kind's fields."""

    def __init__(self, state: AppState, draft: ObserverDraft, **params):
        super().__init__(**params)
        self.state, self.editor, self.draft = state, state.editor, draft
        self.watchers = Watchers()
        d = draft
        self._name = pn.widgets.TextInput(label="Name", value=d.label, **_STRETCH)
        self._name.param.watch(self._rename, "value")
        self._variables = pn.widgets.MultiChoice.from_param(d.param.variables, label="Variables", **_STRETCH)
        self._levels = pn.widgets.MultiChoice.from_param(d.param.levels, label="Levels (hPa)", **_STRETCH)
        self._errors = pn.widgets.Tabulator(
            self._error_frame(), show_index=False, editors={"variable": None, "units": None},
            titles={"error": "error (std)"}, layout="fit_data_stretch",
            height=min(34 + 32 * max(len(d.variables), 1), 160),
            **_STRETCH,
        )
        self._errors.on_edit(self._edit_error)
        self._first = pn.widgets.IntInput(label="First hour", value=d.start_hour, start=0, width=95)
        self._last = pn.widgets.IntInput(label="Last hour", value=d.end_hour, start=0, width=95)
        self._every = pn.widgets.IntInput(label="Every (h)", value=d.every_hours, start=1, width=95)
        for w in (self._first, self._last, self._every):
            w.param.watch(self._edit_times, "value")
        self.watchers.watch(d, self._sync, ["variables", "start_hour", "end_hour", "every_hours", "errors"])
        self._notice = self._alert(d, "notice")
        self._kind = self._kind_panel()
        self._sync()
        self._layout = self._build()

    def _alert(self, owner, name) -> NoticeAlert:
        alert = NoticeAlert(owner, name)
        self.watchers.adopt(alert)
        return alert

    # -- common fields --------------------------------------------------------------------------

    def _error_frame(self) -> pd.DataFrame:
        from app import adapter

        d = self.draft
        return pd.DataFrame({
            "variable": list(d.variables),
            "error": [d.error_of(v) for v in d.variables],
            "units": [plots.units_label(adapter.variable_meta(v).units) for v in d.variables],
        })

    def _sync(self, *_events) -> None:
        from app import adapter

        d = self.draft
        self._levels.visible = any(adapter.variable_meta(v).has_levels for v in d.variables)
        self._errors.value = self._error_frame()
        self._errors.height = min(34 + 32 * max(len(d.variables), 1), 160)
        for w, v in ((self._first, d.start_hour), (self._last, d.end_hour), (self._every, d.every_hours)):
            if w.value != v:
                w.value = v

    def _rename(self, event) -> None:
        if not self.editor.rename(self.draft.label, event.new):
            self._name.value = self.draft.label

    def _edit_error(self, event) -> None:
        variable = self._errors.value.iloc[event.row]["variable"]
        if not self.draft.set_error(variable, event.value):
            self._errors.value = self._error_frame()

    def _edit_times(self, _event) -> None:
        d = self.draft
        if (self._first.value, self._last.value, self._every.value) == (d.start_hour, d.end_hour, d.every_hours):
            return
        if not d.set_times(self._first.value, self._last.value, self._every.value, hours=self.editor.hours):
            self._sync()

    # -- kind-specific --------------------------------------------------------------------------

    def _kind_panel(self):
        d = self.draft
        if isinstance(d, StationsDraft):
            table = StationTable(self.state, d)
            self.watchers.adopt(table)
            return table
        if isinstance(d, SatelliteDraft):
            fields = [
                pn.widgets.FloatInput.from_param(d.param.altitude_km, label="Altitude (km)", width=140),
                pn.widgets.FloatInput.from_param(d.param.inclination_deg, label="Inclination (°)", width=140),
                pn.widgets.FloatInput.from_param(d.param.raan_deg, label="Ascending node (°E)", width=140),
                pn.widgets.FloatInput.from_param(d.param.phase_deg, label="Phase (°)", width=140),
                pn.widgets.FloatInput.from_param(d.param.fov_radius_deg, label="Field of view radius (°)", width=140),
                pn.widgets.FloatInput.from_param(d.param.samples_per_hour, label="Samples per hour", width=140),
            ]
            info = pn.pane.Markdown("", styles=_HELP, **_STRETCH)

            def describe(*_):
                orbit = d.orbit(self.editor.window)
                hours = d.hours(self.editor.window)
                span = (int(hours[-1]) + 1 - int(hours[0])) * 3600 if hours.size else 0
                info.object = (f"Period {orbit.period_s / 60:.1f} min, "
                               f"{span / orbit.period_s:.1f} orbits in its window. "
                               "The ground track and the cells seen are drawn on the globe.")
            self.watchers.watch(d, describe, ["altitude_km", "start_hour", "end_hour"])
            describe()
            return pn.Column(pn.pane.Markdown("**Orbit**", margin=(5, 10)),
                             pn.FlexBox(*fields), info, **_STRETCH)
        if isinstance(d, TrackDraft):
            width = pn.widgets.FloatSlider.from_param(d.param.width_deg, label="Swath width (°)", start=0.5, end=40,
                                                      step=0.5, throttled=True, **_STRETCH)
            info = pn.pane.Markdown("", styles=_HELP, **_STRETCH)

            def describe(*_):
                info.object = (f"{d.lon.size} vertices. Draw on the globe: press and hold to start, tap to add "
                               "vertices, press again to finish (a new track replaces this one).")
            self.watchers.watch(d, describe, ["lon"])
            describe()
            return pn.Column(width, info, **_STRETCH)
        return pn.Spacer(height=0)

    def __panel__(self):
        return self._layout

    def _build(self):
        d = self.draft
        level_help = "Level variables are observed at every chosen level." if not d.level_only else \
            "Profiles observe level variables at every chosen level."
        return pn.Column(
            pn.Row(self._name, pn.pane.Markdown(f"*{KIND_LABELS.get(d.kind, d.kind)}*", margin=(28, 10, 0, 10))),
            self._variables, self._levels, pn.pane.Markdown(level_help, styles=_HELP, margin=(0, 10)),
            self._errors,
            pn.Row(self._first, self._last, self._every),
            self._notice,
            self._kind,
            **_STRETCH,
        )


class StationTable(pn.viewable.Viewer):
    """The stations of a network: editable name/lon/lat/elevation, deletion of selected rows."""

    def __init__(self, state: AppState, draft: StationsDraft, **params):
        super().__init__(**params)
        self.editor, self.draft = state.editor, draft
        self.watchers = Watchers()
        self._table = pn.widgets.Tabulator(
            self._frame(), show_index=False, hidden_columns=["id"], pagination="remote", page_size=10,
            selectable="checkbox", layout="fit_data_stretch", editors={"id": None},
            formatters={"lon": {"type": "money", "precision": 3, "symbol": ""},
                        "lat": {"type": "money", "precision": 3, "symbol": ""}},
            titles={"lon": "lon (°E)", "lat": "lat (°N)", "elevation": "elev. (m)"}, **_STRETCH,
        )
        self._table.on_edit(self._edit)
        self._delete = pn.widgets.Button(label="Delete selected", color="danger", variant="outline",
                                         width=140, disabled=True)
        self._delete.on_click(self._delete_selected)
        self._table.param.watch(lambda e: setattr(self._delete, "disabled", not e.new), "selection")
        self._count = pn.pane.Markdown("", margin=(8, 10))
        self._notice = NoticeAlert(self.editor, "table_notice")
        self.watchers.adopt(self._notice)
        self.watchers.watch(draft, self._refresh, ["table"])
        self.watchers.watch(self.editor, self._refresh_on_revision, ["revision"])
        self._refresh()
        self._layout = pn.Column(pn.Row(self._count, self._delete), self._table, self._notice, **_STRETCH)

    def _frame(self) -> pd.DataFrame:
        table = self.draft.table
        out = table[["id", "name", "lon", "lat", "elevation"]].copy()
        out["lon"] = ((out["lon"] + 180.0) % 360.0) - 180.0  # shown in [-180, 180)
        return out.reset_index(drop=True)

    def _refresh(self, *_events) -> None:
        self._table.value = self._frame()
        self._count.object = f"**{len(self.draft.table):,}** stations"

    def _refresh_on_revision(self, *_events) -> None:
        if len(self._table.value) != len(self.draft.table) or self.editor.table_notice is not None:
            self._refresh()

    def _edit(self, event) -> None:
        station = int(self._table.value.iloc[event.row]["id"])
        if not self.editor.edit_station(station, event.column, event.value):
            self._refresh()

    def _delete_selected(self, _event) -> None:
        ids = self._table.value.iloc[self._table.selection]["id"].astype(int).tolist()
        self._table.selection = []
        self.editor.delete_stations(ids)

    def __panel__(self):
        return self._layout


class ObservationsView(pn.viewable.Viewer):
    """Window, observers and the tools that create them."""

    def __init__(self, state: AppState, **params):
        super().__init__(**params)
        self.state, self.editor = state, state.editor
        e = self.editor
        # Window.
        self._start = pn.widgets.Select(label="Window start", options=self._start_options(), width=200)
        self._start.param.watch(lambda ev: e.set_window(start=ev.new), "value")
        self._hours = pn.widgets.IntInput(label="Hours", value=e.hours, start=1, end=e.param.hours.bounds[1], width=90)
        self._hours.param.watch(self._edit_hours, "value")
        self._count = pn.pane.Markdown("", margin=(0, 10))
        # Observers.
        self._observer = pn.widgets.Select(label="Observer being edited", options=e.labels, value=e.active or None,
                                           **_STRETCH)
        self._syncing = False
        self._observer.param.watch(self._pick_observer, "value")
        self._add = {kind: pn.widgets.Button(label=f"+ {label}", color="primary", variant="outline",
                                             width=112) for kind, label in KIND_LABELS.items()}
        for kind, button in self._add.items():
            button.on_click(lambda _ev, kind=kind: e.add_observer(kind))
        self._remove = pn.widgets.Button(label="Remove", color="danger", variant="outline", width=90)
        self._remove.on_click(lambda _ev: e.active and e.remove_observer(e.active))
        self._form = pn.Column(**_STRETCH)
        self._draft_form: DraftForm | None = None
        # Presets.
        self._preset = pn.widgets.Select(label="Network", options={"Airports (spread out)": "airports",
                                                                  "Random, uniform on the sphere": "random"}, width=220)
        self._preset_n = pn.widgets.IntInput(label="Stations", value=200, start=1, end=e.max_stations, width=100)
        self._preset_seed = pn.widgets.IntInput(label="Seed", value=0, start=0, width=80)
        self._preset_kind = pn.widgets.RadioButtonGroup(options={"Stations": "stations", "Profiles": "profiles"},
                                                        value="stations", variant="outline")
        self._preset_add = pn.widgets.Button(label="Add network", color="primary", width=130)
        self._preset_add.on_click(self._load_preset)
        # Upload.
        self._upload = pn.widgets.FileInput(accept=".csv,.geojson,.json", multiple=False, **_STRETCH)
        self._upload.param.watch(self._uploaded, "value")
        # Scenario.
        self._download = pn.widgets.FileDownload(callback=self._export, filename="scenario.yaml",
                                                 label="Export scenario (YAML)", color="success", **_STRETCH)
        self._import = pn.widgets.FileInput(accept=".yaml,.yml,.json", multiple=False, **_STRETCH)
        self._import.param.watch(self._imported, "value")

        e.param.watch(self._on_observers, ["drafts", "active"])
        e.param.watch(self._on_revision, ["revision", "start", "hours"])
        state.truth.param.watch(lambda *_: setattr(self._start, "options", self._start_options()), ["dataset"])
        self._on_observers()
        self._layout = self._build()

    # -- window ---------------------------------------------------------------------------------

    def _start_options(self) -> dict:
        times = self.state.truth.times
        options = {np.datetime_as_string(t, unit="m").replace("T", " "): t for t in times}
        if not options:
            t = self.editor.window.start
            options = {np.datetime_as_string(t, unit="m").replace("T", " "): t}
        return options

    def _edit_hours(self, event) -> None:
        if not self.editor.set_window(hours=event.new):
            self._hours.value = self.editor.hours

    def _on_revision(self, *_events) -> None:
        e = self.editor
        self._count.object = f"**{e.n_observations():,}** observations (limit {e.max_observations:,})"

    # -- observers ------------------------------------------------------------------------------

    def _pick_observer(self, event) -> None:
        if not self._syncing and event.new and event.new != self.editor.active:
            self.editor.select(event.new)

    def _on_observers(self, *_events) -> None:
        e = self.editor
        self._syncing = True
        try:
            self._observer.param.update(options=e.labels, value=e.active or None)
        finally:
            self._syncing = False
        self._remove.disabled = not e.active
        draft = e.active_draft
        if self._draft_form is not None and self._draft_form.draft is draft:
            self._on_revision()
            return
        if self._draft_form is not None:
            self._draft_form.watchers.dispose()  # the old form stops following its observer
            self._draft_form = None
        if draft is None:
            self._form.objects = [pn.pane.Markdown("Add an observer with the buttons above, a preset network "
                                                   "or a station file below.", styles=_HELP)]
        else:
            self._draft_form = DraftForm(self.state, draft)
            self._form.objects = [self._draft_form]
        self._on_revision()

    # -- presets, uploads, scenarios ------------------------------------------------------------

    def _load_preset(self, _event) -> None:
        with self._preset_add.param.update(loading=True):
            self.editor.load_preset(self._preset.value, self._preset_n.value, seed=self._preset_seed.value,
                                    kind=self._preset_kind.value)

    def _uploaded(self, event) -> None:
        if event.new is None:
            return
        self.editor.upload_stations(event.new, self._upload.filename or "upload.csv")

    def _export(self):
        data = self.editor.export_scenario("yaml")
        return io.BytesIO(data if data is not None else b"")

    def _imported(self, event) -> None:
        if event.new is None:
            return
        self.editor.import_scenario(event.new, self._import.filename or "scenario.yaml")
        self._start.options = self._start_options()
        self._hours.value = self.editor.hours

    def __panel__(self):
        return self._layout

    def _build(self):
        e = self.editor
        window = pn.Column(
            pn.Row(self._start, self._hours),
            self._count,
            NoticeAlert(e, "window_notice"),
            **_STRETCH,
        )
        observers = pn.Column(
            pn.FlexBox(*self._add.values()),
            pn.Row(self._observer, self._remove),
            NoticeAlert(e, "observers_notice"),
            self._form,
            **_STRETCH,
        )
        presets = pn.Card(
            pn.Row(self._preset, self._preset_n, self._preset_seed),
            pn.Row(self._preset_kind, self._preset_add),
            pn.pane.Markdown("Airports: commercial airports (ICAO codes, `airportsdata`), spread by farthest-point "
                             "sampling. Random: uniform on the sphere, reproducible with the seed.", styles=_HELP),
            NoticeAlert(e, "preset_notice"),
            title="Station networks from presets", collapsed=False, **_STRETCH,
        )
        upload = pn.Card(
            pn.pane.Markdown(f"CSV with `lon`/`lat` columns (optionally `name`, `elevation`) or a GeoJSON "
                             f"FeatureCollection of points, up to {e.max_upload_bytes / 2**20:.0f} MB.", styles=_HELP),
            self._upload,
            NoticeAlert(e, "upload_notice"),
            title="Upload a station file", collapsed=False, **_STRETCH,
        )
        scenario = pn.Card(
            pn.pane.Markdown("A scenario file holds the window and every observer: export it to reproduce "
                             "this session, import one to restore a session.", styles=_HELP),
            self._download,
            pn.pane.Markdown("Import a scenario:", margin=(5, 10, 0, 10)),
            self._import,
            NoticeAlert(e, "scenario_notice"),
            title="Scenario file", collapsed=True, **_STRETCH,
        )
        return pn.Column(
            pn.pane.Markdown("### Assimilation window", margin=(0, 10)), window,
            pn.pane.Markdown("### Observers", margin=(10, 10, 0, 10)), observers,
            presets, upload, scenario,
            **_STRETCH,
        )

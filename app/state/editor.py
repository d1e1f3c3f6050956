"""The observation editor: every observer of the session, the window, and the edits on them.

:class:`ObservationEditor` holds the drafts (:mod:`app.state.drafts`), the assimilation window and
the limits, and applies the edits the views send (a click or a drag on the globe, a table edit, a
preset, an upload, an imported scenario). Every edit is validated first: an invalid one leaves
everything as it was and sets the notice of the control it came from (``draw_notice``,
``table_notice``, ``preset_notice``, ``upload_notice``, ``scenario_notice``, or the draft's own
``notice``).

:meth:`ObservationEditor.observation_set` and :meth:`ObservationEditor.scenario` are the seam the
run part uses: they build the engine's :class:`ObservationSet` / :class:`Scenario`, and
:meth:`ObservationEditor.restore` rebuilds the session from a scenario.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import param

from app import adapter, presets
from app.state.drafts import (
    PALETTE,
    Footprint,
    ObserverDraft,
    ProfilesDraft,
    SatelliteDraft,
    StationsDraft,
    TrackDraft,
    Window,
    draft_from_observer,
)
from app.state.notice import error, ok, warn

__all__ = ["ObservationEditor", "KIND_LABELS"]

#: How the app names each kind of observer.
KIND_LABELS = {
    "stations": "Stations",
    "profiles": "Profiles",
    "satellite_swath": "Satellite",
    "track_swath": "Drawn track",
}

_NEW_LABELS = {"stations": "stations", "profiles": "profiles", "satellite_swath": "satellite", "track_swath": "track"}
_CLASSES: dict[str, type[ObserverDraft]] = {
    "stations": StationsDraft,
    "profiles": ProfilesDraft,
    "satellite_swath": SatelliteDraft,
    "track_swath": TrackDraft,
}


class ObservationEditor(param.Parameterized):
    """All observers of a session and the edits on them (no Panel, no engine imports)."""

    drafts = param.List(default=[], item_type=ObserverDraft, doc="The observers, in order")
    active = param.String(default="", doc="Label of the observer being edited ('' for none)")
    start = param.Parameter(default=np.datetime64("2000-01-01T00:00", "ns"), doc="First state of the window")
    hours = param.Integer(default=24, bounds=(1, 24 * 31), doc="Number of hourly states in the window")
    variables = param.List(default=[], item_type=str, doc="Variables the truth/model offers")
    levels = param.List(default=[], doc="Pressure levels (hPa) the truth/model offers")
    grid = param.Parameter(default=None, doc="The model grid (for swath footprints), or None")

    max_observations = param.Integer(default=2_000_000, bounds=(1, None), doc="Most scalar observations in all")
    max_stations = param.Integer(default=20_000, bounds=(1, None), doc="Most stations in one network")
    max_upload_bytes = param.Integer(default=2 * 2**20, bounds=(1, None), doc="Largest station file accepted")

    settings = param.Dict(default={}, doc="Run settings of an imported scenario (model, task, members, ...)")
    revision = param.Integer(default=0, doc="Bumped whenever the drawn geometry must be redrawn")

    draw_notice = param.Parameter(default=None)
    table_notice = param.Parameter(default=None)
    preset_notice = param.Parameter(default=None)
    upload_notice = param.Parameter(default=None)
    scenario_notice = param.Parameter(default=None)
    observers_notice = param.Parameter(default=None)
    window_notice = param.Parameter(default=None)

    def __init__(self, **params):
        super().__init__(**params)
        self._reverting = False
        for draft in self.drafts:
            self._watch(draft)

    # -- window and vocabulary ----------------------------------------------------------------

    @property
    def window(self) -> Window:
        return Window(np.datetime64(self.start, "ns"), int(self.hours))

    def set_vocabulary(self, variables: Sequence[str], levels: Sequence[float], *, grid=None, start=None) -> None:
        """Offer the variables, levels and grid of the truth (or model) to every observer."""

        with param.parameterized.batch_call_watchers(self):
            self.param.update(variables=list(variables), levels=[float(p) for p in levels], grid=grid)
            if start is not None:
                self.start = np.datetime64(start, "ns")
        for draft in self.drafts:
            draft.set_vocabulary(self.variables, self.levels)
        self.revision += 1

    def set_window(self, start: Any = None, hours: int | None = None) -> bool:
        """Move or resize the window; refused when it would exceed the observation limit.

        Observers whose last hour was the window's last hour follow its new end; the others are
        clipped to the new window.
        """

        old = (self.start, self.hours)
        try:
            new_start = old[0] if start is None else np.datetime64(np.asarray(start, dtype="datetime64[ns]")[()], "ns")
            new_hours = old[1] if hours is None else int(hours)
            if np.isnat(new_start) or not 1 <= new_hours <= self.param.hours.bounds[1]:
                raise ValueError
        except (TypeError, ValueError):
            self.window_notice = error(f"Invalid window: start {start!r}, {hours!r} hours.")
            return False
        # Observers that ran to the end of the window keep running to its (new) end.
        saved = [(d, d.start_hour, d.end_hour) for d in self.drafts]
        self._reverting = True
        try:
            self.param.update(start=new_start, hours=new_hours)
            for d, first, last in saved:
                last = new_hours - 1 if last >= old[1] - 1 else min(last, new_hours - 1)
                d.param.update(start_hour=min(first, last), end_hour=last)
            total = self._safe_total()
            if total > self.max_observations:
                self.param.update(start=old[0], hours=old[1])
                for d, first, last in saved:
                    d.param.update(start_hour=first, end_hour=last)
                self.window_notice = error(self._limit_text(total))
                return False
        finally:
            self._reverting = False
        self.window_notice = None
        self.revision += 1
        return True

    # -- observers ----------------------------------------------------------------------------

    @property
    def labels(self) -> list[str]:
        return [d.label for d in self.drafts]

    @property
    def active_draft(self) -> ObserverDraft | None:
        for d in self.drafts:
            if d.label == self.active:
                return d
        return None

    def draft(self, label: str) -> ObserverDraft:
        for d in self.drafts:
            if d.label == label:
                return d
        raise KeyError(label)

    def _unique_label(self, base: str) -> str:
        base = base.strip() or "observer"
        if base not in self.labels:
            return base
        k = 2
        while f"{base}-{k}" in self.labels:
            k += 1
        return f"{base}-{k}"

    def _watch(self, draft: ObserverDraft) -> None:
        draft.param.watch(self._on_draft_change, [*type(draft)._geometry, "color"])

    def _on_draft_change(self, *events) -> None:
        if self._reverting:
            return
        draft = events[0].obj
        total = self._safe_total()
        if total > self.max_observations:
            self._reverting = True
            try:
                draft.param.update({e.name: e.old for e in events})
            finally:
                self._reverting = False
            draft.notice = error(self._limit_text(total))
            return
        self.revision += 1

    def add_observer(self, kind: str, *, label: str | None = None, select: bool = True,
                     **params) -> ObserverDraft | None:
        """Add an observer of ``kind`` (``stations``, ``profiles``, ``satellite_swath``, ``track_swath``)."""

        if kind not in _CLASSES:
            self.observers_notice = error(f"Unknown observer kind {kind!r}.")
            return None
        draft = _CLASSES[kind](label=self._unique_label(label or _NEW_LABELS[kind]),
                               color=PALETTE[len(self.drafts) % len(PALETTE)],
                               end_hour=max(0, self.hours - 1), **params)
        draft.set_vocabulary(self.variables, self.levels)
        if self._total_with(draft) > self.max_observations:
            self.observers_notice = error(self._limit_text(self._total_with(draft)))
            return None
        self._watch(draft)
        with param.parameterized.batch_call_watchers(self):  # one redraw for both changes
            self.drafts = [*self.drafts, draft]
            if select:
                self.active = draft.label
        self.observers_notice = None
        return draft

    def remove_observer(self, label: str) -> None:
        with param.parameterized.batch_call_watchers(self):
            self.drafts = [d for d in self.drafts if d.label != label]
            if self.active == label:
                self.active = self.drafts[-1].label if self.drafts else ""

    def select(self, label: str) -> None:
        if label not in self.labels and label != "":
            self.observers_notice = error(f"There is no observer named {label!r}.")
            return
        self.active = label

    def rename(self, label: str, new_label: str) -> bool:
        new_label = (new_label or "").strip()
        if not new_label:
            self.observers_notice = error("An observer needs a non-empty name.")
            return False
        if new_label != label and new_label in self.labels:
            self.observers_notice = error(f"Another observer is already named {new_label!r}.")
            return False
        draft = self.draft(label)
        draft.label = new_label
        if self.active == label:
            self.active = new_label
        self.drafts = list(self.drafts)
        self.observers_notice = None
        return True

    # -- counting -----------------------------------------------------------------------------

    def _count(self, draft: ObserverDraft) -> int:
        if isinstance(draft, StationsDraft):
            return draft.n_observations(self.window)
        if self.grid is None:
            return 0
        try:
            return draft.n_observations(self.window, self.grid)
        except adapter.AppaError:
            return 0

    def _safe_total(self) -> int:
        return sum(self._count(d) for d in self.drafts)

    def _total_with(self, draft: ObserverDraft) -> int:
        return sum(self._count(d) for d in self.drafts) + self._count(draft)

    def n_observations(self) -> int:
        """Scalar observations of every observer over the window (swaths need the grid)."""
        return self._safe_total()

    def _limit_text(self, total: int) -> str:
        return (f"That would make {total:,} observations, over the limit of {self.max_observations:,}; "
                "nothing was changed. Hint: use fewer stations, channels or hours.")

    # -- stations -----------------------------------------------------------------------------

    def _stations_target(self, notice: str) -> StationsDraft | None:
        draft = self.active_draft
        if not isinstance(draft, StationsDraft):
            setattr(self, notice, error("Select a station or profile network first (or add one)."))
            return None
        return draft

    def _commit_table(self, draft: StationsDraft, table: pd.DataFrame, notice: str) -> bool:
        if len(table) > self.max_stations:
            setattr(self, notice, error(
                f"A network may hold at most {self.max_stations:,} stations; this edit would make {len(table):,}. "
                "Nothing was changed."))
            return False
        n_new = draft.hours(self.window).size * len(table) * len(draft.channels())
        total = self._safe_total() - draft.n_observations(self.window) + n_new
        if total > self.max_observations:
            setattr(self, notice, error(self._limit_text(total)))
            return False
        self._reverting = True  # counted above; skip the watcher's recount
        try:
            draft.table = table.reset_index(drop=True)
        finally:
            self._reverting = False
        return True

    @staticmethod
    def _check_coords(lon: np.ndarray, lat: np.ndarray) -> str | None:
        if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
            return "outside the globe"
        if np.any(np.abs(lat) > 90):
            return "beyond a pole (|latitude| > 90°)"
        return None

    def add_stations(self, lon, lat, *, names: Sequence[str] | None = None, elevation=None) -> bool:
        """Append stations to the active network (lon/lat in degrees)."""

        draft = self._stations_target("draw_notice")
        if draft is None:
            return False
        lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
        lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
        problem = self._check_coords(lon, lat)
        if problem or lon.size != lat.size:
            self.draw_notice = error(f"A station is {problem or 'malformed'}; nothing was added.")
            self.revision += 1
            return False
        ids = draft.next_ids(lon.size)
        rows = pd.DataFrame({
            "id": ids,
            "name": list(names) if names is not None else [f"S{i + 1}" for i in ids],
            "lon": np.mod(lon, 360.0),
            "lat": lat,
            "elevation": np.full(lon.size, np.nan) if elevation is None else np.asarray(elevation, dtype=np.float64),
        })
        table = rows if not len(draft.table) else pd.concat([draft.table, rows], ignore_index=True)
        if not self._commit_table(draft, table, "draw_notice"):
            self.revision += 1
            return False
        self.draw_notice = None
        self.revision += 1
        return True

    def apply_drawn(self, ids, lon, lat, *, shown_ids: Sequence[int], dropped: int = 0) -> bool:
        """Apply the points of the globe's point-draw tool to the active network.

        Arguments:
            ids: Station id of each drawn point (NaN or negative for a point just added), shape
                ``(N,)``.
            lon, lat: Their coordinates in degrees, shape ``(N,)``.
            shown_ids: Ids of the stations that were drawn as editable (the visible ones); those
                missing from ``ids`` were deleted, the others were not touched.
            dropped: Points the projection could not map back to the globe (clicks or drags off
                the disk): the whole edit is refused.

        Returns:
            Whether the network changed.
        """

        draft = self._stations_target("draw_notice")
        if draft is None:
            self.revision += 1
            return False
        ids = np.asarray(ids, dtype=np.float64).ravel()
        lon = np.asarray(lon, dtype=np.float64).ravel()
        lat = np.asarray(lat, dtype=np.float64).ravel()
        if dropped or self._check_coords(lon, lat):
            self.draw_notice = error(
                "That point is off the globe and was ignored. Hint: click on the globe itself "
                "(turn it with the centre longitude/latitude controls to reach the far side).")
            self.revision += 1  # redraw, removing the glyph the browser kept
            return False
        table = draft.table.set_index("id", drop=False)
        known = (ids >= 0) & np.isin(ids, table.index.to_numpy(dtype=np.float64))
        # A station drawn twice (a duplicated id) is kept once; the copies count as new points.
        first = np.zeros(ids.size, dtype=bool)
        first[np.unique(ids, return_index=True)[1]] = True
        known &= first
        deleted = sorted(set(int(i) for i in shown_ids) - set(int(i) for i in ids[known]))
        table = table.drop(index=deleted)
        moved_ids = ids[known].astype(np.int64)
        table.loc[moved_ids, "lon"] = np.mod(lon[known], 360.0)
        table.loc[moved_ids, "lat"] = lat[known]
        added = ~known
        if added.any():
            new_ids = draft.next_ids(int(added.sum()))
            rows = pd.DataFrame({"id": new_ids, "name": [f"S{i + 1}" for i in new_ids],
                                 "lon": np.mod(lon[added], 360.0),
                                 "lat": lat[added], "elevation": np.full(new_ids.size, np.nan)})
            table = pd.concat([table, rows], ignore_index=True) if len(table) else rows
        table = table.reset_index(drop=True)
        if _same_table(table, draft.table):
            return False
        if not self._commit_table(draft, table, "draw_notice"):
            self.revision += 1
            return False
        self.draw_notice = None
        if added.any():
            self.revision += 1  # give the new points their ids in the browser
        return True

    def edit_station(self, station_id: int, column: str, value: Any) -> bool:
        """Edit one cell of the station table (``name``, ``lon``, ``lat`` or ``elevation``)."""

        draft = self._stations_target("table_notice")
        if draft is None:
            return False
        table = draft.table.copy()
        rows = np.flatnonzero(table["id"].to_numpy() == int(station_id))
        if rows.size != 1:
            self.table_notice = error(f"There is no station with id {station_id}.")
            return False
        row = rows[0]
        if column == "name":
            text = str(value).strip()
            if not text:
                self.table_notice = error("A station name cannot be empty; it was not changed.")
                self.revision += 1
                return False
            table.loc[row, "name"] = text
        elif column in ("lon", "lat", "elevation"):
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = np.nan
            if column != "elevation" and not np.isfinite(number):
                self.table_notice = error(f"The {column} of a station must be a number, got {value!r}; "
                                          "it was not changed.")
                self.revision += 1
                return False
            if column == "lat" and abs(number) > 90:
                self.table_notice = error(f"Latitude {number:g} is outside [-90, 90]; it was not changed.")
                self.revision += 1
                return False
            table.loc[row, column] = np.mod(number, 360.0) if column == "lon" else number
        else:
            self.table_notice = error(f"The column {column!r} cannot be edited.")
            return False
        if not self._commit_table(draft, table, "table_notice"):
            return False
        self.table_notice = None
        self.revision += 1
        return True

    def delete_stations(self, station_ids: Sequence[int]) -> bool:
        draft = self._stations_target("table_notice")
        if draft is None:
            return False
        table = draft.table[~draft.table["id"].isin([int(i) for i in station_ids])]
        self._commit_table(draft, table, "table_notice")
        self.table_notice = None
        self.revision += 1
        return True

    def _network(self, table: pd.DataFrame, label: str, kind: str, notice: str) -> StationsDraft | None:
        if len(table) > self.max_stations:
            setattr(self, notice,
                    error(f"{len(table):,} stations is over the limit of {self.max_stations:,} per network."))
            return None
        table = table.assign(id=np.arange(len(table), dtype=np.int64))[["id", "name", "lon", "lat", "elevation"]]
        draft = _CLASSES[kind](label=self._unique_label(label), color=PALETTE[len(self.drafts) % len(PALETTE)],
                               end_hour=max(0, self.hours - 1), table=table)
        draft.set_vocabulary(self.variables, self.levels)
        total = self._total_with(draft)
        if total > self.max_observations:
            setattr(self, notice, error(self._limit_text(total)))
            return None
        self._watch(draft)
        with param.parameterized.batch_call_watchers(self):
            self.drafts = [*self.drafts, draft]
            self.active = draft.label
        return draft

    def load_preset(self, preset: str, n: int, *, seed: int = 0, kind: str = "stations") -> bool:
        """Add a network from a preset: ``"airports"`` (spread-out commercial airports) or
        ``"random"`` (uniform on the sphere, seeded)."""

        try:
            n = int(n)
        except (TypeError, ValueError):
            self.preset_notice = error(f"The number of stations must be an integer, got {n!r}.")
            return False
        if not 1 <= n <= self.max_stations:
            self.preset_notice = error(f"The number of stations must lie in [1, {self.max_stations:,}], got {n}.")
            return False
        if preset == "airports":
            table, label = presets.airport_network(n), f"airports-{n}"
        elif preset == "random":
            table, label = presets.random_network(n, seed=int(seed)), f"random-{n}"
        else:
            self.preset_notice = error(f"Unknown preset {preset!r}; use 'airports' or 'random'.")
            return False
        draft = self._network(table, label, kind, "preset_notice")
        if draft is None:
            return False
        short = len(table) < n
        self.preset_notice = (warn if short else ok)(
            f"Added '{draft.label}': {len(table):,} stations"
            + (f" (only {len(table):,} available)" if short else "") + ".")
        return True

    def upload_stations(self, data: bytes | None, filename: str, *, kind: str = "stations") -> bool:
        """Add a network from an uploaded CSV or GeoJSON file (validated, size-limited)."""

        if not data:
            self.upload_notice = error(f"'{filename}' is empty.")
            return False
        if len(data) > self.max_upload_bytes:
            self.upload_notice = error(
                f"'{filename}' is {len(data) / 2**20:.1f} MiB, over the {self.max_upload_bytes / 2**20:.1f} MiB limit. "
                "Hint: thin the network.")
            return False
        try:
            table = adapter.read_station_upload(data, filename, max_bytes=self.max_upload_bytes,
                                                max_stations=self.max_stations)
        except adapter.AppaError as e:
            self.upload_notice = error(e)
            return False
        draft = self._network(table, Path(filename).stem or "upload", kind, "upload_notice")
        if draft is None:
            return False
        self.upload_notice = ok(f"Added '{draft.label}': {len(table):,} stations from {filename}.")
        return True

    # -- tracks -------------------------------------------------------------------------------

    def set_track(self, lon, lat) -> bool:
        """Replace the vertices of the active drawn track."""

        draft = self.active_draft
        if not isinstance(draft, TrackDraft):
            self.draw_notice = error("Select a drawn-track observer first (or add one).")
            self.revision += 1
            return False
        old = (draft.lon, draft.lat)
        if not draft.set_track(lon, lat):
            self.draw_notice = draft.notice
            self.revision += 1
            return False
        if draft.notice is not None and draft.notice.is_error:  # reverted by the limit
            self.draw_notice = draft.notice
            return False
        self.draw_notice = None
        return not (np.array_equal(draft.lon, old[0]) and np.array_equal(draft.lat, old[1]))

    # -- footprints, observation set, scenario ------------------------------------------------

    def footprints(self) -> list[Footprint]:
        """The footprint of every observer (those that cannot be computed yet are skipped)."""

        out = []
        for draft in self.drafts:
            try:
                out.append(draft.footprint(self.window, self.grid))
            except adapter.AppaError:
                continue
        return out

    def observation_set(self) -> adapter.ObservationSet:
        """The engine's observation set (raises ObservationError naming the faulty observer)."""

        observers = [draft.to_observer(self.window) for draft in self.drafts]
        total = self._safe_total()
        if total > self.max_observations:
            raise adapter.ObservationError(self._limit_text(total))
        return adapter.ObservationSet(tuple(observers))

    def scenario(self, **settings) -> adapter.Scenario:
        """A :class:`Scenario` of the window and the observers; ``settings`` override the run
        settings (``model``, ``task``, ``members``, ``sampler``, ...) kept from an import."""

        merged = {**self.settings, **settings}
        return adapter.Scenario(start=self.window.start, hours=self.window.hours,
                                observations=self.observation_set(), **merged)

    def export_scenario(self, fmt: str = "yaml", **settings) -> bytes | None:
        """The scenario file's bytes, or None (with ``scenario_notice`` set) when it cannot be built."""

        try:
            data = adapter.scenario_to_bytes(self.scenario(**settings), fmt)
        except adapter.AppaError as e:
            self.scenario_notice = error(e)
            return None
        self.scenario_notice = ok(f"Scenario exported ({len(self.drafts)} observers, "
                                  f"{self.n_observations():,} observations).")
        return data

    def import_scenario(self, data: bytes | None, filename: str) -> bool:
        """Restore the session from an uploaded scenario file."""

        if not data:
            self.scenario_notice = error(f"'{filename}' is empty.")
            return False
        if len(data) > 50 * self.max_upload_bytes:
            self.scenario_notice = error(f"'{filename}' is too large for a scenario file.")
            return False
        try:
            scenario = adapter.scenario_from_bytes(data, filename)
        except adapter.AppaError as e:
            self.scenario_notice = error(e)
            return False
        warnings = self.restore(scenario)
        text = f"Restored {len(self.drafts)} observers from {filename}."
        self.scenario_notice = (warn(text + " " + " ".join(warnings)) if warnings else ok(text))
        return True

    def restore(self, scenario: adapter.Scenario) -> list[str]:
        """Replace the window, observers and run settings by those of ``scenario``.

        Returns:
            Warnings about what could not be restored exactly (skipped kinds, rounded times).
        """

        window = Window(np.datetime64(scenario.start, "ns"), int(scenario.hours))
        drafts, warnings = [], []
        for k, obs in enumerate(scenario.observations):
            try:
                draft, notes = draft_from_observer(obs, window, color=PALETTE[k % len(PALETTE)])
            except adapter.AppaError as e:
                warnings.append(f"Skipped: {e.message}.")
                continue
            draft.set_vocabulary(self.variables, self.levels)
            drafts.append(draft)
            warnings += notes
        settings = {name: getattr(scenario, name)
                    for name in ("model", "task", "lead_hours", "members", "sampler", "guidance", "seed")}
        with param.parameterized.batch_call_watchers(self):
            self.param.update(start=window.start, hours=window.hours, settings=settings, drafts=drafts,
                              active=drafts[0].label if drafts else "")
        for draft in drafts:
            self._watch(draft)
        return warnings


def _same_table(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    if len(a) != len(b):
        return False
    cols = ["id", "lon", "lat"]
    return bool(np.array_equal(a[cols].to_numpy(dtype=np.float64), b[cols].to_numpy(dtype=np.float64), equal_nan=True))


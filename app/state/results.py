"""The results of the last run of a session: which layer, field, member and time the globe shows,
the point of the meteogram, the observer of the diagnostics, and the exports.

:class:`ResultsState` holds a :class:`app.adapter.RunOutput` and the selection on it; every number
it returns comes from :mod:`app.adapter` (the ensemble layers, colour ranges, meteogram, metric
curves, innovations and export files are defined there). The selection survives a new run when it
still makes sense (same variable and level, time and member within range).

A run arrives in two parts: :meth:`ResultsState.set_output` shows its guided ensemble (a new
output: :attr:`~ResultsState.revision` is bumped and every view redraws), then
:meth:`ResultsState.add_background` attaches the O−B of its background pass to that same
output, bumping only :attr:`~ResultsState.innovations_revision`: the observation-space
diagnostics redraw, the globe and the other panels (and the user's selection) stay as they are.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import param

from app import adapter
from app.state.notice import error
from app.state.truth import TimeAxis

__all__ = ["ResultsState"]

_BASE_LAYERS = ["mean", "spread", "member"]
_TRUTH_LAYERS = ["truth", "error"]
_PREFERRED = ("2m_temperature", "temperature", "geopotential")


class ResultsState(TimeAxis, param.Parameterized):
    """The output of the last run and what is selected in it (no Panel, no engine imports)."""

    output = param.Parameter(default=None, doc="adapter.RunOutput of the last run, or None")
    layer = param.Selector(default="mean", objects=[*_BASE_LAYERS, *_TRUTH_LAYERS], doc="What the globe shows")
    member = param.Integer(default=0, bounds=(0, 0), doc="Member shown by the 'member' layer")
    variable = param.Selector(default=None, objects=[], allow_None=True, doc="Variable shown")
    level = param.Selector(default=None, objects=[], allow_None=True, doc="Pressure level shown (hPa)")
    time_index = param.Integer(default=0, bounds=(0, 0), doc="Index of the output time shown")
    point = param.Parameter(default=None, doc="(lon, lat) of the meteogram's grid cell, or None")
    observer = param.Selector(default="", objects=[""], doc="Observer of the diagnostics ('' for all)")
    revision = param.Integer(default=0, doc="Bumped when a new output arrives")
    innovations_revision = param.Integer(
        default=0, doc="Bumped when the observation-space residuals of the output shown change "
                       "(its O−B arrives)")
    notice = param.Parameter(default=None, doc="Why something could not be shown or exported (a Notice)")

    def __init__(self, **params):
        super().__init__(**params)
        self._ranges: dict[tuple, tuple[float, float]] = {}
        self._innovations = None
        self.param.watch(self._on_field, ["variable", "level"])
        if self.output is not None:
            self.set_output(self.output)

    # -- the output ---------------------------------------------------------------------------

    def set_output(self, output: adapter.RunOutput) -> None:
        """Show a new output, keeping the current selection where it is still available."""

        ds = output.dataset
        variables = adapter.output_variables(ds)
        if not variables:
            self.notice = error("The run returned no field to show.")
            return
        variable = self.variable if self.variable in variables else next(
            (v for v in _PREFERRED if v in variables), variables[0])
        levels = [int(p) for p in ds["level"].values] if "level" in ds.coords else []
        level = self.level if self.level in levels else ((500 if 500 in levels else levels[0]) if levels else None)
        n_members, n_times = ds.sizes["member"], ds.sizes["time"]
        observers = [""] + (list(dict.fromkeys(ds["observer"].values.astype(str))) if "observer" in ds.coords else [])
        self._ranges = {}
        self._innovations = None
        with param.parameterized.batch_call_watchers(self):
            self.param.variable.objects = variables
            self.param.level.objects = levels
            self.param.member.bounds = (0, max(0, n_members - 1))
            self.param.time_index.bounds = (0, max(0, n_times - 1))
            self.param.observer.objects = observers
            self.param.update(
                output=output,
                variable=variable,
                level=level,
                member=min(self.member, n_members - 1),
                time_index=min(self.time_index, n_times - 1),
                observer=self.observer if self.observer in observers else "",
                point=self._snap(*self.point, ds=ds) if self.point is not None else None,
                notice=None,
            )
            self._update_layers()
            self.revision += 1

    def add_background(self, output: adapter.RunOutput, *, partial: adapter.RunOutput) -> bool:
        """Attach the O−B of a run's final ``output`` to the guided ensemble shown, ``partial``.

        Only ``obs_background`` is taken from ``output`` (the rest, ``seconds`` included, stays
        that of the ensemble shown): the fields are unchanged, so :attr:`revision` is not bumped
        (nothing is rebuilt and the selection stays); :attr:`innovations_revision` is, and the
        innovations and exports include O−B.

        Arguments:
            output: The final output of the run (:func:`app.adapter.run_scenario`).
            partial: The guided output of the same run, which :meth:`set_output` showed.

        Returns:
            Whether it was attached: False (and nothing changes) when the output shown is no
            longer ``partial`` (a new output or :meth:`clear` replaced it: a late background
            never lands on another run) or ``output`` has no ``obs_background`` that fits it.
        """

        current = self.output
        if current is None or current is not partial:
            return False
        background = output.dataset.get("obs_background")
        shown = current.dataset
        if background is None or dict(background.sizes) != {"member": shown.sizes.get("member"),
                                                            "obs": shown.sizes.get("obs")}:
            return False
        self._innovations = None
        with param.parameterized.batch_call_watchers(self):
            self.output = dataclasses.replace(current, dataset=shown.assign(obs_background=background))
            self.innovations_revision += 1
        return True

    def clear(self) -> None:
        """Forget the output (and the selection that depends on it)."""

        self._ranges = {}
        self._innovations = None
        with param.parameterized.batch_call_watchers(self):
            self.param.update(output=None, point=None, notice=None, layer="mean", member=0, time_index=0, observer="")
            self.param.member.bounds = (0, 0)
            self.param.time_index.bounds = (0, 0)
            self.revision += 1

    def _on_field(self, *_events) -> None:
        self._update_layers()

    def _update_layers(self) -> None:
        layers = self.layers
        if self.layer not in layers:
            self.layer = "mean"
        self.param.layer.objects = layers

    # -- what is known ------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self.output is not None

    @property
    def dataset(self):
        return None if self.output is None else self.output.dataset

    @property
    def truth(self):
        return None if self.output is None else self.output.truth

    @property
    def _level(self) -> int | None:
        return self.level if self.has_levels else None

    @property
    def has_truth(self) -> bool:
        """Whether the run has a truth of the variable (and level) shown."""

        return (self.output is not None and self.variable is not None
                and adapter.truth_field(self.truth, variable=self.variable, level=self._level) is not None)

    @property
    def layers(self) -> list[str]:
        """Layers offered: truth and error only when the run has a truth of this field."""

        return [*_BASE_LAYERS, *(_TRUTH_LAYERS if self.has_truth else [])]

    @property
    def times(self) -> np.ndarray:
        return np.zeros(0, "datetime64[ns]") if self.output is None else self.dataset["time"].values

    @property
    def has_levels(self) -> bool:
        return (self.output is not None and self.variable is not None
                and "level" in self.dataset[self.variable].dims)

    @property
    def meta(self) -> adapter.VariableMeta | None:
        return None if self.variable is None else adapter.variable_meta(self.variable)

    @property
    def members(self) -> int:
        return 0 if self.output is None else int(self.dataset.sizes["member"])

    @property
    def diverging(self) -> bool:
        """Whether the layer is centred on 0 (a diverging colour map)."""
        return self.layer == "error"

    # -- what is shown ------------------------------------------------------------------------

    def field(self):
        """The map shown: a float64 DataArray ``(latitude, longitude)``, or None."""

        if self.output is None or self.variable is None:
            return None
        try:
            return adapter.ensemble_layer(self.dataset, self.truth, layer=self.layer, variable=self.variable,
                                          level=self._level, time_index=self.time_index, member=self.member)
        except adapter.AppaError as e:
            self.notice = error(e)
            return None

    def value_range(self) -> tuple[float, float]:
        """Colour range of the layer, fixed over time (see :func:`app.adapter.layer_range`)."""

        if self.output is None or self.variable is None:
            return (0.0, 1.0)
        key = (self.revision, self.layer, self.variable, self._level)
        if key not in self._ranges:
            self._ranges[key] = adapter.layer_range(self.dataset, self.truth, layer=self.layer,
                                                    variable=self.variable, level=self._level)
        return self._ranges[key]

    def _snap(self, lon: float, lat: float, *, ds=None) -> tuple[float, float]:
        ds = self.dataset if ds is None else ds
        lats, lons = ds["latitude"].values, ds["longitude"].values
        i = int(np.argmin(np.abs(lats - lat)))
        j = int(np.argmin(np.abs((lons - lon + 180.0) % 360.0 - 180.0)))
        return float(lons[j]), float(lats[i])

    def select_point(self, lon: float, lat: float) -> bool:
        """Put the meteogram at the grid cell nearest to ``(lon, lat)``; a point off the globe
        (NaN, or beyond a pole) is refused with a notice."""

        if self.output is None:
            self.notice = error("Run the model first: the meteogram shows the ensemble of a run.")
            return False
        try:
            lon, lat = float(lon), float(lat)
        except (TypeError, ValueError):
            lon = lat = float("nan")
        if not (np.isfinite(lon) and np.isfinite(lat)) or abs(lat) > 90:
            self.notice = error("That point is off the globe. Hint: click on the globe itself.")
            return False
        self.point = self._snap(lon % 360.0, lat)
        self.notice = None
        return True

    def meteogram(self) -> adapter.Meteogram | None:
        """The ensemble, truth and observations at :attr:`point` over time, or None."""

        if self.output is None or self.point is None or self.variable is None:
            return None
        lon, lat = self.point
        return adapter.meteogram(self.dataset, self.truth, variable=self.variable, level=self._level, lon=lon, lat=lat)

    def metrics(self):
        """RMSE, spread, CRPS and spread-skill ratio over time (a DataFrame), or None without truth."""

        if self.output is None or self.variable is None:
            return None
        return adapter.metric_curves(self.dataset, self.truth, variable=self.variable, level=self._level)

    def innovations(self):
        """O−B and O−A of every observation of :attr:`observer` (all when it is ``''``)."""

        if self.output is None:
            return adapter.innovations(None)
        if self._innovations is None:
            self._innovations = adapter.innovations(self.dataset)
        table = self._innovations
        if self.observer:
            table = table[table["observer"] == self.observer].reset_index(drop=True)
        return table

    # -- exports ------------------------------------------------------------------------------

    def export(self, fmt: str) -> tuple[bytes, str] | None:
        """The ensemble as a file (``"netcdf"`` or ``"zarr"``): ``(bytes, filename)``, or None
        (with :attr:`notice` set) when there is nothing to export or writing failed."""

        if self.output is None:
            self.notice = error("There is no run to export yet.")
            return None
        try:
            return adapter.export_result(self.dataset, fmt)
        except (adapter.AppaError, OSError, ValueError) as e:
            self.notice = error(e if isinstance(e, adapter.AppaError) else f"The export failed: {e}")
            return None

    def scenario_bytes(self) -> tuple[bytes, str] | None:
        """The scenario of the run, with its observation values, as YAML: ``(bytes, filename)``."""

        if self.output is None:
            self.notice = error("There is no run to export yet.")
            return None
        scenario = self.output.scenario
        start = np.datetime_as_string(np.datetime64(scenario.start, "h"))
        try:
            return adapter.scenario_to_bytes(scenario, "yaml"), f"appa-scenario-{scenario.task}-{start}.yaml"
        except adapter.AppaError as e:
            self.notice = error(e)
            return None


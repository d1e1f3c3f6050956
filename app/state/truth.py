"""The truth being shown: a canonical dataset, the chosen variable, level and time.

The dataset is opened lazily (:func:`app.adapter.open_truth`); :meth:`TruthState.field` loads
one 2-D slice ``(latitude, longitude)`` at a time. The colour range of a variable is computed once
over (up to) eight evenly spaced times so that it stays fixed while the time player runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import param

from app import adapter
from app.state.notice import error

__all__ = ["TruthState", "TimeAxis"]


class TimeAxis:
    """The time shown by a state with ``times`` (datetime64 array) and a ``time_index``."""

    @property
    def time(self) -> np.datetime64 | None:
        times = self.times
        return times[min(self.time_index, times.size - 1)] if times.size else None

    @property
    def time_label(self) -> str:
        t = self.time
        return "" if t is None else np.datetime_as_string(t, unit="m").replace("T", " ") + " UTC"


class TruthState(TimeAxis, param.Parameterized):
    """The truth dataset and the slice of it on the globe."""

    dataset = param.Parameter(default=None, doc="Canonical xarray.Dataset, or None")
    source = param.String(default="", doc="Where the truth was read from")
    variable = param.Selector(default=None, objects=[], allow_None=True, doc="Variable shown")
    level = param.Selector(default=None, objects=[], allow_None=True, doc="Pressure level shown (hPa)")
    time_index = param.Integer(default=0, bounds=(0, 0), doc="Index of the time shown")
    notice = param.Parameter(default=None, doc="Why the truth could not be loaded (a Notice)")

    def __init__(self, **params):
        super().__init__(**params)
        self._ranges: dict[tuple, tuple[float, float]] = {}
        if self.dataset is not None:
            self.set_dataset(self.dataset, source=self.source)

    def load(self, source: Any) -> bool:
        """Open ``source`` (a path or a dataset); on failure keep the current truth and set ``notice``."""

        try:
            ds = adapter.open_truth(source)
        except adapter.AppaError as e:
            self.notice = error(e)
            return False
        self.set_dataset(ds, source=str(source) if not hasattr(source, "data_vars") else "in-memory dataset")
        return True

    def set_dataset(self, ds, *, source: str = "") -> None:
        names = [v for v in ds.data_vars if "time" in ds[v].dims]
        default = next((v for v in ("2m_temperature", "temperature", "geopotential") if v in names), names[0])
        levels = [int(p) for p in ds["level"].values] if "level" in ds.coords else []
        self._ranges = {}
        with param.parameterized.batch_call_watchers(self):
            self.param.variable.objects = names
            self.param.level.objects = levels
            self.param.time_index.bounds = (0, max(0, ds.sizes["time"] - 1))
            self.param.update(
                dataset=ds,
                source=source,
                variable=default,
                level=(500 if 500 in levels else levels[0]) if levels else None,
                time_index=0,
                notice=None,
            )

    # -- what is shown ------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self.dataset is not None

    @property
    def times(self) -> np.ndarray:
        return np.zeros(0, "datetime64[ns]") if self.dataset is None else self.dataset["time"].values

    @property
    def meta(self) -> adapter.VariableMeta | None:
        return None if self.variable is None else adapter.variable_meta(self.variable)

    @property
    def has_levels(self) -> bool:
        return self.dataset is not None and self.variable is not None and "level" in self.dataset[self.variable].dims

    @property
    def grid(self):
        return None if self.dataset is None else adapter.grid_of(self.dataset)

    @property
    def level_variables(self) -> list[str]:
        if self.dataset is None:
            return []
        return [v for v in self.param.variable.objects if "level" in self.dataset[v].dims]

    def _select(self, time_index):
        da = self.dataset[self.variable].isel(time=time_index)
        if "level" in da.dims:
            da = da.sel(level=self.level)
        return da

    def field(self):
        """The shown slice, a float64 DataArray ``(latitude, longitude)`` (loaded), or None."""

        if self.dataset is None or self.variable is None:
            return None
        return self._select(min(self.time_index, self.times.size - 1)).astype(np.float64).load()

    def value_range(self, *, symmetric: bool = False) -> tuple[float, float]:
        """Colour range of the variable at the level: 1st–99th percentiles over ≤ 8 times
        (``symmetric``: ±max |value|, for diverging maps centred on 0)."""

        key = (self.variable, self.level if self.has_levels else None, symmetric)
        if key not in self._ranges:
            n = self.times.size
            sample = np.unique(np.linspace(0, n - 1, min(n, 8)).round().astype(int))
            values = np.concatenate([np.asarray(self._select(int(i)).values, dtype=np.float64).ravel() for i in sample])
            values = values[np.isfinite(values)]
            if values.size == 0:
                lo, hi = 0.0, 1.0
            elif symmetric:
                hi = float(np.percentile(np.abs(values), 99)) or 1.0
                lo = -hi
            else:
                lo, hi = (float(v) for v in np.percentile(values, [1, 99]))
                if hi <= lo:
                    lo, hi = lo - 0.5, hi + 0.5
            self._ranges[key] = (lo, hi)
        return self._ranges[key]

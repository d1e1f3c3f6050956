r"""Training windows: states and blankets read lazily from a store, and time splits.

A source is a ``(time, channel, latitude, longitude)`` array: the channels of a canonical
physical store stacked by :meth:`ChannelSpec.stack <appa_engine.data.channels.ChannelSpec.stack>`,
or a store whose single variable already has those dims (e.g. a latent store, dims
``(time, channel, latitude, longitude)`` on the latent grid). Items:

- :class:`StateDataset`: one state :math:`x^t`, ``(C, H, W)``, with its date features ``(D,)``.
- :class:`BlanketDataset`: a blanket of K states :math:`x^{t}, x^{t+s}, \dots, x^{t+(K-1)s}`,
  ``(K, C, H, W)``, with their date features ``(K, D)``. A blanket never crosses a gap in the
  time axis, nor a change of the ``run`` coordinate when the store has one (independent runs of
  the synthetic planet), nor leaves the selected time range.

States are standardised with the given :class:`~appa_engine.data.stats.Statistics` and NaNs are
then set to 0 (``fill_nan=True``, see :mod:`appa_engine.data.stats`).

Each item is one contiguous ``isel`` on the time axis and one read. The store is opened lazily in
each process: a dataset built on a path pickles only its arguments and reopens the store on the
first ``__getitem__`` of each DataLoader worker (also after a fork).

A small dataset can instead be read into memory once (:meth:`StateDataset.load`): one read of
the selected span, standardised, after which items are slices of an array. A read of one item
costs tens of milliseconds in xarray and zarr (one chunk per variable and per state), more than a
training step of a small model on a CPU; the training loop loads every dataset that fits its
``loop.in_memory_gib`` budget (``nbytes``). Items are the same either way.

Example:
    >>> split = split_by_time(times, valid="2020", test="2021")   # paper: train 1993–2019
    >>> train = BlanketDataset("era5.zarr", length=8, step="6h", stats=stats, times=split.train)
    >>> loader = DataLoader(train, batch_size=16, shuffle=True, num_workers=2)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import xarray as xr

from appa_engine.data.channels import ChannelSpec, _summary
from appa_engine.data.dates import date_features
from appa_engine.data.stats import Statistics
from appa_engine.errors import ConfigError, DataError

__all__ = ["StateDataset", "BlanketDataset", "TimeRange", "Split", "split_by_time", "open_store"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------- time ranges
def _datetime(value: Any) -> np.datetime64:
    try:
        out = np.datetime64(value, "ns")
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot read {value!r} as a date: {e}") from e
    if np.isnat(out):
        raise ConfigError(f"{value!r} is not a date")
    return out


@dataclass(frozen=True)
class TimeRange:
    """A closed time interval ``[start, end]``."""

    start: np.datetime64
    end: np.datetime64

    def __post_init__(self):
        start, end = _datetime(self.start), _datetime(self.end)
        if end < start:
            raise ConfigError(f"time range ends ({end}) before it starts ({start})")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    @classmethod
    def parse(cls, value: Any) -> "TimeRange":
        """From a ``TimeRange``, a ``(start, end)`` pair, a ``slice``, or a year (``2020``)."""

        if isinstance(value, TimeRange):
            return value
        if isinstance(value, slice):
            value = (value.start, value.stop)
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return cls(value[0], value[1])
        is_year = isinstance(value, str) and value.strip().isdigit()
        if isinstance(value, (int, np.integer)) or is_year:
            year = int(value)
            start = np.datetime64(f"{year:04d}-01-01", "ns")
            return cls(start, np.datetime64(f"{year + 1:04d}-01-01", "ns") - 1)
        raise ConfigError(
            f"cannot read {value!r} as a time range",
            hint="give a year (2020), a (start, end) pair of dates, or a TimeRange",
        )

    def mask(self, times: Any) -> np.ndarray:
        """Which ``times`` (shape ``(T,)``) fall in the range."""

        t = np.asarray(times).astype("datetime64[ns]")
        return (t >= self.start) & (t <= self.end)

    def __contains__(self, time: Any) -> bool:
        return bool(self.mask(np.atleast_1d(_datetime(time)))[0])

    def __repr__(self) -> str:
        return f"TimeRange({self.start} → {self.end})"


class Split(NamedTuple):
    """Disjoint, chronologically ordered train / valid / test ranges."""

    train: TimeRange
    valid: TimeRange
    test: TimeRange


def split_by_time(times: Any, *, valid: Any = 0.1, test: Any = 0.1) -> Split:
    """Split a time axis into train, validation and test ranges.

    Arguments:
        times: The available times, shape ``(T,)``.
        valid: Fraction of the run (float in (0, 1)) or a range (year, ``(start, end)``).
        test: Same kind as ``valid``.

    With fractions, the last ``test`` fraction of the times is the test set, the ``valid``
    fraction before it the validation set and everything earlier the training set (the synthetic
    planet). With ranges (the paper: ``valid=2020, test=2021``), training is every time before
    the earlier of the two. Splits never overlap and none may be empty.
    """

    t = np.sort(np.asarray(times).astype("datetime64[ns]"))
    if t.size < 3:
        raise DataError(f"need at least 3 times to split, got {t.size}")
    fractions = [isinstance(v, float) for v in (valid, test)]
    if all(fractions):
        if not (0 < valid < 1 and 0 < test < 1 and valid + test < 1):
            raise ConfigError(
                f"fractions must be in (0, 1) with valid + test < 1, got {valid}, {test}"
            )
        n_test = max(1, round(test * t.size))
        n_valid = max(1, round(valid * t.size))
        n_train = t.size - n_test - n_valid
        if n_train < 1:
            raise DataError(
                f"{t.size} times leave nothing to train on with valid={valid}, test={test}"
            )
        b1, b2 = n_train, n_train + n_valid
        return Split(
            TimeRange(t[0], t[b1 - 1]), TimeRange(t[b1], t[b2 - 1]), TimeRange(t[b2], t[-1])
        )
    if any(fractions):
        raise ConfigError("give valid and test both as fractions or both as time ranges")
    r_valid, r_test = TimeRange.parse(valid), TimeRange.parse(test)
    if r_valid.start <= r_test.end and r_test.start <= r_valid.end:
        raise ConfigError(f"validation {r_valid} and test {r_test} ranges overlap")
    first = min(r_valid.start, r_test.start)
    train_times = t[t < first]
    if train_times.size == 0:
        raise DataError(f"no times before {first} are left for training")
    split = Split(TimeRange(t[0], train_times[-1]), r_valid, r_test)
    for name, r in (("validation", r_valid), ("test", r_test)):
        if not r.mask(t).any():
            raise DataError(f"the {name} range {r} holds none of the times ({t[0]} to {t[-1]})")
    return split


# -------------------------------------------------------------------------- sources
def open_store(path: str | os.PathLike) -> xr.Dataset:
    """Open a zarr store lazily (no dask: every read is an explicit slice)."""

    p = Path(path)
    if not p.exists():
        raise DataError(f"data store {os.fspath(path)!r} does not exist")
    try:
        return xr.open_zarr(p, consolidated=False, chunks=None)
    except Exception as e:  # zarr raises several types for a non-store
        raise DataError(
            f"{os.fspath(path)!r} is not a readable zarr store: {e}",
            hint="training windows read zarr stores; convert other formats to zarr first",
        ) from e


def _stacked_variable(ds: xr.Dataset) -> str | None:
    """Name of the single ``(time, channel, ., .)`` variable of a stacked store, if any."""

    names = [v for v in ds.data_vars if ds[v].ndim == 4 and ds[v].dims[:2] == ("time", "channel")]
    return names[0] if len(names) == 1 else None


class _WindowDataset(torch.utils.data.Dataset):
    """Shared machinery: open, check channels, select times, read and standardise."""

    def __init__(
        self,
        source: str | os.PathLike | xr.Dataset | xr.DataArray,
        *,
        spec: ChannelSpec | None,
        stats: Statistics | None,
        times: Any,
        fill_nan: bool,
    ):
        if isinstance(source, (str, os.PathLike)):
            source = os.fspath(source)
        elif not isinstance(source, (xr.Dataset, xr.DataArray)):
            raise DataError(
                "a window source is a store path or an xarray object, "
                f"got {type(source).__name__}"
            )
        self.source = source
        self.fill_nan = fill_nan
        self._requested = spec
        self._array: xr.DataArray | None = None
        self._pid: int | None = None
        self._memory: np.ndarray | None = None  # standardised states store_times[_first:...]
        self._first = 0

        array = self._open()  # also validates channels, in the main process
        if "time" not in array.coords or not np.issubdtype(array["time"].dtype, np.datetime64):
            raise DataError("the source needs a datetime64 'time' coordinate")
        self.store_times = array["time"].values.astype("datetime64[ns]")
        if self.store_times.size > 1 and not np.all(np.diff(self.store_times) > np.timedelta64(0)):
            raise DataError("the source's times are not strictly increasing")
        self.selected = self._select(times)
        run = array.coords.get("run")
        self.store_runs = run.values if run is not None and run.dims == ("time",) else None
        if stats is not None:
            stats = stats.select(self.spec.names) if self.spec is not None else stats
            if self.spec is None and len(stats) != array.sizes["channel"]:
                raise DataError(
                    f"the store has {array.sizes['channel']} unnamed channels but the statistics "
                    f"cover {len(stats)}"
                )
        self.stats = stats
        if stats is not None:
            self._mean = stats.mean.astype(np.float32)[:, None, None]
            self._std = stats.std.astype(np.float32)[:, None, None]

    # ---- opening, per process
    def _open(self) -> xr.DataArray:
        if self._array is not None and self._pid == os.getpid():
            return self._array
        src = open_store(self.source) if isinstance(self.source, str) else self.source
        requested = self._requested
        if isinstance(src, xr.Dataset):
            name = _stacked_variable(src)
            if name is not None and len(src.data_vars) == 1:
                src = src[name]
        if isinstance(src, xr.Dataset):  # canonical physical store
            spec = requested if requested is not None else ChannelSpec.from_dataset(src)
            array = spec.stack(src)
        else:
            if src.ndim != 4 or src.dims[:2] != ("time", "channel"):
                raise DataError(
                    f"a stacked source needs dims (time, channel, ., .), got {src.dims}"
                )
            array, spec = src, None
            if "channel" in src.coords:
                have = ChannelSpec(tuple(str(c) for c in src["channel"].values))
                spec = have
                if requested is not None and requested.names != have.names:
                    missing = [n for n in requested.names if n not in have]
                    if missing:
                        raise DataError(
                            "the store's channels do not match the spec: "
                            f"missing {_summary(missing)}",
                            hint=f"the store holds: {_summary(have.names)}",
                        )
                    array = src.isel(channel=have.indices(requested.names))
                    spec = requested
            elif requested is not None:
                if len(requested) != src.sizes["channel"]:
                    raise DataError(
                        f"the store has {src.sizes['channel']} unnamed channels, "
                        f"the spec {len(requested)}"
                    )
                spec = requested
        self.spec = spec
        self._array, self._pid = array, os.getpid()
        return array

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if isinstance(self.source, str):  # reopen in the worker
            state["_array"], state["_pid"] = None, None
        return state

    # ---- in memory
    def _span(self) -> slice:
        """The store indices every item reads from: first to last selected time."""

        index = np.flatnonzero(self.selected)
        return slice(int(index[0]), int(index[-1]) + 1)

    @property
    def nbytes(self) -> int:
        """Bytes that :meth:`load` holds: the selected span of the store, standardised float32."""

        span = self._span()
        shape = self._open().shape
        return (span.stop - span.start) * int(np.prod(shape[1:])) * 4

    @property
    def in_memory(self) -> bool:
        """Whether :meth:`load` has been called (items are then read from memory)."""

        return self._memory is not None

    def load(self):
        """Read the selected span of the store into memory once; items then come from there.

        One read instead of one per item (zarr reads every chunk of the span in one call); the
        array is standardised and NaN-filled like the items. Returns ``self``.
        """

        if self._memory is None:
            span = self._span()
            self._memory = self._standardise(self._open().isel(time=span).values)
            self._first = span.start
        return self

    # ---- time selection
    def _select(self, times: Any) -> np.ndarray:
        """Boolean mask over the store's times."""

        t = self.store_times
        if times is None:
            mask = np.ones(t.size, dtype=bool)
        elif isinstance(times, (TimeRange, slice, tuple, int, np.integer, str)):
            mask = TimeRange.parse(times).mask(t)
        else:
            wanted = np.asarray(times).astype("datetime64[ns]")
            mask = np.isin(t, wanted)
            absent = np.setdiff1d(wanted, t)
            if absent.size:
                raise DataError(
                    f"{absent.size} requested times are not in the store, e.g. {absent[0]}"
                )
        if not mask.any():
            raise DataError(
                f"no time of the store ({t[0]} to {t[-1]}) is in the selection {times!r}"
            )
        return mask

    # ---- reading
    def _read(self, index: int | slice) -> np.ndarray:
        """Standardised float32 values of ``array.isel(time=index)`` (an int or a slice)."""

        if self._memory is not None:
            if isinstance(index, slice):
                index = slice(index.start - self._first, index.stop - self._first, index.step)
            else:
                index = index - self._first
            return self._memory[index].copy()  # items are the caller's to change
        return self._standardise(self._open().isel(time=index).values)

    def _standardise(self, values: np.ndarray) -> np.ndarray:
        # a store read gives a fresh array, worked on in place; an in-memory source is copied
        fresh = isinstance(self.source, str) and values.flags.writeable
        x = values.astype(np.float32, copy=not fresh)
        if self.stats is not None:
            x -= self._mean
            x /= self._std
        if self.fill_nan:
            nan = np.isnan(x)
            if nan.any():
                x[nan] = 0.0
        return x

    @property
    def channels(self) -> tuple[str, ...] | None:
        return None if self.spec is None else self.spec.names


class StateDataset(_WindowDataset):
    """Single states and their date features.

    Arguments:
        source: Store path, canonical dataset or stacked ``(time, channel, lat, lon)`` array.
        spec: Channels to read (default: those of ``stats``, else all of the source).
        stats: Statistics to standardise with (default: none, e.g. for latent stores).
        times: Times to use: a :class:`TimeRange`, ``(start, end)``, a year, or explicit times.
        fill_nan: Set NaNs to 0 after standardisation.

    Items are ``(x, dates)``: ``x`` of shape ``(C, H, W)`` and ``dates`` of shape ``(D,)``,
    both float32.
    """

    def __init__(
        self,
        source: str | os.PathLike | xr.Dataset | xr.DataArray,
        *,
        spec: ChannelSpec | None = None,
        stats: Statistics | None = None,
        times: Any = None,
        fill_nan: bool = True,
    ):
        spec = spec if spec is not None else (stats.spec if stats is not None else None)
        super().__init__(source, spec=spec, stats=stats, times=times, fill_nan=fill_nan)
        self.indices = np.flatnonzero(self.selected)

    def __len__(self) -> int:
        return int(self.indices.size)

    @property
    def times(self) -> np.ndarray:
        """Time of each item, shape ``(len(self),)``."""
        return self.store_times[self.indices]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = int(self.indices[i])
        x = self._read(t)
        dates = date_features(self.store_times[t])
        return torch.from_numpy(x), torch.from_numpy(dates)


class BlanketDataset(_WindowDataset):
    """Blankets of K states, evenly spaced, that never cross a gap in time.

    Arguments:
        source: Store path, canonical dataset or stacked ``(time, channel, lat, lon)`` array.
        length: K, the number of states per blanket.
        step: Time between consecutive states: a duration (``"6h"``, ``np.timedelta64``) that
            is a multiple of the store's time step, or an integer number of store steps.
        spec, stats, times, fill_nan: As for :class:`StateDataset`.
        stride: Store steps between the first states of consecutive blankets, counted from the
            first selected time (1: every possible start).

    Items are ``(x, dates)``: ``x`` of shape ``(K, C, H, W)`` and ``dates`` of shape ``(K, D)``.
    """

    def __init__(
        self,
        source: str | os.PathLike | xr.Dataset | xr.DataArray,
        *,
        length: int,
        step: int | str | np.timedelta64 = 1,
        spec: ChannelSpec | None = None,
        stats: Statistics | None = None,
        times: Any = None,
        stride: int = 1,
        fill_nan: bool = True,
    ):
        if not isinstance(length, (int, np.integer)) or length < 1:
            raise ConfigError(f"blanket length must be a positive integer, got {length!r}")
        if not isinstance(stride, (int, np.integer)) or stride < 1:
            raise ConfigError(f"stride must be a positive integer, got {stride!r}")
        spec = spec if spec is not None else (stats.spec if stats is not None else None)
        super().__init__(source, spec=spec, stats=stats, times=times, fill_nan=fill_nan)
        self.length = int(length)
        self.stride = int(stride)
        t = self.store_times
        dt = np.diff(t).min() if t.size > 1 else None
        self.step = self._steps(step, dt)
        span = (self.length - 1) * self.step  # store steps covered after the first state
        n = t.size
        regular = np.diff(t) == dt if dt is not None else np.zeros(0, dtype=bool)
        if self.store_runs is not None:  # independent runs of a simulation never mix
            regular &= np.diff(self.store_runs) == 0
        # a start i is valid when i..i+span are all selected and evenly spaced by dt
        bad_gap = np.concatenate([[0], np.cumsum(~regular)])  # gaps before index j
        bad_sel = np.concatenate([[0], np.cumsum(~self.selected)])
        starts = np.arange(max(n - span, 0))
        ends = starts + span
        ok = (bad_gap[ends] - bad_gap[starts] == 0) & (bad_sel[ends + 1] - bad_sel[starts] == 0)
        first = int(np.flatnonzero(self.selected)[0])
        ok &= (starts - first) % self.stride == 0
        self.starts = starts[ok]
        if self.starts.size == 0:
            raise DataError(
                f"no blanket of {self.length} states every {self.step} store steps fits in the "
                f"selected times without crossing a gap",
                hint="select a longer time range, or use a shorter length or step",
            )
        n_gaps = int((~regular).sum())
        if n_gaps:
            logger.info("time axis has %d gap(s); blankets skip them", n_gaps)

    @staticmethod
    def _steps(step: Any, dt: np.timedelta64 | None) -> int:
        if isinstance(step, (int, np.integer)) and not isinstance(step, bool):
            if step < 1:
                raise ConfigError(f"step must be at least 1 store step, got {step}")
            return int(step)
        import pandas as pd

        try:
            duration = np.timedelta64(pd.Timedelta(step).to_timedelta64(), "ns")
        except (TypeError, ValueError) as e:
            raise ConfigError(f"cannot read step {step!r} as a duration: {e}") from e
        if dt is None:
            raise DataError("a store with one time step has no time resolution for a duration step")
        ratio = duration / dt
        if ratio < 1 or ratio != int(ratio):
            raise ConfigError(
                f"step {step!r} is not a positive multiple of the store's time step "
                f"({pd.Timedelta(dt)})"
            )
        return int(ratio)

    def __len__(self) -> int:
        return int(self.starts.size)

    @property
    def times(self) -> np.ndarray:
        """First time of each item, shape ``(len(self),)``."""
        return self.store_times[self.starts]

    def times_of(self, i: int) -> np.ndarray:
        """Times of the K states of item ``i``, shape ``(K,)``."""
        t0 = int(self.starts[i])
        return self.store_times[t0 : t0 + (self.length - 1) * self.step + 1 : self.step]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        t0 = int(self.starts[i])
        window = slice(t0, t0 + (self.length - 1) * self.step + 1, self.step)
        x = self._read(window)
        dates = date_features(self.store_times[window])
        return torch.from_numpy(x), torch.from_numpy(dates)

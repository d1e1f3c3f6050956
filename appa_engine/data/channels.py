r"""Channels: the map between a canonical dataset and a state tensor.

A physical state is a tensor of C channels on the grid, ``(C, H, W)``. Each channel is one
variable on one pressure level, named ``variable_level`` (``temperature_850``), or one surface
variable, named ``variable`` (``2m_temperature``). A :class:`ChannelSpec` is the ordered tuple of
channel names; it turns a canonical :class:`xarray.Dataset` (DESIGN.md §4) into a lazy
``(time, channel, latitude, longitude)`` array or a ``(T, C, H, W)`` tensor, and back.

Parsing a name splits on the *last* underscore only when what follows is an integer, so
``u_component_of_wind_850`` is ``(u_component_of_wind, 850)`` while ``2m_temperature`` and
``total_precipitation_6hr`` are surface variables. When a dataset holds a surface variable
whose own name ends in ``_<integer>``, :meth:`ChannelSpec.stack` takes that variable as is.

Order (:meth:`ChannelSpec.from_dataset`) is deterministic: level variables first, each with its
levels in the order of the dataset's ``level`` coordinate, then surface variables. Variables come
in the order the caller lists them, or else sorted by name: the order of a dataset's data
variables is not a property of the data (a zarr v3 store opened without consolidated metadata lists
them in file-system order). The spec is saved with the statistics and models, so a store is always
read back in the order it was trained with.

Stacking is lazy without dask: the stacked array is an xarray lazily indexed backend array whose
reads index each source variable once per item (one read per variable, all its levels at once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from appa_engine.errors import DataError

__all__ = ["ChannelSpec", "parse_channel", "channel_name"]

logger = logging.getLogger(__name__)

_SPACE = ("latitude", "longitude")


def parse_channel(name: str) -> tuple[str, int | None]:
    """Split a channel name into ``(variable, level)``; ``level`` is ``None`` for surface ones.

    >>> parse_channel("u_component_of_wind_850")
    ('u_component_of_wind', 850)
    >>> parse_channel("2m_temperature")
    ('2m_temperature', None)
    """

    head, sep, tail = name.rpartition("_")
    if sep and head and tail.isdigit():
        return head, int(tail)
    return name, None


def channel_name(variable: str, level: int | None = None) -> str:
    """The channel name of ``variable`` at ``level`` (hPa), or of a surface variable."""

    return variable if level is None else f"{variable}_{int(level)}"


def _summary(names: Sequence[str], limit: int = 40) -> str:
    names = list(names)
    text = ", ".join(names[:limit])
    return text + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _level_index(ds_levels: np.ndarray) -> dict[int, int]:
    """Map integer hPa → position in the dataset's ``level`` coordinate."""

    out = {}
    for i, v in enumerate(np.asarray(ds_levels).tolist()):
        if float(v) == int(round(float(v))):
            out[int(round(float(v)))] = i
    return out


@dataclass(frozen=True)
class ChannelSpec:
    """An ordered set of physical channels.

    Arguments:
        names: Channel names, ``variable_level`` or ``variable`` (see :func:`parse_channel`).
    """

    names: tuple[str, ...]

    def __post_init__(self):
        names = self.names
        if isinstance(names, str) or not isinstance(names, Iterable):
            raise DataError(f"channel names must be a sequence of strings, got {names!r}")
        names = tuple(names)
        if not names:
            raise DataError("a channel spec needs at least one channel")
        bad = [n for n in names if not isinstance(n, str) or not n]
        if bad:
            raise DataError(f"channel names must be non-empty strings, got {bad!r}")
        seen, dup = set(), []
        for n in names:
            (dup.append(n) if n in seen else seen.add(n))
        if dup:
            raise DataError(f"duplicate channel names: {_summary(dup)}")
        object.__setattr__(self, "names", names)

    # ----------------------------------------------------------------- container
    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def index(self, name: str) -> int:
        """Position of channel ``name``."""

        try:
            return self.names.index(name)
        except ValueError:
            raise DataError(
                f"no channel {name!r} in this spec",
                hint=f"available channels: {_summary(self.names)}",
            ) from None

    def indices(self, names: Iterable[str]) -> list[int]:
        """Positions of several channels, in the order given."""

        return [self.index(n) for n in names]

    @property
    def parsed(self) -> tuple[tuple[str, int | None], ...]:
        """``(variable, level)`` of each channel."""

        return tuple(parse_channel(n) for n in self.names)

    @property
    def variables(self) -> tuple[str, ...]:
        """Distinct variables, in order of first appearance."""

        return tuple(dict.fromkeys(v for v, _ in self.parsed))

    @property
    def levels(self) -> tuple[int, ...]:
        """Distinct pressure levels (hPa), in order of first appearance."""

        return tuple(dict.fromkeys(p for _, p in self.parsed if p is not None))

    @property
    def level_variables(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v for v, p in self.parsed if p is not None))

    @property
    def surface_variables(self) -> tuple[str, ...]:
        return tuple(v for v, p in self.parsed if p is None)

    def levels_of(self, variable: str) -> tuple[int, ...]:
        """Levels of ``variable`` in this spec, in spec order (empty for surface variables)."""

        return tuple(p for v, p in self.parsed if v == variable and p is not None)

    def select(self, names: Iterable[str]) -> "ChannelSpec":
        """A spec with the given channels (which must all be in this one), in the order given."""

        names = tuple(names)
        missing = [n for n in names if n not in self.names]
        if missing:
            raise DataError(
                f"channels not in the spec: {_summary(missing)}",
                hint=f"available channels: {_summary(self.names)}",
            )
        return ChannelSpec(names)

    def to_dict(self) -> dict:
        return {"channels": list(self.names)}

    @classmethod
    def from_dict(cls, d: dict) -> "ChannelSpec":
        if not isinstance(d, dict) or "channels" not in d:
            raise DataError("a channel spec dict needs a 'channels' list")
        return cls(tuple(d["channels"]))

    def __repr__(self) -> str:
        return f"ChannelSpec({len(self)} channels: {_summary(self.names, 6)})"

    # -------------------------------------------------------------- from dataset
    @classmethod
    def from_dataset(
        cls,
        ds: xr.Dataset,
        *,
        variables: Sequence[str] | None = None,
        levels: Sequence[int] | None = None,
    ) -> "ChannelSpec":
        """The channels of a canonical dataset.

        Arguments:
            ds: Canonical dataset (variables ``(time, level, latitude, longitude)`` or
                ``(time, latitude, longitude)``).
            variables: Variables to keep, in this order (default: every time-dependent variable
                on the grid, sorted by name).
            levels: Pressure levels (hPa) to keep for level variables (default: all).
        """

        def kind(name: str) -> str | None:
            dims = set(ds[name].dims)
            if dims == {"time", "level", *_SPACE}:
                return "level"
            if dims == {"time", *_SPACE}:
                return "surface"
            return None

        names = list(ds.data_vars)
        if variables is not None:
            variables = [variables] if isinstance(variables, str) else list(variables)
            missing = [v for v in variables if v not in ds.data_vars]
            if missing:
                raise DataError(
                    f"variables not in the dataset: {_summary(missing)}",
                    hint=f"available variables: {_summary(list(ds.data_vars))}",
                )
            wrong = [v for v in variables if kind(v) is None]
            if wrong:
                raise DataError(
                    "variables without dims (time, [level,] latitude, longitude): "
                    + ", ".join(f"{v} {ds[v].dims}" for v in wrong)
                )
            names = list(dict.fromkeys(variables))
        else:
            skipped = [v for v in names if kind(v) is None]
            if skipped:
                logger.info("not channels (dims are not time[, level], lat, lon): %s", skipped)
            names = sorted(v for v in names if kind(v) is not None)

        level_vars = [v for v in names if kind(v) == "level"]
        surface_vars = [v for v in names if kind(v) == "surface"]
        ds_levels: list[int] = []
        if level_vars:
            lookup = _level_index(ds["level"].values)
            ds_levels = list(lookup)
            if levels is not None:
                levels = [levels] if isinstance(levels, (int, np.integer)) else list(levels)
                missing = [p for p in levels if int(p) not in lookup]
                if missing:
                    raise DataError(
                        f"levels not in the dataset: {missing}",
                        hint=f"available levels (hPa): {ds_levels}",
                    )
                wanted = {int(p) for p in levels}
                ds_levels = [p for p in ds_levels if p in wanted]
        channels = [channel_name(v, p) for v in level_vars for p in ds_levels]
        channels += surface_vars
        if not channels:
            raise DataError(
                "the dataset holds no channels to take",
                hint=f"data variables: {_summary(list(ds.data_vars))}",
            )
        return cls(tuple(channels))

    # ------------------------------------------------------------------- stacking
    def _resolve(self, ds: xr.Dataset) -> list[tuple[str, int | None]]:
        """Map each channel to (dataset variable, level position or None); check availability."""

        out: list[tuple[str, int | None]] = []
        missing: list[str] = []
        lookups: dict[str, dict[int, int]] = {}
        for name in self.names:
            if name in ds.data_vars and "level" not in ds[name].dims:
                out.append((name, None))
                continue
            var, level = parse_channel(name)
            if var not in ds.data_vars:
                missing.append(name)
                continue
            has_level = "level" in ds[var].dims
            if level is None and not has_level:
                out.append((var, None))
            elif level is not None and has_level:
                if var not in lookups:
                    lookups[var] = _level_index(ds[var]["level"].values)
                if level in lookups[var]:
                    out.append((var, lookups[var][level]))
                else:
                    missing.append(name)
            else:
                missing.append(name)
        if missing:
            try:
                available = ChannelSpec.from_dataset(ds).names
            except DataError:
                available = ()
            raise DataError(
                f"channels missing from the dataset: {_summary(missing)}",
                hint=f"available channels: {_summary(available) or 'none'}",
            )
        for var, _ in out:
            dims = set(ds[var].dims) - {"level"}
            if dims != {"time", *_SPACE}:
                raise DataError(
                    f"variable {var!r} has dims {ds[var].dims}; expected (time, [level,] "
                    "latitude, longitude)",
                    hint="open the data with appa_engine.data.readers.open_dataset, which "
                    "normalises layouts",
                )
        return out

    def stack(self, ds: xr.Dataset) -> xr.DataArray:
        """Lazy ``(time, channel, latitude, longitude)`` array of these channels.

        Nothing is read until values are asked for; an ``isel`` on the result reads only the
        selected part of each source variable. Coordinates along ``time`` only (e.g. ``run``)
        are kept.
        """

        resolved = self._resolve(ds)
        sources = {}
        for var, _ in resolved:
            if var not in sources:
                v = ds[var].variable
                order = ("time", "level", *_SPACE) if "level" in v.dims else ("time", *_SPACE)
                sources[var] = v.transpose(*order)
        backend = _StackedArray(sources, resolved)
        data = indexing.LazilyIndexedArray(backend)
        coords = {
            "time": ds["time"].variable,
            "channel": xr.Variable("channel", np.asarray(self.names, dtype=object)),
            "latitude": ds["latitude"].variable,
            "longitude": ds["longitude"].variable,
        }
        # labels along time (e.g. the synthetic planet's ``run``) travel with the states
        for name, c in ds.coords.items():
            if name not in coords and c.dims == ("time",):
                coords[name] = c.variable
        return xr.DataArray(
            xr.Variable(("time", "channel", *_SPACE), data),
            coords=coords,
            name="state",
        )

    def to_tensor(self, ds: xr.Dataset):
        """Tensor ``(T, C, H, W)``, float32 (reads everything: use :meth:`stack` for big data)."""

        import torch

        values = np.ascontiguousarray(self.stack(ds).values, dtype=np.float32)
        return torch.from_numpy(values)

    # ----------------------------------------------------------------- unstacking
    def unstack(
        self,
        x: Any,
        *,
        time: Any = None,
        latitude: Any = None,
        longitude: Any = None,
        member: Any = None,
        template: xr.Dataset | None = None,
    ) -> xr.Dataset:
        """Canonical dataset from a stacked array; the inverse of :meth:`to_tensor`.

        Arguments:
            x: Array, tensor or ``DataArray`` of shape ``(T, C, H, W)``, or ``(M, T, C, H, W)``
                for an ensemble (dim ``member``).
            time: Times, shape ``(T,)`` (default: from ``x`` if a DataArray, else ``template``).
            latitude: Latitudes, shape ``(H,)`` (same defaults).
            longitude: Longitudes, shape ``(W,)`` (same defaults).
            member: Member labels, shape ``(M,)`` (default: ``0..M-1``).
            template: A dataset to copy variable order, coordinate values' dtypes, attributes
                and data dtypes from (e.g. the dataset the tensor was made from).

        Level variables share one ``level`` coordinate (the spec's levels in order of first
        appearance); a level a variable lacks is filled with NaN. Data keep the dtype of ``x``
        unless ``template`` gives one.
        """

        coords_from = x if isinstance(x, xr.DataArray) else None
        values = _to_numpy(x)
        if values.ndim not in (4, 5):
            raise DataError(
                f"unstack needs a (T, C, H, W) or (M, T, C, H, W) array, got shape {values.shape}"
            )
        if values.shape[-3] != len(self):
            raise DataError(
                f"the array has {values.shape[-3]} channels but the spec has {len(self)}",
                hint="use the ChannelSpec the array was stacked with",
            )

        def coord(name: str, given: Any, size: int) -> xr.Variable:
            if given is not None:
                vals = np.asarray(given)
                attrs = dict(given.attrs) if isinstance(given, xr.DataArray) else {}
            elif coords_from is not None and name in coords_from.coords:
                vals, attrs = coords_from[name].values, dict(coords_from[name].attrs)
            elif template is not None and name in template.coords:
                vals, attrs = template[name].values, dict(template[name].attrs)
            elif name == "member":
                vals, attrs = np.arange(size), {}
            else:
                raise DataError(f"unstack needs the {name} coordinate (pass {name}=...)")
            if vals.shape != (size,):
                raise DataError(f"{name} has shape {vals.shape}; the array needs ({size},)")
            if template is not None and name in template.coords:
                attrs = dict(template[name].attrs)
                vals = vals.astype(template[name].dtype, copy=False)
            return xr.Variable(name, vals, attrs)

        lead = ("member",) if values.ndim == 5 else ()
        shape = dict(zip((*lead, "time", "channel", *_SPACE), values.shape))
        given = {"member": member, "time": time, "latitude": latitude, "longitude": longitude}
        coords = {n: coord(n, value, shape[n]) for n, value in given.items() if n in shape}
        levels = self.levels
        if levels:
            level_dtype = np.int64
            level_attrs: dict = {}
            if template is not None and "level" in template.coords:
                level_dtype, level_attrs = template["level"].dtype, dict(template["level"].attrs)
            level_values = np.asarray(levels, dtype=level_dtype)
            coords["level"] = xr.Variable("level", level_values, level_attrs)

        data_vars = {}
        parsed = self.parsed
        for var in self.variables:
            positions = [i for i, (v, _) in enumerate(parsed) if v == var]
            dtype = values.dtype
            attrs: dict = {}
            if template is not None and var in template.data_vars:
                dtype, attrs = template[var].dtype, dict(template[var].attrs)
            if parsed[positions[0]][1] is None:
                block = values[..., positions[0], :, :].copy()  # never a view of x
                dims = (*lead, "time", *_SPACE)
            else:
                shape_p = values.shape[:-3] + (len(levels),) + values.shape[-2:]
                block = np.full(shape_p, np.nan, dtype=values.dtype)
                for i in positions:
                    block[..., levels.index(parsed[i][1]), :, :] = values[..., i, :, :]
                dims = (*lead, "time", "level", *_SPACE)
            data_vars[var] = xr.Variable(dims, block.astype(dtype, copy=False), attrs)

        if template is not None:
            order = [v for v in template.data_vars if v in data_vars]
            order += [v for v in data_vars if v not in order]
            data_vars = {v: data_vars[v] for v in order}
        # labels along time (e.g. ``run``), from x or else from the template
        for src in (template, coords_from):
            if src is None:
                continue
            for name, c in src.coords.items():
                if c.dims == ("time",) and name != "time" and c.size == shape["time"]:
                    coords[name] = c.variable.copy()
        ds = xr.Dataset(data_vars, coords=coords)
        if template is not None:
            ds.attrs = dict(template.attrs)
        return ds


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, xr.DataArray):
        return np.asarray(x.values)
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _length(k, n: int) -> int:
    return len(range(n)[k]) if isinstance(k, slice) else len(k)


class _StackedArray(BackendArray):
    """Lazily indexed ``(time, channel, latitude, longitude)`` view of several variables.

    ``__getitem__`` receives outer-indexing keys; each source variable is indexed once with all
    the levels asked of it, and the pieces are written into one output array.
    """

    def __init__(self, sources: dict[str, xr.Variable], resolved: list[tuple[str, int | None]]):
        self.sources = sources
        self.resolved = resolved
        first = next(iter(sources.values()))
        nt, nlat, nlon = (first.sizes[d] for d in ("time", *_SPACE))
        for name, v in sources.items():
            if tuple(v.sizes[d] for d in ("time", *_SPACE)) != (nt, nlat, nlon):
                raise DataError(
                    f"variable {name!r} has sizes {dict(v.sizes)}, unlike the others "
                    f"(time {nt}, latitude {nlat}, longitude {nlon})"
                )
        self.shape = (nt, len(resolved), nlat, nlon)
        self.dtype = np.result_type(*(v.dtype for v in sources.values()))

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._raw_getitem
        )

    def _raw_getitem(self, key: tuple) -> np.ndarray:
        squeeze = []
        norm = []
        for axis, k in enumerate(key):
            if isinstance(k, (int, np.integer)):
                squeeze.append(axis)
                k = slice(int(k), int(k) + 1)
            norm.append(k)
        kt, kc, ky, kx = norm
        channels = np.arange(self.shape[1])[kc]
        out_shape = [_length(k, n) for k, n in zip(norm, self.shape)]
        out_shape[1] = len(channels)
        out = np.empty(out_shape, dtype=self.dtype)
        groups: dict[str, list[tuple[int, int | None]]] = {}
        for pos, c in enumerate(channels.tolist()):
            var, lev = self.resolved[c]
            groups.setdefault(var, []).append((pos, lev))
        for var, members in groups.items():
            v = self.sources[var]
            sel = {"time": kt, "latitude": ky, "longitude": kx}
            if "level" in v.dims:
                levs = np.asarray([lev for _, lev in members])
                if levs.size > 1 and np.all(np.diff(levs) == 1):
                    sel["level"] = slice(int(levs[0]), int(levs[-1]) + 1)
                else:
                    sel["level"] = levs
                block = np.asarray(v.isel(sel).values)  # (t, p, y, x)
                out[:, [pos for pos, _ in members]] = block
            else:
                block = np.asarray(v.isel(sel).values)  # (t, y, x)
                for pos, _ in members:
                    out[:, pos] = block
        if squeeze:
            out = out.squeeze(axis=tuple(squeeze))
        return out

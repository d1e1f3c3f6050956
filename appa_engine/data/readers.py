r"""Readers: any supported source, opened lazily, in the canonical layout.

The canonical form (DESIGN.md §4) of a dataset is:

* data variables named with WeatherBench2 long names (:mod:`appa_engine.data.names`), with the
  expected units (checked, never converted silently);
* dims exactly ``(time, level, latitude, longitude)`` for level variables, ``(time, latitude,
  longitude)`` for surface ones and ``(latitude, longitude)`` for static fields, preceded by
  ``member`` for ensembles;
* a regular global grid: latitude descending 90 → −90 (with the poles or cell-centred),
  longitude ascending in [0, 360) (inputs in −180..180 are rolled), both float64 and snapped to
  the exact regular values (GRIB stores micro-degrees, NetCDF often float32);
* ``level`` in hPa (int64, ascending); ``time`` in ``datetime64[ns]``, sorted and unique;
* coordinates: the dims' own, plus 1-D labels along ``time`` (such as ``run``); no dataset
  attributes, no encodings, variable attributes reduced to ``units`` and ``long_name`` (the
  vocabulary's, so that every layout gives identical datasets).

Sources (:func:`open_dataset`): an :class:`xarray.Dataset`; a local zarr directory (WB2 0.25°
layout; WB2 regridded layout ``(time, level, longitude, latitude)`` with latitude ascending;
ARCO-ERA5 layout with 37 levels and hourly time); a zarr store object; a CDS NetCDF file (short
names, ``valid_time``, ``pressure_level``, ``number``, ``expver``); a GRIB file through cfgrib
(``isobaricInhPa``, ``step``/``valid_time``; the ``grib`` extra); a directory or glob of NetCDF or
GRIB files; a ``gs://`` URL of a zarr store (anonymous access; the ``cloud`` extra).

Ensembles: a CDS/GRIB ``number`` dimension is kept as a ``member`` dimension (first); pass
``member=`` to select members (an int drops the dimension). A scalar ``number`` is dropped.

Reading is lazy: opening reads metadata and coordinates only; variables, levels, members and
times are selected on lazily indexed (or, for several files, dask) arrays, so that loading the
result reads only the chunks it needs. Two cases load data while opening, and log it: an
``expver`` *dimension* (ERA5/ERA5T mix, combined by taking the first non-missing value) and GRIB
accumulations with a 2-D ``(time, step)`` valid time.
"""

from __future__ import annotations

import datetime as _dt
import glob
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from appa_engine.data.grid import Grid
from appa_engine.data.names import VARIABLES, canonical_name, check_units
from appa_engine.errors import AppaError, DataError, require

__all__ = [
    "open_dataset",
    "canonicalize",
    "validate_canonical",
    "select",
    "describe",
    "convert",
]

log = logging.getLogger(__name__)

#: Canonical dimension order (``member`` only for ensembles).
DIMS = ("member", "time", "level", "latitude", "longitude")

_LAT_NAMES = ("latitude", "lat")
_LON_NAMES = ("longitude", "lon")
_LEVEL_NAMES = ("level", "pressure_level", "isobaricInhPa", "isobaricInPa", "plev", "lev")
_MEMBER_NAMES = ("member", "number", "realization")
_NC_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")
_GRIB_SUFFIXES = (".grib", ".grb", ".grib1", ".grib2", ".grb1", ".grb2")
_HINT_REGRID = (
    "regrid to a regular global lat-lon grid first (e.g. with xarray's interp, xesmf or CDO "
    "'remapbil'), or use a WeatherBench2 regridded store"
)

TimeSelection = Any  # str | datetime | np.datetime64 | slice | Sequence of those


# ---------------------------------------------------------------------------------------------
# Public API


def open_dataset(
    source: str | os.PathLike | xr.Dataset | Any,
    *,
    variables: Sequence[str] | str | None = None,
    levels: Sequence[int] | int | None = None,
    time: TimeSelection = None,
    member: int | Sequence[int] | None = None,
    timeout: float = 30.0,
) -> xr.Dataset:
    """Open a data source lazily, in the canonical layout, with a selection.

    Arguments:
        source: A path (zarr directory, NetCDF or GRIB file, directory of NetCDF/GRIB files), a
            glob (``"era5/*.nc"``), a ``gs://`` URL of a zarr store, a zarr store object or an
            :class:`xarray.Dataset`.
        variables: WB2 (or short) names to keep; all by default.
        levels: Pressure levels (hPa) to keep; all by default.
        time: A slice of strings or datetimes (inclusive, ``slice("2020-01", "2020-02")``), a
            single date (a string selects everything it covers: ``"2020-01-01"`` is a whole day;
            a datetime selects that exact time) or a list of exact times.
        member: Ensemble member(s) to keep (an int drops the ``member`` dimension).
        timeout: Seconds allowed to reach and open a remote store.

    Returns:
        The canonical dataset, lazily loaded.

    Raises:
        DataError: the source is missing, unreadable or malformed, or lacks what was asked for.
        MissingExtraError: reading it needs an optional extra (``grib``, ``cloud``).
    """

    wanted = _wanted_names(variables)
    parts, label = _open_raw(source, timeout=timeout)
    if wanted is not None:  # subset before anything else is done to the variables
        maps = [_raw_name_map(raw) for raw in parts]
        available = list(dict.fromkeys(n for m in maps for n in m.values()))
        missing = [n for n in wanted if n not in available]
        if missing:
            raise DataError(
                f"variable(s) {', '.join(missing)} not found in {label}",
                hint=f"available variables: {', '.join(available) or 'none'}",
            )
        parts = [raw[[n for n in raw.data_vars if m[n] in wanted]] for raw, m in zip(parts, maps)]
        parts = [raw for raw in parts if raw.data_vars]
    canon = [canonicalize(raw) for raw in parts]
    ds = canon[0] if len(canon) == 1 else canonicalize(_combine(canon, label))
    return select(ds, variables=variables, levels=levels, time=time, member=member)


def canonicalize(ds: xr.Dataset) -> xr.Dataset:
    """Normalise an in-memory (or lazily loaded) dataset to the canonical layout.

    Data variables come in the order of :data:`~appa_engine.data.names.VARIABLES` (unknown ones
    after, by name). Only coordinates are read; data stay lazy (except for an ``expver``
    dimension or a 2-D GRIB valid time, see the module docstring). Data variables whose dims
    cannot be made canonical (bounds, 1-D series, scalars) are dropped with a warning.

    Raises:
        DataError: irregular, Gaussian or non-global grids, duplicated times, wrong units,
            non-integer pressure levels, two variables with the same canonical name.
    """

    ds = _rename_variables(ds)
    ds = _fix_valid_time(ds)
    ds = _rename_dims(ds)
    ds = _fix_expver(ds)
    ds = _fix_member(ds)
    ds = _fix_level(ds)
    ds = _drop_noncanonical(ds)
    ds = _fix_grid(ds)
    ds = _fix_time(ds)
    ds = ds.transpose(*DIMS, missing_dims="ignore")
    ds = _set_attrs(ds)
    known = list(VARIABLES)
    order = sorted(
        ds.data_vars, key=lambda n: (known.index(n), "") if n in VARIABLES else (len(known), str(n))
    )
    return ds[order].drop_encoding()


def validate_canonical(ds: xr.Dataset) -> Grid:
    """Check that a dataset is canonical; return its grid.

    Raises:
        DataError: naming the first rule that is broken.
    """

    for name in ("latitude", "longitude"):
        if name not in ds.coords or ds[name].ndim != 1 or ds[name].dtype != np.float64:
            raise DataError(f"a canonical dataset needs a 1-D float64 '{name}' coordinate")
    grid = Grid.from_arrays(ds.latitude.values, ds.longitude.values)
    lat, lon = _regular_grid(ds.latitude.values, ds.longitude.values)
    if not (np.array_equal(lat, ds.latitude.values) and np.array_equal(lon, ds.longitude.values)):
        raise DataError("latitudes/longitudes are not the exact values of a regular global grid")
    if "time" in ds.dims:
        t = ds.indexes["time"]
        if ds["time"].dtype != np.dtype("datetime64[ns]"):
            raise DataError(f"'time' must be datetime64[ns], got {ds['time'].dtype}")
        if not t.is_monotonic_increasing or not t.is_unique:
            raise DataError("times must be sorted and unique")
    if "level" in ds.dims:
        lv = ds["level"].values
        if lv.dtype.kind != "i" or np.any(np.diff(lv) <= 0):
            raise DataError("'level' must hold integer hPa, strictly ascending")
    for name, var in ds.data_vars.items():
        dims = tuple(var.dims)
        expected = tuple(d for d in DIMS if d in dims)
        if dims != expected or dims[-2:] != ("latitude", "longitude"):
            raise DataError(f"variable '{name}' has dims {dims}, expected the order {expected}")
        if name in VARIABLES:
            info = VARIABLES[name]
            if info.levels != ("level" in dims):
                kind = "a level" if info.levels else "a surface"
                raise DataError(f"variable '{name}' has dims {dims}, but it is {kind} variable")
            if var.attrs.get("units") != info.units:
                raise DataError(
                    f"variable '{name}' has units {var.attrs.get('units')!r}, expected "
                    f"'{info.units}'"
                )
    return grid


def select(
    ds: xr.Dataset,
    *,
    variables: Sequence[str] | str | None = None,
    levels: Sequence[int] | int | None = None,
    time: TimeSelection = None,
    member: int | Sequence[int] | None = None,
) -> xr.Dataset:
    """Select variables, levels, times and members of a canonical dataset (lazily).

    Arguments are those of :func:`open_dataset`. Missing items raise :class:`DataError` listing
    what is available.
    """

    wanted = _wanted_names(variables)
    if wanted is not None:
        missing = [v for v in wanted if v not in ds.data_vars]
        if missing:
            raise DataError(
                f"variable(s) {', '.join(missing)} not found",
                hint=f"available variables: {', '.join(map(str, ds.data_vars)) or 'none'}",
            )
        ds = ds[[n for n in ds.data_vars if n in wanted]]  # canonical order
    if levels is not None:
        want = sorted({int(v) for v in np.atleast_1d(levels)})
        if "level" not in ds.dims:
            raise DataError(
                f"levels {want} were asked for, but the dataset has no pressure levels",
                hint="drop the level selection, or select level variables",
            )
        have = [int(v) for v in ds["level"].values]
        missing = [v for v in want if v not in have]
        if missing:
            raise DataError(
                f"level(s) {missing} hPa not found",
                hint=f"available levels (hPa): {', '.join(map(str, have))}",
            )
        ds = ds.sel(level=want)
    if time is not None:
        ds = _select_time(ds, time)
    if member is not None:
        if "member" not in ds.dims:
            raise DataError("members were asked for, but the dataset is not an ensemble")
        have = [int(v) for v in ds["member"].values]
        want_m = [int(v) for v in np.atleast_1d(member)]
        missing = [v for v in want_m if v not in have]
        if missing:
            raise DataError(f"member(s) {missing} not found", hint=f"available members: {have}")
        scalar = np.ndim(member) == 0
        ds = ds.sel(member=want_m[0] if scalar else want_m, drop=scalar)
    return ds


def describe(ds: xr.Dataset) -> dict[str, Any]:
    """Summary of a canonical dataset: variables, levels, grid, times, members, size.

    Returns:
        A dict with keys ``variables`` (name → dims, units, dtype), ``levels`` (list of hPa),
        ``grid`` (:class:`Grid`), ``times`` (count), ``start``/``end`` (:class:`pandas.Timestamp`
        or ``None``), ``step`` (:class:`pandas.Timedelta`, ``None`` if irregular or single),
        ``members`` (count or ``None``) and ``nbytes`` (uncompressed size).
    """

    grid = validate_canonical(ds)
    out: dict[str, Any] = {
        "variables": {
            name: {"dims": tuple(v.dims), "units": v.attrs.get("units", ""), "dtype": str(v.dtype)}
            for name, v in ds.data_vars.items()
        },
        "levels": [int(v) for v in ds["level"].values] if "level" in ds.dims else [],
        "grid": grid,
        "times": int(ds.sizes.get("time", 0)),
        "start": None,
        "end": None,
        "step": None,
        "members": int(ds.sizes["member"]) if "member" in ds.dims else None,
        "nbytes": int(sum(v.size * v.dtype.itemsize for v in ds.data_vars.values())),
    }
    if out["times"]:
        t = ds.indexes["time"]
        out["start"], out["end"] = t[0], t[-1]
        steps = np.unique(np.diff(t.values))
        if steps.size == 1:
            out["step"] = pd.Timedelta(steps[0])
    return out


def convert(
    source: str | os.PathLike | xr.Dataset | Any,
    target: str | os.PathLike,
    *,
    variables: Sequence[str] | str | None = None,
    levels: Sequence[int] | int | None = None,
    time: TimeSelection = None,
    member: int | Sequence[int] | None = None,
    chunk_time: int = 24,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a source as a canonical zarr store (v3), atomically, ``chunk_time`` steps at a time.

    Only ``chunk_time`` time steps are in memory at once; they are also the zarr chunk length
    along time (other dims are one chunk). The store appears at ``target`` complete or not at all;
    an existing ``target`` is replaced only with ``overwrite``.

    Returns:
        The path of the written store.
    """

    from tqdm import tqdm

    from appa_engine.io.atomic import atomic_path

    if chunk_time < 1:
        raise DataError(f"chunk_time must be at least 1, got {chunk_time}")
    target = Path(target)
    if target.exists() and not overwrite:
        raise DataError(
            f"'{target}' already exists", hint="pass overwrite=True (--overwrite) to replace it"
        )
    ds = open_dataset(source, variables=variables, levels=levels, time=time, member=member)
    validate_canonical(ds)
    nt = int(ds.sizes.get("time", 0))
    timed = [n for n, v in ds.data_vars.items() if "time" in v.dims]
    encoding: dict[str, dict[str, Any]] = {}
    for name, var in ds.data_vars.items():
        chunks = tuple(min(chunk_time, nt) if d == "time" else ds.sizes[d] for d in var.dims)
        encoding[name] = {"chunks": chunks}
    if nt:
        t = ds.indexes["time"]
        offsets = t.values - t.values[0]
        whole_hours = bool(np.all(offsets % np.timedelta64(1, "h") == np.timedelta64(0)))
        unit = "hours" if whole_hours else "seconds"
        encoding["time"] = {"units": f"{unit} since {t[0]:%Y-%m-%d %H:%M:%S}", "dtype": "int64"}
    starts = range(0, max(nt, 1), chunk_time)
    with atomic_path(target, directory=True) as tmp:
        bar = tqdm(starts, desc=f"writing {target.name}", unit="chunk", disable=not progress)
        for i, start in enumerate(bar):
            part = ds.isel(time=slice(start, start + chunk_time)) if nt else ds
            if i == 0:
                part.load().to_zarr(
                    tmp, mode="w", consolidated=False, zarr_format=3, encoding=encoding
                )
            else:
                part[timed].load().to_zarr(
                    tmp, append_dim="time", consolidated=False, zarr_format=3
                )
        bar.close()
    log.info("wrote %s (%d times, %d variables)", target, nt, len(ds.data_vars))
    return target


# ---------------------------------------------------------------------------------------------
# Opening raw sources


def _open_raw(source: Any, *, timeout: float) -> tuple[list[xr.Dataset], str]:
    if isinstance(source, xr.Dataset):
        return [source], "dataset"
    if isinstance(source, xr.DataArray):
        return [source.to_dataset(name=source.name or "data")], "data array"
    if not isinstance(source, (str, os.PathLike)):
        if _is_zarr_store(source):
            return [_open_zarr(source, label=type(source).__name__, consolidated=False)], "store"
        raise DataError(
            f"cannot read a {type(source).__name__}",
            hint="pass a path, a gs:// URL, a zarr store or an xarray.Dataset",
        )
    text = os.fspath(source)
    if "://" in text:
        return [_open_url(text, timeout=timeout)], text
    if any(c in text for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(text)))
        if not files:
            raise DataError(f"no file matches '{text}'", hint="check the pattern and the directory")
        return _open_files(files), text
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(
            f"'{text}' does not exist",
            hint="check the path (remote stores need a gs:// URL)",
        )
    if path.is_dir():
        if _zarr_root(path):
            return [_open_zarr(path, label=str(path), consolidated=_consolidated(path))], text
        files = sorted(p for p in path.iterdir() if p.is_file() and _file_kind(p) is not None)
        if not files:
            if any((p / "zarr.json").exists() or (p / ".zarray").exists() for p in path.iterdir()):
                raise DataError(
                    f"'{text}' looks like a zarr store whose root metadata (zarr.json or .zgroup) "
                    "is missing",
                    hint="the store is incomplete or corrupted: copy or convert it again",
                )
            raise DataError(
                f"'{text}' holds neither a zarr store nor NetCDF/GRIB files",
                hint="pass a zarr directory, a NetCDF/GRIB file or a directory of them",
            )
        return _open_files(files), text
    return _open_files([path]), text


def _is_zarr_store(obj: Any) -> bool:
    try:
        from zarr.abc.store import Store
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, Store)


def _zarr_root(path: Path) -> bool:
    return any((path / m).exists() for m in ("zarr.json", ".zgroup", ".zmetadata"))


def _consolidated(path: Path) -> bool:
    if (path / ".zmetadata").exists():
        return True
    try:
        meta = json.loads((path / "zarr.json").read_text())
        return bool(meta.get("consolidated_metadata"))
    except (OSError, ValueError, AttributeError):
        return False


def _open_zarr(store: Any, *, label: str, consolidated: bool | None) -> xr.Dataset:
    try:
        return xr.open_zarr(store, consolidated=consolidated, chunks=None)
    except AppaError:
        raise
    except Exception as e:
        raise DataError(
            f"cannot read the zarr store {label}: {type(e).__name__}: {e}",
            hint="the store may be corrupted or incomplete: copy or convert it again",
        ) from e


def _file_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in _NC_SUFFIXES:
        return "netcdf"
    if suffix in _GRIB_SUFFIXES:
        return "grib"
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
    except OSError:
        return None
    if magic[:3] == b"CDF" or magic[:4] == b"\x89HDF":
        return "netcdf"
    if magic[:4] == b"GRIB":
        return "grib"
    return None


def _open_files(files: list[Path]) -> list[xr.Dataset]:
    parts: list[xr.Dataset] = []
    dask = len(files) > 1 and _has_dask()
    for path in files:
        kind = _file_kind(path)
        if kind is None:
            raise DataError(
                f"'{path}' is neither a NetCDF, a GRIB file nor a zarr store",
                hint="pass a .nc, .grib or zarr path (the file may also be corrupted)",
            )
        if kind == "grib":
            parts.extend(_open_grib(path, dask=dask))
        else:
            parts.append(_open_netcdf(path, dask=dask))
    return parts


def _has_dask() -> bool:
    try:
        import dask  # noqa: F401
    except ImportError:
        log.warning("dask is not installed: several files are combined in memory, not lazily")
        return False
    return True


def _open_netcdf(path: Path, *, dask: bool) -> xr.Dataset:
    try:
        return xr.open_dataset(
            path, engine="netcdf4", chunks={} if dask else None, decode_timedelta=True
        )
    except Exception as e:
        raise DataError(
            f"cannot read '{path}' as NetCDF ({type(e).__name__}: {e})",
            hint="the file is corrupted or truncated: download it again",
        ) from e


def _open_grib(path: Path, *, dask: bool) -> list[xr.Dataset]:
    cfgrib = require("cfgrib", extra="grib", purpose="reading GRIB files")
    # cfgrib re-scans the file once per parameter without an index; keep its index files in a
    # cache directory rather than next to the data (which may be read-only).
    cache = Path(tempfile.gettempdir()) / "appa-cfgrib-index"
    cache.mkdir(exist_ok=True)
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}"
    key = hashlib.sha1(key.encode()).hexdigest()[:16]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # cfgrib's own xr.merge defaults
            parts = cfgrib.open_datasets(
                str(path),
                backend_kwargs={"indexpath": str(cache / f"{key}-{{short_hash}}.idx")},
                chunks={} if dask else None,
                decode_timedelta=True,
            )
    except Exception as e:
        raise DataError(
            f"cannot read '{path}' as GRIB ({type(e).__name__}: {e})",
            hint="the file is corrupted or truncated: download it again",
        ) from e
    if not parts:
        raise DataError(f"'{path}' holds no GRIB message cfgrib can read")
    return parts


def _open_url(url: str, *, timeout: float) -> xr.Dataset:
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("gs", "gcs"):
        raise DataError(
            f"unsupported URL scheme '{scheme}://' in '{url}'",
            hint="remote stores are read from gs:// URLs; download other sources first",
        )
    require("gcsfs", extra="cloud", purpose="reading gs:// URLs")
    host = os.environ.get("STORAGE_EMULATOR_HOST", "https://storage.googleapis.com")
    host = host.split("://", 1)[-1].split("/")[0]
    name, _, port = host.partition(":")
    _run_with_timeout(
        lambda: socket.create_connection((name, int(port or 443)), timeout=timeout).close(),
        timeout=min(timeout, 10.0),
        what=f"reaching {name} for {url}",
    )
    return _run_with_timeout(
        lambda: xr.open_zarr(url, storage_options={"token": "anon"}, chunks=None),
        timeout=timeout,
        what=f"opening {url}",
    )


def _run_with_timeout(fn: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Run ``fn`` in a daemon thread; turn errors and time-outs into :class:`DataError`."""

    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below as a DataError
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    hint = "check the network connection and the URL (public stores need no credentials)"
    if thread.is_alive():
        raise DataError(f"{what} did not finish within {timeout:g} s", hint=hint)
    if "error" in box:
        e = box["error"]
        if isinstance(e, AppaError):
            raise e
        if isinstance(e, FileNotFoundError):
            raise DataError(f"{what} failed: not found ({e})", hint="check the URL") from e
        raise DataError(f"{what} failed: {type(e).__name__}: {e}", hint=hint) from e
    return box.get("value")


def _combine(parts: list[xr.Dataset], label: str) -> xr.Dataset:
    try:
        return xr.combine_by_coords(
            parts, join="outer", compat="override", coords="minimal", data_vars="all",
            combine_attrs="drop",
        )  # fmt: skip
    except ValueError as e:
        raise DataError(
            f"the parts of {label} cannot be combined: {e}",
            hint="files must share one grid and must not overlap in time",
        ) from e


# ---------------------------------------------------------------------------------------------
# Canonicalisation steps


def _wanted_names(variables: Sequence[str] | str | None) -> list[str] | None:
    if variables is None:
        return None
    if isinstance(variables, str):
        variables = [variables]
    out: list[str] = []
    for name in variables:
        long = canonical_name(name) or name
        if long not in out:
            out.append(long)
    return out


def _has_level(var: xr.DataArray) -> bool:
    return any(n in var.dims or n in var.coords for n in _LEVEL_NAMES)


def _raw_name_map(ds: xr.Dataset) -> dict[str, str]:
    """Raw data-variable name → canonical name."""

    return {
        n: canonical_name(str(n), has_levels=_has_level(v)) or str(n)
        for n, v in ds.data_vars.items()
    }


def _rename_variables(ds: xr.Dataset) -> xr.Dataset:
    names = _raw_name_map(ds)
    seen: dict[str, str] = {}
    for raw, new in names.items():
        if new in seen:
            raise DataError(
                f"variables '{seen[new]}' and '{raw}' both read as '{new}'",
                hint="drop one of them before reading (ds.drop_vars)",
            )
        seen[new] = raw
    renames = {k: v for k, v in names.items() if k != v}
    clash = [v for v in renames.values() if v in ds.coords]
    if clash:
        raise DataError(f"variable name(s) {clash} clash with coordinates")
    return ds.rename_vars(renames) if renames else ds


def _fix_valid_time(ds: xr.Dataset) -> xr.Dataset:
    """Make ``time`` the valid time (CDS ``valid_time``; cfgrib ``time`` + ``step``)."""

    if "valid_time" in ds.variables:
        vt = ds["valid_time"]
        if vt.ndim == 0:
            ds = ds.drop_vars([n for n in ("time", "step") if n in ds.coords and n not in ds.dims])
            ds = ds.expand_dims("valid_time")
        elif vt.ndim == 1:
            if vt.dims[0] != "valid_time":
                ds = ds.swap_dims({vt.dims[0]: "valid_time"})
        else:
            log.warning("stacking the 2-D valid time %s into one axis (reads the data)", vt.dims)
            ds = ds.stack(__valid=vt.dims).swap_dims({"__valid": "valid_time"})
            ds = ds.drop_vars(["__valid", *vt.dims])
        ds = ds.drop_vars([n for n in ("time", "step") if n in ds.variables and n not in ds.dims])
        ds = ds.rename({"valid_time": "time"})
    elif "time" in ds.variables and ds["time"].ndim == 0:
        ds = ds.expand_dims("time")
    if "step" in ds.variables and "step" not in ds.dims:
        ds = ds.drop_vars("step")
    if "step" in ds.dims:
        raise DataError(
            "the dataset has a 'step' dimension without valid times",
            hint="select one forecast step, or give it a 'valid_time' coordinate",
        )
    return ds


def _rename_dims(ds: xr.Dataset) -> xr.Dataset:
    renames: dict[str, str] = {}
    candidates = (("latitude", _LAT_NAMES), ("longitude", _LON_NAMES), ("level", _LEVEL_NAMES))
    for target, names in candidates:
        if target in ds.variables or target in ds.dims:
            continue
        for n in names:
            if n in ds.variables or n in ds.dims:
                renames[n] = target
                break
    if "isobaricInPa" in renames and "units" not in ds["isobaricInPa"].attrs:
        ds["isobaricInPa"].attrs["units"] = "Pa"
    for n in _MEMBER_NAMES[1:]:
        if n in ds.dims and "member" not in ds.dims:
            renames[n] = "member"
        elif n in ds.variables and n not in ds.dims:
            ds = ds.drop_vars(n)  # a scalar ensemble number (CDS adds number=0)
    ds = ds.rename(renames) if renames else ds
    for name in ("latitude", "longitude"):
        if name not in ds.variables:
            raise DataError(
                f"no {name} coordinate found (looked for "
                f"{', '.join(_LAT_NAMES if name == 'latitude' else _LON_NAMES)})",
                hint="the readers need a regular lat-lon grid with named coordinates",
            )
        if ds[name].ndim != 1 or ds[name].dims != (name,):
            raise DataError(
                f"the {name} coordinate has dims {ds[name].dims}; a curvilinear or unstructured "
                "grid is not supported",
                hint=_HINT_REGRID,
            )
    return ds


def _fix_expver(ds: xr.Dataset) -> xr.Dataset:
    if "expver" in ds.dims:
        n = ds.sizes["expver"]
        if n == 1:
            ds = ds.isel(expver=0, drop=True)
        else:
            log.warning("combining %d ERA5 experiment versions (expver); this reads the data", n)
            out = ds.isel(expver=0, drop=True)
            for i in range(1, n):
                out = out.combine_first(ds.isel(expver=i, drop=True))
            ds = out
    if "expver" in ds.variables:
        ds = ds.drop_vars("expver")
    return ds


def _fix_member(ds: xr.Dataset) -> xr.Dataset:
    if "member" in ds.dims:
        values = ds["member"].values if "member" in ds.coords else np.arange(ds.sizes["member"])
        ds = ds.assign_coords(member=np.asarray(values).astype(np.int64))
    return ds


def _fix_level(ds: xr.Dataset) -> xr.Dataset:
    if "level" not in ds.variables:
        return ds
    level = ds["level"]
    if level.ndim == 0:  # one pressure level (cfgrib squeezes it): give level variables the dim
        value = level.values
        ds = ds.drop_vars("level")
        for name, var in list(ds.data_vars.items()):
            if (VARIABLES.get(name) is None or VARIABLES[name].levels) and "latitude" in var.dims:
                ds[name] = var.expand_dims(level=[value])
        if "level" not in ds.variables:
            return ds
        ds["level"].attrs = dict(level.attrs)
        level = ds["level"]
    units = str(level.attrs.get("units", "")).strip().lower()
    values = np.asarray(level.values, dtype=np.float64)
    if units in ("pa", "pascal", "pascals") or (units == "" and values.max() > 1100):
        values = values / 100.0
    elif units not in ("", "hpa", "mb", "mbar", "millibar", "millibars", "hectopascal"):
        raise DataError(
            f"pressure levels have units '{level.attrs.get('units')}', expected hPa or Pa",
            hint="give the level coordinate units of 'hPa' or 'Pa'",
        )
    rounded = np.round(values)
    if not np.allclose(values, rounded, atol=1e-6):
        raise DataError(
            f"pressure levels must be whole hPa, got {values.tolist()}",
            hint="model-level data must be interpolated to pressure levels first",
        )
    rounded = rounded.astype(np.int64)
    if np.unique(rounded).size != rounded.size:
        raise DataError(f"duplicated pressure levels: {rounded.tolist()}")
    ds = ds.assign_coords(level=rounded)
    order = np.argsort(rounded)
    if np.any(order != np.arange(order.size)):
        descending = np.all(np.diff(rounded) < 0)
        ds = ds.isel(level=slice(None, None, -1) if descending else order)
    return ds


def _drop_noncanonical(ds: xr.Dataset) -> xr.Dataset:
    # Keep the dims' coordinates and labels along time (e.g. the synthetic planet's ``run``);
    # drop scalar and other auxiliary coordinates (GRIB level types, ``step``, ``number``, …).
    keep = lambda n: n in DIMS or (ds[n].dims == ("time",) and n != "expver")  # noqa: E731
    ds = ds.drop_vars([n for n in ds.coords if not keep(n)])
    drop = []
    for name, var in ds.data_vars.items():
        dims = set(var.dims)
        if not dims <= set(DIMS) or not {"latitude", "longitude"} <= dims:
            log.warning("dropping variable '%s' with dims %s (not a gridded field)", name, var.dims)
            drop.append(name)
    ds = ds.drop_vars(drop)
    extra = [d for d in ds.dims if d not in DIMS]
    return ds.drop_dims(extra) if extra else ds


def _regular_grid(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact regular global grid matching sorted coordinates, or a :class:`DataError`."""

    nlat, nlon = lat.size, lon.size
    if nlat < 2 or nlon < 2:
        raise DataError(f"a global grid needs at least 2×2 points, got {nlat}×{nlon}")
    tol = 1e-4  # degrees: float32 coordinates are good to ~1e-5 degree
    poles = np.linspace(90.0, -90.0, nlat)
    centred = 90.0 - (np.arange(nlat) + 0.5) * 180.0 / nlat
    if np.allclose(lat, poles, rtol=0, atol=tol):
        lat_ideal = poles
    elif np.allclose(lat, centred, rtol=0, atol=tol):
        lat_ideal = centred
    else:
        x, _ = np.polynomial.legendre.leggauss(nlat)
        gaussian = np.rad2deg(np.arcsin(x))[::-1]
        if np.allclose(lat, gaussian, rtol=0, atol=1e-3):
            raise DataError(
                f"the latitudes form a Gaussian grid (N{nlat // 2}); only regular lat-lon grids "
                "are supported",
                hint=_HINT_REGRID,
            )
        step = np.diff(lat)
        if not np.allclose(step, step[0], rtol=1e-3, atol=tol):
            raise DataError(
                f"the latitude spacing is irregular (from {abs(step).min():.4g}° to "
                f"{abs(step).max():.4g}°); irregular grids are not supported",
                hint=_HINT_REGRID,
            )
        raise DataError(
            f"the latitudes ({lat[0]:g} to {lat[-1]:g}, every {abs(step[0]):g}°) do not cover the "
            "globe as a regular grid with the poles or cell-centred",
            hint=_HINT_REGRID,
        )
    dlon = 360.0 / nlon
    lon0 = float(lon[0])
    for nice in (0.0, dlon / 2):
        if abs(lon0 - nice) < tol:
            lon0 = nice
    lon_ideal = lon0 + np.arange(nlon) * dlon
    if not np.allclose(lon, lon_ideal, rtol=0, atol=tol):
        step = np.diff(lon)
        if np.allclose(step, step[0], rtol=1e-3, atol=tol):
            raise DataError(
                f"the longitudes ({lon[0]:g} to {lon[-1]:g}, every {step[0]:g}°) do not cover the "
                "globe; regional grids are not supported",
                hint=_HINT_REGRID,
            )
        raise DataError(
            f"the longitude spacing is irregular (from {step.min():.4g}° to {step.max():.4g}°)",
            hint=_HINT_REGRID,
        )
    return lat_ideal, lon_ideal


def _fix_grid(ds: xr.Dataset) -> xr.Dataset:
    lat = np.asarray(ds["latitude"].values, dtype=np.float64)
    if np.unique(lat).size != lat.size:
        raise DataError("duplicated latitudes", hint=_HINT_REGRID)
    if lat.size > 1 and np.all(np.diff(lat) > 0):
        ds, lat = ds.isel(latitude=slice(None, None, -1)), lat[::-1]
    elif not np.all(np.diff(lat) < 0):
        order = np.argsort(-lat, kind="stable")
        ds, lat = ds.isel(latitude=order), lat[order]
    lon = np.asarray(ds["longitude"].values, dtype=np.float64)
    wrapped = np.mod(lon, 360.0)
    unique, first = np.unique(wrapped, return_index=True)  # sorted, drops a repeated 0/360 column
    if unique.size != wrapped.size:
        log.info("dropping %d repeated longitude column(s) (0 and 360)", wrapped.size - unique.size)
    if not np.array_equal(first, np.arange(wrapped.size)):
        ds = ds.isel(longitude=first)
    lat_ideal, lon_ideal = _regular_grid(lat, unique)
    return ds.assign_coords(latitude=lat_ideal, longitude=lon_ideal)


def _fix_time(ds: xr.Dataset) -> xr.Dataset:
    if "time" not in ds.dims:
        return ds
    if "time" not in ds.coords:
        raise DataError("the time dimension has no coordinate", hint="give it datetime values")
    values = ds["time"].values
    if not np.issubdtype(values.dtype, np.datetime64):
        raise DataError(
            f"the time coordinate holds {values.dtype} values, not dates",
            hint="check its 'units' attribute (e.g. 'hours since 1959-01-01') so that it decodes",
        )
    values = values.astype("datetime64[ns]")
    index = pd.DatetimeIndex(values)
    if index.has_duplicates:
        dup = index[index.duplicated()].unique()[:3]
        raise DataError(
            f"duplicated times, first: {', '.join(str(t) for t in dup)}",
            hint="remove the repeated time steps (e.g. overlapping files) before reading",
        )
    ds = ds.assign_coords(time=values)
    if not index.is_monotonic_increasing:
        log.warning("times were not sorted; sorting them")
        ds = ds.isel(time=np.argsort(values, kind="stable"))
    return ds


def _set_attrs(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    for name, var in ds.data_vars.items():
        attrs = var.attrs
        if name in VARIABLES:
            info = VARIABLES[name]
            units = check_units(name, attrs.get("units"))
            var.attrs = {"units": units, "long_name": info.long_name}
        else:
            var.attrs = {k: attrs[k] for k in ("units", "long_name") if k in attrs}
    coord_attrs = {
        "latitude": {"units": "degrees_north", "long_name": "latitude"},
        "longitude": {"units": "degrees_east", "long_name": "longitude"},
        "level": {"units": "hPa", "long_name": "pressure level"},
        "member": {"long_name": "ensemble member"},
        "time": {"long_name": "time"},
    }
    for name, attrs in coord_attrs.items():
        if name in ds.coords:
            ds[name].attrs = dict(attrs)
    ds.attrs = {}
    return ds


def _select_time(ds: xr.Dataset, time: TimeSelection) -> xr.Dataset:
    if "time" not in ds.dims:
        raise DataError("times were asked for, but the dataset has no time dimension")
    index = ds.indexes["time"]
    span = f"available: {index[0]} to {index[-1]} ({index.size} times)"
    if isinstance(time, slice):
        if time.step is not None:
            raise DataError("a time slice cannot have a step", hint="use a list of times instead")
        start = _as_time(time.start)
        stop = _as_time(time.stop)
        out = ds.sel(time=slice(start, stop))
        if out.sizes["time"] == 0:
            raise DataError(f"no time between {time.start} and {time.stop}", hint=span)
        return out
    if isinstance(time, str):
        out = ds.sel(time=slice(time, time))  # partial strings select everything they cover
        if out.sizes["time"] == 0:
            raise DataError(f"no time matches '{time}'", hint=span)
        return out
    values = [time] if isinstance(time, (_dt.date, np.datetime64, pd.Timestamp)) else list(time)
    try:
        stamps = pd.DatetimeIndex([pd.Timestamp(v) for v in values]).as_unit("ns")
    except (ValueError, TypeError) as e:
        raise DataError(f"cannot read {time!r} as times: {e}") from e
    positions = index.get_indexer(stamps)
    missing = [str(t) for t, p in zip(stamps, positions) if p < 0]
    if missing:
        raise DataError(f"time(s) not found: {', '.join(missing[:3])}", hint=span)
    return ds.isel(time=positions)


def _as_time(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    try:
        return pd.Timestamp(value)
    except (ValueError, TypeError) as e:
        raise DataError(f"cannot read {value!r} as a time: {e}") from e

r"""Score an ensemble against a truth: RMSE, CRPS, spread and spread-skill ratio in one table.

:func:`evaluate` aligns the truth with the ensemble (same variables, same grid, the ensemble's
times and levels), then computes, per variable, level and time (or lead time):

=========  ==========================================================================
rmse       area-weighted RMSE of the ensemble mean (:func:`~.deterministic.rmse`)
crps       area-weighted fair CRPS (:func:`~.probabilistic.crps`)
spread     sqrt of the area-weighted unbiased ensemble variance (:func:`~.probabilistic.spread`)
ssr        spread / rmse · sqrt((M+1)/M) (:func:`~.probabilistic.spread_skill_ratio`)
=========  ==========================================================================

The result follows WeatherBench2's layout: one data variable per physical variable, with a
``metric`` dimension, e.g. ``result["temperature"].sel(metric="rmse")`` has dims
``(time, level)``. :func:`format_table` renders it as text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import pandas as pd
import xarray as xr

from appa_engine.errors import DataError
from appa_engine.metrics.deterministic import rmse
from appa_engine.metrics.probabilistic import _ratio, crps, spread

__all__ = ["METRICS", "evaluate", "format_table"]

logger = logging.getLogger(__name__)

#: Metrics computed by :func:`evaluate`, in the order of the ``metric`` dim.
METRICS = ("rmse", "crps", "spread", "ssr")

_DEFINITIONS = {
    "rmse": "sqrt(area-weighted mean of (mean_member(x) - y)^2), in the variable's units",
    "crps": "area-weighted mean of the fair CRPS "
    "mean_m|x_m - y| - sum_{m,m'}|x_m - x_m'| / (2M(M-1)), in the variable's units",
    "spread": "sqrt(area-weighted mean of the member variance with 1/(M-1)), "
    "in the variable's units",
    "ssr": "spread / rmse * sqrt((M + 1) / M), dimensionless",
}


def _describe_grid(ds: xr.Dataset) -> str:
    lat, lon = ds["latitude"].values, ds["longitude"].values
    step = abs(lon[1] - lon[0]) if lon.size > 1 else float("nan")
    return (
        f"{lat.size}×{lon.size} (latitude {lat[0]:g}→{lat[-1]:g}, "
        f"longitude {lon[0]:g}→{lon[-1]:g}, spacing {step:g}°)"
    )


def _gridded(ds: xr.Dataset, member_dim: str) -> list[str]:
    """Data variables on the horizontal grid (observation tables and the like are skipped)."""

    return [
        name
        for name, a in ds.data_vars.items()
        if {"latitude", "longitude"} <= set(a.dims)
        and set(a.dims) <= {member_dim, "time", "level", "latitude", "longitude"}
    ]


def _align_grid(ensemble: xr.Dataset, truth: xr.Dataset) -> xr.Dataset:
    for d in ("latitude", "longitude"):
        if d not in truth.dims:
            raise DataError(f"the truth has no '{d}' dimension (dims {tuple(truth.dims)})")
    if np.any(truth["longitude"].values < 0):
        truth = truth.assign_coords(longitude=truth["longitude"] % 360)
    truth = truth.sortby("longitude").sortby("latitude", ascending=False)
    same = all(
        truth.sizes[d] == ensemble.sizes[d]
        and np.allclose(truth[d].values, ensemble[d].values, rtol=0, atol=1e-6)
        for d in ("latitude", "longitude")
    )
    if not same:
        raise DataError(
            f"truth store on another grid: the ensemble is on {_describe_grid(ensemble)} "
            f"but the truth is on {_describe_grid(truth)}",
            hint="regrid the truth to the ensemble's grid (e.g. truth.interp(latitude=..., "
            "longitude=...)) or pick a truth store at the ensemble's resolution",
        )
    return truth.assign_coords(latitude=ensemble["latitude"], longitude=ensemble["longitude"])


def _align_index(ensemble: xr.Dataset, truth: xr.Dataset, dim: str) -> xr.Dataset:
    if dim not in ensemble.dims:
        return truth
    if dim not in truth.dims:
        raise DataError(f"the ensemble has a '{dim}' dimension but the truth does not")
    wanted = pd.Index(ensemble[dim].values)
    have = pd.Index(truth[dim].values)
    missing = wanted.difference(have)
    if len(missing):
        shown = ", ".join(str(v) for v in missing[:3]) + (" …" if len(missing) > 3 else "")
        raise DataError(
            f"the truth lacks {len(missing)} of the ensemble's {dim} values ({shown}); it covers "
            f"{have.min()} to {have.max()} ({len(have)} values)",
            hint=f"use a truth store that covers the ensemble's {dim} values",
        )
    return truth.sel({dim: ensemble[dim].values})


def evaluate(
    ensemble: xr.Dataset,
    truth: xr.Dataset,
    *,
    variables: Iterable[str] | None = None,
    lead_dim: str | None = None,
    member_dim: str = "member",
) -> xr.Dataset:
    """Score an ensemble against the truth (RMSE, CRPS, spread, SSR).

    Arguments:
        ensemble: Ensemble, dims ``(member, time, level, latitude, longitude)`` per variable
            (``member`` optional: a deterministic run counts as one member, whose spread and SSR
            are NaN; ``level`` only for atmospheric variables). Non-gridded variables (e.g. the
            observations stored in a run) are ignored.
        truth: Truth covering the ensemble's variables, times and levels on the same grid
            (latitude order and 0..360 vs -180..180 longitudes are normalised).
        variables: Variables to score; by default every gridded variable of the ensemble.
        lead_dim: If given (e.g. ``"lead_time"``), index the result by the time elapsed since the
            first state, under this dim name, and keep the valid time as coordinate ``time``.
        member_dim: Name of the ensemble dim.

    Returns:
        Dataset with one variable per scored variable and dims ``(metric, time | lead_dim,
        level)`` (as present), ``metric`` in :data:`METRICS`; attrs give each metric's
        definition and the ensemble size.

    Raises:
        DataError: A variable is missing, the grids differ, or the truth does not cover the
            ensemble's times or levels.
    """

    if not isinstance(ensemble, xr.Dataset) or not isinstance(truth, xr.Dataset):
        raise DataError("evaluate() takes an ensemble and a truth as xr.Dataset")
    gridded = _gridded(ensemble, member_dim)
    if variables is None:
        names = gridded
    else:
        names = list(variables)
        unknown = [v for v in names if v not in gridded]
        if unknown:
            raise DataError(
                f"the ensemble has no gridded variable(s) {unknown}",
                hint=f"choose among {gridded}",
            )
    if not names:
        raise DataError(
            "the ensemble has no variable on a (latitude, longitude) grid to score",
            hint=f"its variables are {list(ensemble.data_vars)}",
        )
    absent = [v for v in names if v not in truth.data_vars]
    if absent:
        raise DataError(
            f"the truth has no variable(s) {absent}",
            hint=f"the truth has {list(truth.data_vars)}; "
            "pass variables= to score only the common ones",
        )

    ens = ensemble[names]
    if member_dim not in ens.dims:
        ens = ens.expand_dims(member_dim)
    M = int(ens.sizes[member_dim])
    tru = _align_grid(ens, truth[names])
    for dim in ("time", "level"):
        tru = _align_index(ens, tru, dim)
    for name in names:
        want = tuple(d for d in ens[name].dims if d != member_dim)
        if set(tru[name].dims) != set(want):
            raise DataError(
                f"'{name}' has dims {want} in the ensemble "
                f"but {tuple(tru[name].dims)} in the truth",
                hint="the truth must hold the same variable layout (e.g. the same levels)",
            )
    tru = xr.Dataset(
        {
            name: tru[name].transpose(*[d for d in ens[name].dims if d != member_dim])
            for name in names
        }
    )
    logger.info("scoring %d variable(s), %d member(s)", len(names), M)

    ens, tru = ens.load(), tru.load()
    skill = rmse(ens, tru, member_dim=member_dim)
    spread_ = spread(ens, member_dim=member_dim)
    scores = {
        "rmse": skill,
        "crps": crps(ens, tru, member_dim=member_dim),
        "spread": spread_,
        "ssr": _ratio(spread_, skill, M),
    }
    result = xr.concat(
        [scores[m].drop_attrs() for m in METRICS],
        dim=xr.DataArray(np.array(METRICS), dims="metric", name="metric"),
        coords="minimal",
        compat="override",
    )
    for name in names:
        result[name].attrs = {
            "units": ensemble[name].attrs.get("units", ""),
            "long_name": f"scores of {ensemble[name].attrs.get('long_name', name)}",
            "comment": "rmse, crps and spread in the variable's units; ssr dimensionless",
        }
    result["metric"].attrs = {"long_name": "metric"}
    result.attrs = {
        "title": "Appa Studio ensemble scores",
        "ensemble_size": M,
        "area_weighting": "appa_engine.data.grid.area_weights (latitude band areas, mean 1)",
        **{f"definition_{m}": _DEFINITIONS[m] for m in METRICS},
    }
    if lead_dim is not None and "time" in result.dims:
        time = result["time"].values
        result = result.rename({"time": lead_dim}).assign_coords(
            {lead_dim: time - time[0], "time": (lead_dim, time)}
        )
        result[lead_dim].attrs = {"long_name": "lead time since the first state"}
    return result


def _format_coord(value) -> str:
    if isinstance(value, np.timedelta64):
        hours = value / np.timedelta64(1, "h")
        return f"+{hours:g}h"
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="m"))
    if isinstance(value, (float, np.floating)):
        return f"{value:g}"
    return str(value)


def format_table(result: xr.Dataset, *, aggregate_time: bool = False) -> str:
    """Render :func:`evaluate`'s result as a text table, one row per variable, level and time.

    Arguments:
        result: Output of :func:`evaluate`.
        aggregate_time: One row per variable and level, aggregated over time: RMSE and spread
            as the root of the mean of their squares, CRPS as the mean, SSR recomputed from the
            aggregated spread and RMSE.

    Returns:
        The table, with a header line.
    """

    if "metric" not in result.dims:
        raise DataError("format_table() expects the output of evaluate() (a 'metric' dimension)")
    metrics = [str(m) for m in result["metric"].values]
    time_dim = next((d for d in result.dims if d not in ("metric", "level")), None)
    if aggregate_time and time_dim is not None:
        M = int(result.attrs.get("ensemble_size", 1))
        t = result.sel(metric=metrics)
        agg = {
            "rmse": np.sqrt((t.sel(metric="rmse", drop=True) ** 2).mean(time_dim)),
            "crps": t.sel(metric="crps", drop=True).mean(time_dim),
            "spread": np.sqrt((t.sel(metric="spread", drop=True) ** 2).mean(time_dim)),
        }
        agg["ssr"] = _ratio(agg["spread"], agg["rmse"], M)
        result = xr.concat(
            [agg[m] for m in metrics], dim=xr.DataArray(np.array(metrics), dims="metric")
        )
        time_dim = None

    head = f"{'variable':<28} {'level':>6} {time_dim or '':>17}"
    head += "".join(f" {m:>11}" for m in metrics)
    lines = [head, "-" * len(head)]
    for name in result.data_vars:
        a = result[name]
        levels = a["level"].values if "level" in a.dims else [None]
        times = a[time_dim].values if time_dim and time_dim in a.dims else [None]
        for level in levels:
            for time in times:
                sel = {}
                if level is not None:
                    sel["level"] = level
                if time is not None:
                    sel[time_dim] = time
                row = a.sel(sel)
                values = "".join(f" {float(row.sel(metric=m)):>11.4g}" for m in metrics)
                lev = "" if level is None else _format_coord(level)
                tim = "" if time is None else _format_coord(time)
                lines.append(f"{name:<28} {lev:>6} {tim:>17}{values}")
    return "\n".join(lines)

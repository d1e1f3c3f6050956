"""``appa evaluate``: score a run's ensemble against a truth store.

Examples::

    appa evaluate runs/forecast.zarr --truth assets/truth.zarr
    appa evaluate runs/forecast.zarr --truth era5.zarr --variables temperature 2m_temperature \\
        --lead-time --out runs/forecast_scores.nc

Prints a table of RMSE, CRPS, spread and spread-skill ratio per variable, level and time, and
optionally writes the scores as NetCDF (see :func:`appa_engine.metrics.evaluate.evaluate`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from appa_engine.errors import DataError

__all__ = ["register", "run"]


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="score an ensemble run against a truth store (RMSE, CRPS, spread, SSR)",
        description="Score an ensemble run against a truth store: area-weighted RMSE of the "
        "ensemble mean, fair CRPS, spread and spread-skill ratio per variable, level and time.",
    )
    parser.add_argument(
        "run", metavar="RUN", type=Path, help="ensemble output (zarr directory or .nc file)"
    )
    parser.add_argument(
        "--truth", metavar="TRUTH", type=Path, required=True, help="truth store (zarr, NetCDF, ...)"
    )
    parser.add_argument(
        "--out", metavar="METRICS.nc", type=Path, default=None, help="write the scores as NetCDF"
    )
    parser.add_argument(
        "--variables",
        metavar="NAME",
        nargs="+",
        default=None,
        help="variables to score (default: all gridded)",
    )
    parser.add_argument(
        "--lead-time",
        action="store_true",
        help="index the scores by lead time (time since the first state)",
    )
    parser.add_argument(
        "--summary",
        action="store_true",
        help="print one row per variable and level, aggregated over time",
    )
    parser.set_defaults(handler=run)
    return parser


def _open_run(path: Path):
    import xarray as xr

    if not path.exists():
        raise DataError(
            f"the run '{path}' does not exist",
            hint="pass the zarr store or NetCDF file a run wrote",
        )
    try:
        if path.suffix in (".nc", ".nc4", ".netcdf"):
            return xr.open_dataset(path)
        return xr.open_zarr(path, consolidated=False)
    except (OSError, ValueError, KeyError) as e:
        raise DataError(
            f"cannot open the run '{path}': {e}", hint="is it a zarr store or a NetCDF file?"
        ) from e


def _open_truth(path: Path, variables: list[str] | None):
    try:
        from appa_engine.data.readers import open_dataset
    except ImportError:
        open_dataset = None
    if open_dataset is not None:
        return open_dataset(path, variables=variables)

    import xarray as xr

    if not path.exists():
        raise DataError(
            f"the truth store '{path}' does not exist", hint="pass a zarr store or NetCDF file"
        )
    try:
        if path.suffix in (".nc", ".nc4", ".netcdf"):
            return xr.open_dataset(path)
        return xr.open_zarr(path, consolidated=False)
    except (OSError, ValueError, KeyError) as e:
        raise DataError(
            f"cannot open the truth store '{path}': {e}",
            hint="is it a zarr store or a NetCDF file?",
        ) from e


def run(args: argparse.Namespace) -> int:
    from appa_engine.io.atomic import atomic_path
    from appa_engine.metrics.evaluate import evaluate, format_table

    ensemble = _open_run(args.run)
    truth = _open_truth(args.truth, args.variables)
    result = evaluate(
        ensemble, truth, variables=args.variables, lead_dim="lead_time" if args.lead_time else None
    )
    print(format_table(result, aggregate_time=args.summary))
    if args.out is not None:
        with atomic_path(args.out) as tmp:
            result.to_netcdf(tmp)
        print(f"wrote {args.out}")
    return 0

"""``appa data stats``: per-channel statistics of a dataset, written as JSON.

Example::

    appa data stats era5.zarr --out stats.json --levels 500 850 --time 1993-01-01:2019-12-31
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _csv(text: str) -> list[str]:
    return [t for t in text.replace(",", " ").split() if t]


def _flatten(values: list[str] | None) -> list[str] | None:
    return None if values is None else [v for item in values for v in _csv(item)]


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``stats`` to the ``data`` subcommand's subparsers."""

    from appa_engine.cli.data import parse_time

    p = subparsers.add_parser(
        "stats",
        help="compute per-channel area-weighted mean and std",
        description="Compute the area-weighted mean and standard deviation of each channel "
        "in one pass over time, and write them as a small JSON file.",
    )
    p.add_argument("data", metavar="DATA", help="dataset (zarr store or a format the readers know)")
    p.add_argument("--out", required=True, metavar="STATS.json", help="output JSON file")
    p.add_argument(
        "--variables", nargs="+", metavar="VAR", help="variables to include (default: all)"
    )
    p.add_argument(
        "--levels", nargs="+", metavar="HPA", help="pressure levels in hPa (default: all)"
    )
    p.add_argument(
        "--time",
        type=parse_time,
        metavar="START:END",
        help="inclusive time range, e.g. 1993-01-01:2019-12-31 or 2020-01-01T06:00..2020-01-02, "
        "or one date (default: all times)",
    )
    p.add_argument(
        "--chunk", type=int, default=None, metavar="N", help="time steps per read (default: auto)"
    )
    p.add_argument(
        "--nan-policy",
        choices=("omit", "raise"),
        default="omit",
        help="'omit': NaN cells get zero weight (default); 'raise': fail on any NaN",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=_run)
    return p


def _open(source: str):
    """Open a dataset with the project readers, or as a plain zarr store until they exist."""

    try:
        from appa_engine.data.readers import open_dataset
    except ModuleNotFoundError as e:
        if e.name != "appa_engine.data.readers":
            raise
        from pathlib import Path

        import xarray as xr

        from appa_engine.errors import DataError

        if not Path(source).exists():
            raise DataError(f"dataset {source!r} does not exist") from None
        return xr.open_zarr(source, consolidated=False)
    return open_dataset(source)


def _run(args: argparse.Namespace) -> int:
    from appa_engine.data.channels import ChannelSpec
    from appa_engine.data.stats import compute_statistics
    from appa_engine.errors import ConfigError

    ds = _open(args.data)
    if args.time is not None:
        window = args.time if isinstance(args.time, slice) else slice(args.time, args.time)
        ds = ds.sel(time=window)  # a slice keeps the time dim, even for one date
        if ds.sizes.get("time", 0) == 0:
            raise ConfigError(
                f"no times of the dataset fall in {window.start}..{window.stop}",
                hint="check the dataset's time range with `appa data info DATA`",
            )
    levels = _flatten(args.levels)
    if levels is not None:
        try:
            levels = [int(v) for v in levels]
        except ValueError:
            raise ConfigError(f"--levels takes integers in hPa, got {args.levels}") from None
    spec = ChannelSpec.from_dataset(ds, variables=_flatten(args.variables), levels=levels)
    stats = compute_statistics(
        ds, spec, chunk=args.chunk, nan_policy=args.nan_policy, progress=not args.no_progress
    )
    stats.save(args.out)
    print(f"wrote {args.out}: {len(stats)} channels over {stats.count} states")
    return 0

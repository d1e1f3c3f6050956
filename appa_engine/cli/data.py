"""``appa data``: inspect and convert data sources into the canonical layout.

Examples::

    appa data info \\
        gs://weatherbench2/datasets/era5/1959-2023_01_10-6h-64x32_equiangular_conservative.zarr
    appa data info era5_2020.nc --variables temperature,2m_temperature --levels 500,850
    appa data convert era5/*.nc era5.zarr --time 2020-01-01:2020-01-31 --chunk-time 24

``SOURCE`` is anything :func:`appa_engine.data.readers.open_dataset` reads: a zarr directory,
a NetCDF or GRIB file, a directory or glob of them, or a ``gs://`` URL. ``--time`` takes
``START:END`` (inclusive; either side may be empty; ``START..END`` also works) or one date
(``2020-01-01`` selects the whole day).
"""

from __future__ import annotations

import argparse
import math
import re
from typing import Any

__all__ = ["register", "parse_time"]

_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2}([T ]\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?)?)?)?$")


def _is_date(text: str) -> bool:
    if not _DATE.match(text):
        return False
    import pandas as pd

    try:
        pd.Timestamp(text)
    except ValueError:
        return False
    return True


def parse_time(text: str) -> slice | str:
    """Parse ``--time``: ``START:END`` or ``START..END`` → slice (a side may be empty); a date →
    str."""

    text = text.strip()
    if ".." in text:
        start, stop = (s.strip() for s in text.split("..", 1))
        pairs = [(start, stop)]
    else:
        pairs = [(text[:i], text[i + 1 :]) for i, c in enumerate(text) if c == ":"]
        pairs = [(a, b) for a, b in pairs if (a == "" or _is_date(a)) and (b == "" or _is_date(b))]
        if not pairs:
            if _is_date(text):
                return text
            pairs = [("?", "?")]
    if len(pairs) != 1 or not all(s == "" or _is_date(s) for s in pairs[0]):
        raise argparse.ArgumentTypeError(
            f"cannot read '{text}' as a date or START:END (e.g. 2020-01-01, 2020-01:2020-03, "
            "2020-01-01T06:00..2020-01-02)"
        )
    start, stop = pairs[0]
    return slice(start or None, stop or None)


def _names(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one name (comma-separated)")
    return names


def _ints(text: str) -> list[int]:
    try:
        return [int(s) for s in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of integers"
        ) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", help="zarr directory, NetCDF/GRIB file, directory, glob or gs:// URL"
    )
    parser.add_argument(
        "--variables", type=_names, default=None, metavar="NAMES",
        help="comma-separated WB2 (or CDS short) names, e.g. temperature,2m_temperature "
        "(default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--levels", type=_ints, default=None, metavar="HPA",
        help="comma-separated pressure levels in hPa, e.g. 500,850 (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--time", type=parse_time, default=None, metavar="START:END",
        help="inclusive time range START:END (either side may be empty) or one date "
        "(default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--member", type=_ints, default=None, metavar="N",
        help="comma-separated ensemble members to keep (default: all)",
    )  # fmt: skip


def register(subparsers: Any) -> None:
    """Add the ``data`` group: ``info``, ``convert``, and ``stats``/``synth`` when present."""

    parser = subparsers.add_parser(
        "data",
        help="inspect, convert and prepare data sources",
        description="Inspect and convert data sources into the canonical layout "
        "(WeatherBench2 names; time, level, latitude, longitude).",
    )
    data_subparsers = parser.add_subparsers(
        dest="data_command", metavar="SUBCOMMAND", required=True
    )

    info = data_subparsers.add_parser(
        "info",
        help="print variables, levels, grid, times and size of a source",
        description="Open SOURCE lazily in the canonical layout and summarise it.",
    )
    _add_selection(info)
    info.set_defaults(handler=_info)

    convert = data_subparsers.add_parser(
        "convert",
        help="write a source as a canonical zarr store",
        description="Read SOURCE (with the selection) and write it atomically as a canonical zarr "
        "v3 store, CHUNK_TIME time steps at a time.",
    )
    _add_selection(convert)
    convert.add_argument("target", metavar="OUT.zarr", help="zarr directory to write")
    convert.add_argument(
        "--chunk-time", type=_positive_int, default=24, metavar="N",
        help="time steps per write and per zarr chunk (default: 24)",
    )  # fmt: skip
    convert.add_argument("--overwrite", action="store_true", help="replace OUT.zarr if it exists")
    convert.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    convert.set_defaults(handler=_convert)

    try:
        from appa_engine.cli.data_stats import register as _stats
    except ModuleNotFoundError as e:
        if e.name != "appa_engine.cli.data_stats":
            raise
    else:
        _stats(data_subparsers)
    try:
        from appa_engine.cli.data_synth import register as _synth
    except ModuleNotFoundError as e:
        if e.name != "appa_engine.cli.data_synth":
            raise
    else:
        _synth(data_subparsers)


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    member = args.member
    return {
        "variables": args.variables,
        "levels": args.levels,
        "time": args.time,
        "member": member[0] if member is not None and len(member) == 1 else member,
    }


def _info(args: argparse.Namespace) -> int:
    from appa_engine.data.readers import describe, open_dataset

    ds = open_dataset(args.source, **_selection(args))
    print(format_info(args.source, describe(ds)))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from appa_engine.data.readers import convert

    path = convert(
        args.source, args.target, **_selection(args), chunk_time=args.chunk_time,
        overwrite=args.overwrite, progress=not args.no_progress,
    )  # fmt: skip
    print(f"wrote {path}")
    return 0


def format_info(source: str, info: dict[str, Any]) -> str:
    """The text of ``appa data info`` for a :func:`~appa_engine.data.readers.describe` dict."""

    lines = [f"source     {source}", f"variables  {len(info['variables'])}"]
    width = max((len(n) for n in info["variables"]), default=0)
    for name, v in info["variables"].items():
        lines.append(f"  {name:<{width}}  ({', '.join(v['dims'])})  [{v['units']}]  {v['dtype']}")
    levels = info["levels"]
    levels_text = f"{len(levels)}: {', '.join(map(str, levels))} hPa" if levels else "none"
    lines.append(f"levels     {levels_text}")
    grid = info["grid"]
    h, w = grid.shape
    kind = "with poles" if grid.has_poles else "cell-centred"
    lines.append(
        f"grid       {h} × {w} ({kind}), latitude {grid.latitude[0]:g} → {grid.latitude[-1]:g}, "
        f"longitude {grid.longitude[0]:g} → {grid.longitude[-1]:g}, "
        f"{grid.dlat:g}° × {grid.dlon:g}°"
    )
    if info["times"]:
        step = info["step"]
        every = f"every {_format_step(step)}" if step is not None else "irregular steps"
        if info["times"] == 1:
            every = "one step"
        lines.append(
            f"time       {info['start']:%Y-%m-%d %H:%M} → {info['end']:%Y-%m-%d %H:%M}, "
            f"{info['times']} steps, {every}"
        )
    else:
        lines.append("time       none (static fields)")
    if info["members"] is not None:
        lines.append(f"members    {info['members']}")
    lines.append(f"size       {_format_bytes(info['nbytes'])} (uncompressed)")
    return "\n".join(lines)


def _format_step(step: Any) -> str:
    seconds = int(step.total_seconds())
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % n == 0:
            return f"{seconds // n}{unit}"
    return f"{seconds}s"


def _format_bytes(n: float) -> str:
    if n <= 0:
        return "0 B"
    k = min(int(math.log(n, 1024)), 4)
    return f"{n / 1024**k:.1f} {['B', 'KiB', 'MiB', 'GiB', 'TiB'][k]}"

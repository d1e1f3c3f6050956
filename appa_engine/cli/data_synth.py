"""``appa data synth``: simulate the synthetic planet (Held–Suarez atmosphere) into a zarr store.

Examples::

    appa data synth --out tiny.zarr --preset tiny                 # ~1 minute on 2 cores
    appa data synth --out planet.zarr --preset small              # T21, spun up: the CPU default
    appa data synth --out planet.zarr --preset small --days 720   # extends the same store
    appa data synth --out big.zarr --preset default --runs 4      # T42, 4 independent runs
    appa data synth --out planet.zarr --preset small --dry-run    # print the resolved options

Rerunning an interrupted command continues where it stopped (see
:mod:`appa_engine.data.synth`). Options given on the command line replace those of the preset.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["register"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got '{text}'")
    return value


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(s) for s in text.replace(" ", ",").split(",") if s)
    except ValueError:
        levels = ()
    if not levels:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of pressure levels in hPa"
        )
    return levels


#: Command-line option → SynthConfig field, for the options that override the preset.
_OVERRIDES = {
    "resolution": "resolution",
    "layers": "layers",
    "levels": "levels",
    "output_hours": "output_hours",
    "days": "days",
    "runs": "runs",
    "seed": "seed",
    "spinup_days": "spinup_days",
    "gap_days": "gap_days",
    "dt_minutes": "dt_minutes",
}


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``synth`` to the subparsers of the ``data`` command group."""

    p = subparsers.add_parser(
        "synth",
        help="simulate the synthetic planet (Held-Suarez atmosphere) into a zarr store",
        description="Run a dry Held-Suarez atmosphere with dinosaur, spin it up, and write "
        "6-hourly states on pressure levels in the canonical layout (WeatherBench2 names). "
        "Rerunning continues an interrupted store; more --days or --runs extend it. Needs the "
        "'synth' extra.",
    )
    p.add_argument(
        "--out", required=True, metavar="OUT.zarr", help="zarr store to write, continue or extend"
    )
    p.add_argument(
        "--preset",
        choices=("tiny", "small", "default"),
        default="small",
        help="tiny: T21, 10 days of spin-up, about a minute; small: T21 spun up (CPU default); "
        "default: T42 spun up (default: small)",
    )
    p.add_argument(
        "--resolution",
        choices=("T21", "T42"),
        default=None,
        help="spectral truncation (T21: 32x64, T42: 64x128)",
    )
    p.add_argument(
        "--layers",
        type=_positive,
        default=None,
        metavar="N",
        help="number of sigma layers of the model",
    )
    p.add_argument(
        "--levels",
        type=_levels,
        default=None,
        metavar="HPA",
        help="output pressure levels, e.g. 250,500,850",
    )
    p.add_argument(
        "--output-hours",
        type=_positive,
        default=None,
        metavar="H",
        help="hours between written states (divides 24)",
    )
    p.add_argument("--days", type=_positive, default=None, metavar="N", help="written days per run")
    p.add_argument(
        "--runs",
        type=_positive,
        default=None,
        metavar="N",
        help="independent runs, separated by a time gap",
    )
    p.add_argument(
        "--seed",
        type=_non_negative,
        default=None,
        metavar="N",
        help="seed of the initial noise and run perturbations",
    )
    p.add_argument(
        "--spinup-days",
        type=_non_negative,
        default=None,
        metavar="N",
        help="days simulated before the first written state",
    )
    p.add_argument(
        "--gap-days",
        type=_positive,
        default=None,
        metavar="N",
        help="unwritten days between two runs",
    )
    p.add_argument(
        "--dt-minutes",
        type=_positive,
        default=None,
        metavar="MIN",
        help="model time step in minutes (divides the output interval)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the resolved configuration and exit"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    from appa_engine.data.synth import SynthConfig

    overrides = {
        field: getattr(args, opt)
        for opt, field in _OVERRIDES.items()
        if getattr(args, opt) is not None
    }
    config = SynthConfig.preset(args.preset, **overrides)
    if args.dry_run:
        print(json.dumps({"out": args.out, "preset": args.preset, **config.to_dict()}, indent=2))
        return 0
    from appa_engine.data.synth import generate_planet

    path = generate_planet(args.out, config, progress=not args.no_progress)
    print(
        f"wrote {path}: {config.runs} run(s) of {config.days} days, {config.resolution}, "
        f"every {config.output_hours} h"
    )
    return 0

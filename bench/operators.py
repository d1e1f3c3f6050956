"""Cost of building and applying observation operators, beside the plain operations they stand for.

Measured side by side in one run (the median of ``--repeats`` calls after a warm-up):

1. A satellite's day (default: Appa's orbit, 800 km at 75 degrees, sampled 60 times an hour, with
   a 5 degree half-width, on ERA5's 721 x 1440 grid): :func:`swath_mask`, the union of the
   observed cells (what the app shades), and :func:`cells_within`, the cells of every sample
   (what a swath operator is built from).
2. Stations (default: 5,000 random stations, 6 hourly states, 3 surface variables, on the
   64 x 128 grid of the default model): compiling them into an operator, then one application
   :math:`\\mathcal{A}(x)` and one vector-Jacobian product (what guidance calls), against a plain
   nearest-cell gather of as many values (the floor: indexing alone, no interpolation).

These timings were once upper bounds asserted in the tests; they are figures, and figures belong
here. Not a test::

    python bench/operators.py                 # seconds on 2 cores
    python bench/operators.py --repeats 5 --threads 1
    python bench/operators.py --quick         # the smoke test's sizes
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_common_arguments, machine_lines, measure, positive, setup, table  # noqa: E402

from appa_engine.data.grid import Grid  # noqa: E402
from appa_engine.observations.observers import ObservationSet, Stations, time_range  # noqa: E402
from appa_engine.observations.orbits import CircularOrbit, cells_within, sample_times, swath_mask  # noqa: E402

VARIABLES = ("2m_temperature", "10m_u_component_of_wind", "10m_v_component_of_wind")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_arguments(p)
    p.add_argument("--swath-grid", type=positive, nargs=2, default=[721, 1440],
                   help="grid of the swath (latitudes with the poles, longitudes)")
    p.add_argument("--hours", type=positive, default=24, help="hours of ground track")
    p.add_argument("--samples-per-hour", type=positive, default=60, help="ground-track samples per hour")
    p.add_argument("--half-width", type=float, default=5.0, help="swath half-width in degrees")
    p.add_argument("--stations", type=positive, default=5000, help="stations")
    p.add_argument("--states", type=positive, default=6, help="hourly states of the window")
    p.add_argument("--station-grid", type=positive, nargs=2, default=[64, 128],
                   help="grid of the stations' states (latitudes, longitudes)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.swath_grid, args.hours, args.stations = 1, [181, 360], 2, 300
        args.threads = args.threads or 1
    return args


def swath_rows(args, device) -> list[tuple]:
    grid = Grid.regular(*args.swath_grid, poles=True)
    times = sample_times("2021-01-01", np.datetime64("2021-01-01") + np.timedelta64(args.hours, "h"),
                         args.samples_per_hour)
    lon, lat = CircularOrbit(800.0, 75.0).ground_track(times)
    mask = swath_mask(grid, lon, lat, args.half_width)
    t_mask = measure(lambda: swath_mask(grid, lon, lat, args.half_width), device=device, repeats=args.repeats)
    t_cells = measure(lambda: cells_within(grid, lon, lat, args.half_width), device=device,
                      repeats=args.repeats)
    pairs = sum(i.size for i, _ in cells_within(grid, lon, lat, args.half_width))
    where = f"{grid.shape[0]}x{grid.shape[1]}, {lon.size} samples"
    return [
        ("swath_mask (union)", where, f"{int(mask.sum()):,} cells", t_mask.median * 1e3, 1.0),
        ("cells_within (per sample)", where, f"{pairs:,} cell-samples", t_cells.median * 1e3,
         t_cells.median / t_mask.median),
    ]


def station_rows(args, device) -> list[tuple]:
    rng = np.random.default_rng(args.seed)
    grid = Grid.regular(*args.station_grid)
    start = np.datetime64("2021-01-01T00")
    times = time_range(start, start + np.timedelta64(args.states - 1, "h"), "1h")
    stations = Stations(name="dense", lon=rng.uniform(0, 360, args.stations), lat=rng.uniform(-90, 90, args.stations),
                        times=list(times), variables=list(VARIABLES), errors=1.0)
    C = len(VARIABLES)

    def compile_():
        return ObservationSet([stations]).compile(grid=grid, channels=VARIABLES, times=times,
                                                  mean=np.zeros(C), std=np.ones(C))

    t0 = time.perf_counter()
    compiled = compile_()
    t_compile = time.perf_counter() - t0
    n = len(compiled)
    x = torch.randn(1, times.size, C, *grid.shape, device=device)
    cotangent = torch.randn(1, n, device=device)

    def vjp():
        _, pullback = torch.func.vjp(compiled.A, x)
        return pullback(cotangent)

    # The floor: a gather of as many values at random cells, and its transpose (a scatter-add).
    flat = torch.from_numpy(rng.integers(0, x[0].numel(), n)).to(device)

    def gather():
        return x.reshape(1, -1)[:, flat]

    def gather_vjp():
        return torch.zeros_like(x).reshape(1, -1).index_add_(1, flat, cotangent)

    t_apply = measure(lambda: compiled.A(x), device=device, repeats=args.repeats)
    t_vjp = measure(vjp, device=device, repeats=args.repeats)
    t_gather = measure(gather, device=device, repeats=args.repeats)
    t_scatter = measure(gather_vjp, device=device, repeats=args.repeats)
    where = f"{grid.shape[0]}x{grid.shape[1]}, {times.size} states"
    obs = f"{n:,} obs"
    return [
        ("compile (stations to operator)", where, obs, t_compile * 1e3, ""),
        ("A(x) (bilinear, per time)", where, obs, t_apply.median * 1e3, t_apply.median / t_gather.median),
        ("VJP of A", where, obs, t_vjp.median * 1e3, t_vjp.median / t_scatter.median),
        ("floor: gather", where, obs, t_gather.median * 1e3, 1.0),
        ("floor: scatter-add", where, obs, t_scatter.median * 1e3, 1.0),
    ]


def main(argv=None) -> int:
    args = parse_args(argv)
    device = setup(args)
    print("Appa Studio observation-operator benchmark"
          + (" (--quick: small sizes, figures mean little)" if args.quick else ""))
    for line in machine_lines(device):
        print("  " + line)
    print(f"  each time: median of {args.repeats} calls after a warm-up (compile: one call); float32", flush=True)
    print(table(("operation", "grid", "size", "median ms", "x swath_mask"), swath_rows(args, device),
                title=f"1. A satellite swath: {args.hours} h of ground track, half-width {args.half_width:g} deg"))
    print(table(("operation", "grid", "size", "median ms", "x floor"), station_rows(args, device),
                title=f"2. {args.stations:,} stations, {len(VARIABLES)} variables"))
    print("   x floor: A against the gather, its VJP against the scatter-add, of as many values.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

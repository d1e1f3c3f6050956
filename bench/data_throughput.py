"""Read throughput of the training windows against raw zarr reads of the same bytes.

Writes a temporary local zarr store twice, once stacked (one ``state`` variable, dims
``(time, channel, latitude, longitude)``, like a latent store) and once in the canonical layout
(level variables and surface variables, read through :meth:`ChannelSpec.stack`), both chunked one
state per chunk. Then it reads the same states and blankets

- raw: ``zarr.open_array`` and slicing (``arr[t]``, ``arr[t:t+K]``),
- through :class:`StateDataset` / :class:`BlanketDataset` and a ``DataLoader``,
- the same, read into memory first (``load()``, what training does for a dataset within
  ``loop.in_memory_gib``; the one read of the whole store is timed and printed apart),

and prints the median rate over several repetitions and the ratio to raw. Everything is
measured in the same run. Not a test::

    python bench/data_throughput.py                      # 200 states, 20 channels, 128×64
    python bench/data_throughput.py --workers 2 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
import zarr
from torch.utils.data import DataLoader, Subset

from appa_engine.data.channels import ChannelSpec
from appa_engine.data.stats import Statistics
from appa_engine.data.windows import BlanketDataset, StateDataset


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--states", type=positive, default=200, help="time steps in the store")
    p.add_argument("--channels", type=positive, default=20, help="channels (at least 3)")
    p.add_argument("--nlat", type=positive, default=64, help="latitudes")
    p.add_argument("--nlon", type=positive, default=128, help="longitudes")
    p.add_argument("--length", type=positive, default=8, help="blanket length K")
    p.add_argument("--blankets", type=positive, default=16, help="blankets read per repetition")
    p.add_argument("--batch-size", type=positive, default=8, help="DataLoader batch size")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--repeats", type=positive, default=3, help="repetitions (the median is shown)")
    p.add_argument("--dir", type=Path, default=None, help="parent of the temporary stores")
    return p.parse_args(argv)


def make_stores(root: Path, args) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    nt, nc, nlat, nlon = args.states, args.channels, args.nlat, args.nlon
    x = rng.standard_normal((nt, nc, nlat, nlon), dtype=np.float32)
    time_ = pd.date_range("2000-01-01", periods=nt, freq="6h")
    lat = 90 - (np.arange(nlat) + 0.5) * 180 / nlat
    lon = np.arange(nlon) * 360 / nlon
    coords = {"time": time_, "latitude": lat, "longitude": lon}

    # canonical layout: 2 surface variables and 3 level variables sharing the other channels
    n_levels = max(1, (nc - 2) // 3)
    n_surface = nc - 3 * n_levels
    levels = np.arange(n_levels) * 50 + 100
    data = {
        name: (("time", "level", "latitude", "longitude"), x[:, i * n_levels : (i + 1) * n_levels])
        for i, name in enumerate(("geopotential", "temperature", "u_component_of_wind"))
    }
    for j in range(n_surface):
        data[f"surface_{j}"] = (("time", "latitude", "longitude"), x[:, 3 * n_levels + j])
    canonical = xr.Dataset(data, coords={**coords, "level": levels})
    spec = ChannelSpec.from_dataset(canonical)
    stacked = spec.stack(canonical).to_dataset(name="state")

    enc = {v: {"chunks": (1,) + canonical[v].shape[1:]} for v in canonical.data_vars}
    canonical.to_zarr(root / "canonical.zarr", consolidated=False, encoding=enc)
    enc = {"state": {"chunks": (1, nc, nlat, nlon)}}
    stacked.to_zarr(root / "stacked.zarr", consolidated=False, encoding=enc)
    return root / "stacked.zarr", root / "canonical.zarr"


def rate(fn, n_items: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(n_items / (time.perf_counter() - t0))
    return statistics.median(rates)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        stacked, canonical = make_stores(Path(tmp), args)
        raw = zarr.open_array(stacked / "state", mode="r")
        nt, K = args.states, args.length
        names = [str(c) for c in xr.open_zarr(stacked, consolidated=False)["channel"].values]
        # the values do not matter for the timing; unit statistics keep the setup short
        stats = Statistics(ChannelSpec(tuple(names)), np.zeros(len(names)), np.ones(len(names)))
        starts = np.linspace(0, nt - K, min(args.blankets, nt - K + 1)).astype(int)
        state_bytes = raw.nbytes // nt

        def loader(dataset):
            return DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)

        def drain(dataset):
            return lambda: [None for _ in loader(dataset)]

        def raw_states():
            for t in range(nt):
                np.asarray(raw[t])

        def raw_blankets():
            for t in starts:
                np.asarray(raw[t : t + K])

        rows, loads = [], []
        r_state = rate(raw_states, nt, args.repeats)
        r_blanket = rate(raw_blankets, len(starts), args.repeats)
        rows.append(("raw zarr", "state", r_state, 1.0, state_bytes))
        rows.append(("raw zarr", f"blanket K={K}", r_blanket, 1.0, K * state_bytes))
        for memory in (False, True):  # streamed from the store, then read into memory first
            where = " in memory" if memory else ""
            for label, path in (("stacked store", stacked), ("canonical store", canonical)):
                t0 = time.perf_counter()
                states = StateDataset(path, stats=stats)
                if memory:
                    states.load()
                    loads.append((label, time.perf_counter() - t0, states.nbytes))
                r = rate(drain(states), len(states), args.repeats)
                rows.append((f"StateDataset{where}, {label}", "state", r, r / r_state, state_bytes))
                blankets = BlanketDataset(path, length=K, step=1, stats=stats)
                if memory:
                    blankets.load()
                subset = Subset(blankets, [int(s) for s in starts])
                r = rate(drain(subset), len(subset), args.repeats)
                rows.append((f"BlanketDataset{where}, {label}", f"blanket K={K}", r, r / r_blanket,
                             K * state_bytes))

    print(
        f"{nt} states of {args.channels} channels on {args.nlon}×{args.nlat}, "
        "one state per chunk; "
        f"DataLoader batch {args.batch_size}, {args.workers} workers; median of {args.repeats}"
    )
    print(f"{'reader':<42} {'item':<12} {'items/s':>9} {'MB/s':>8} {'vs raw':>7}")
    for name, item, r, ratio, nbytes in rows:
        print(f"{name:<42} {item:<12} {r:9.1f} {r * nbytes / 1e6:8.1f} {ratio:7.2f}")
    for label, seconds, nbytes in loads:
        print(f"load() of the {label}: {nbytes / 1e6:.0f} MB in {seconds:.2f} s "
              f"({nt / seconds:.0f} states/s, once per training run)")


if __name__ == "__main__":
    main()

"""`appa evaluate` end to end on temporary zarr / NetCDF stores."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from appa_engine.cli.evaluate import register
from appa_engine.errors import DataError
from appa_engine.metrics.evaluate import evaluate


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="appa")
    register(p.add_subparsers(dest="command", required=True))
    return p


def call(*argv: str) -> int:
    args = parser().parse_args(["evaluate", *map(str, argv)])
    return args.handler(args)


def stores(tmp_path, rng, *, truth_grid=(4, 8)):
    nlat, nlon = truth_grid
    coords = {
        "time": pd.date_range("2021-01-01", periods=4, freq="1h"),
        "level": [500, 850],
        "latitude": 90 - (np.arange(nlat) + 0.5) * 180 / nlat,
        "longitude": np.arange(nlon) * 360 / nlon,
    }
    truth = xr.Dataset(
        {
            "temperature": (
                ("time", "level", "latitude", "longitude"),
                rng.normal(size=(4, 2, nlat, nlon)),
                {"units": "K"},
            ),
            "2m_temperature": (
                ("time", "latitude", "longitude"),
                rng.normal(size=(4, nlat, nlon)),
                {"units": "K"},
            ),
        },
        coords=coords,
    )
    t = truth.isel(time=slice(1, 4)).isel(latitude=slice(0, 4), longitude=slice(0, 8))
    t = t.assign_coords(latitude=90 - (np.arange(4) + 0.5) * 45, longitude=np.arange(8) * 45.0)
    run = xr.Dataset(
        {
            n: (("member",) + a.dims, a.values[None] + rng.normal(size=(3,) + a.shape), a.attrs)
            for n, a in t.data_vars.items()
        },
        coords=t.coords,
    )
    truth.to_zarr(tmp_path / "truth.zarr", consolidated=False)
    run.to_zarr(tmp_path / "run.zarr", consolidated=False)
    return run, truth


def test_end_to_end_zarr(tmp_path, rng, capsys):
    run, truth = stores(tmp_path, rng)
    out = tmp_path / "scores" / "metrics.nc"
    assert (
        call(tmp_path / "run.zarr", "--truth", tmp_path / "truth.zarr", "--out", out, "--lead-time")
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == [
        "variable",
        "level",
        "lead_time",
        "rmse",
        "crps",
        "spread",
        "ssr",
    ]
    assert "2m_temperature" in printed and "+2h" in printed and f"wrote {out}" in printed
    written = xr.open_dataset(out)
    expected = evaluate(run, truth, lead_dim="lead_time")
    xr.testing.assert_allclose(written.load(), expected)
    assert written.attrs["ensemble_size"] == 3
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_netcdf_run_variables_and_summary(tmp_path, rng, capsys):
    run, _truth = stores(tmp_path, rng)
    run.to_netcdf(tmp_path / "run.nc")
    assert (
        call(
            tmp_path / "run.nc",
            "--truth",
            tmp_path / "truth.zarr",
            "--variables",
            "temperature",
            "--summary",
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 2  # header, rule, one row per level
    assert all(line.startswith("temperature") for line in lines[2:])


def test_errors(tmp_path, rng):
    stores(tmp_path, rng, truth_grid=(8, 16))
    with pytest.raises(DataError, match=r"truth store on another grid.*4×8.*8×16"):
        call(tmp_path / "run.zarr", "--truth", tmp_path / "truth.zarr")
    with pytest.raises(DataError, match="does not exist"):
        call(tmp_path / "missing.zarr", "--truth", tmp_path / "truth.zarr")
    with pytest.raises(SystemExit):
        parser().parse_args(["evaluate", str(tmp_path / "run.zarr")])  # --truth is required

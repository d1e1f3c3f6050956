"""`appa scenario` → `appa assimilate` → `appa evaluate`, and `appa sample`, on the tiny model."""

from __future__ import annotations

import numpy as np
import xarray as xr

from appa_engine.cli import main


def test_scenario_assimilate_evaluate(tiny_package, tiny_store, tmp_path, capsys):
    scenario = tmp_path / "scenario.yaml"
    assert main(["scenario", "--model", str(tiny_package), "--truth", str(tiny_store), "--start", "2020-01-03",
                 "--hours", "12", "--stations", "30", "--members", "2", "--out", str(scenario)]) == 0
    assert main(["assimilate", "--scenario", str(scenario), "--model", str(tiny_package), "--out",
                 str(tmp_path / "run.zarr"), "--steps", "3", "--quiet"]) == 0
    run = xr.open_zarr(tmp_path / "run.zarr", consolidated=False)
    assert run.sizes["member"] == 2 and run.sizes["time"] == 3 and run.sizes["obs"] == 30 * 3 * 2
    assert "reanalysis" in run.attrs["scenario"]
    assert main(["evaluate", str(tmp_path / "run.zarr"), "--truth", str(tiny_store), "--out",
                 str(tmp_path / "metrics.nc")]) == 0
    out = capsys.readouterr().out
    assert "rmse" in out.lower() and "temperature" in out
    metrics = xr.open_dataset(tmp_path / "metrics.nc")
    assert np.isfinite(metrics["temperature"].sel(metric="rmse")).all()

    # the same scenario again gives the same ensemble (seeded)
    assert main(["assimilate", "--scenario", str(scenario), "--model", str(tiny_package), "--out",
                 str(tmp_path / "again.nc"), "--steps", "3", "--quiet"]) == 0
    again = xr.open_dataset(tmp_path / "again.nc")
    np.testing.assert_array_equal(again["temperature"].values, run["temperature"].values)


def test_sample_prior(tiny_package, tmp_path):
    assert main(["sample", "--model", str(tiny_package), "--start", "2020-01-01", "--hours", "30",
                 "--members", "2", "--steps", "3", "--out", str(tmp_path / "prior.zarr"), "--quiet"]) == 0
    ds = xr.open_zarr(tmp_path / "prior.zarr", consolidated=False)
    assert ds.sizes["time"] == 6 and ds.attrs["prior_only"] == 1  # 30 h at 6 h: 6 states > K = 4: stitched


def test_missing_scenario_is_a_clear_error(tmp_path, capsys):
    assert main(["assimilate", "--scenario", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "x.zarr")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()

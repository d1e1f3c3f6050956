"""``appa data info`` / ``appa data convert`` end to end on temporary stores."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from appa_engine.cli import main
from appa_engine.cli.data import parse_time
from appa_engine.data import schema
from appa_engine.data.readers import open_dataset, validate_canonical


@pytest.fixture(scope="module")
def mock() -> xr.Dataset:
    return schema.mock_canonical(6, nlat=16, nlon=32, levels=(500, 850), seed=4)


@pytest.fixture(scope="module")
def cds(mock, tmp_path_factory) -> Path:
    return schema.write_cds_netcdf(mock, tmp_path_factory.mktemp("cli") / "era5.nc")


def test_help_lists_the_data_group(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "data" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["data", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "info" in out and "convert" in out
    with pytest.raises(SystemExit) as e:
        main(["data", "convert", "--help"])
    assert "--chunk-time" in capsys.readouterr().out


def test_info(cds, capsys):
    assert main(["data", "info", str(cds)]) == 0
    out = capsys.readouterr().out
    assert "variables  10" in out and "2m_temperature" in out
    assert "levels     2: 500, 850 hPa" in out
    assert "grid       16 × 32 (cell-centred)" in out and "11.25° × 11.25°" in out
    assert "2020-01-01 00:00 → 2020-01-02 06:00, 6 steps, every 6h" in out
    assert main(["data", "info", str(cds), "--variables", "t,msl", "--levels", "850", "--time", "2020-01-01T12:"]) == 0
    out = capsys.readouterr().out
    assert "variables  2" in out and "levels     1: 850 hPa" in out
    assert "2020-01-01 12:00 → 2020-01-02 06:00, 4 steps" in out
    # 2 variables × 4 times × 16 × 32 float32, one of them on one level.
    assert "size       16.0 KiB" in out


def test_info_errors_are_printed_without_traceback(cds, tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "missing.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and "Traceback" not in err
    assert main(["data", "info", str(cds), "--levels", "300"]) == 2
    assert "hint: available levels (hPa): 500, 850" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["data", "info", str(cds), "--time", "yesterday"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main(["data", "info", str(cds), "--levels", "high"])


def test_convert_writes_a_canonical_store(cds, mock, tmp_path, capsys):
    out = tmp_path / "out.zarr"
    argv = ["data", "convert", str(cds), str(out), "--chunk-time", "4", "--no-progress"]
    assert main(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    # The store as written (not re-normalised by the readers) is canonical.
    raw = xr.open_zarr(out, consolidated=False)
    validate_canonical(raw)
    assert raw["temperature"].encoding["chunks"] == (4, 2, 16, 32)
    xr.testing.assert_identical(raw.load(), mock)
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]  # no temporary leftovers
    # Existing targets are kept unless --overwrite.
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    sel = ["--variables", "temperature", "--levels", "850", "--time", "2020-01-01T06:2020-01-01T18"]
    assert main(argv + sel + ["--overwrite"]) == 0
    xr.testing.assert_identical(
        open_dataset(out).load(),
        mock[["temperature"]].sel(level=[850]).isel(time=slice(1, 4)),
    )


def test_convert_with_progress_bar(mock, tmp_path, capsys):
    src = schema.write_wb2_zarr(mock, tmp_path / "src.zarr")
    assert main(["data", "convert", str(src), str(tmp_path / "out.zarr"), "--chunk-time", "2"]) == 0
    assert "3/3" in capsys.readouterr().err  # tqdm: 6 times in chunks of 2
    xr.testing.assert_identical(open_dataset(tmp_path / "out.zarr"), mock)


def test_parse_time():
    assert parse_time("2020-01-01") == "2020-01-01"
    assert parse_time("2020-01-01T06:00") == "2020-01-01T06:00"
    assert parse_time("2020-01:2020-03") == slice("2020-01", "2020-03")
    assert parse_time("2020-01-01T06:00:2020-01-02") == slice("2020-01-01T06:00", "2020-01-02")
    assert parse_time("2020-01-01T06:00..2020-01-02T12:30") == slice("2020-01-01T06:00", "2020-01-02T12:30")
    assert parse_time(":2020-02-01") == slice(None, "2020-02-01")
    assert parse_time("2020-02-01:") == slice("2020-02-01", None)
    for bad in ("yesterday", "2020-13-01", "2020-01-01:tomorrow"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_time(bad)


def test_console_script(cds):
    script = Path(sys.executable).with_name("appa")
    if not script.exists():
        pytest.skip(f"console script {script} not installed (pip install -e .)")
    result = subprocess.run(
        [str(script), "data", "info", str(cds), "--variables", "z"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "geopotential" in result.stdout and "variables  1" in result.stdout
    assert np.isin("levels     2: 500, 850 hPa", result.stdout.splitlines())

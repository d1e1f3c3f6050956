"""Tests of appa_engine.data.dates: hand-computed phases of the year and of the day."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from appa_engine.data.dates import DATE_FEATURES, TROPICAL_YEAR_DAYS, date_features
from appa_engine.errors import DataError


@pytest.mark.parametrize(
    "hour, sin_h, cos_h",
    [(0, 0.0, 1.0), (6, 1.0, 0.0), (12, 0.0, -1.0), (18, -1.0, 0.0), (3, np.sqrt(0.5), np.sqrt(0.5))],
)
def test_hour_of_day(hour, sin_h, cos_h):
    f = date_features([np.datetime64(f"2013-07-19T{hour:02d}:00")])
    assert f.shape == (1, len(DATE_FEATURES)) and f.dtype == np.float32
    np.testing.assert_allclose(f[0, 2:], [sin_h, cos_h], atol=1e-7)


def test_year_progress_follows_the_tropical_year():
    epoch = np.datetime64("2000-01-01T00:00", "ns")
    year_ns = TROPICAL_YEAR_DAYS * 86400e9
    times = epoch + np.array(
        [0, year_ns / 4, year_ns / 2, 3 * year_ns / 4, year_ns, 20 * year_ns]
    ).astype("timedelta64[ns]")
    f = date_features(times)
    expected = [(0, 1), (1, 0), (0, -1), (-1, 0), (0, 1), (0, 1)]
    np.testing.assert_allclose(f[:, :2], expected, atol=1e-6)
    # one calendar year after the epoch, the phase is short of a full turn by 0.24219 days... plus
    # the leap day of 2000: 366 days - 365.24219 days = 0.75781 days ahead
    f1 = date_features(np.datetime64("2001-01-01T00:00"))
    angle = 2 * np.pi * (366 - TROPICAL_YEAR_DAYS) / TROPICAL_YEAR_DAYS
    np.testing.assert_allclose(f1[:2], [np.sin(angle), np.cos(angle)], atol=1e-6)


def test_continuity_and_unit_circle():
    times = pd.date_range("1999-12-30", "2001-01-02", freq="1h")
    f = date_features(times).astype(np.float64)
    np.testing.assert_allclose(f[:, 0] ** 2 + f[:, 1] ** 2, 1, atol=1e-6)
    np.testing.assert_allclose(f[:, 2] ** 2 + f[:, 3] ** 2, 1, atol=1e-6)
    # consecutive hours move the year phase by 2π/(24·365.24) and never jump at new year
    step = np.abs(np.diff(f[:, :2], axis=0)).max()
    assert step < 2 * np.pi / (24 * TROPICAL_YEAR_DAYS) * 1.01
    # the hour features repeat every day exactly
    np.testing.assert_allclose(f[24:, 2:], f[:-24, 2:], atol=1e-6)


def test_input_types_agree():
    times = pd.date_range("2021-03-01", periods=5, freq="6h")
    ref = date_features(times.values)
    np.testing.assert_array_equal(date_features(times), ref)
    np.testing.assert_array_equal(date_features(xr.DataArray(times, dims="time")), ref)
    np.testing.assert_array_equal(date_features([str(t) for t in times.values]), ref)
    np.testing.assert_array_equal(date_features(times.values[2]), ref[2])  # scalar -> (D,)
    like = torch.zeros(1, dtype=torch.float64)
    t = date_features(times, like=like)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64 and t.shape == (5, 4)
    np.testing.assert_allclose(t.numpy(), ref)


def test_bad_times():
    with pytest.raises(DataError, match="as dates"):
        date_features(["not a date"])
    with pytest.raises(DataError, match="NaT"):
        date_features(np.array(["2020-01-01", "NaT"], dtype="datetime64[ns]"))

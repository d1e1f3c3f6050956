"""Zonal power spectra: Parseval, pure waves, an explicit DFT, bands and wavelengths."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from appa_engine.errors import DataError
from appa_engine.metrics.deterministic import area_mean
from appa_engine.metrics.spectra import wavelength_km, zonal_spectrum


def field(values: np.ndarray, *, nlat: int, nlon: int, units: str = "K") -> xr.DataArray:
    lat = 90 - (np.arange(nlat) + 0.5) * 180 / nlat
    lon = np.arange(nlon) * 360 / nlon
    dims = ("time", "latitude", "longitude")[-values.ndim :]
    coords = {"latitude": lat, "longitude": lon}
    return xr.DataArray(
        values, dims=dims, coords=coords, name="temperature", attrs={"units": units}
    )


@pytest.mark.parametrize("nlon", [16, 15])
def test_parseval(rng, nlon):
    x = field(rng.normal(size=(3, 8, nlon)) + 2.0, nlat=8, nlon=nlon)
    p = zonal_spectrum(x)
    assert p.dims == ("time", "wavenumber")
    assert list(p["wavenumber"].values) == list(range(nlon // 2 + 1))
    np.testing.assert_allclose(p.sum("wavenumber"), area_mean(x**2), rtol=1e-12)
    assert p.attrs["units"] == "(K)^2"
    assert "wavenumber" in p.attrs["definition"]


def test_pure_waves():
    nlat, nlon = 4, 32
    lam = np.deg2rad(np.arange(nlon) * 360 / nlon)
    amplitude, k0 = 3.0, 5
    row = 1.5 + amplitude * np.cos(k0 * lam + 0.7)
    p = zonal_spectrum(field(np.tile(row, (nlat, 1)), nlat=nlat, nlon=nlon))
    expected = np.zeros(nlon // 2 + 1)
    expected[0], expected[k0] = 1.5**2, amplitude**2 / 2
    np.testing.assert_allclose(p.values, expected, atol=1e-12)
    # The Nyquist wave (-1)^n has no negative twin: all its power sits at k = W/2.
    nyquist = zonal_spectrum(
        field(np.tile(np.cos(np.pi * np.arange(nlon)), (nlat, 1)), nlat=nlat, nlon=nlon)
    )
    assert float(nyquist[-1]) == pytest.approx(1.0) and float(nyquist[:-1].sum()) == pytest.approx(
        0.0, abs=1e-20
    )


def test_against_explicit_dft(rng):
    nlat, nlon = 5, 9
    x = rng.normal(size=(nlat, nlon))
    p = zonal_spectrum(field(x, nlat=nlat, nlon=nlon))
    lat = 90 - (np.arange(nlat) + 0.5) * 180 / nlat
    w = np.sin(np.deg2rad(lat + 18)) - np.sin(np.deg2rad(lat - 18))
    for k in range(nlon // 2 + 1):
        row_power = []
        for i in range(nlat):
            X = sum(x[i, n] * np.exp(-2j * np.pi * k * n / nlon) for n in range(nlon))
            row_power.append((1 if k == 0 else 2) * abs(X) ** 2 / nlon**2)
        assert float(p.sel(wavenumber=k)) == pytest.approx(
            np.dot(w, row_power) / w.sum(), rel=1e-10
        )


def test_band_keeps_full_grid_weights(rng):
    nlat, nlon = 12, 16
    x = field(rng.normal(size=(nlat, nlon)), nlat=nlat, nlon=nlon)
    p = zonal_spectrum(x, band=(30, 90))
    rows = x.latitude.values >= 30
    lat = x.latitude.values[rows]
    w = np.sin(np.deg2rad(lat + 7.5)) - np.sin(np.deg2rad(lat - 7.5))  # true band areas
    mean_sq = np.dot(w, (x.values[rows] ** 2).mean(axis=1)) / w.sum()
    assert float(p.sum()) == pytest.approx(mean_sq, rel=1e-12)
    # The band order does not matter; a band with no rows is an error.
    np.testing.assert_allclose(p, zonal_spectrum(x, band=(90, 30)))
    with pytest.raises(DataError, match="no latitude"):
        zonal_spectrum(x, band=(1, 2))


def test_wavelength():
    assert wavelength_km(1, 0.0) == pytest.approx(2 * np.pi * 6371.0)
    assert wavelength_km(2, 60.0) == pytest.approx(np.pi * 6371.0 / 2)
    assert np.isinf(wavelength_km(0, 45.0))
    x = field(np.ones((4, 8)), nlat=4, nlon=8)
    p = zonal_spectrum(x, wavelength_at=45.0)
    np.testing.assert_allclose(p["wavelength"].values[1:], wavelength_km(np.arange(1, 5), 45.0))
    assert p["wavelength"].attrs["units"] == "km"


def test_dataset_and_errors(rng):
    x = field(rng.normal(size=(2, 4, 8)), nlat=4, nlon=8)
    ds = xr.Dataset({"temperature": x, "other": x * 2})
    p = zonal_spectrum(ds)
    np.testing.assert_allclose(p["other"], 4 * p["temperature"], rtol=1e-12)
    with pytest.raises(DataError, match="longitude"):
        zonal_spectrum(x.isel(longitude=0))

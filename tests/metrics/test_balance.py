"""Geostrophic balance on analytic fields: exact geostrophic wind, balanced and unbalanced flows."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from appa_engine.errors import DataError
from appa_engine.metrics.balance import EARTH_RADIUS as a
from appa_engine.metrics.balance import OMEGA, geostrophic_balance, geostrophic_wind

U0, B, K = 20.0, 4.0e5, 2  # jet speed (m/s), wave amplitude (m²/s²), zonal wavenumber


def coords(
    *, poles: bool = False, nlat: int = 90, nlon: int = 180
) -> tuple[np.ndarray, np.ndarray]:
    lat = np.linspace(90, -90, nlat + 1) if poles else 90 - (np.arange(nlat) + 0.5) * 180 / nlat
    return lat, np.arange(nlon) * 360 / nlon


def analytic(**kw) -> xr.Dataset:
    """Φ = -Ω a U0 sin²φ + B sinφ cosφ cos(kλ) and its exact geostrophic wind, on two levels."""
    lat, lon = coords(**kw)
    phi, lam = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    f = 2 * OMEGA * np.sin(phi)
    Phi = (
        5.0e4 - OMEGA * a * U0 * np.sin(phi) ** 2 + B * np.sin(phi) * np.cos(phi) * np.cos(K * lam)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        u = U0 * np.cos(phi) - B * np.cos(2 * phi) * np.cos(K * lam) / (f * a)
    v = -K * B * np.sin(K * lam) / (2 * OMEGA * a)
    dims = ("time", "level", "latitude", "longitude")

    def stack(z):
        return np.stack([z, 0.5 * z])[None]  # level 850 is half of level 500: still balanced

    return xr.Dataset(
        {
            "geopotential": (dims, stack(Phi), {"units": "m2 s-2"}),
            "u_component_of_wind": (dims, stack(u), {"units": "m s-1"}),
            "v_component_of_wind": (dims, stack(v), {"units": "m s-1"}),
        },
        coords={
            "time": [np.datetime64("2020-01-01")],
            "level": [500, 850],
            "latitude": lat,
            "longitude": lon,
        },
    )


def test_geostrophic_wind_matches_the_closed_form():
    ds = analytic()
    u_g, v_g = geostrophic_wind(ds["geopotential"])
    assert u_g.dims == ds["geopotential"].dims and u_g.attrs["units"] == "m s-1"
    valid = np.abs(ds.latitude) >= 15
    u, v = ds["u_component_of_wind"].where(valid), ds["v_component_of_wind"].where(valid)
    assert float(abs(u_g - u).max()) < 2e-3 * float(abs(u).max())
    assert float(abs(v_g - v).max()) < 2e-3 * float(abs(v).max())
    assert bool(u_g.where(~valid).isnull().all()) and bool(u_g.where(valid).notnull().sum() > 0)


def test_balanced_flow_has_a_small_ratio():
    out = geostrophic_balance(analytic())
    assert out["ageostrophic_ratio"].dims == ("time", "level")
    assert float(out["ageostrophic_ratio"].max()) < 5e-3
    assert float(out["geostrophic_correlation"].min()) > 0.9999
    for name in ("ageostrophic_ratio", "geostrophic_correlation"):
        assert out[name].attrs["units"] == "1" and out[name].attrs["definition"]


def test_unbalanced_flow_has_a_large_ratio(rng):
    ds = analytic()
    speed = float(np.sqrt((ds["u_component_of_wind"] ** 2).mean()))
    noisy = ds.copy()
    for name in ("u_component_of_wind", "v_component_of_wind"):
        noisy[name] = noisy[name].copy(data=rng.normal(scale=speed, size=noisy[name].shape))
    out = geostrophic_balance(noisy)
    assert float(out["ageostrophic_ratio"].min()) > 1.0  # √(1 + |V_g|²/|V|²) in expectation
    assert float(abs(out["geostrophic_correlation"]).max()) < 0.05
    # A flow balanced with the opposite geopotential: ratio ≈ 2, correlation -1.
    flipped = ds.assign(geopotential=-ds["geopotential"])
    out = geostrophic_balance(flipped)
    np.testing.assert_allclose(out["ageostrophic_ratio"], 2.0, rtol=1e-2)
    np.testing.assert_allclose(out["geostrophic_correlation"], -1.0, atol=1e-3)


def test_poles_and_equator_are_excluded():
    ds = analytic(poles=True, nlat=60)
    u_g, v_g = geostrophic_wind(ds["geopotential"], equator_band=10.0)
    lat = ds.latitude
    excluded = (abs(lat) < 10) | (abs(lat) == 90)
    assert bool(u_g.where(excluded).isnull().all()) and bool(v_g.where(excluded).isnull().all())
    assert bool(np.isfinite(u_g.where(~excluded, 0.0)).all())
    assert float(geostrophic_balance(ds)["ageostrophic_ratio"].max()) < 1e-2


def test_errors():
    ds = analytic(nlat=18, nlon=36)
    with pytest.raises(DataError, match="lacks"):
        geostrophic_balance(ds.drop_vars("geopotential"))
    with pytest.raises(DataError, match="global grid"):
        geostrophic_wind(ds["geopotential"].isel(longitude=slice(0, 10)))

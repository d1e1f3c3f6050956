"""The grid and the one definition of area weights."""

from __future__ import annotations

import numpy as np
import pytest

from appa_engine.data.grid import Grid, area_weights
from appa_engine.errors import DataError


@pytest.mark.parametrize("nlat", [32, 64, 121, 721])
def test_area_weights_mean_one_and_band_areas(nlat):
    poles = nlat % 2 == 1
    grid = Grid.regular(nlat, 2 * (nlat - poles), poles=poles)
    w = grid.weights()
    assert w.shape == (nlat,)
    assert np.isclose(w.mean(), 1.0)
    assert np.all(w > 0)
    assert np.allclose(w, w[::-1])  # symmetric about the equator
    # Brute force: band areas between edges half-way to the neighbours (clipped at the poles).
    lat = grid.lat
    edges = np.concatenate([[90.0], (lat[1:] + lat[:-1]) / 2, [-90.0]])
    band = np.sin(np.deg2rad(edges[:-1])) - np.sin(np.deg2rad(edges[1:]))
    assert np.allclose(w, band / band.mean())


def test_area_weights_cell_centred_close_to_cosine():
    grid = Grid.regular(64, 128)
    cos = np.cos(np.deg2rad(grid.lat))
    assert np.allclose(grid.weights(), cos / cos.mean(), rtol=1e-3)


def test_area_weights_order_follows_input():
    lat = np.linspace(-90, 90, 19)
    assert np.allclose(area_weights(lat), area_weights(lat[::-1])[::-1])


def test_grid_properties_and_roundtrip():
    grid = Grid.regular(721, 1440, poles=True)
    assert grid.shape == (721, 1440)
    assert grid.has_poles and grid.dlat == pytest.approx(0.25) and grid.dlon == pytest.approx(0.25)
    assert Grid.from_dict(grid.to_dict()) == grid
    assert not Grid.regular(32, 64).has_poles


@pytest.mark.parametrize(
    "lat, lon, match",
    [
        (np.linspace(-90, 90, 5), np.arange(8) * 45.0, "descending"),
        (np.linspace(90, -90, 5), np.arange(8) * 45.0 - 180, r"\[0, 360\)"),
        (np.array([90, 60, 0, -60, -90.0]), np.arange(8) * 45.0, "irregular"),
        (np.linspace(90, -90, 5), np.arange(4) * 45.0, "cover the globe"),
    ],
)
def test_grid_rejects_bad_coordinates(lat, lon, match):
    with pytest.raises(DataError, match=match):
        Grid.from_arrays(lat, lon)


def test_gaussian_latitudes_are_refused_with_a_hint():
    # Gaussian latitudes (roots of the Legendre polynomial) are not evenly spaced.
    lat = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(32)[0]))[::-1]
    with pytest.raises(DataError, match="irregular") as info:
        Grid.from_arrays(lat, np.arange(64) * 360 / 64)
    assert "regrid" in info.value.hint

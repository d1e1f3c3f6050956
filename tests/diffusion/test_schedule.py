"""Tests of appa_engine.diffusion.schedule: the rectified VE schedule and its inverse."""

from __future__ import annotations

import math

import pytest
import torch

from appa_engine.diffusion.schedule import RectifiedSchedule
from appa_engine.errors import ConfigError


def test_endpoints_and_midpoint():
    schedule = RectifiedSchedule(sigma_min=1e-3, sigma_max=1e3)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    sigma = schedule(t)

    assert sigma[0].item() == pytest.approx(1e-3, rel=1e-12)
    assert sigma[2].item() == pytest.approx(1e3, rel=1e-12)
    # sigma_min * sigma_max = 1: symmetric in log sigma, sigma(1/2) = 1.
    assert sigma[1].item() == pytest.approx(1.0, rel=1e-12)


def test_hand_computed_values():
    schedule = RectifiedSchedule(sigma_min=0.01, sigma_max=50.0)
    t = torch.tensor([0.25, 0.9], dtype=torch.float64)
    expected = [
        (0.25 + 0.75 * 0.01) / (0.75 + 0.25 / 50.0),
        (0.9 + 0.1 * 0.01) / (0.1 + 0.9 / 50.0),
    ]

    assert schedule.sigma(t).tolist() == pytest.approx(expected, rel=1e-12)


def test_strictly_increasing():
    schedule = RectifiedSchedule()
    sigma = schedule(torch.linspace(0, 1, 1001, dtype=torch.float64))

    assert torch.all(sigma[1:] > sigma[:-1])


def test_inverse_both_ways():
    schedule = RectifiedSchedule(sigma_min=2e-3, sigma_max=300.0)
    t = torch.linspace(0, 1, 257, dtype=torch.float64)
    sigma = torch.logspace(math.log10(2e-3), math.log10(300.0), 101, dtype=torch.float64)

    torch.testing.assert_close(schedule.t_of_sigma(schedule(t)), t, rtol=0, atol=1e-12)
    torch.testing.assert_close(schedule(schedule.t_of_sigma(sigma)), sigma, rtol=1e-12, atol=0)


def test_any_shape_and_dtype():
    schedule = RectifiedSchedule()
    t = torch.rand(2, 3, 4)

    assert schedule(t).shape == (2, 3, 4)
    assert schedule(t).dtype == torch.float32
    assert schedule(t.double()).dtype == torch.float64
    torch.testing.assert_close(schedule(t).double(), schedule(t.double()), rtol=1e-5, atol=0)


@pytest.mark.parametrize("bounds", [(0.0, 1e3), (1e-3, 1e-3), (10.0, 1.0), (-1.0, 1.0)])
def test_bad_bounds_raise(bounds):
    sigma_min, sigma_max = bounds
    with pytest.raises(ConfigError, match="0 < sigma_min < sigma_max"):
        RectifiedSchedule(sigma_min=sigma_min, sigma_max=sigma_max)

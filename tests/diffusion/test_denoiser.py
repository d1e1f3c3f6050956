"""Tests of appa_engine.diffusion.denoiser: EDM preconditioning and the weighted loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from appa_engine.diffusion.denoiser import PreconditionedDenoiser, denoising_loss, expand_sigma
from appa_engine.diffusion.gaussian import GaussianDenoiser
from appa_engine.diffusion.schedule import RectifiedSchedule
from appa_engine.errors import ConfigError


def zero_backbone(x, c_noise, **cond):
    return torch.zeros_like(x)


def test_coefficients_hand_computed():
    denoiser = PreconditionedDenoiser(zero_backbone, sigma_data=0.5)
    sigma = torch.tensor([2.0, 0.1], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = denoiser.coefficients(sigma)

    # sigma = 2, sigma_d = 0.5: sigma^2 + sigma_d^2 = 4.25
    assert c_skip[0].item() == pytest.approx(0.25 / 4.25, rel=1e-12)
    assert c_out[0].item() == pytest.approx(2 * 0.5 / math.sqrt(4.25), rel=1e-12)
    assert c_in[0].item() == pytest.approx(1 / math.sqrt(4.25), rel=1e-12)
    assert c_noise[0].item() == pytest.approx(math.log(2.0) / 4, rel=1e-12)
    # sigma = 0.1: 0.01 + 0.25 = 0.26
    assert c_skip[1].item() == pytest.approx(0.25 / 0.26, rel=1e-12)
    assert c_out[1].item() == pytest.approx(0.1 * 0.5 / math.sqrt(0.26), rel=1e-12)
    # Identities: c_out^2 = sigma^2 c_skip and c_in^2 (sigma^2 + sigma_d^2) = 1.
    torch.testing.assert_close(c_out**2, sigma**2 * c_skip)
    torch.testing.assert_close(c_in**2 * (sigma**2 + 0.25), torch.ones_like(sigma))


def test_zero_backbone_gives_skip_connection():
    denoiser = PreconditionedDenoiser(zero_backbone)
    x_t = torch.randn(3, 4, 2, 5, 6, dtype=torch.float64)  # (B, K, Z, h, w)
    sigma_t = torch.tensor([0.01, 1.0, 100.0], dtype=torch.float64)

    x_hat = denoiser(x_t, sigma_t)

    expected = x_t / (sigma_t**2 + 1).reshape(3, 1, 1, 1, 1)
    torch.testing.assert_close(x_hat, expected)


def test_backbone_receives_scaled_input_noise_and_cond():
    seen = {}

    def backbone(x, c_noise, *, date):
        seen.update(x=x, c_noise=c_noise, date=date)
        return torch.ones_like(x)

    denoiser = PreconditionedDenoiser(backbone, sigma_data=2.0)
    x_t = torch.randn(2, 3, 4, dtype=torch.float64)
    date = torch.randn(2, 3, 4)
    x_hat = denoiser(x_t, 3.0, date=date)

    norm = math.sqrt(9.0 + 4.0)
    torch.testing.assert_close(seen["x"], x_t / norm)
    assert seen["c_noise"].shape == (2,)
    c_noise = torch.full((2,), math.log(3.0) / 4, dtype=torch.float64)
    torch.testing.assert_close(seen["c_noise"], c_noise)
    assert seen["date"] is date
    torch.testing.assert_close(x_hat, 4.0 / 13.0 * x_t + 3.0 * 2.0 / norm)


def test_scalar_and_batched_sigma_agree():
    net = nn.Sequential(nn.Linear(5, 5), nn.Tanh())
    denoiser = PreconditionedDenoiser(lambda x, c_noise: net(x) * c_noise[:, None])
    x_t = torch.randn(4, 5)

    torch.testing.assert_close(denoiser(x_t, 0.7), denoiser(x_t, torch.full((4,), 0.7)))
    torch.testing.assert_close(denoiser(x_t, torch.tensor([0.7])), denoiser(x_t, 0.7))


def test_bad_sigma_shape_raises():
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(4,\)"):
        expand_sigma(torch.ones(3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="scalar"):
        expand_sigma(torch.ones(4, 1), torch.zeros(4, 2))


def test_bad_sigma_data_raises():
    with pytest.raises(ConfigError, match="sigma_data must be positive"):
        PreconditionedDenoiser(zero_backbone, sigma_data=0.0)


def test_loss_of_zero_backbone_is_one_at_every_noise_level():
    # With F = 0 and data of variance sigma_d^2, the error c_skip x_t - x has variance
    # (c_skip - 1)^2 sigma_d^2 + c_skip^2 sigma^2 = c_out^2: the weight 1 / c_out^2 makes the
    # expected loss exactly 1 at every sigma.
    schedule = RectifiedSchedule()
    sigma_d = 0.5
    denoiser = PreconditionedDenoiser(zero_backbone, sigma_data=sigma_d)

    for t in (0.0, 0.1, 0.5, 0.9, 1.0):
        x = sigma_d * torch.randn(4096, 16, dtype=torch.float64)
        loss = denoising_loss(denoiser, x, schedule=schedule, t=torch.tensor(t))
        # mean of 65536 (chi-square / dof) terms: standard error sqrt(2 / 65536) = 0.0055
        assert loss.item() == pytest.approx(1.0, abs=0.03), t


def test_loss_of_exact_gaussian_denoiser_matches_closed_form_and_is_finite():
    # Optimal denoiser of N(mu, Sigma): E ||x_hat - x||^2 = sigma^2 tr(Sigma (Sigma + sigma^2)^-1),
    # so the weighted loss is (1 + sigma^2) tr(G) / n <= 1 + sigma^2, finite as sigma -> 0.
    n = 4
    generator = torch.Generator().manual_seed(1)
    M = torch.randn(n, n, generator=generator, dtype=torch.float64)
    cov = M @ M.T / n + 0.2 * torch.eye(n, dtype=torch.float64)
    mean = torch.randn(n, generator=generator, dtype=torch.float64)
    denoiser = GaussianDenoiser(mean, cov)
    schedule = RectifiedSchedule()
    L = torch.linalg.cholesky(cov)

    for t in (0.0, 0.2, 0.5, 0.8):
        sigma = schedule(torch.tensor(t, dtype=torch.float64))
        G = cov @ torch.linalg.inv(cov + sigma**2 * torch.eye(n, dtype=torch.float64))
        expected = ((1 + sigma**2) * torch.trace(G) / n).item()

        x = mean + torch.randn(20000, n, dtype=torch.float64) @ L.T
        loss = denoising_loss(denoiser, x, schedule=schedule, t=torch.tensor(t)).item()

        assert math.isfinite(loss)
        assert loss == pytest.approx(expected, rel=0.04), t
        if t == 0.0:  # sigma = sigma_min: tr(G) / n -> 1, the weight 1 / sigma^2 = 1e6 cancels
            assert 0.9 < expected <= 1.0 + 1e-6


def test_loss_random_times_backpropagates_and_passes_cond():
    net = nn.Linear(6, 6, dtype=torch.float64)

    def backbone(x, c_noise, *, date):
        return net(x) + date + c_noise[:, None]

    denoiser = PreconditionedDenoiser(backbone)
    x = torch.randn(8, 6, dtype=torch.float64)
    loss = denoising_loss(denoiser, x, schedule=RectifiedSchedule(), date=torch.zeros(8, 6))

    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert net.weight.grad is not None and torch.all(torch.isfinite(net.weight.grad))

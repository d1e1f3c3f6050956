"""Tests of appa_engine.diffusion.guidance.dps: the formula, its limits, and that it guides."""

from __future__ import annotations

import pytest
import torch

from appa_engine.diffusion.gaussian import GaussianDenoiser, kalman_posterior
from appa_engine.diffusion.guidance import DPSDenoiser, MMPSDenoiser
from appa_engine.diffusion.samplers import DDIMSampler
from appa_engine.diffusion.schedule import RectifiedSchedule
from appa_engine.errors import ConfigError, ObservationError

SCHEDULE = RectifiedSchedule()


@pytest.fixture(scope="module")
def setup():
    generator = torch.Generator().manual_seed(0)
    n, N = 6, 3
    M = torch.randn(n, n, generator=generator, dtype=torch.float64)
    prior = GaussianDenoiser(
        torch.randn(n, generator=generator, dtype=torch.float64),
        M @ M.T / n + 0.1 * torch.eye(n, dtype=torch.float64),
    )
    A_matrix = torch.randn(N, n, generator=generator, dtype=torch.float64) / n**0.5
    y = torch.tensor([1.5, -1.0, 0.5], dtype=torch.float64)
    cov_y = torch.tensor([0.2, 0.3, 0.25], dtype=torch.float64)
    return prior, A_matrix, y, cov_y


def test_formula_for_a_linear_operator(setup):
    # Gaussian prior, linear A: grad log N(y | A x_hat, Sigma_y) w.r.t. x_t is
    # G^T A^T Sigma_y^-1 (y - A x_hat) with G = Sigma (Sigma + sigma^2 I)^-1 (symmetric).
    prior, A_matrix, y, cov_y = setup
    sigma, zeta = 0.8, 0.7
    x_t = torch.randn(4, 6, dtype=torch.float64)

    x_hat = prior(x_t, sigma)
    G = prior.cov @ torch.linalg.inv(prior.cov + sigma**2 * torch.eye(6, dtype=torch.float64))
    residual = (y - x_hat @ A_matrix.T) / cov_y
    expected = x_hat + zeta * sigma**2 * residual @ A_matrix @ G.T

    guided = DPSDenoiser(prior, y, lambda x: x @ A_matrix.T, cov_y, zeta=zeta)
    torch.testing.assert_close(guided(x_t, sigma), expected)


def test_zero_scale_is_the_unguided_denoiser(setup):
    prior, A_matrix, y, cov_y = setup
    x_t = torch.randn(4, 6, dtype=torch.float64)

    guided = DPSDenoiser(prior, y, lambda x: x @ A_matrix.T, cov_y, zeta=0.0)
    torch.testing.assert_close(guided(x_t, 2.0), prior(x_t, 2.0))


def test_matches_mmps_when_observations_are_vague(setup):
    # With Sigma_y >> J Sigma_x J^T, MMPS's inverse is ~ Sigma_y^-1: DPS (zeta = 1) ~ MMPS.
    prior, A_matrix, y, _ = setup
    cov_y = torch.full((3,), 1e4, dtype=torch.float64)
    A = lambda x: x @ A_matrix.T  # noqa: E731
    x_t = torch.randn(4, 6, dtype=torch.float64)

    dps = DPSDenoiser(prior, y, A, cov_y)(x_t, 0.5)
    mmps = MMPSDenoiser(prior, y, A, cov_y, iterations=3)(x_t, 0.5)
    x_hat = prior(x_t, 0.5)

    assert (dps - mmps).norm() < 1e-3 * (mmps - x_hat).norm()


def test_guided_sampling_moves_the_mean_towards_y(setup):
    prior, A_matrix, y, cov_y = setup
    A = lambda x: x @ A_matrix.T  # noqa: E731
    m, _ = kalman_posterior(prior.mean, prior.cov, A_matrix, y, cov_y)

    sampler = DDIMSampler(DPSDenoiser(prior, y, A, cov_y), schedule=SCHEDULE, steps=64)
    x_1 = sampler.init((1000, 6), generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    with torch.no_grad():
        x_0 = sampler(x_1)

    assert torch.all(torch.isfinite(x_0))
    prior_misfit = (A(prior.mean[None])[0] - y).norm()  # 1.16
    posterior_misfit = (A(m[None])[0] - y).norm()  # 0.79 (exact posterior mean)
    dps_misfit = (A(x_0.mean(0, keepdim=True))[0] - y).norm()  # 0.72 measured
    assert posterior_misfit < 0.75 * prior_misfit  # the observations are informative
    assert dps_misfit < 0.75 * prior_misfit
    # The unguided ensemble mean stays at the prior's misfit.
    x_0_prior = DDIMSampler(prior, schedule=SCHEDULE, steps=64)(x_1)
    assert (A(x_0_prior.mean(0, keepdim=True))[0] - y).norm() > 0.95 * prior_misfit


def test_output_is_detached(setup):
    prior, A_matrix, y, cov_y = setup
    x_t = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)

    out = DPSDenoiser(prior, y, lambda x: x @ A_matrix.T, cov_y)(x_t, 1.0)

    assert not out.requires_grad


def test_bad_inputs_raise(setup):
    prior, A_matrix, y, cov_y = setup
    A = lambda x: x @ A_matrix.T  # noqa: E731

    with pytest.raises(ConfigError, match="zeta"):
        DPSDenoiser(prior, y, A, cov_y, zeta=-1.0)
    with pytest.raises(ObservationError, match="positive"):
        DPSDenoiser(prior, y, A, torch.zeros(3))
    with pytest.raises(ObservationError, match="returned shape"):
        guided = DPSDenoiser(prior, y, lambda x: x[:, :2], cov_y)
        guided(torch.zeros(1, 6, dtype=torch.float64), 1.0)

"""Tests of appa_engine.diffusion.samplers with the exact denoiser of a Gaussian prior.

Two oracles:

- deterministic samplers integrate the probability-flow ODE, whose flow map is known for a
  Gaussian prior N(mu, Q diag(lambda) Q^T): x_0 = mu + Q diag(sqrt((lambda + sigma_min^2) /
  (lambda + sigma_max^2))) Q^T (x_1 - mu). Compared without Monte Carlo noise.
- stochastic samplers must draw from N(mu, Sigma + sigma_min^2 I). Samples are whitened,
  w = L^-1 (x - mu) with Sigma = L L^T; with N samples each mean component has standard error
  1/sqrt(N) and each covariance entry at most sqrt(2/N). We assert |error| < 5 standard errors.
"""

from __future__ import annotations

import math
import threading

import pytest
import torch

from appa_engine.diffusion.gaussian import GaussianDenoiser
from appa_engine.diffusion.samplers import (
    Cancelled,
    DDIMSampler,
    HeunSampler,
    LMSSampler,
    PCSampler,
    Sampler,
    _lms_weights,
)
from appa_engine.diffusion.schedule import RectifiedSchedule
from appa_engine.errors import ConfigError

n = 4
SCHEDULE = RectifiedSchedule()


@pytest.fixture(scope="module")
def prior() -> GaussianDenoiser:
    generator = torch.Generator().manual_seed(0)
    M = torch.randn(n, n, generator=generator, dtype=torch.float64)
    cov = M @ M.T / n + 0.1 * torch.eye(n, dtype=torch.float64)
    mean = torch.randn(n, generator=generator, dtype=torch.float64)
    return GaussianDenoiser(mean, cov)


def exact_flow(prior: GaussianDenoiser, x_1: torch.Tensor) -> torch.Tensor:
    lam, Q = prior.eigvals, prior.eigvecs
    scale = torch.sqrt((lam + SCHEDULE.sigma_min**2) / (lam + SCHEDULE.sigma_max**2))
    return prior.mean + (((x_1 - prior.mean) @ Q) * scale) @ Q.T


def relative_error(x: torch.Tensor, reference: torch.Tensor, mean: torch.Tensor) -> float:
    return ((x - reference).norm(dim=1) / (reference - mean).norm(dim=1)).max().item()


def whitened_errors(x: torch.Tensor, prior: GaussianDenoiser) -> tuple[float, float]:
    """Max |mean error| and |cov error| of whitened samples, in standard errors."""

    N = x.shape[0]
    L = torch.linalg.cholesky(prior.cov + SCHEDULE.sigma_min**2 * torch.eye(n, dtype=x.dtype))
    w = torch.linalg.solve_triangular(L, (x - prior.mean).T, upper=False).T
    mean_error = w.mean(0).abs().max().item() * math.sqrt(N)
    cov_error = (torch.cov(w.T) - torch.eye(n, dtype=x.dtype)).abs().max().item() * math.sqrt(N / 2)
    return mean_error, cov_error


class CountingDenoiser:
    """Wraps a denoiser, records the noise levels it is called with."""

    def __init__(self, denoiser):
        self.denoiser = denoiser
        self.sigmas: list[torch.Tensor] = []

    def __call__(self, x_t, sigma_t, **cond):
        self.sigmas.append(sigma_t)
        return self.denoiser(x_t, sigma_t)


@pytest.mark.parametrize(
    ("sampler", "steps", "tolerance"),
    [(DDIMSampler, 128, 0.015), (HeunSampler, 64, 0.01), (LMSSampler, 64, 0.003)],
)
def test_deterministic_samplers_follow_the_exact_flow(prior, sampler, steps, tolerance):
    x_1 = SCHEDULE.sigma_max * torch.randn(16, n, dtype=torch.float64)

    x_0 = sampler(prior, schedule=SCHEDULE, steps=steps)(x_1)

    assert relative_error(x_0, exact_flow(prior, x_1), prior.mean) < tolerance


@pytest.mark.parametrize(
    ("sampler", "min_ratio"), [(DDIMSampler, 1.8), (HeunSampler, 5.0), (LMSSampler, 3.5)]
)
def test_convergence_order(prior, sampler, min_ratio):
    # Doubling the steps divides the error by ~2 (first order), > 4 (Heun, once in its
    # asymptotic regime) and ~4 (LMS, limited by its lower-order start).
    x_1 = SCHEDULE.sigma_max * torch.randn(16, n, dtype=torch.float64)
    exact = exact_flow(prior, x_1)

    errors = [
        relative_error(sampler(prior, schedule=SCHEDULE, steps=steps)(x_1), exact, prior.mean)
        for steps in (32, 64)
    ]

    assert errors[0] / errors[1] > min_ratio


@pytest.mark.parametrize(
    ("sampler", "options", "steps"),
    [(PCSampler, {}, 64), (DDIMSampler, {"eta": 1.0}, 256), (LMSSampler, {}, 64)],
)
def test_samples_match_the_gaussian_prior(prior, sampler, options, steps):
    s = sampler(prior, schedule=SCHEDULE, steps=steps, **options)
    x_1 = s.init((4000, n), generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    x_0 = s(x_1, generator=torch.Generator().manual_seed(2))

    mean_error, cov_error = whitened_errors(x_0, prior)
    assert mean_error < 5 and cov_error < 5, (mean_error, cov_error)


def test_ddim_is_deterministic_and_stochastic_samplers_follow_the_generator(prior):
    x_1 = SCHEDULE.sigma_max * torch.randn(8, n, dtype=torch.float64)
    ddim = DDIMSampler(prior, schedule=SCHEDULE, steps=8)
    assert torch.equal(ddim(x_1), ddim(x_1))

    stochastic = (
        PCSampler(prior, schedule=SCHEDULE, steps=8),
        DDIMSampler(prior, schedule=SCHEDULE, steps=8, eta=0.5),
    )
    for sampler in stochastic:
        a = sampler(x_1, generator=torch.Generator().manual_seed(3))
        b = sampler(x_1, generator=torch.Generator().manual_seed(3))
        c = sampler(x_1, generator=torch.Generator().manual_seed(4))
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)


def test_init_scales_noise_by_sigma_max():
    s = DDIMSampler(lambda x_t, sigma_t: x_t, schedule=SCHEDULE, steps=4)
    x_1 = s.init((20000, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    assert x_1.shape == (20000, 3)
    assert x_1.std().item() == pytest.approx(SCHEDULE.sigma_max, rel=0.02)


def test_time_grid_and_noise_levels_seen_by_the_denoiser(prior):
    counting = CountingDenoiser(prior)
    steps = 5
    s = DDIMSampler(counting, schedule=SCHEDULE, steps=steps)

    grid = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    torch.testing.assert_close(s.timesteps(dtype=torch.float64), grid)
    s(SCHEDULE.sigma_max * torch.randn(3, n, dtype=torch.float64))

    assert len(counting.sigmas) == steps
    assert all(sigma.shape == (3,) for sigma in counting.sigmas)
    assert counting.sigmas[0][0].item() == pytest.approx(SCHEDULE.sigma_max)
    sigma_last = SCHEDULE(torch.tensor(0.2)).item()  # t_{S-1} = 1/5
    assert counting.sigmas[-1][0].item() == pytest.approx(sigma_last, rel=1e-6)


def test_t_min_ends_earlier(prior):
    s = HeunSampler(prior, schedule=SCHEDULE, steps=4, t_min=0.5)
    torch.testing.assert_close(s.timesteps(), torch.tensor([1.0, 0.875, 0.75, 0.625, 0.5]))


def test_any_shape_and_conditioning():
    seen = []

    def denoiser(x_t, sigma_t, *, date):
        seen.append(date)
        return 0.5 * x_t

    x_1 = torch.randn(2, 3, 4, 5, 6)  # (B, K, Z, h, w)
    date = torch.randn(2, 3, 4)  # (B, K, D)
    for sampler in (DDIMSampler, PCSampler, HeunSampler, LMSSampler):
        x_0 = sampler(denoiser, schedule=SCHEDULE, steps=3)(x_1, date=date)
        assert x_0.shape == x_1.shape and x_0.dtype == x_1.dtype
    assert all(d is date for d in seen)


def test_runs_without_gradients():
    weight = torch.nn.Parameter(torch.ones(()))
    def denoiser(x_t, sigma_t):
        return weight * x_t / (1 + sigma_t[:, None] ** 2)

    s = PCSampler(denoiser, schedule=SCHEDULE, steps=3)

    x_0 = s(torch.randn(2, 3))

    assert not x_0.requires_grad


@pytest.mark.parametrize(
    ("sampler", "calls_per_step"),
    [(DDIMSampler, 1), (HeunSampler, 2), (PCSampler, 3), (LMSSampler, 1)],
)
def test_cancel_within_one_step(prior, sampler, calls_per_step):
    counting = CountingDenoiser(prior)
    cancel = threading.Event()
    progress = []

    def callback(i, steps, x):
        progress.append((i, steps, x.shape))
        if i == 2:
            cancel.set()

    s = sampler(counting, schedule=SCHEDULE, steps=10)
    with pytest.raises(Cancelled, match="after 2 of 10 steps"):
        x_1 = SCHEDULE.sigma_max * torch.randn(3, n, dtype=torch.float64)
        s(x_1, callback=callback, cancel=cancel)

    assert progress == [(1, 10, (3, n)), (2, 10, (3, n))]
    assert len(counting.sigmas) == 2 * calls_per_step


def test_cancel_callable_and_callback_counts(prior):
    calls = []
    s = DDIMSampler(prior, schedule=SCHEDULE, steps=6)

    x_1 = torch.randn(2, n, dtype=torch.float64)
    s(x_1, callback=lambda i, steps, x: calls.append(i), cancel=lambda: False)
    assert calls == [1, 2, 3, 4, 5, 6]

    with pytest.raises(Cancelled):
        s(torch.randn(2, n, dtype=torch.float64), cancel=lambda: True)


def test_lms_weights_integrate_quadratics_exactly():
    # sigma_s * int_{sigma_t}^{sigma_s} p(sigma) / sigma^2 dsigma, p(sigma) = 1 + 2 s + 3 s^2.
    nodes, sigma_t, sigma_s = [2.0, 3.0, 4.5], 2.0, 1.2
    p = lambda s: 1 + 2 * s + 3 * s**2  # noqa: E731
    integral = (
        (1 / sigma_t - 1 / sigma_s) + 2 * math.log(sigma_s / sigma_t) + 3 * (sigma_s - sigma_t)
    )
    expected = sigma_s * integral

    weights = _lms_weights(nodes, sigma_t, sigma_s)

    assert sum(w * p(s) for w, s in zip(weights, nodes)) == pytest.approx(expected, rel=1e-12)
    # One node: the DDIM step, x_s = (s/t) x_t + (1 - s/t) x_hat.
    assert _lms_weights([sigma_t], sigma_t, sigma_s) == pytest.approx([-(1 - sigma_s / sigma_t)])


def test_bad_options_raise(prior):
    with pytest.raises(ConfigError, match="positive integer"):
        DDIMSampler(prior, schedule=SCHEDULE, steps=0)
    with pytest.raises(ConfigError, match="t_min"):
        DDIMSampler(prior, schedule=SCHEDULE, steps=4, t_min=1.0)
    with pytest.raises(ConfigError, match="eta"):
        DDIMSampler(prior, schedule=SCHEDULE, steps=4, eta=1.5)
    with pytest.raises(ConfigError, match="delta"):
        PCSampler(prior, schedule=SCHEDULE, steps=4, delta=0.0)
    with pytest.raises(ConfigError, match="corrections"):
        PCSampler(prior, schedule=SCHEDULE, steps=4, corrections=-1)
    with pytest.raises(ConfigError, match="order"):
        LMSSampler(prior, schedule=SCHEDULE, steps=4, order=7)
    with pytest.raises(NotImplementedError):
        Sampler(prior, schedule=SCHEDULE, steps=2)(torch.zeros(1, n))

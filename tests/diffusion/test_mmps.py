"""Tests of appa_engine.diffusion.guidance.mmps against the closed-form linear-Gaussian posterior.

For a Gaussian prior, its exact denoiser and a linear observation operator, MMPS is exact once
its linear solver has converged: the guided denoiser must equal E[x | x_t, y] (Kalman update of
N(E[x | x_t], V[x | x_t])) at every noise level, and a sampler using it must draw from the
posterior p(x | y) = N(m, P).

Sample tolerance: samples are whitened with P = L L^T, w = L^-1 (x - m); with N samples each
mean component has standard error 1/sqrt(N), each covariance entry at most sqrt(2/N); we assert
errors below 5 standard errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from appa_engine.diffusion.gaussian import GaussianDenoiser, kalman_posterior
from appa_engine.diffusion.guidance import MMPSDenoiser
from appa_engine.diffusion.linalg import conjugate_gradient, gmres
from appa_engine.diffusion.samplers import HeunSampler, PCSampler
from appa_engine.diffusion.schedule import RectifiedSchedule
from appa_engine.errors import ConfigError, ObservationError

SCHEDULE = RectifiedSchedule()
SIGMAS = torch.logspace(-2, 2, 9, dtype=torch.float64).tolist()


def random_gaussian(n: int, generator: torch.Generator) -> GaussianDenoiser:
    M = torch.randn(n, n, generator=generator, dtype=torch.float64)
    cov = M @ M.T / n + 0.1 * torch.eye(n, dtype=torch.float64)
    mean = torch.randn(n, generator=generator, dtype=torch.float64)
    return GaussianDenoiser(mean, cov)


def sample_prior(prior: GaussianDenoiser, shape, generator) -> torch.Tensor:
    L = torch.linalg.cholesky(prior.cov)
    z = torch.randn(shape[0], L.shape[0], generator=generator, dtype=torch.float64)
    return (prior.mean + z @ L.T).reshape(shape)


def problem(kind: str, generator: torch.Generator):
    """(prior, shape, A, A_matrix): a prior over samples of shape (B, *shape) and A."""

    if kind == "random":  # dense random matrix, samples of shape (B, 3, 4)
        shape, N = (3, 4), 5
        prior = random_gaussian(12, generator)
        A_matrix = torch.randn(N, 12, generator=generator, dtype=torch.float64)

        def A(x):
            return x.flatten(1) @ A_matrix.T

    elif kind == "stations":  # selection of grid cells, samples of shape (B, 2, 8)
        shape = (2, 8)
        prior = random_gaussian(16, generator)
        index = torch.tensor([0, 3, 9, 14])
        A_matrix = torch.eye(16, dtype=torch.float64)[index]

        def A(x):
            return x.flatten(1)[:, index]

    elif kind == "latent":  # prior on latents z (B, 6), observations of the decoded D z (B, 16)
        shape = (6,)
        prior = random_gaussian(6, generator)
        decoder = torch.randn(16, 6, generator=generator, dtype=torch.float64)
        index = torch.tensor([1, 2, 7, 11, 12])
        A_matrix = decoder[index]

        def A(z):
            return (z @ decoder.T)[:, index]

    else:  # pragma: no cover
        raise ValueError(kind)

    return prior, shape, A, A_matrix


def observe(prior, shape, A, A_matrix, generator, *, batch=None):
    N = A_matrix.shape[0]
    cov_y = 0.05 + 0.1 * torch.rand(N, generator=generator, dtype=torch.float64)
    x = sample_prior(prior, (1, *shape), generator)
    y = A(x)[0] + cov_y.sqrt() * torch.randn(N, generator=generator, dtype=torch.float64)
    return x, y, cov_y


@pytest.mark.parametrize("solver", ["cg", "gmres"])
@pytest.mark.parametrize("kind", ["random", "stations", "latent"])
def test_mmps_equals_exact_posterior_mean_at_every_noise_level(kind, solver):
    generator = torch.Generator().manual_seed(0)
    prior, shape, A, A_matrix = problem(kind, generator)
    x, y, cov_y = observe(prior, shape, A, A_matrix, generator)
    N = A_matrix.shape[0]
    B = 3

    guided = MMPSDenoiser(prior, y, A, cov_y, iterations=N, solver=solver)

    for sigma in SIGMAS:
        x_t = x + sigma * torch.randn(B, *shape, generator=generator, dtype=torch.float64)
        sigma_t = torch.full((B,), sigma, dtype=torch.float64)

        expected, _ = prior.posterior(x_t, sigma_t, y, A_matrix, cov_y)
        estimate = guided(x_t, sigma_t)

        assert estimate.shape == x_t.shape
        atol = 1e-6 * expected.abs().max().item()
        torch.testing.assert_close(estimate, expected, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("solver", ["cg", "gmres"])
def test_one_iteration_is_not_exact(solver):
    # Shows the test above can fail: with N = 5 observations, 1 iteration is not enough.
    generator = torch.Generator().manual_seed(0)
    prior, shape, A, A_matrix = problem("random", generator)
    x, y, cov_y = observe(prior, shape, A, A_matrix, generator)

    guided = MMPSDenoiser(prior, y, A, cov_y, iterations=1, solver=solver)
    x_t = x + 1.0 * torch.randn(3, *shape, generator=generator, dtype=torch.float64)
    expected, _ = prior.posterior(x_t, 1.0, y, A_matrix, cov_y)

    error = (guided(x_t, 1.0) - expected).norm() / expected.norm()
    assert error > 1e-2


def test_nonlinear_operator_matches_materialised_formula():
    # Brute force: materialise Sigma_x = sigma^2 dx_hat/dx_t and J_A at x_hat with autograd
    # jacobians, then evaluate x_hat + Sigma_x J^T (Sigma_y + J Sigma_x J^T)^-1 (y - A(x_hat)).
    generator = torch.Generator().manual_seed(1)
    n = 6
    prior = random_gaussian(n, generator)

    def A(x):
        columns = [x[:, 0] ** 2, torch.sin(x[:, 1]), x[:, 2] * x[:, 3], torch.exp(0.3 * x[:, 5])]
        return torch.stack(columns, dim=1)

    y = torch.tensor([0.5, 0.2, -0.3, 1.1], dtype=torch.float64)
    cov_y = torch.tensor([0.1, 0.05, 0.2, 0.1], dtype=torch.float64)
    sigma = 0.7
    noise = torch.randn(1, n, generator=generator, dtype=torch.float64)
    x_t = sample_prior(prior, (1, n), generator) + sigma * noise

    x_hat = prior(x_t, sigma)[0]
    jac_D = torch.autograd.functional.jacobian(lambda v: prior(v[None], sigma)[0], x_t[0])
    jac_A = torch.autograd.functional.jacobian(lambda v: A(v[None])[0], x_hat)
    cov_x = sigma**2 * jac_D
    S = torch.diag(cov_y) + jac_A @ cov_x @ jac_A.T
    expected = x_hat + cov_x @ jac_A.T @ torch.linalg.solve(S, y - A(x_hat[None])[0])

    for solver in ("cg", "gmres"):
        estimate = MMPSDenoiser(prior, y, A, cov_y, iterations=4, solver=solver)(x_t, sigma)
        torch.testing.assert_close(estimate[0], expected, rtol=1e-8, atol=1e-10)


def test_batched_observations():
    # Each batch item has its own y and cov_y: compare with item-by-item closed forms.
    generator = torch.Generator().manual_seed(2)
    prior, shape, A, A_matrix = problem("stations", generator)
    B, N = 3, A_matrix.shape[0]
    y = torch.randn(B, N, generator=generator, dtype=torch.float64)
    cov_y = 0.05 + torch.rand(B, N, generator=generator, dtype=torch.float64)
    x_t = sample_prior(prior, (B, *shape), generator)

    estimate = MMPSDenoiser(prior, y, A, cov_y, iterations=N)(x_t, 0.5)

    for i in range(B):
        expected, _ = prior.posterior(x_t[i : i + 1], 0.5, y[i], A_matrix, cov_y[i])
        torch.testing.assert_close(estimate[i : i + 1], expected)


def test_no_grad_callers_detached_output_and_no_parameter_gradients():
    generator = torch.Generator().manual_seed(3)
    prior, shape, A, A_matrix = problem("random", generator)
    x, y, cov_y = observe(prior, shape, A, A_matrix, generator)
    scale = torch.nn.Parameter(torch.ones((), dtype=torch.float64))

    def denoiser(x_t, sigma_t):
        return scale * prior(x_t, sigma_t)

    guided = MMPSDenoiser(denoiser, y, A, cov_y, iterations=5)
    x_t = x + torch.randn(2, *shape, generator=generator, dtype=torch.float64)

    with torch.no_grad():
        estimate = guided(x_t, 1.0)

    assert not estimate.requires_grad
    assert scale.grad is None
    expected, _ = prior.posterior(x_t, 1.0, y, A_matrix, cov_y)
    torch.testing.assert_close(estimate, expected)


def test_guided_heun_follows_the_exact_posterior_flow():
    # The exact guided denoiser is the denoiser of the Gaussian posterior N(m, P), so an ODE
    # sampler must follow that Gaussian's probability-flow map (no Monte Carlo noise). Heun with
    # 64 steps reaches ~3e-3 here (DDIM with 128 steps only ~2e-2: first order).
    generator = torch.Generator().manual_seed(4)
    prior, shape, A, A_matrix = problem("latent", generator)
    _, y, cov_y = observe(prior, shape, A, A_matrix, generator)
    m, P = kalman_posterior(prior.mean, prior.cov, A_matrix, y, cov_y)

    guided = MMPSDenoiser(prior, y, A, cov_y, iterations=A_matrix.shape[0])
    x_1 = SCHEDULE.sigma_max * torch.randn(8, 6, generator=generator, dtype=torch.float64)
    x_0 = HeunSampler(guided, schedule=SCHEDULE, steps=64)(x_1)

    lam, Q = torch.linalg.eigh(P)
    scale = torch.sqrt((lam + SCHEDULE.sigma_min**2) / (lam + SCHEDULE.sigma_max**2))
    exact = m + (((x_1 - m) @ Q) * scale) @ Q.T
    error = ((x_0 - exact).norm(dim=1) / (exact - m).norm(dim=1)).max().item()
    assert error < 0.01


def test_guided_pc_samples_match_the_kalman_posterior():
    generator = torch.Generator().manual_seed(5)
    prior = random_gaussian(4, generator)
    A_matrix = torch.randn(2, 4, generator=generator, dtype=torch.float64)
    cov_y = torch.tensor([0.05, 0.1], dtype=torch.float64)
    y = torch.tensor([1.0, -0.5], dtype=torch.float64)
    m, P = kalman_posterior(prior.mean, prior.cov, A_matrix, y, cov_y)

    guided = MMPSDenoiser(prior, y, lambda x: x @ A_matrix.T, cov_y, iterations=2)
    sampler = PCSampler(guided, schedule=SCHEDULE, steps=64, corrections=1)
    N = 3000
    x_1 = sampler.init((N, 4), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    x_0 = sampler(x_1, generator=torch.Generator().manual_seed(7))

    L = torch.linalg.cholesky(P + SCHEDULE.sigma_min**2 * torch.eye(4, dtype=torch.float64))
    w = torch.linalg.solve_triangular(L, (x_0 - m).T, upper=False).T
    mean_error = w.mean(0).abs().max().item() * math.sqrt(N)
    cov_error = (torch.cov(w.T) - torch.eye(4, dtype=torch.float64)).abs().max().item()
    cov_error *= math.sqrt(N / 2)
    assert mean_error < 5 and cov_error < 5, (mean_error, cov_error)

    # The posterior is much tighter than the prior in the observed directions.
    assert torch.linalg.det(P) < 0.5 * torch.linalg.det(prior.cov)


def test_bad_inputs_raise():
    prior = random_gaussian(4, torch.Generator().manual_seed(0))
    A = lambda x: x[:, :2]  # noqa: E731
    y = torch.zeros(2, dtype=torch.float64)

    with pytest.raises(ObservationError, match="positive"):
        MMPSDenoiser(prior, y, A, torch.tensor([0.1, -1.0]))
    with pytest.raises(ObservationError, match="do not match"):
        MMPSDenoiser(prior, y, A, torch.ones(3))
    with pytest.raises(ObservationError, match=r"shape \(N,\) or \(B, N\)"):
        MMPSDenoiser(prior, torch.zeros(1, 2, 3), A, 0.1)
    with pytest.raises(ConfigError, match="solver"):
        MMPSDenoiser(prior, y, A, 0.1, solver="lu")
    with pytest.raises(ConfigError, match="iteration"):
        MMPSDenoiser(prior, y, A, 0.1, iterations=0)
    x_t = torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(ObservationError, match="returned shape"):
        MMPSDenoiser(prior, y, lambda x: x[:, :3], 0.1)(x_t, 1.0)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        MMPSDenoiser(prior, y, A, 0.1)(x_t, 1.0)


# ----------------------------------------------------------------------------- fused = naive
# The library's MMPS accumulates Sigma_x J^T u inside the solver, builds the double-backward
# graph at the first direction and skips CG's last residual product. Reference: the formula as
# written, with the plain solvers, J v by double backward at u = 0 and Sigma_x J^T u recomputed
# after the solve.
def naive_mmps(denoiser, y, A, cov_y, x_t, sigma: float, *, iterations: int, solver: str):
    grad = torch.autograd.grad
    with torch.enable_grad():
        x_t = x_t.detach().requires_grad_(True)
        x_hat = denoiser(x_t, sigma)
        x_A = x_hat.detach().requires_grad_(True)
        y_hat = A(x_A)
        u_0 = torch.zeros_like(y_hat, requires_grad=True)
        (At_u_0,) = grad(y_hat, x_A, u_0, create_graph=True)

        def A_T(u):
            return grad(y_hat, x_A, u, retain_graph=True)[0]

        def A_J(v):
            return grad(At_u_0, u_0, v, retain_graph=True)[0]

        def cov_x(v):
            return sigma**2 * grad(x_hat, x_t, v, retain_graph=True)[0]

        def system(u):
            return cov_y * u + A_J(cov_x(A_T(u)))

        solve = conjugate_gradient if solver == "cg" else gmres
        u = solve(system, y - y_hat.detach(), iterations=iterations)
        return (x_hat + cov_x(A_T(u))).detach()


def counter() -> tuple[dict, Callable]:
    """An identity whose backward passes (VJPs) and backward-of-backward passes (double
    backward, i.e. JVPs) are counted in the returned dict."""

    counts = {"vjp": 0, "jvp": 0}

    class Identity(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, g):
            counts["vjp"] += 1
            return IdentityBackward.apply(g)

    class IdentityBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, g):
            return g.view_as(g)

        @staticmethod
        def backward(ctx, v):
            counts["jvp"] += 1
            return Identity.apply(v)

    return counts, Identity.apply


class MLPDenoiser(torch.nn.Module):
    """A small nonlinear denoiser (non-symmetric Jacobian), samples of shape (B, 6)."""

    def __init__(self, generator, dtype):
        super().__init__()
        self.W1 = torch.randn(16, 6, generator=generator, dtype=dtype) / 6**0.5
        self.W2 = torch.randn(6, 16, generator=generator, dtype=dtype) / 16**0.5

    def forward(self, x_t, sigma_t):
        sigma = torch.as_tensor(sigma_t, dtype=x_t.dtype).reshape(-1, 1)
        return x_t / (1 + sigma**2) + torch.tanh(x_t @ self.W1.T) @ self.W2.T * sigma / (1 + sigma)


def nonlinear_A(x):
    columns = [x[:, 0] ** 2, torch.sin(x[:, 1]), x[:, 2] * x[:, 3], torch.exp(0.3 * x[:, 5]),
               x[:, 4]]
    return torch.stack(columns, 1)


@pytest.mark.parametrize("solver", ["cg", "gmres"])
@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_fused_mmps_equals_the_naive_formula(solver, iterations):
    # float64: equal to 1e-10 of the correction's size. float32: both are compared with the
    # float64 result; the fused path must be as accurate as the naive one (the system's
    # conditioning, up to ~1e3 at sigma = 10, amplifies float32 rounding in both alike).
    generator = torch.Generator().manual_seed(8)
    denoiser = MLPDenoiser(generator, torch.float64)
    y = torch.randn(5, generator=generator, dtype=torch.float64)
    cov_y = 0.05 + 0.1 * torch.rand(5, generator=generator, dtype=torch.float64)
    kw = dict(iterations=iterations, solver=solver)
    guided = MMPSDenoiser(denoiser, y, nonlinear_A, cov_y, **kw)
    denoiser32 = MLPDenoiser(generator, torch.float32)
    denoiser32.W1, denoiser32.W2 = denoiser.W1.float(), denoiser.W2.float()
    guided32 = MMPSDenoiser(denoiser32, y.float(), nonlinear_A, cov_y.float(), **kw)

    for sigma in (0.1, 1.0, 10.0):
        x_t = sigma * torch.randn(4, 6, generator=generator, dtype=torch.float64)
        x_hat = denoiser(x_t, sigma)
        expected = naive_mmps(denoiser, y, nonlinear_A, cov_y, x_t, sigma, **kw) - x_hat
        scale = expected.abs().max().item()
        assert scale > 1e-3
        torch.testing.assert_close(guided(x_t, sigma) - x_hat, expected, rtol=0, atol=1e-10 * scale)

        naive32 = naive_mmps(denoiser32, y.float(), nonlinear_A, cov_y.float(), x_t.float(),
                             sigma, **kw)
        error_naive = (naive32.double() - x_hat - expected).abs().max().item()
        error_fused = (guided32(x_t.float(), sigma).double() - x_hat - expected).abs().max().item()
        assert error_fused <= 2 * error_naive + 1e-6 * scale, (sigma, error_fused, error_naive)
        assert error_fused <= 1e-3 * scale


@pytest.mark.parametrize("solver, jvps", [("cg", lambda m: m - 1), ("gmres", lambda m: m)])
@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_cost_of_a_guided_call(solver, jvps, iterations):
    # Counted on the real autograd graph: m VJPs through the denoiser and through A, m - 1 JVPs
    # through A with CG (m with GMRES). The naive formula makes m + 1, m + 2 (one with a
    # double-backward graph) and m.
    generator = torch.Generator().manual_seed(9)
    denoiser = MLPDenoiser(generator, torch.float64)
    y = torch.randn(5, generator=generator, dtype=torch.float64)
    x_t = torch.randn(3, 6, generator=generator, dtype=torch.float64)

    def run(method) -> tuple[dict, dict]:
        (D_counts, D_id), (A_counts, A_id) = counter(), counter()

        def D(x, sigma):
            return denoiser(D_id(x), sigma)

        def A(x):
            return nonlinear_A(A_id(x))

        method(D, A)
        return D_counts, A_counts

    def fused(D, A):
        with torch.no_grad():
            MMPSDenoiser(D, y, A, 0.1, iterations=iterations, solver=solver)(x_t, 0.5)

    D_counts, A_counts = run(fused)
    assert D_counts == {"vjp": iterations, "jvp": 0}
    assert A_counts == {"vjp": iterations, "jvp": jvps(iterations)}

    def naive(D, A):
        naive_mmps(D, y, A, 0.1, x_t, 0.5, iterations=iterations, solver=solver)

    D_counts, A_counts = run(naive)
    assert D_counts == {"vjp": iterations + 1, "jvp": 0}
    assert A_counts == {"vjp": iterations + 2, "jvp": iterations}

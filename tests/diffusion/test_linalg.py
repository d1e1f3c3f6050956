"""Tests of appa_engine.diffusion.linalg: batched CG and GMRES against torch.linalg.solve."""

from __future__ import annotations

import pytest
import torch

from appa_engine.diffusion.linalg import (
    Product,
    conjugate_gradient,
    conjugate_gradient_mapped,
    gmres,
    gmres_mapped,
)

B, SHAPE = 4, (3, 4)  # systems of size n = 12 on tensors of shape (B, 3, 4)
n = 12


def matvec(matrices: torch.Tensor):
    """The operator v -> M v on tensors of shape (B, 3, 4), with M of shape (B, n, n)."""

    def A(v: torch.Tensor) -> torch.Tensor:
        return (matrices @ v.flatten(1).unsqueeze(-1)).reshape(v.shape)

    return A


def spd(generator: torch.Generator) -> torch.Tensor:
    M = torch.randn(B, n, n, generator=generator, dtype=torch.float64)
    return M @ M.mT / n + 0.1 * torch.eye(n, dtype=torch.float64)


def nonsymmetric(generator: torch.Generator) -> torch.Tensor:
    M = torch.randn(B, n, n, generator=generator, dtype=torch.float64) / n**0.5
    return M + torch.eye(n, dtype=torch.float64)


def solve(matrices: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(matrices, b.flatten(1)).reshape(b.shape)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_cg_exact_after_n_iterations(generator):
    S = spd(generator)
    b = torch.randn(B, *SHAPE, generator=generator, dtype=torch.float64)

    x = conjugate_gradient(matvec(S), b, iterations=n)

    torch.testing.assert_close(x, solve(S, b), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("matrix", [spd, nonsymmetric])
def test_gmres_exact_after_n_iterations(generator, matrix):
    M = matrix(generator)
    b = torch.randn(B, *SHAPE, generator=generator, dtype=torch.float64)

    x = gmres(matvec(M), b, iterations=n)

    torch.testing.assert_close(x, solve(M, b), rtol=1e-9, atol=1e-9)


def test_cg_fails_on_nonsymmetric_where_gmres_succeeds(generator):
    # Shows the GMRES test above is meaningful: CG has no reason to converge here.
    M = nonsymmetric(generator)
    b = torch.randn(B, *SHAPE, generator=generator, dtype=torch.float64)

    x = conjugate_gradient(matvec(M), b, iterations=n)

    assert (x - solve(M, b)).abs().max() > 1e-3


def test_one_iteration_hand_formulas(generator):
    # CG, 1 iteration from 0: steepest descent x = (b.b / b.Ab) b.
    # GMRES, 1 iteration from 0: x = a b with a = b.Ab / |Ab|^2 minimising |b - a A b|.
    S = spd(generator)
    A = matvec(S)
    b = torch.randn(B, *SHAPE, generator=generator, dtype=torch.float64)
    Ab = A(b)

    dot = lambda u, v: (u * v).flatten(1).sum(1).reshape(B, 1, 1)  # noqa: E731

    torch.testing.assert_close(conjugate_gradient(A, b, iterations=1), dot(b, b) / dot(b, Ab) * b)
    torch.testing.assert_close(gmres(A, b, iterations=1), dot(b, Ab) / dot(Ab, Ab) * b)


def test_residual_decreases_with_iterations(generator):
    M = nonsymmetric(generator)
    A = matvec(M)
    b = torch.randn(B, *SHAPE, generator=generator, dtype=torch.float64)

    residuals = [
        (b - A(gmres(A, b, iterations=k))).flatten(1).norm(dim=1) for k in range(0, n + 1)
    ]
    for before, after in zip(residuals, residuals[1:]):
        assert torch.all(after <= before * (1 + 1e-12))


@pytest.mark.parametrize("solver", [conjugate_gradient, gmres])
def test_batch_items_are_independent(generator, solver):
    S = spd(generator)
    b = torch.randn(B, *SHAPE, generator=generator, dtype=torch.float64)

    batched = solver(matvec(S), b, iterations=5)
    single = torch.cat([solver(matvec(S[i : i + 1]), b[i : i + 1], iterations=5) for i in range(B)])

    torch.testing.assert_close(batched, single)


@pytest.mark.parametrize("solver", [conjugate_gradient, gmres])
def test_initial_guess(generator, solver):
    S = spd(generator)
    A = matvec(S)
    b = torch.randn(B, *SHAPE, generator=generator, dtype=torch.float64)
    x_star = solve(S, b)

    # Starting at the solution: nothing to do.
    torch.testing.assert_close(solver(A, b, x0=x_star, iterations=3), x_star)
    # Starting elsewhere: still exact after n iterations.
    x0 = torch.randn(B, *SHAPE, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(solver(A, b, x0=x0, iterations=n), x_star, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("solver", [conjugate_gradient, gmres])
def test_tolerance_stops_early(generator, solver):
    # Well-conditioned system: converges in a few iterations.
    M = torch.randn(B, n, n, generator=generator, dtype=torch.float64) / n
    S = torch.eye(n, dtype=torch.float64) + 0.1 * (M @ M.mT)
    calls = []

    def A(v):
        calls.append(1)
        return matvec(S)(v)

    b = torch.randn(B, *SHAPE, generator=generator, dtype=torch.float64)
    x = solver(A, b, iterations=n, tol=1e-6)

    residual = (b - matvec(S)(x)).flatten(1).norm(dim=1)
    assert torch.all(residual <= 1e-6 * b.flatten(1).norm(dim=1))
    assert len(calls) < n


@pytest.mark.parametrize("solver", [conjugate_gradient, gmres])
def test_breakdown_is_harmless(solver):
    # Item 0: identity (exact after 1 iteration, then breakdown); item 1: a 2x2 system
    # embedded in 12 dims (exact after 2). More iterations must not produce NaNs.
    S = torch.eye(n, dtype=torch.float64).repeat(2, 1, 1)
    S[1, :2, :2] = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    b = torch.zeros(2, *SHAPE, dtype=torch.float64)
    b[:, 0, 0] = torch.tensor([1.0, 1.0])
    b[1, 0, 1] = -2.0

    x = solver(matvec(S), b, iterations=n)

    assert torch.all(torch.isfinite(x))
    torch.testing.assert_close(x, solve(S, b))


@pytest.mark.parametrize("solver", [conjugate_gradient, gmres])
def test_zero_right_hand_side(solver):
    b = torch.zeros(2, 5, dtype=torch.float64)
    x = solver(lambda v: 2 * v, b, iterations=3)

    assert torch.equal(x, torch.zeros_like(b))


@pytest.mark.parametrize("solver", [conjugate_gradient, gmres])
def test_negative_iterations_raise(solver):
    with pytest.raises(ValueError, match="non-negative"):
        solver(lambda v: v, torch.ones(1, 2), iterations=-1)


# ----------------------------------------------------------------------------- mapped solves
# W: a random linear map from (B, 3, 4) to (B, 7); the mapped solvers must return the same x as
# the plain ones and W x, accumulated from the products W d_k only.
PAIRS = [(conjugate_gradient, conjugate_gradient_mapped), (gmres, gmres_mapped)]


def linear_map(generator: torch.Generator) -> torch.Tensor:
    return torch.randn(B, 7, n, generator=generator, dtype=torch.float64)


def apply(W: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (W @ v.flatten(1).unsqueeze(-1)).squeeze(-1)


def mapped(M: torch.Tensor, W: torch.Tensor, calls: list | None = None):
    def A(d: torch.Tensor) -> Product:
        if calls is not None:
            calls.append(d)
        return Product(matvec(M)(d), apply(W, d))

    return A


@pytest.mark.parametrize("plain, fused", PAIRS)
@pytest.mark.parametrize("iterations", [1, 2, 5, n])
def test_mapped_solvers_return_x_and_W_x(generator, plain, fused, iterations):
    M = spd(generator) if plain is conjugate_gradient else nonsymmetric(generator)
    W = linear_map(generator)
    b = torch.randn(B, *SHAPE, generator=generator, dtype=torch.float64)
    calls: list = []

    x, Wx = fused(mapped(M, W, calls), b, iterations=iterations)

    expected = plain(matvec(M), b, iterations=iterations)
    torch.testing.assert_close(x, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(Wx, apply(W, x), rtol=1e-10, atol=1e-12)
    assert Wx.shape == (B, 7)
    assert len(calls) == iterations  # W was never applied to x
    assert calls[0] is b  # the contract MMPS relies on: the first product is with b itself


@pytest.mark.parametrize("plain, fused", PAIRS)
def test_mapped_solvers_with_initial_guess_and_tolerance(generator, plain, fused):
    M = torch.randn(B, n, n, generator=generator, dtype=torch.float64) / n
    S = torch.eye(n, dtype=torch.float64) + 0.1 * (M @ M.mT)
    W = linear_map(generator)
    b = torch.randn(B, *SHAPE, generator=generator, dtype=torch.float64)
    x0 = torch.randn(B, *SHAPE, generator=generator, dtype=torch.float64)

    x, Wx = fused(mapped(S, W), b, x0=x0, iterations=n, tol=1e-6)

    torch.testing.assert_close(x, plain(matvec(S), b, x0=x0, iterations=n, tol=1e-6))
    torch.testing.assert_close(Wx, apply(W, x), rtol=1e-10, atol=1e-12)


def test_mapped_cg_skips_the_last_product_when_given_the_curvature(generator):
    # With p^T A p given and A p deferred, CG evaluates A p only for the residual updates:
    # iterations - 1 times. The iterates are the same.
    S = spd(generator)
    W = linear_map(generator)
    b = torch.randn(B, *SHAPE, generator=generator, dtype=torch.float64)

    for iterations in (1, 3):
        evaluated = []

        def A(d, evaluated=evaluated):
            def Ad():
                evaluated.append(1)
                return matvec(S)(d)

            pAp = (d * matvec(S)(d)).flatten(1).sum(1)
            return Product(Ad, apply(W, d), pAp)

        x, Wx = conjugate_gradient_mapped(A, b, iterations=iterations)

        assert len(evaluated) == iterations - 1
        torch.testing.assert_close(x, conjugate_gradient(matvec(S), b, iterations=iterations))
        torch.testing.assert_close(Wx, apply(W, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("plain, fused", PAIRS)
def test_mapped_zero_right_hand_side(plain, fused):
    b = torch.zeros(2, 5, dtype=torch.float64)
    x, Wx = fused(lambda d: (2 * d, d[:, :3]), b, iterations=3, tol=1e-3)

    assert torch.equal(x, torch.zeros_like(b))
    assert torch.equal(Wx, torch.zeros(2, 3, dtype=torch.float64))


@pytest.mark.parametrize("fused", [conjugate_gradient_mapped, gmres_mapped])
def test_mapped_needs_one_iteration(fused):
    with pytest.raises(ValueError, match="at least one iteration"):
        fused(lambda d: (d, d), torch.ones(1, 2), iterations=0)

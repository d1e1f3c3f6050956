r"""Batched, matrix-free Krylov solvers for :math:`A x = b`.

The operator :math:`A` is a callable applying a linear map to tensors of shape (B, ...), the shape
of :math:`b`; each batch item is an independent system (inner products run over all dimensions
but the first). Nothing is ever materialised, so :math:`A` can be a chain of Jacobian-vector
products, as in :mod:`appa_engine.diffusion.guidance.mmps`.

- :func:`conjugate_gradient` for symmetric positive definite :math:`A`;
- :func:`gmres` for any invertible :math:`A` (no restarts).

In exact arithmetic both return the exact solution after :math:`n` iterations for
:math:`n`-dimensional systems. With ``tol > 0`` they stop early once every item's residual
satisfies :math:`\|b - A x\| \leq \mathrm{tol} \cdot \|b\|`.

References:
    | Methods of Conjugate Gradients for Solving Linear Systems (Hestenes & Stiefel, 1952)
    | https://doi.org/10.6028/jres.049.044

    | GMRES: A Generalized Minimal Residual Algorithm for Solving Nonsymmetric Linear Systems
      (Saad & Schultz, 1986)
    | https://doi.org/10.1137/0907058
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["conjugate_gradient", "gmres"]


def _dot(u: Tensor, v: Tensor) -> Tensor:
    """Inner products per batch item, shape (B,)."""

    return (u * v).flatten(1).sum(dim=1)


def _col(a: Tensor, like: Tensor) -> Tensor:
    """Reshapes (B,) to (B, 1, ..., 1) to broadcast against ``like``."""

    return a.reshape(a.shape + (1,) * (like.ndim - 1))


def _safe_div(a: Tensor, b: Tensor) -> Tensor:
    """a / b, with 0 where b = 0."""

    nonzero = b != 0
    quotient = a / torch.where(nonzero, b, torch.ones_like(b))
    return torch.where(nonzero, quotient, torch.zeros_like(a))


def conjugate_gradient(
    A: Callable[[Tensor], Tensor],
    b: Tensor,
    *,
    x0: Tensor | None = None,
    iterations: int,
    tol: float = 0.0,
) -> Tensor:
    r"""Solves :math:`A x = b` with the conjugate gradient method.

    :math:`A` must be symmetric positive definite for each batch item.

    Arguments:
        A: The linear operator, a callable mapping tensors of shape (B, ...) to (B, ...).
        b: The right-hand sides, with shape (B, ...).
        x0: The initial guesses, with shape (B, ...). Zeros if :py:`None`.
        iterations: The maximum number of iterations (matrix-vector products).
        tol: The relative residual tolerance; items below it are frozen and the loop stops
            early when all are. 0 runs all iterations.

    Returns:
        The solutions :math:`x`, with shape (B, ...).
    """

    if iterations < 0:
        raise ValueError(f"iterations must be non-negative, got {iterations}.")

    if x0 is None:
        x = torch.zeros_like(b)
        r = b.clone()
    else:
        x = x0.clone()
        r = b - A(x)

    threshold = tol**2 * _dot(b, b)
    p = r.clone()
    rr = _dot(r, r)

    for _ in range(iterations):
        active = rr > threshold
        if not bool(active.any()):
            break

        Ap = A(p)
        alpha = torch.where(active, _safe_div(rr, _dot(p, Ap)), torch.zeros_like(rr))

        x = x + _col(alpha, x) * p
        r = r - _col(alpha, r) * Ap

        rr_new = _dot(r, r)
        beta = _safe_div(rr_new, rr)
        p = r + _col(beta, p) * p
        rr = torch.where(active, rr_new, rr)

    return x


def gmres(
    A: Callable[[Tensor], Tensor],
    b: Tensor,
    *,
    x0: Tensor | None = None,
    iterations: int,
    tol: float = 0.0,
) -> Tensor:
    r"""Solves :math:`A x = b` with the generalized minimal residual method.

    Builds an orthonormal basis :math:`V` of the Krylov space
    :math:`\{r_0, A r_0, \dots, A^{m-1} r_0\}` (Arnoldi, modified Gram-Schmidt) and returns
    :math:`x_0 + V y` with :math:`y` minimising :math:`\|r_0 - A V y\|`, via Givens rotations.
    Stores :math:`m + 1` vectors of the shape of :math:`b`.

    Arguments:
        A: The linear operator, a callable mapping tensors of shape (B, ...) to (B, ...).
        b: The right-hand sides, with shape (B, ...).
        x0: The initial guesses, with shape (B, ...). Zeros if :py:`None`.
        iterations: The maximum dimension :math:`m` of the Krylov space (matrix-vector products).
        tol: The relative residual tolerance; the loop stops early when every item is below it.
            0 runs all iterations.

    Returns:
        The solutions :math:`x`, with shape (B, ...).
    """

    if iterations < 0:
        raise ValueError(f"iterations must be non-negative, got {iterations}.")

    if x0 is None:
        x0 = torch.zeros_like(b)
        r = b
    else:
        r = b - A(x0)

    B = b.shape[0]
    m = iterations
    eps = torch.finfo(b.dtype).eps

    beta = _dot(r, r).sqrt()  # (B,)
    threshold = tol * _dot(b, b).sqrt()

    V = [_col(_safe_div(torch.ones_like(beta), beta), r) * r]
    R = b.new_zeros(B, m + 1, m)  # Hessenberg matrix, made upper triangular by rotations
    cs = b.new_zeros(B, m)
    sn = b.new_zeros(B, m)
    g = b.new_zeros(B, m + 1)  # rotated right-hand side, beta e_1
    g[:, 0] = beta

    k = 0
    for j in range(m):
        if not bool((g[:, j].abs() > threshold).any()):
            break

        w = A(V[j])
        w_norm = _dot(w, w).sqrt()

        h = b.new_zeros(B, j + 2)
        for i in range(j + 1):
            h[:, i] = _dot(w, V[i])
            w = w - _col(h[:, i], w) * V[i]

        h_last = _dot(w, w).sqrt()
        # Lucky breakdown: the Krylov space is invariant, the solution is exact.
        breakdown = h_last <= 16 * eps * w_norm
        h_last = torch.where(breakdown, torch.zeros_like(h_last), h_last)
        h[:, j + 1] = h_last
        V.append(_col(_safe_div(torch.ones_like(h_last), h_last), w) * w)

        # Apply the previous rotations to the new column.
        for i in range(j):
            h_i = cs[:, i] * h[:, i] + sn[:, i] * h[:, i + 1]
            h[:, i + 1] = -sn[:, i] * h[:, i] + cs[:, i] * h[:, i + 1]
            h[:, i] = h_i

        # New rotation, zeroing h[j + 1].
        denom = torch.sqrt(h[:, j] ** 2 + h[:, j + 1] ** 2)
        zero = denom == 0
        cs[:, j] = torch.where(zero, torch.ones_like(denom), _safe_div(h[:, j], denom))
        sn[:, j] = _safe_div(h[:, j + 1], denom)

        h[:, j] = torch.where(zero, h[:, j], denom)
        h[:, j + 1] = 0

        g[:, j + 1] = -sn[:, j] * g[:, j]
        g[:, j] = cs[:, j] * g[:, j]

        R[:, : j + 2, j] = h
        k = j + 1

    if k == 0:
        return x0.clone()

    # Solve the k x k upper triangular system R y = g (zero pivots only after a breakdown,
    # where the matching g vanishes: they are replaced by ones).
    # The small solve runs in at least float32 (no triangular solve in half precision).
    dtype = torch.promote_types(b.dtype, torch.float32)
    R_k = R[:, :k, :k].to(dtype)
    diag = torch.diagonal(R_k, dim1=-2, dim2=-1)
    R_k = R_k + torch.diag_embed((diag == 0).to(dtype))
    rhs = g[:, :k].to(dtype).unsqueeze(-1)
    y = torch.linalg.solve_triangular(R_k, rhs, upper=True).squeeze(-1).to(b.dtype)

    x = x0
    for i in range(k):
        x = x + _col(y[:, i], x) * V[i]

    return x

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

Mapped solves. Both return :math:`x = x_0 + \sum_k c_k d_k`, a combination of the directions
:math:`d_k` the operator was applied to (CG's search directions :math:`p_k`, GMRES's Arnoldi basis
:math:`v_k`). For any linear map :math:`W`, therefore,

.. math:: W x = W x_0 + \sum_k c_k \, W d_k .

When the products :math:`W d_k` come for free with :math:`A d_k` (in MMPS,
:math:`A = \Sigma_y + J M J^\top` and :math:`W = M J^\top`, computed inside every product),
:func:`conjugate_gradient_mapped` and :func:`gmres_mapped` accumulate :math:`W x` along the way and
return :math:`(x, W x)`: :math:`W` is never applied to :math:`x`, and the numbers are the same up to
rounding. Their operator maps a direction :math:`d` to a :class:`Product`. With :math:`x_0 = 0`
its first call receives :math:`b` itself (the same tensor object), so that a caller can serve that
product from work already done.

CG uses :math:`A p_k` only in the step length :math:`\alpha_k = r_k^\top r_k / p_k^\top A p_k` and
in the residual update :math:`r_{k+1} = r_k - \alpha_k A p_k`, and the last iteration needs no
residual. When the operator gives :math:`p^\top A p` directly (for :math:`A = \Sigma_y + J M
J^\top`, :math:`p^\top A p = p^\top \Sigma_y p + (J^\top p)^\top (M J^\top p)`, from vectors
already at hand) and :math:`A p` as a deferred callable, :func:`conjugate_gradient_mapped` never
evaluates the last :math:`A p`: one CG iteration then needs no product with :math:`J`.

References:
    | Methods of Conjugate Gradients for Solving Linear Systems (Hestenes & Stiefel, 1952)
    | https://doi.org/10.6028/jres.049.044

    | GMRES: A Generalized Minimal Residual Algorithm for Solving Nonsymmetric Linear Systems
      (Saad & Schultz, 1986)
    | https://doi.org/10.1137/0907058
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Union

import torch
from torch import Tensor

__all__ = ["Product", "conjugate_gradient", "conjugate_gradient_mapped", "gmres", "gmres_mapped"]


class Product(NamedTuple):
    r"""A mapped operator's product with a direction :math:`d` of shape (B, ...).

    Attributes:
        Ad: :math:`A d`, with shape (B, ...), or a callable computing it on demand (the solvers
            call it at most once, and only when they need it).
        Wd: :math:`W d`, with shape (B, ...'), for the second linear map :math:`W`.
        dAd: :math:`d^\top A d` per batch item, with shape (B,), or :py:`None` (then computed
            from :math:`A d`).
    """

    Ad: Tensor | Callable[[], Tensor]
    Wd: Tensor | None
    dAd: Tensor | None = None


#: A linear operator with a second linear map: ``d -> Product(A d, W d, d^T A d)``.
MappedOperator = Callable[[Tensor], Union[Product, "tuple[Tensor, Tensor]"]]


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


def _product(out: Product | tuple) -> tuple[Callable[[], Tensor], Tensor | None, Tensor | None]:
    """``(A d on demand, W d, d^T A d or None)`` from an operator's output."""

    out = Product(*out)
    cache: list[Tensor] = []

    def Ad() -> Tensor:
        if not cache:
            cache.append(out.Ad() if callable(out.Ad) else out.Ad)
        return cache[0]

    return Ad, out.Wd, out.dAd


def _accumulate(acc: Tensor | None, c: Tensor, Wd: Tensor) -> Tensor:
    """``acc + c * Wd`` per batch item (``acc`` None: zero)."""

    term = _col(c, Wd) * Wd
    return term if acc is None else acc + term


def _check_iterations(iterations: int, mapped: bool) -> None:
    if iterations < 0:
        raise ValueError(f"iterations must be non-negative, got {iterations}.")
    if mapped and iterations < 1:
        raise ValueError(f"a mapped solve needs at least one iteration, got {iterations}.")


def _cg(
    A: MappedOperator, b: Tensor, x0: Tensor | None, iterations: int, tol: float, mapped: bool
) -> tuple[Tensor, Tensor | None]:
    """Conjugate gradient on ``A: p -> Product``; returns ``(x, W x)`` (``W x``: None unless
    mapped)."""

    _check_iterations(iterations, mapped)

    if x0 is None:
        x, Wx = torch.zeros_like(b), None
        r = b  # never modified in place: the first direction is b itself
    else:
        Ax0, Wx, _ = _product(A(x0))
        x = x0.clone()
        r = b - Ax0()

    threshold = tol**2 * _dot(b, b)
    p = r
    rr = _dot(r, r)

    for i in range(iterations):
        active = rr > threshold
        # A mapped solve always makes the first product, so that W x has a shape.
        if not (mapped and i == 0) and not bool(active.any()):
            break

        Ap, Wp, pAp = _product(A(p))
        if pAp is None:
            pAp = _dot(p, Ap())
        alpha = torch.where(active, _safe_div(rr, pAp), torch.zeros_like(rr))

        x = x + _col(alpha, x) * p
        if mapped:
            Wx = _accumulate(Wx, alpha, Wp)
        if i == iterations - 1:  # the last residual is never used
            break
        r = r - _col(alpha, r) * Ap()

        rr_new = _dot(r, r)
        beta = _safe_div(rr_new, rr)
        p = r + _col(beta, p) * p
        rr = torch.where(active, rr_new, rr)

    return x, Wx


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

    x, _ = _cg(lambda p: Product(A(p), None), b, x0, iterations, tol, mapped=False)
    return x


def conjugate_gradient_mapped(
    A: MappedOperator,
    b: Tensor,
    *,
    x0: Tensor | None = None,
    iterations: int,
    tol: float = 0.0,
) -> tuple[Tensor, Tensor]:
    r"""Solves :math:`A x = b` with the conjugate gradient method and returns :math:`W x` too.

    .. math:: x = x_0 + \sum_k \alpha_k p_k, \qquad W x = W x_0 + \sum_k \alpha_k \, W p_k

    Same iterates as :func:`conjugate_gradient`; :math:`W` is never applied to :math:`x`.
    With ``x0=None`` the first product is with ``b`` itself, and it is always made (even when
    ``b`` already meets ``tol``).

    Arguments:
        A: The operator ``p -> Product(A p, W p, p^T A p)`` (or ``(A p, W p)``): :math:`A` maps
            (B, ...) to (B, ...), symmetric positive definite per item; :math:`W` is any linear
            map of (B, ...) to (B, ...'). When it gives :math:`p^\top A p` and :math:`A p` as a
            callable, the last iteration's :math:`A p` is never computed.
        b: The right-hand sides, with shape (B, ...).
        x0: The initial guesses, with shape (B, ...). Zeros if :py:`None`.
        iterations: The maximum number of iterations (products), at least 1.
        tol: The relative residual tolerance (see :func:`conjugate_gradient`).

    Returns:
        The solutions :math:`x`, with shape (B, ...), and :math:`W x`, with shape (B, ...').
    """

    x, Wx = _cg(A, b, x0, iterations, tol, mapped=True)
    assert Wx is not None
    return x, Wx


def _gmres(
    A: MappedOperator, b: Tensor, x0: Tensor | None, iterations: int, tol: float, mapped: bool
) -> tuple[Tensor, Tensor | None]:
    """GMRES on ``A: v -> Product``; returns ``(x, W x)`` (``W x``: None unless mapped)."""

    _check_iterations(iterations, mapped)

    if x0 is None:
        x0, Wx0 = torch.zeros_like(b), None
        r = b  # the first product is with b itself, rescaled afterwards (A is linear)
    else:
        Ax0, Wx0, _ = _product(A(x0))
        r = b - Ax0()

    B = b.shape[0]
    m = iterations
    eps = torch.finfo(b.dtype).eps

    beta = _dot(r, r).sqrt()  # (B,)
    threshold = tol * _dot(b, b).sqrt()
    inv_beta = _safe_div(torch.ones_like(beta), beta)

    V = [_col(inv_beta, r) * r]
    WV: list[Tensor] = []  # W v_j, when mapped
    R = b.new_zeros(B, m + 1, m)  # Hessenberg matrix, made upper triangular by rotations
    cs = b.new_zeros(B, m)
    sn = b.new_zeros(B, m)
    g = b.new_zeros(B, m + 1)  # rotated right-hand side, beta e_1
    g[:, 0] = beta

    k = 0
    for j in range(m):
        if not (mapped and j == 0) and not bool((g[:, j].abs() > threshold).any()):
            break

        if j == 0:  # A v_0 = A(r) / beta
            Ar, Wv, _ = _product(A(r))
            w = _col(inv_beta, r) * Ar()
            if mapped:
                Wv = _col(inv_beta, Wv) * Wv
        else:
            Av, Wv, _ = _product(A(V[j]))
            w = Av()
        if mapped:
            WV.append(Wv)
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
        return x0.clone(), Wx0

    # Solve the k x k upper triangular system R y = g (zero pivots only after a breakdown,
    # where the matching g vanishes: they are replaced by ones).
    # The small solve runs in at least float32 (no triangular solve in half precision).
    dtype = torch.promote_types(b.dtype, torch.float32)
    R_k = R[:, :k, :k].to(dtype)
    diag = torch.diagonal(R_k, dim1=-2, dim2=-1)
    R_k = R_k + torch.diag_embed((diag == 0).to(dtype))
    rhs = g[:, :k].to(dtype).unsqueeze(-1)
    y = torch.linalg.solve_triangular(R_k, rhs, upper=True).squeeze(-1).to(b.dtype)

    x, Wx = x0, Wx0
    for i in range(k):
        x = x + _col(y[:, i], x) * V[i]
        if mapped:
            Wx = _accumulate(Wx, y[:, i], WV[i])

    return x, Wx


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

    x, _ = _gmres(lambda v: Product(A(v), None), b, x0, iterations, tol, mapped=False)
    return x


def gmres_mapped(
    A: MappedOperator,
    b: Tensor,
    *,
    x0: Tensor | None = None,
    iterations: int,
    tol: float = 0.0,
) -> tuple[Tensor, Tensor]:
    r"""Solves :math:`A x = b` with GMRES and returns :math:`W x` too.

    .. math:: x = x_0 + \sum_j y_j v_j, \qquad W x = W x_0 + \sum_j y_j \, W v_j

    Same iterates as :func:`gmres`; :math:`W` is never applied to :math:`x`. With ``x0=None``
    the first product is with ``b`` itself (then divided by :math:`\|b\|`), and it is always
    made.

    Arguments:
        A: The operator ``v -> Product(A v, W v)`` (or ``(A v, W v)``): :math:`A` maps (B, ...)
            to (B, ...), invertible per item; :math:`W` is any linear map of (B, ...) to
            (B, ...'). GMRES needs every :math:`A v` (a ``dAd`` given is not used).
        b: The right-hand sides, with shape (B, ...).
        x0: The initial guesses, with shape (B, ...). Zeros if :py:`None`.
        iterations: The maximum dimension of the Krylov space (products), at least 1.
        tol: The relative residual tolerance (see :func:`gmres`).

    Returns:
        The solutions :math:`x`, with shape (B, ...), and :math:`W x`, with shape (B, ...').
    """

    x, Wx = _gmres(A, b, x0, iterations, tol, mapped=True)
    assert Wx is not None
    return x, Wx

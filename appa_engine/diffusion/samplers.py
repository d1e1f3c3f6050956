r"""Samplers: integrate the reverse diffusion from :math:`t = 1` to :math:`t = 0`.

A sampler takes a denoiser ``(x_t, sigma_t, **cond) -> x_hat`` (any callable, possibly wrapped
by guidance) and a schedule :math:`\sigma(t)`. It starts from :math:`x_1 \sim \mathcal{N}(0,
\sigma_{\max}^2 I)` (see :meth:`Sampler.init`) and walks down the uniform time grid

.. math:: t_i = 1 - (1 - t_\min) \, \frac{i}{S}, \qquad i = 0, \dots, S,

(:math:`S` steps; :math:`\sigma` goes from :math:`\sigma(1) = \sigma_{\max}` down to
:math:`\sigma(t_\min)`, that is :math:`\sigma_{\min}` for the default :math:`t_\min = 0`), calling
:meth:`Sampler.step` on every pair :math:`(t, s) = (t_i, t_{i+1})`. The result is the sample at
:math:`t_S`, i.e. with a residual noise of standard deviation :math:`\sigma(t_\min)`. Writing
:math:`\hat{x} = D(x_t; \sigma_t)`, the probability-flow ODE is

.. math:: \frac{\mathrm{d} x}{\mathrm{d} \sigma} = \frac{x - D(x; \sigma)}{\sigma} .

- :class:`DDIMSampler`: :math:`x_s = \hat{x} + \sqrt{\sigma_s^2 - \tau^2} \,
  \frac{x_t - \hat{x}}{\sigma_t} + \tau z` with :math:`\tau = \eta \, \sigma_s
  \sqrt{1 - \sigma_s^2 / \sigma_t^2}` (for :math:`\eta = 0`, the Euler step of the ODE;
  for :math:`\eta = 1`, ancestral sampling).
- :class:`PCSampler`: a DDIM predictor followed by Langevin corrector steps at :math:`\sigma_s`.
- :class:`HeunSampler`: EDM's second-order (trapezoidal) ODE integrator.
- :class:`LMSSampler`: a linear multistep ODE integrator reusing past denoiser outputs.

Samplers run under :func:`torch.no_grad` (guidance enables gradients where it needs them), use
``generator`` for all their noise, report progress through ``callback(i, n, x)`` after each step
and stop with :class:`Cancelled` when ``cancel`` is set. ``generator`` is one
:class:`torch.Generator` for the whole batch, or a sequence of B generators, one per batch item:
item :math:`b` then draws all its noise from generator :math:`b`, so that a sample does not
depend on the batch it is drawn in (an ensemble split over processes equals the whole ensemble).

References:
    | Denoising Diffusion Implicit Models (Song et al., 2021)
    | https://arxiv.org/abs/2010.02502

    | Score-Based Generative Modeling through Stochastic Differential Equations
      (Song et al., 2021)
    | https://arxiv.org/abs/2011.13456

    | Score-based Data Assimilation (Rozet & Louppe, 2023)
    | https://arxiv.org/abs/2306.10574

    | Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022)
    | https://arxiv.org/abs/2206.00364
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch
from torch import Tensor

from appa_engine.diffusion.denoiser import Denoiser
from appa_engine.diffusion.schedule import RectifiedSchedule
from appa_engine.errors import ConfigError

__all__ = [
    "Cancelled",
    "DDIMSampler",
    "HeunSampler",
    "LMSSampler",
    "PCSampler",
    "Sampler",
    "randn",
    "randn_like",
]

logger = logging.getLogger(__name__)

#: ``callback(i, n, x)``: called after step ``i`` of ``n`` (1-based) with the current sample.
Callback = Callable[[int, int, Tensor], Any]

#: One generator for the whole batch, a sequence of one generator per batch item, or None (global).
Generators = torch.Generator | Sequence[torch.Generator] | None


class Cancelled(Exception):
    """Sampling was cancelled by the caller (through the ``cancel`` event or callable)."""

    def __init__(self, step: int, steps: int):
        self.step = step
        self.steps = int(steps)
        super().__init__(f"sampling cancelled after {step} of {steps} steps")


def _is_set(cancel: threading.Event | Callable[[], bool] | None) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def randn(
    shape: Sequence[int],
    *,
    generator: Generators = None,
    dtype: torch.dtype | None = None,
    device: Any = None,
) -> Tensor:
    r"""Standard Gaussian noise of shape (B, ...), drawn from ``generator``.

    Arguments:
        shape: The shape (B, ...).
        generator: One generator for the whole tensor, or a sequence of B generators: item
            :math:`b` is then ``torch.randn(shape[1:], generator=generator[b])``, whatever B is.
        dtype: The dtype.
        device: The device (that of the generators).

    Returns:
        The noise, with shape ``shape``.
    """

    shape = tuple(shape)
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    generators = list(generator)
    if not shape or len(generators) != shape[0]:
        raise ConfigError(
            f"{len(generators)} generators for a batch of shape {shape}.",
            hint="give one generator per batch item (first dimension), or a single generator.",
        )
    if not generators:
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.stack(
        [torch.randn(shape[1:], generator=g, dtype=dtype, device=device) for g in generators]
    )


def randn_like(x: Tensor, generator: Generators = None) -> Tensor:
    """Standard Gaussian noise of the shape, dtype and device of ``x``, drawn from ``generator``
    (one generator, or one per batch item: see :func:`randn`)."""

    return randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


class Sampler:
    r"""Base class of samplers.

    Subclasses override :meth:`step`. Calling the sampler runs the loop.

    Arguments:
        denoiser: A denoiser ``(x_t, sigma_t, **cond) -> x_hat``; it receives ``sigma_t`` of
            shape (B,).
        schedule: The noise schedule :math:`\sigma(t)`.
        steps: The number of steps :math:`S`.
        t_min: The final time :math:`t_\min \in [0, 1)` of the grid.
        progress: Whether to show a tqdm progress bar.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        *,
        schedule: RectifiedSchedule,
        steps: int,
        t_min: float = 0.0,
        progress: bool = False,
    ):
        if not (isinstance(steps, Integral) and not isinstance(steps, bool) and steps >= 1):
            raise ConfigError(
                f"the number of sampling steps must be a positive integer, got {steps!r}.",
                hint="use e.g. steps=64.",
            )
        if not (0.0 <= t_min < 1.0):
            raise ConfigError(
                f"t_min must be in [0, 1), got {t_min}.", hint="use t_min=0 to end at sigma_min."
            )

        self.denoiser = denoiser
        self.schedule = schedule
        self.steps = int(steps)
        self.t_min = float(t_min)
        self.progress = progress

    def timesteps(self, *, dtype: torch.dtype | None = None, device: Any = None) -> Tensor:
        r"""The time grid :math:`t_0 = 1 > t_1 > \dots > t_S = t_\min`, with shape (S + 1,)."""

        return torch.linspace(1.0, self.t_min, self.steps + 1, dtype=dtype, device=device)

    def init(
        self,
        shape: Sequence[int],
        *,
        generator: Generators = None,
        dtype: torch.dtype | None = None,
        device: Any = None,
    ) -> Tensor:
        r"""Draws the initial noise :math:`x_1 = \sigma(1) \, \varepsilon`.

        Arguments:
            shape: The sample shape (B, ...).
            generator: The random generator (on ``device``), or one per batch item.

        Returns:
            The initial samples, with shape ``shape``.
        """

        epsilon = randn(shape, generator=generator, dtype=dtype, device=device)
        sigma_1 = self.schedule(torch.ones((), dtype=epsilon.dtype, device=epsilon.device))
        return sigma_1 * epsilon

    def denoise(self, x_t: Tensor, sigma_t: Tensor, **cond: Any) -> Tensor:
        r"""Calls the denoiser with ``sigma_t`` broadcast to shape (B,)."""

        return self.denoiser(x_t, sigma_t.expand(x_t.shape[0]), **cond)

    def step(
        self,
        x_t: Tensor,
        t: Tensor,
        s: Tensor,
        *,
        generator: Generators = None,
        **cond: Any,
    ) -> Tensor:
        r"""One step from time :math:`t` to time :math:`s < t`.

        Arguments:
            x_t: The current samples, with shape (B, ...).
            t: The current time, a scalar tensor.
            s: The next time, a scalar tensor.
            generator: The random generator for any noise drawn (or one per batch item).
            cond: Conditioning passed to the denoiser.

        Returns:
            The samples :math:`x_s`, with shape (B, ...).
        """

        raise NotImplementedError

    def __call__(
        self,
        x_1: Tensor,
        *,
        callback: Callback | None = None,
        cancel: threading.Event | Callable[[], bool] | None = None,
        generator: Generators = None,
        **cond: Any,
    ) -> Tensor:
        r"""Samples :math:`x_0` from :math:`x_1`.

        Arguments:
            x_1: The initial noise, already scaled by :math:`\sigma_{\max}` (see :meth:`init`),
                with shape (B, ...).
            callback: Called as ``callback(i, n, x)`` after step ``i`` of ``n`` (1-based).
            cancel: A :class:`threading.Event` or a callable returning :py:`True` to stop;
                checked before every step, so sampling stops within one step.
            generator: The random generator used for all noise, or one per batch item.
            cond: Conditioning passed to the denoiser.

        Returns:
            The samples :math:`x_0`, with shape (B, ...).

        Raises:
            Cancelled: When ``cancel`` is set.
        """

        from tqdm.auto import tqdm

        time = self.timesteps(dtype=x_1.dtype, device=x_1.device)
        x = x_1

        with torch.no_grad(), tqdm(total=self.steps, disable=not self.progress) as bar:
            for i in range(self.steps):
                if _is_set(cancel):
                    logger.info("sampling cancelled after %d of %d steps", i, self.steps)
                    raise Cancelled(i, self.steps)

                x = self.step(x, time[i], time[i + 1], generator=generator, **cond)
                bar.update(1)

                if callback is not None:
                    callback(i + 1, self.steps, x)

        return x


class DDIMSampler(Sampler):
    r"""DDIM sampler for the variance-exploding process.

    .. math:: x_s = \hat{x} + \sqrt{\sigma_s^2 - \tau^2} \, \frac{x_t - \hat{x}}{\sigma_t}
              + \tau z, \qquad \tau = \eta \, \sigma_s \sqrt{1 - \sigma_s^2 / \sigma_t^2},
              \qquad z \sim \mathcal{N}(0, I)

    For :math:`\eta = 0` this is deterministic, :math:`x_s = \hat{x} + \frac{\sigma_s}{\sigma_t}
    (x_t - \hat{x})`; for :math:`\eta = 1`, :math:`x_s` is drawn from
    :math:`q(x_s \mid x_t, x = \hat{x})`.

    Arguments:
        denoiser: A denoiser ``(x_t, sigma_t, **cond) -> x_hat``.
        eta: The stochasticity :math:`\eta \in [0, 1]`.
        kwargs: Keyword arguments of :class:`Sampler` (``schedule``, ``steps``, ...).
    """

    def __init__(self, denoiser: Denoiser, *, eta: float = 0.0, **kwargs: Any):
        super().__init__(denoiser, **kwargs)

        if not (0.0 <= eta <= 1.0):
            raise ConfigError(f"DDIM's eta must be in [0, 1], got {eta}.", hint="use eta=0.")

        self.eta = float(eta)

    def step(self, x_t, t, s, *, generator=None, **cond):
        sigma_t, sigma_s = self.schedule(t), self.schedule(s)
        x_hat = self.denoise(x_t, sigma_t, **cond)

        if self.eta == 0:
            return x_hat + (sigma_s / sigma_t) * (x_t - x_hat)

        tau = self.eta * sigma_s * torch.sqrt((1 - (sigma_s / sigma_t) ** 2).clamp(min=0))
        scale = torch.sqrt((sigma_s**2 - tau**2).clamp(min=0)) / sigma_t

        return x_hat + scale * (x_t - x_hat) + tau * randn_like(x_t, generator)


class PCSampler(Sampler):
    r"""Predictor-corrector sampler.

    Each step is a deterministic DDIM predictor from :math:`t` to :math:`s`, followed by
    ``corrections`` unadjusted Langevin steps targeting :math:`p(x_s)` with the step size
    :math:`\delta \sigma_s^2`,

    .. math:: x \gets x + \delta \sigma_s^2 \nabla \log p(x_s)
              + \sqrt{2 \delta} \, \sigma_s z
              = x + \delta \big( D(x; \sigma_s) - x \big) + \sqrt{2 \delta} \, \sigma_s z,

    using Tweedie's score :math:`\nabla \log p(x_s) = (D(x; \sigma_s) - x) / \sigma_s^2`.
    Each step calls the denoiser ``1 + corrections`` times. Appa samples its posteriors with
    32 steps, 2 corrections and :math:`\delta = 0.1`.

    Arguments:
        denoiser: A denoiser ``(x_t, sigma_t, **cond) -> x_hat``.
        corrections: The number of Langevin steps per step.
        delta: The relative Langevin step size :math:`\delta > 0`.
        kwargs: Keyword arguments of :class:`Sampler` (``schedule``, ``steps``, ...).
    """

    def __init__(
        self, denoiser: Denoiser, *, corrections: int = 2, delta: float = 0.1, **kwargs: Any
    ):
        super().__init__(denoiser, **kwargs)

        if not (isinstance(corrections, Integral) and corrections >= 0):
            raise ConfigError(
                f"corrections must be a non-negative integer, got {corrections!r}.",
                hint="use e.g. corrections=2.",
            )
        if not (0.0 < delta < 1.0):
            raise ConfigError(
                f"the Langevin step size delta must be in (0, 1), got {delta}.",
                hint="use e.g. delta=0.1.",
            )

        self.corrections = int(corrections)
        self.delta = float(delta)

    def step(self, x_t, t, s, *, generator=None, **cond):
        sigma_t, sigma_s = self.schedule(t), self.schedule(s)

        x_hat = self.denoise(x_t, sigma_t, **cond)
        x_s = x_hat + (sigma_s / sigma_t) * (x_t - x_hat)

        for _ in range(self.corrections):
            x_hat = self.denoise(x_s, sigma_s, **cond)
            x_s = (
                x_s
                + self.delta * (x_hat - x_s)
                + (2 * self.delta) ** 0.5 * sigma_s * randn_like(x_s, generator)
            )

        return x_s


class HeunSampler(Sampler):
    r"""EDM's deterministic second-order (Heun) sampler of the probability-flow ODE.

    .. math:: d_t = \frac{x_t - D(x_t; \sigma_t)}{\sigma_t}, \quad
              \tilde{x}_s = x_t + (\sigma_s - \sigma_t) \, d_t, \quad
              x_s = x_t + (\sigma_s - \sigma_t) \, \frac{d_t + \tilde{d}_s}{2},

    with :math:`\tilde{d}_s = (\tilde{x}_s - D(\tilde{x}_s; \sigma_s)) / \sigma_s`. The schedule
    ends at :math:`\sigma_{\min} > 0`, so the correction is applied at every step (two denoiser
    calls per step).

    Arguments:
        denoiser: A denoiser ``(x_t, sigma_t, **cond) -> x_hat``.
        kwargs: Keyword arguments of :class:`Sampler` (``schedule``, ``steps``, ...).
    """

    def step(self, x_t, t, s, *, generator=None, **cond):
        sigma_t, sigma_s = self.schedule(t), self.schedule(s)

        d_t = (x_t - self.denoise(x_t, sigma_t, **cond)) / sigma_t
        x_s = x_t + (sigma_s - sigma_t) * d_t

        d_s = (x_s - self.denoise(x_s, sigma_s, **cond)) / sigma_s
        return x_t + (sigma_s - sigma_t) * (d_t + d_s) / 2


def _lms_weights(sigmas: Sequence[float], sigma_t: float, sigma_s: float) -> list[float]:
    r"""Weights :math:`w_j = \sigma_s \int_{\sigma_t}^{\sigma_s} \ell_j(\sigma) \sigma^{-2}
    \, \mathrm{d}\sigma` of the Lagrange basis :math:`\ell_j` on the nodes ``sigmas``."""

    weights = []
    for j, sigma_j in enumerate(sigmas):
        others = [sigma_m for m, sigma_m in enumerate(sigmas) if m != j]
        # l_j(sigma) = prod_m (sigma - sigma_m) / (sigma_j - sigma_m) = sum_k a_k sigma^k
        a = np.polynomial.polynomial.polyfromroots(others) / np.prod(
            [sigma_j - sigma_m for sigma_m in others]
        )
        integral = 0.0
        for k, a_k in enumerate(a):  # int sigma^(k - 2) dsigma
            if k == 0:
                integral += a_k * (1 / sigma_t - 1 / sigma_s)
            elif k == 1:
                integral += a_k * np.log(sigma_s / sigma_t)
            else:
                integral += a_k * (sigma_s ** (k - 1) - sigma_t ** (k - 1)) / (k - 1)
        weights.append(sigma_s * integral)

    return weights


class LMSSampler(Sampler):
    r"""Linear multistep sampler of the probability-flow ODE.

    Writing the ODE for :math:`v = x / \sigma`, :math:`\mathrm{d} v / \mathrm{d} \sigma =
    - D(x; \sigma) / \sigma^2`, the step integrates exactly the Lagrange polynomial (in
    :math:`\sigma`) through the last ``order`` denoiser outputs :math:`\hat{x}_j` at
    :math:`\sigma_j`:

    .. math:: x_s = \frac{\sigma_s}{\sigma_t} x_t - \sum_j \hat{x}_j \,
              \sigma_s \int_{\sigma_t}^{\sigma_s} \frac{\ell_j(\sigma)}{\sigma^2} \,
              \mathrm{d}\sigma .

    With one node this is the DDIM step. One denoiser call per step; the first steps use
    lower orders while the history fills up. Not re-entrant (the history lives on the
    instance during a call).

    Arguments:
        denoiser: A denoiser ``(x_t, sigma_t, **cond) -> x_hat``.
        order: The order of the method (number of past outputs used), 1 to 4.
        kwargs: Keyword arguments of :class:`Sampler` (``schedule``, ``steps``, ...).
    """

    def __init__(self, denoiser: Denoiser, *, order: int = 3, **kwargs: Any):
        super().__init__(denoiser, **kwargs)

        if order not in (1, 2, 3, 4):
            raise ConfigError(f"the LMS order must be 1 to 4, got {order!r}.", hint="use order=3.")

        self.order = order
        self._history: list[tuple[float, Tensor]] = []

    def __call__(self, x_1: Tensor, **kwargs: Any) -> Tensor:
        self._history = []
        try:
            return super().__call__(x_1, **kwargs)
        finally:
            self._history = []

    def step(self, x_t, t, s, *, generator=None, **cond):
        sigma_t, sigma_s = self.schedule(t), self.schedule(s)

        x_hat = self.denoise(x_t, sigma_t, **cond)
        self._history = [(float(sigma_t), x_hat), *self._history][: self.order]

        nodes = [sigma for sigma, _ in self._history]
        weights = _lms_weights(nodes, float(sigma_t), float(sigma_s))

        x_s = (sigma_s / sigma_t) * x_t
        for w, (_, x_hat_j) in zip(weights, self._history):
            x_s = x_s - w * x_hat_j

        return x_s

r"""Noise schedule of the variance-exploding diffusion process.

The forward process adds Gaussian noise to a clean sample :math:`x`,

.. math:: x_t = x + \sigma(t) \, \varepsilon, \qquad \varepsilon \sim \mathcal{N}(0, I),
          \qquad t \in [0, 1],

with the "rectified" schedule

.. math:: \sigma(t) = \frac{t + (1 - t) \, \sigma_{\min}}{1 - t + t / \sigma_{\max}},

which goes from :math:`\sigma(0) = \sigma_{\min}` to :math:`\sigma(1) = \sigma_{\max}`,
increases monotonically and is symmetric in :math:`\log \sigma` when
:math:`\sigma_{\min} \sigma_{\max} = 1` (then :math:`\sigma(1/2) = 1`). Its inverse is

.. math:: t(\sigma) = \frac{\sigma - \sigma_{\min}}
          {1 - \sigma_{\min} + \sigma (1 - 1 / \sigma_{\max})}.

References:
    | Appa: Bending Weather Dynamics with Latent Diffusion Models for Global Data Assimilation
      (Andry et al., 2025)
    | https://arxiv.org/abs/2504.18720
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from appa_engine.errors import ConfigError

__all__ = ["RectifiedSchedule"]


class RectifiedSchedule(nn.Module):
    r"""The rectified variance-exploding schedule :math:`\sigma(t)`.

    The bounds are Python floats, so the output follows the dtype and device of ``t``.

    Arguments:
        sigma_min: The noise level at :math:`t = 0`, :math:`\sigma_{\min} > 0`.
        sigma_max: The noise level at :math:`t = 1`, :math:`\sigma_{\max} > \sigma_{\min}`.

    Example:
        >>> schedule = RectifiedSchedule()
        >>> schedule(torch.tensor([0.0, 0.5, 1.0]))
        tensor([1.0000e-03, 1.0000e+00, 1.0000e+03])
    """

    def __init__(self, *, sigma_min: float = 1e-3, sigma_max: float = 1e3):
        super().__init__()

        if not (0.0 < sigma_min < sigma_max):
            raise ConfigError(
                f"the noise schedule needs 0 < sigma_min < sigma_max, "
                f"got sigma_min={sigma_min} and sigma_max={sigma_max}.",
                hint="use e.g. sigma_min=1e-3 and sigma_max=1e3 (Appa's values).",
            )

        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    def sigma(self, t: Tensor) -> Tensor:
        r"""The noise level :math:`\sigma(t)`.

        Arguments:
            t: Times in :math:`[0, 1]`, any shape.

        Returns:
            The noise levels :math:`\sigma(t)`, with the shape of ``t``.
        """

        t = torch.as_tensor(t)
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())

        return (t + (1 - t) * self.sigma_min) / (1 - t + t / self.sigma_max)

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        r"""The time :math:`t(\sigma)`, inverse of :meth:`sigma`.

        Arguments:
            sigma: Noise levels in :math:`[\sigma_{\min}, \sigma_{\max}]`, any shape.

        Returns:
            The times :math:`t`, with the shape of ``sigma``.
        """

        sigma = torch.as_tensor(sigma)
        if not sigma.is_floating_point():
            sigma = sigma.to(torch.get_default_dtype())

        return (sigma - self.sigma_min) / (
            1 - self.sigma_min + sigma * (1 - 1 / self.sigma_max)
        )

    def forward(self, t: Tensor) -> Tensor:
        r"""Alias of :meth:`sigma`."""

        return self.sigma(t)

    def extra_repr(self) -> str:
        return f"sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g}"

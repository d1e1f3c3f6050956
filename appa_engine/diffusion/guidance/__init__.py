r"""Guidance: denoiser wrappers that condition a diffusion prior on observations
:math:`y = \mathcal{A}(x) + \eta`, :math:`\eta \sim \mathcal{N}(0, \Sigma_y)`.

Each wrapper is itself a denoiser ``(x_t, sigma_t, **cond) -> x_hat``, so every sampler works with
every guidance method.

- :class:`MMPSDenoiser`: moment matching posterior sampling (Rozet et al., 2024), Appa's method.
- :class:`DPSDenoiser`: diffusion posterior sampling (Chung et al., 2022), the cheap alternative.
"""

from __future__ import annotations

from appa_engine.diffusion.guidance.dps import DPSDenoiser
from appa_engine.diffusion.guidance.mmps import MMPSDenoiser

__all__ = ["DPSDenoiser", "MMPSDenoiser"]

r"""Overlapping blankets: cut a long trajectory into windows of K states and stitch them back.

The prior models blankets of K consecutive latent states. A trajectory of L ≥ K states is covered
by blankets starting every S states (S = K/2 by default), plus one final blanket aligned with the
end when (L − K) is not a multiple of S:

.. math:: \text{starts} = \{0, S, 2S, \dots\} \cap [0, L-K] \;\cup\; \{L - K\}.

At every diffusion step the current noisy trajectory is *unfolded* into blankets, each blanket is
denoised, and the denoised blankets are *folded* back: every state is taken from exactly one
blanket, its *owner*:

- ``symmetric`` (reanalysis): the blanket in which the state is most central, i.e. the one that
  minimises :math:`|k - (K-1)/2|` over the positions k of the state in the blankets that contain it
  (ties go to the earlier blanket). Every state then sees at least ~K/4 states of context on each
  side when the trajectory allows it.
- ``causal`` (forecasts): the earliest blanket that contains the state owns it, so the overlap is
  decided by the blanket that carries the (earlier) observations.

Folding is a gather, hence differentiable: the trajectory denoiser
:math:`\mathrm{fold} \circ D \circ \mathrm{unfold}` can be guided like any denoiser.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import torch

from appa_engine.errors import ConfigError

__all__ = ["BlanketLayout"]


@dataclass(frozen=True)
class BlanketLayout:
    """How a trajectory of ``length`` states is covered by blankets of ``blanket`` states.

    Arguments:
        length: Trajectory length L (≥ K).
        blanket: Blanket length K.
        stride: Offset S between consecutive blanket starts (default K // 2, at least 1).
        mode: ``"symmetric"`` or ``"causal"`` ownership of overlapping states.
    """

    length: int
    blanket: int
    stride: int | None = None
    mode: Literal["symmetric", "causal"] = "symmetric"

    def __post_init__(self):
        if self.blanket < 1:
            raise ConfigError(f"the blanket length must be positive, got {self.blanket}")
        if self.length < self.blanket:
            raise ConfigError(
                f"a trajectory of {self.length} states is shorter than one blanket ({self.blanket} states)",
                hint="pad the window to at least one blanket (the tasks do this and crop afterwards)",
            )
        if not 1 <= self.step <= self.blanket:
            raise ConfigError(f"the stride must be in [1, {self.blanket}], got {self.stride}")
        if self.mode not in ("symmetric", "causal"):
            raise ConfigError(f"unknown fold mode '{self.mode}'", hint="use 'symmetric' or 'causal'")

    @property
    def step(self) -> int:
        return self.stride if self.stride is not None else max(self.blanket // 2, 1)

    @cached_property
    def starts(self) -> np.ndarray:
        """Start index of each blanket, shape ``(nb,)``, ascending."""
        starts = list(range(0, self.length - self.blanket + 1, self.step))
        if starts[-1] != self.length - self.blanket:
            starts.append(self.length - self.blanket)
        return np.asarray(starts)

    @property
    def num_blankets(self) -> int:
        return len(self.starts)

    @cached_property
    def owner(self) -> np.ndarray:
        """``owner[l] = (b, k)``: state ``l`` is taken from position ``k`` of blanket ``b``; ``(L, 2)``."""
        out = np.empty((self.length, 2), dtype=np.int64)
        centre = (self.blanket - 1) / 2
        for l in range(self.length):
            candidates = [(b, l - s) for b, s in enumerate(self.starts) if s <= l < s + self.blanket]
            if self.mode == "causal":
                out[l] = candidates[0]
            else:
                out[l] = min(candidates, key=lambda bk: (abs(bk[1] - centre), bk[0]))
        return out

    def unfold(self, x: torch.Tensor, *, dim: int = 1) -> torch.Tensor:
        """Cut trajectories into blankets.

        Arguments:
            x: Trajectories, time along ``dim`` of size L, e.g. ``(B, L, Z, h, w)``.

        Returns:
            Blankets with a new blanket axis before time: ``(B, nb, K, Z, h, w)`` for ``dim=1``.
        """
        if x.shape[dim] != self.length:
            raise ValueError(f"expected {self.length} states along dim {dim}, got {x.shape[dim]}")
        index = torch.as_tensor(self.starts[:, None] + np.arange(self.blanket)[None], device=x.device)
        y = x.index_select(dim, index.flatten())
        shape = list(x.shape)
        shape[dim : dim + 1] = [self.num_blankets, self.blanket]
        return y.reshape(shape)

    def fold(self, blankets: torch.Tensor, *, dim: int = 1) -> torch.Tensor:
        """Stitch blankets back into trajectories (each state from its owner).

        Arguments:
            blankets: ``(B, nb, K, ...)`` for ``dim=1``.

        Returns:
            Trajectories ``(B, L, ...)``.
        """
        if blankets.shape[dim] != self.num_blankets or blankets.shape[dim + 1] != self.blanket:
            raise ValueError(
                f"expected ({self.num_blankets}, {self.blanket}) blankets at dims {dim}, {dim + 1}, "
                f"got {tuple(blankets.shape[dim:dim + 2])}"
            )
        flat = blankets.flatten(dim, dim + 1)
        index = torch.as_tensor(self.owner[:, 0] * self.blanket + self.owner[:, 1], device=flat.device)
        return flat.index_select(dim, index)

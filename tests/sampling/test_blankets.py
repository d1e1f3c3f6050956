"""Fold/unfold identities and ownership of overlapping states."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from appa_engine.errors import ConfigError
from appa_engine.sampling.blankets import BlanketLayout

CASES = [(8, 8), (12, 8), (13, 8), (24, 8), (9, 4), (17, 6), (5, 1)]


@pytest.mark.parametrize("mode", ["symmetric", "causal"])
@pytest.mark.parametrize("length, blanket", CASES)
def test_fold_unfold_is_identity(length, blanket, mode):
    layout = BlanketLayout(length, blanket, mode=mode)
    x = torch.randn(3, length, 2, 4, 5)
    b = layout.unfold(x)
    assert b.shape == (3, layout.num_blankets, blanket, 2, 4, 5)
    for i, s in enumerate(layout.starts):  # each blanket is the right slice
        assert torch.equal(b[:, i], x[:, s : s + blanket])
    assert torch.equal(layout.fold(b), x)


@pytest.mark.parametrize("length, blanket", CASES)
def test_blankets_cover_and_stay_inside(length, blanket):
    layout = BlanketLayout(length, blanket)
    starts = layout.starts
    assert starts[0] == 0 and starts[-1] == length - blanket
    assert np.all(np.diff(starts) > 0) and np.all(np.diff(starts) <= max(blanket // 2, 1))


def test_symmetric_owner_is_most_central():
    layout = BlanketLayout(16, 8, mode="symmetric")  # starts 0, 4, 8
    assert list(layout.starts) == [0, 4, 8]
    owners = layout.owner[:, 0].tolist()
    # states 0-5 from blanket 0 (positions 0..5; 6 is at position 2 of blanket 1, more central)
    # brute force: the most central position among the blankets containing each state
    for l, (b, k) in enumerate(layout.owner):
        best = min(abs(l - s - 3.5) for s in layout.starts if s <= l < s + 8)
        assert abs(k - 3.5) == best and layout.starts[b] + k == l
    assert owners == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]


def test_causal_owner_is_earliest_blanket():
    layout = BlanketLayout(16, 8, mode="causal")
    assert layout.owner[:, 0].tolist() == [0] * 8 + [1] * 4 + [2] * 4
    for l, (b, k) in enumerate(layout.owner):
        assert b == min(i for i, s in enumerate(layout.starts) if s <= l < s + 8)
        assert layout.starts[b] + k == l


def test_fold_is_differentiable_and_takes_owner_values():
    layout = BlanketLayout(12, 8, mode="symmetric")
    blankets = torch.zeros(1, layout.num_blankets, 8, requires_grad=True)
    folded = layout.fold(blankets)
    folded.sum().backward()
    # every state is taken exactly once
    assert blankets.grad.sum() == 12
    assert torch.equal(blankets.grad[0].nonzero()[:, 0].bincount(), torch.as_tensor(np.bincount(layout.owner[:, 0])))


def test_bad_layouts():
    with pytest.raises(ConfigError, match="shorter than one blanket"):
        BlanketLayout(4, 8)
    with pytest.raises(ConfigError, match="stride"):
        BlanketLayout(16, 8, stride=9)
    with pytest.raises(ConfigError, match="fold mode"):
        BlanketLayout(16, 8, mode="sideways")

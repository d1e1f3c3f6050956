"""Global batches: the same samples whatever the number of processes, and exact resumption."""

from __future__ import annotations

import pytest
import torch

from appa_engine.errors import ConfigError
from appa_engine.train.loop import GlobalBatchSampler, lr_lambda, OptimConfig, sample_generator


def test_ranks_partition_the_global_batch():
    one = GlobalBatchSampler(37, 8, seed=3, steps=12)
    two = [GlobalBatchSampler(37, 8, seed=3, rank=r, world_size=2, steps=12) for r in range(2)]
    for step, (full, a, b) in enumerate(zip(one, *two)):
        assert sorted(full) == sorted(a + b)
        assert full == one.global_batch(step)


def test_epochs_are_permutations():
    s = GlobalBatchSampler(10, 5, seed=0, steps=4)
    batches = list(s)
    assert sorted(batches[0] + batches[1]) == list(range(10))
    assert sorted(batches[2] + batches[3]) == list(range(10))
    assert batches[0] + batches[1] != batches[2] + batches[3]  # reshuffled


def test_resume_continues_the_same_sequence():
    full = list(GlobalBatchSampler(23, 4, seed=1, steps=10))
    resumed = list(GlobalBatchSampler(23, 4, seed=1, start_step=6, steps=10))
    assert resumed == full[6:]


def test_bad_batches():
    with pytest.raises(ConfigError, match="not divisible"):
        GlobalBatchSampler(10, 5, seed=0, world_size=2)
    with pytest.raises(ConfigError, match="empty"):
        GlobalBatchSampler(0, 4, seed=0)


def test_sample_generators_are_per_sample():
    a = torch.rand(3, generator=sample_generator(0, 5, 2))
    b = torch.rand(3, generator=sample_generator(0, 5, 2))
    c = torch.rand(3, generator=sample_generator(0, 5, 3))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_learning_rate_schedule():
    f = lr_lambda(OptimConfig(warmup=10, schedule="cosine"), 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)
    g = lr_lambda(OptimConfig(warmup=0, schedule="linear"), 100)
    assert g(50) == pytest.approx(0.5)

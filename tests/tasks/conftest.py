"""Fixtures of the task tests: an assimilator on the tiny model, and the tiny truth store."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def assim(tiny_model):
    from appa_engine.tasks.assimilator import Assimilator

    return Assimilator(tiny_model, device="cpu")


@pytest.fixture(scope="module")
def truth(tiny_store):
    from appa_engine.data.readers import open_dataset

    return open_dataset(tiny_store)

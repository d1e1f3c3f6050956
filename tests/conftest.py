"""Shared test settings and fixtures: fixed seeds, a tiny canonical store, a tiny trained model.

The tiny model package is made once per session by the real training commands (a few steps: a
real model, not a good one), so every test of sampling, assimilation and the app runs the real
engine end to end.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

# pyproj before eccodes/netCDF4, as the app does (see app/__init__.py): in the other order the process
# aborts at exit ("double free or corruption") once a page has been served.
import pyproj  # noqa: E402,F401

import numpy as np
import pytest

#: Variables of the tiny store: 3 level variables on 2 levels + 2 surface variables = 8 channels.
TINY_VARIABLES = ("geopotential", "temperature", "u_component_of_wind", "2m_temperature", "mean_sea_level_pressure")
#: Quiet, short training: the tiny preset, no progress bars, a log record per step.
TRAIN = ["--preset", "tiny", "--set", "loop.progress=false", "--set", "loop.log_every=1"]


@pytest.fixture
def rng() -> np.random.Generator:
    """A NumPy generator with a fixed seed."""
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed_torch():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """48 six-hourly states of mock ERA5-like data on a 16×32 grid (canonical zarr)."""

    from appa_engine.data.schema import mock_canonical

    root = tmp_path_factory.mktemp("tiny-data")
    ds = mock_canonical(48, variables=TINY_VARIABLES, levels=(500, 850), nlat=16, nlon=32, seed=1)
    ds.to_zarr(root / "data.zarr", consolidated=False)
    return root / "data.zarr"


@pytest.fixture(scope="session")
def tiny_stats(tiny_store):
    from appa_engine.cli import main

    out = tiny_store.parent / "stats.json"
    assert main(["data", "stats", str(tiny_store), "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_package(tiny_store, tiny_stats, tmp_path_factory):
    """A tiny model package (K = 4) made by `appa train autoencoder`, `appa encode`, `appa train diffusion`."""

    from appa_engine.cli import main

    root = tmp_path_factory.mktemp("tiny-model")
    assert main(["train", "autoencoder", "--data", str(tiny_store), "--stats", str(tiny_stats),
                 "--out", str(root / "ae"), "--steps", "3", "--batch-size", "4", *TRAIN]) == 0
    assert main(["encode", "--autoencoder", str(root / "ae" / "model.pt"), "--data", str(tiny_store),
                 "--out", str(root / "latents.zarr"), "--quiet"]) == 0
    assert main(["train", "diffusion", "--latents", str(root / "latents.zarr"), "--out", str(root / "prior"),
                 "--steps", "3", "--batch-size", "4", "--set", "blanket=4", *TRAIN]) == 0
    return root / "prior" / "package"


@pytest.fixture(scope="session")
def tiny_model(tiny_package):
    from appa_engine.io.package import load_model

    return load_model(tiny_package)

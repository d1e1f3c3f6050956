"""The background (O−B) pass on its own: :meth:`Assimilator.background` gives exactly the arrays of
``run(scenario, background=True)``, whose guided arrays it leaves untouched, and both equal the
background rebuilt by hand from the public pieces (unguided prior with a fresh generator, full
decoder, compiled operator)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import xarray as xr

from appa_engine.diffusion.samplers import Cancelled
from appa_engine.errors import ConfigError
from appa_engine.observations.observers import LatentObserver, ObservationSet
from appa_engine.observations.scenario import SamplerSettings, Scenario
from appa_engine.tasks.simulate import random_stations, simulate

FAST = SamplerSettings(name="ddim", steps=3)
START = "2020-01-02T00"


def _scenario(assim, truth, *, task: str, hours: int, lead_hours: int = 0, latent: bool = False,
              seed: int = 3) -> Scenario:
    times = assim.window(START, hours)
    obs = list(simulate(assim.model, ObservationSet([random_stations(12, times=times, seed=1)]), truth, times,
                        seed=2))
    if latent:  # an observer of the latent trajectory: the operator's latent branch
        Z = assim.model.spec.autoencoder.latent_channels
        h, w = assim.model.spec.latent_shape
        obs.append(LatentObserver(name="z", times=times[1:2], errors=0.1,
                                  values=np.random.default_rng(0).normal(size=(1, Z, h, w))))
    return Scenario(start=START, observations=ObservationSet(obs), task=task, hours=hours, lead_hours=lead_hours,
                    members=2, sampler=FAST, seed=seed)


# A reanalysis longer than a blanket (K = 4: 6 states, symmetric stitching) with a latent observer,
# a filter shorter than a blanket (cropped) and a forecast whose free states follow the window.
CASES = {
    "reanalysis": dict(task="reanalysis", hours=30, latent=True),
    "filter": dict(task="filter", hours=12),
    "forecast": dict(task="forecast", hours=12, lead_hours=12),
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_calls_equal_one_call_bit_for_bit(assim, truth, case):
    scenario = _scenario(assim, truth, **CASES[case])
    steps: list[tuple[int, int]] = []
    one = assim.run(scenario, background=True)
    guided = assim.run(scenario)
    later = assim.background(scenario, progress=lambda i, n: steps.append((i, n)))
    assert "obs_background" not in guided and steps == [(i, FAST.steps) for i in range(1, FAST.steps + 1)]
    one.attrs["created"] = guided.attrs["created"]  # the one attribute that may differ (a timestamp)
    # The background pass does not touch the guided one.
    xr.testing.assert_identical(one.drop_vars("obs_background"), guided)
    # Bit-identical O - B, with the same dims, coordinates and attributes.
    assert later.name == "obs_background" and later.dims == ("member", "obs")
    np.testing.assert_array_equal(later.values, one["obs_background"].values)
    assert later.attrs == one["obs_background"].attrs == {"long_name": "model equivalent of the prior ensemble"}
    xr.testing.assert_identical(guided.assign(obs_background=later), one)
    assert np.isfinite(later.values).all() and not np.allclose(later.values, one["obs_analysis"].values)


def test_the_background_is_the_unguided_prior_observed(assim, truth):
    """Rebuilt by hand: prior ensemble (fresh generator, symmetric stitching), decoded, observed.

    (Symmetric and causal stitching give identical numbers with the tiny model, measured: the
    stitching mode is not something this test can tell apart.)"""

    scenario = _scenario(assim, truth, task="reanalysis", hours=30, latent=True)
    times = assim.window(START, 30)
    compiled = assim.compile(scenario.observations, times)

    def by_hand() -> np.ndarray:
        z = assim.sample_latent(times, members=2, mode="symmetric", sampler=FAST,
                                generator=torch.Generator().manual_seed(scenario.seed))
        x = assim.decode(z)
        states = torch.as_tensor(compiled.state_indices)
        with torch.no_grad():
            hx = compiled.A(assim.model.standardize(x[:, states]), z=z)
        return compiled.to_physical(hx.double().numpy())

    got = assim.background(scenario)
    # By hand, every channel of every state is decoded; the background pass decodes only the
    # observed states and channels (float32 rounding apart, the same numbers).
    assert assim.operator(compiled).channels is not None  # the cut is exercised
    np.testing.assert_allclose(got.values, by_hand(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["obs_lon"].values, compiled.table["lon"].to_numpy(np.float64))
    assert list(got["member"].values) == [0, 1]
    other_seed = assim.background(_scenario(assim, truth, task="reanalysis", hours=30, latent=True, seed=4))
    assert not np.allclose(other_seed.values, got.values)


def test_no_observations_no_background_and_errors(assim, truth):
    prior = Scenario(start=START, hours=12, members=2, sampler=FAST)
    assert assim.background(prior) is None
    cancel = threading.Event()
    seen = []

    def progress(i, n):
        seen.append(i)
        if i == 1:
            cancel.set()

    with pytest.raises(Cancelled):
        assim.background(_scenario(assim, truth, task="filter", hours=12), progress=progress, cancel=cancel)
    assert seen == [1]
    with pytest.raises(ConfigError, match="positive lead time"):
        assim._task_windows("forecast", start=START, hours=12, lead_hours=0)
    with pytest.raises(ConfigError, match="unknown task 'nowcast'"):
        assim._task_windows("nowcast", start=START, hours=12)

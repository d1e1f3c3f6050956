"""Members independent of how the ensemble is split, sampling over two processes (gloo on CPU) and
bf16 autocast, on the tiny model."""

from __future__ import annotations

import dataclasses
import os
import socket

import numpy as np
import pytest
import torch
import xarray as xr

from appa_engine.diffusion.samplers import randn
from appa_engine.errors import ConfigError
from appa_engine.observations.observers import ObservationSet
from appa_engine.observations.scenario import GuidanceSettings, SamplerSettings, Scenario
from appa_engine.tasks.assimilator import Assimilator, member_generators, member_slice
from appa_engine.tasks.simulate import random_stations, simulate

START = "2020-01-02T00"
DDIM = SamplerSettings(name="ddim", steps=3)
PC = SamplerSettings(name="pc", steps=3, corrections=1)


@pytest.fixture(scope="module")
def stations(assim, truth):
    times = assim.window(START, 30)
    return simulate(assim.model, ObservationSet([random_stations(15, times=times, seed=1)]), truth, times, seed=2)


# ---------------------------------------------------------------------------- streams and slices
def test_member_slice_splits_evenly_and_contiguously():
    assert [member_slice(3, 2, r) for r in range(2)] == [range(0, 2), range(2, 3)]
    assert [member_slice(1, 3, r) for r in range(3)] == [range(0, 1), range(1, 1), range(1, 1)]
    for members in range(8):
        for world in range(1, 5):
            parts = [member_slice(members, world, r) for r in range(world)]
            assert [m for p in parts for m in p] == list(range(members))  # contiguous, in rank order
            sizes = [len(p) for p in parts]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_member_generators_depend_on_the_member_only():
    def first_draws(gens):
        return [torch.randn(3, generator=g) for g in gens]

    full = first_draws(member_generators(torch.Generator().manual_seed(5), range(4)))
    alone = first_draws(member_generators(torch.Generator().manual_seed(5), range(2, 4)))
    assert all(torch.equal(a, b) for a, b in zip(alone, full[2:]))
    assert not torch.equal(full[2], full[3])
    other_seed = first_draws(member_generators(torch.Generator().manual_seed(6), range(4)))
    assert not torch.equal(other_seed[0], full[0])
    assert member_generators(torch.Generator().manual_seed(5), range(3, 3)) == []
    with pytest.raises(ConfigError, match="range"):
        member_generators(torch.Generator(), range(0, 4, 2))


def test_randn_with_one_generator_per_item():
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    x = randn((3, 2, 5), generator=gens)
    for b, s in enumerate((1, 2, 3)):  # item b is what its generator alone draws
        assert torch.equal(x[b], torch.randn((2, 5), generator=torch.Generator().manual_seed(s)))
    # one generator keeps the old behaviour: one stream for the whole tensor
    assert torch.equal(randn((3, 4), generator=torch.Generator().manual_seed(1)),
                       torch.randn((3, 4), generator=torch.Generator().manual_seed(1)))
    assert randn((0, 4), generator=[]).shape == (0, 4)
    with pytest.raises(ConfigError, match="2 generators for a batch of shape"):
        randn((3, 4), generator=gens[:2])


# ---------------------------------------------------------------------------- members alone = in the ensemble
@pytest.mark.parametrize("sampler", [DDIM, PC], ids=["ddim", "pc"])
@pytest.mark.parametrize("guided", [False, True], ids=["prior", "mmps"])
def test_members_sampled_alone_equal_the_same_members_of_the_ensemble(assim, stations, sampler, guided):
    times = assim.window(START, 30)  # 6 states > K = 4: stitched blankets
    kw = dict(mode="symmetric", sampler=sampler, guidance=GuidanceSettings(method="mmps", iterations=2))
    if guided:
        compiled = assim.compile(stations, times)
        kw.update(A=assim.operator(compiled), y=compiled.y, cov_y=compiled.cov_y)
    full = assim.sample_latent(times, members=4, generator=torch.Generator().manual_seed(11), **kw)
    alone = assim.sample_latent(times, members=range(2, 4), generator=torch.Generator().manual_seed(11), **kw)
    assert alone.shape == full[2:].shape == (2, 6, *full.shape[2:])
    # Same noise per member; only the batch size of the network passes differs (rounding at most:
    # on this CPU the two are bit-identical, measured).
    torch.testing.assert_close(alone, full[2:], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(full[2], full[3])  # the members' streams differ
    none = assim.sample_latent(times, members=range(1, 1), generator=torch.Generator().manual_seed(11), **kw)
    assert none.shape == (0, *full.shape[1:])


def test_wrong_number_of_member_generators(assim):
    with pytest.raises(ConfigError, match="3 generators for 2 members"):
        assim.sample_latent(assim.window(START, 6), members=2, generator=[torch.Generator()] * 3)


# ---------------------------------------------------------------------------- precision
def _without_timestamp(ds: xr.Dataset) -> xr.Dataset:
    return ds.assign_attrs(created="")


def test_auto_on_cpu_is_fp32_bit_identical(tiny_model, stations):
    kw = dict(start=START, hours=30, members=2, sampler=PC, seed=3)
    auto = Assimilator(tiny_model, device="cpu")
    fp32 = Assimilator(tiny_model, device="cpu", precision="fp32")
    assert auto.precision == fp32.precision == "fp32"
    a = auto.reanalysis(stations, **kw)
    xr.testing.assert_identical(_without_timestamp(a), _without_timestamp(fp32.reanalysis(stations, **kw)))
    assert a.attrs["precision"] == "fp32" and a.attrs["world_size"] == 1
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        Assimilator(tiny_model, device="cpu", precision="fp16")


def test_bf16_on_cpu_is_close_to_fp32(tiny_model, stations):
    """bf16 keeps 8 significant bits (unit roundoff 2^-9 ≈ 2e-3); through the networks and the
    sampler's steps the decoded fields move by 5-9 % of the ensemble spread, and by 0.04-3.1 % of
    their own variability (measured, 3 to 16 steps of DDIM and PC): asserted below 25 % of the
    spread and 10 % of the variability, far from what a wrong cast (e.g. bf16 leaking into the
    guidance solve or a float32 network) would give, yet different from fp32."""

    kw = dict(start=START, hours=30, members=4, sampler=PC, seed=3)
    fp32 = Assimilator(tiny_model, device="cpu", precision="fp32").reanalysis(stations, **kw)
    bf16_assim = Assimilator(tiny_model, device="cpu", precision="bf16")
    bf16 = bf16_assim.reanalysis(stations, **kw)
    assert bf16.attrs["precision"] == "bf16"
    for name in ("geopotential", "temperature", "u_component_of_wind", "2m_temperature", "mean_sea_level_pressure"):
        x, x_bf16 = fp32[name].values, bf16[name].values
        assert x_bf16.dtype == np.float32 and np.isfinite(x_bf16).all()
        rms = np.sqrt(np.mean((x_bf16 - x) ** 2))
        spread = fp32[name].std("member").mean().item()
        assert 0 < rms < 0.25 * spread, name
        assert np.linalg.norm(x_bf16 - x) < 0.1 * np.linalg.norm(x - x.mean()), name
    assert np.isfinite(bf16["obs_analysis"].values).all()

    # The networks run in bf16, their outputs and the operator on the decoded states in float32.
    times = bf16_assim.window(START, 30)
    compiled = bf16_assim.compile(stations, times)
    z = bf16_assim.sample_latent(times, members=2, sampler=DDIM, generator=torch.Generator().manual_seed(0))
    seen = []
    hook = tiny_model.autoencoder.decoder.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    try:
        with torch.no_grad():
            y_bf16 = bf16_assim.operator(compiled)(z)
            y_fp32 = Assimilator(tiny_model, device="cpu", precision="fp32").operator(compiled)(z)
    finally:
        hook.remove()
    assert seen == [torch.bfloat16, torch.float32]
    assert y_bf16.dtype == y_fp32.dtype == torch.float32
    torch.testing.assert_close(y_bf16, y_fp32, rtol=0.05, atol=0.05 * y_fp32.std().item())
    assert bf16_assim.decode(z).dtype == torch.float32


def test_cli_precision_flag(tiny_package, tmp_path):
    from appa_engine.cli import main
    from appa_engine.io.outputs import open_output

    assert main(["sample", "--model", str(tiny_package), "--start", START, "--hours", "6", "--members", "1",
                 "--steps", "2", "--device", "cpu", "--precision", "bf16", "--quiet",
                 "--out", str(tmp_path / "prior.nc")]) == 0
    ds = open_output(tmp_path / "prior.nc")
    assert ds.attrs["precision"] == "bf16" and ds.attrs["world_size"] == 1
    assert np.isfinite(ds["temperature"].values).all()


# ---------------------------------------------------------------------------- two processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, package: str, scenario: str, out: str) -> None:
    """One process of a 2-process group (gloo on CPU): the library API, then the CLI."""

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from pathlib import Path

    from appa_engine.cli import main
    from appa_engine.io.outputs import write_dataset
    from appa_engine.io.package import load_model
    from appa_engine.train.distributed import setup, teardown

    ctx = setup("cpu")
    try:
        assim = Assimilator(load_model(package), device="cpu")
        s = Scenario.load(scenario)
        single = dataclasses.replace(s, members=1)  # fewer members than processes: rank 1 has none
        ds = assim.run(single, background=True)
        background = assim.background(single)
        forecast = assim.forecast(s.observations, start=START, assimilation_hours=30, lead_hours=12, members=3,
                                  mode="autoregressive", sampler=PC, seed=5)
        assert (ds is None) == (background is None) == (forecast is None) == (rank != 0)
        if ctx.is_main:
            write_dataset(ds.assign(later=background), Path(out) / "api-single.nc")
            write_dataset(forecast, Path(out) / "api-forecast.nc")
        # Each rank names its own output: only rank 0's may exist afterwards.
        assert main(["assimilate", "--scenario", scenario, "--model", package, "--device", "cpu", "--quiet",
                     "--background", "--out", str(Path(out) / f"cli-rank{rank}.zarr")]) == 0
    finally:
        teardown()


def test_two_processes_give_the_ensemble_of_one(assim, tiny_package, stations, tmp_path):
    """M = 3 over 2 processes (2 + 1 members) equals M = 3 in one process, written once by rank 0;
    M = 1 (rank 1 samples nothing) too, and an autoregressive forecast."""

    from appa_engine.cli import main
    from appa_engine.io.outputs import open_output

    scenario = Scenario(start=START, observations=stations, model=str(tiny_package), hours=30, members=3,
                        sampler=PC, seed=4).save(tmp_path / "scenario.yaml")
    out = tmp_path / "two"
    out.mkdir()
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tiny_package), str(scenario), str(out)),
                                nprocs=2, join=True)
    assert sorted(p.name for p in out.iterdir()) == ["api-forecast.nc", "api-single.nc", "cli-rank0.zarr"]

    assert main(["assimilate", "--scenario", str(scenario), "--model", str(tiny_package), "--device", "cpu",
                 "--quiet", "--background", "--out", str(tmp_path / "one.zarr")]) == 0
    one, two = open_output(tmp_path / "one.zarr").load(), open_output(out / "cli-rank0.zarr").load()
    assert two.sizes["member"] == 3 and two.attrs["world_size"] == 2 and one.attrs["world_size"] == 1
    assert set(one.data_vars) == set(two.data_vars) >= {"temperature", "obs_analysis", "obs_background"}
    for name in one.data_vars:
        if one[name].dtype.kind == "f":
            np.testing.assert_allclose(two[name].values, one[name].values, rtol=1e-5, atol=1e-5, err_msg=name)

    single = assim.run(dataclasses.replace(Scenario.load(scenario), members=1), background=True)
    api = open_output(out / "api-single.nc").load()
    for name in ("temperature", "obs_analysis", "obs_background"):
        np.testing.assert_allclose(api[name].values, single[name].values, rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(api["later"].values, single["obs_background"].values, rtol=1e-5, atol=1e-5)
    forecast = assim.forecast(stations, start=START, assimilation_hours=30, lead_hours=12, members=3,
                              mode="autoregressive", sampler=PC, seed=5)
    np.testing.assert_allclose(open_output(out / "api-forecast.nc")["temperature"].values,
                               forecast["temperature"].values, rtol=1e-5, atol=1e-5)

"""Tests of appa_engine.data.windows: items against manual indexing, gaps, splits, workers."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from torch.utils.data import DataLoader

from appa_engine.data.channels import ChannelSpec
from appa_engine.data.dates import date_features
from appa_engine.data.stats import Statistics, compute_statistics
from appa_engine.data.windows import BlanketDataset, StateDataset, TimeRange, split_by_time
from appa_engine.errors import ConfigError, DataError

NT = 24  # 6 days at 6 h


def make_dataset(*, times=None, nlat: int = 6, nlon: int = 12, seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    times = pd.date_range("2020-01-01", periods=NT, freq="6h") if times is None else times
    nt = len(times)
    lat = 90 - (np.arange(nlat) + 0.5) * 180 / nlat
    lon = np.arange(nlon) * 360 / nlon
    sst = (280 + rng.standard_normal((nt, nlat, nlon))).astype(np.float32)
    sst[:, 0, :3] = np.nan  # "land"
    return xr.Dataset(
        {
            "temperature": (
                ("time", "level", "latitude", "longitude"),
                (250 + 10 * rng.standard_normal((nt, 2, nlat, nlon))).astype(np.float32),
            ),
            "sea_surface_temperature": (("time", "latitude", "longitude"), sst),
        },
        coords={"time": times, "level": [500, 850], "latitude": lat, "longitude": lon},
    )


def write_zarr(ds: xr.Dataset, path) -> str:
    encoding = {v: {"chunks": (1,) + ds[v].shape[1:]} for v in ds.data_vars}
    ds.to_zarr(path, consolidated=False, encoding=encoding)
    return str(path)


@pytest.fixture
def store(tmp_path):
    ds = make_dataset()
    return ds, write_zarr(ds, tmp_path / "planet.zarr")


def manual(ds: xr.Dataset, spec: ChannelSpec, stats: Statistics, t) -> np.ndarray:
    """Standardised states by plain indexing, NaN -> 0."""

    fields = []
    for name in spec:
        var, _, level = name.rpartition("_")
        fields.append(ds[var].sel(level=int(level)).values if level.isdigit() else ds[name].values)
    x = np.stack(fields, axis=1)[t].astype(np.float64)
    x = (x - stats.mean[:, None, None]) / stats.std[:, None, None]
    return np.nan_to_num(x, nan=0.0)


def test_state_dataset_matches_manual_indexing(store):
    ds, path = store
    spec = ChannelSpec(("sea_surface_temperature", "temperature_850"))
    stats = compute_statistics(ds, spec)
    data = StateDataset(path, stats=stats)
    assert len(data) == NT and data.channels == spec.names
    for i in (0, 7, NT - 1, -1):
        x, dates = data[i]
        assert x.dtype == torch.float32 and x.shape == (2, 6, 12) and dates.shape == (4,)
        np.testing.assert_allclose(x.numpy(), manual(ds, spec, stats, i), atol=2e-6)
        np.testing.assert_array_equal(dates.numpy(), date_features(ds["time"].values[i]))
    with pytest.raises(IndexError):
        data[NT]
    # without statistics: raw values (NaN filled)
    raw, _ = StateDataset(path, spec=spec, fill_nan=False)[3]
    assert torch.isnan(raw[0, 0, 0])
    np.testing.assert_array_equal(raw[1].numpy(), ds["temperature"].sel(level=850).values[3])


def test_blanket_dataset_matches_manual_indexing(store):
    ds, path = store
    spec = ChannelSpec(("temperature_500", "sea_surface_temperature"))
    stats = compute_statistics(ds, spec)
    data = BlanketDataset(path, length=3, step="12h", stats=stats)
    span = 2 * 2
    assert len(data) == NT - span and data.step == 2
    for i in (0, 5, len(data) - 1):
        x, dates = data[i]
        t = [i, i + 2, i + 4]
        assert x.shape == (3, 2, 6, 12) and dates.shape == (3, 4)
        np.testing.assert_allclose(x.numpy(), manual(ds, spec, stats, t), atol=2e-6)
        np.testing.assert_array_equal(dates.numpy(), date_features(ds["time"].values[t]))
        np.testing.assert_array_equal(data.times_of(i), ds["time"].values[t])
    # the same blankets with an integer step; stride thins the starts
    same = BlanketDataset(path, length=3, step=2, stats=stats, stride=5)
    assert list(same.times) == list(ds["time"].values[0 : NT - span : 5])
    torch.testing.assert_close(same[1][0], data[5][0])
    with pytest.raises(ConfigError, match="not a positive multiple"):
        BlanketDataset(path, length=3, step="9h")
    with pytest.raises(ConfigError, match="length"):
        BlanketDataset(path, length=0)


def test_blankets_never_cross_a_gap(tmp_path):
    times = pd.date_range("2020-01-01", periods=NT, freq="6h")
    times = times.delete([9, 10, 17])  # two gaps
    ds = make_dataset(times=times)
    path = write_zarr(ds, tmp_path / "gappy.zarr")
    K = 4
    data = BlanketDataset(path, length=K, step=1)
    t = ds["time"].values
    expected = [
        i for i in range(len(t) - K + 1) if np.all(np.diff(t[i : i + K]) == np.timedelta64(6, "h"))
    ]
    assert list(data.starts) == expected and len(expected) == 12
    for i in range(len(data)):
        assert np.all(np.diff(data.times_of(i)) == np.timedelta64(6, "h"))
    x, _ = data[len(data) - 1]
    c = data.channels.index("sea_surface_temperature")
    sst = ds["sea_surface_temperature"].values[expected[-1] : expected[-1] + K]
    np.testing.assert_array_equal(x[:, c].numpy(), np.nan_to_num(sst))


def test_blankets_never_cross_runs(tmp_path):
    """Two runs back to back with no time gap: the run label alone separates them."""

    ds = make_dataset().assign_coords(run=("time", np.repeat([0, 1], NT // 2)))
    path = write_zarr(ds, tmp_path / "runs.zarr")
    data = BlanketDataset(path, length=4, step=1)
    assert list(data.starts) == list(range(0, 9)) + list(range(12, 21))
    assert StateDataset(path).store_runs.tolist() == ds["run"].values.tolist()


def test_time_selection_and_splits(store):
    ds, path = store
    split = split_by_time(ds["time"].values, valid=0.25, test=0.25)
    train, valid, test = (StateDataset(path, times=r) for r in split)
    assert (len(train), len(valid), len(test)) == (12, 6, 6)
    assert train.times[-1] < valid.times[0] and valid.times[-1] < test.times[0]
    blankets = BlanketDataset(path, length=4, step=1, times=split.valid)
    assert len(blankets) == 3  # never leaves the range
    assert all(blankets.times_of(i)[-1] <= split.valid.end for i in range(len(blankets)))
    explicit = StateDataset(path, times=ds["time"].values[[2, 5]])
    np.testing.assert_array_equal(explicit.times, ds["time"].values[[2, 5]])
    with pytest.raises(DataError, match="no time of the store"):
        StateDataset(path, times=("2030-01-01", "2030-02-01"))
    with pytest.raises(DataError, match="not in the store"):
        StateDataset(path, times=np.array(["2020-01-01T03"], dtype="datetime64[ns]"))


def test_split_by_years_like_the_paper():
    times = pd.date_range("2017-01-01", "2021-12-31T18", freq="6h")
    split = split_by_time(times, valid=2020, test="2021")
    assert split.train.start == np.datetime64("2017-01-01") and split.train.end == np.datetime64("2019-12-31T18:00")
    assert split.valid.start == np.datetime64("2020-01-01") and split.valid.end < np.datetime64("2021-01-01")
    assert np.datetime64("2021-12-31T23:00") in split.test and np.datetime64("2020-12-31T23:00") not in split.test
    masks = np.stack([r.mask(times) for r in split])
    assert masks.sum(axis=0).max() == 1 and masks.all(axis=0).sum() == 0
    assert masks.any(axis=0).all()  # every time is in one split
    with pytest.raises(ConfigError, match="overlap"):
        split_by_time(times, valid=("2020-01-01", "2021-02-01"), test=2021)
    with pytest.raises(ConfigError, match="both as fractions"):
        split_by_time(times, valid=0.1, test=2021)
    with pytest.raises(DataError, match="holds none"):
        split_by_time(times, valid=2020, test=2025)
    with pytest.raises(ConfigError, match="ends"):
        TimeRange("2020-02-01", "2020-01-01")


def test_latent_store(tmp_path):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((NT, 3, 4, 8)).astype(np.float32)
    times = pd.date_range("2020-01-01", periods=NT, freq="1h")
    latent = xr.Dataset(
        {"latent": (("time", "channel", "latitude", "longitude"), z)},
        coords={"time": times, "latitude": np.linspace(67.5, -67.5, 4), "longitude": np.arange(8) * 45.0},
    )
    latent.to_zarr(tmp_path / "latent.zarr", consolidated=False, encoding={"latent": {"chunks": (1, 3, 4, 8)}})
    data = BlanketDataset(tmp_path / "latent.zarr", length=5, step="2h")
    x, dates = data[3]
    np.testing.assert_array_equal(x.numpy(), z[3:12:2])
    assert data.channels is None and len(data) == NT - 8
    np.testing.assert_array_equal(StateDataset(latent)[4][0].numpy(), z[4])  # in-memory source
    with pytest.raises(DataError, match="3 unnamed channels"):
        StateDataset(tmp_path / "latent.zarr", spec=ChannelSpec(("a", "b")))


def test_channel_mismatch_errors(store, tmp_path):
    ds, path = store
    stats = Statistics(ChannelSpec(("temperature_850", "specific_humidity_850")), [250.0, 1e-3], [10.0, 1e-3])
    with pytest.raises(DataError, match="channels missing from the dataset: specific_humidity_850"):
        StateDataset(path, stats=stats)
    named = ChannelSpec.from_dataset(ds).stack(ds).to_dataset(name="state")
    named.to_zarr(tmp_path / "stacked.zarr", consolidated=False)
    with pytest.raises(DataError, match="store's channels do not match the spec: missing specific_humidity_850"):
        BlanketDataset(tmp_path / "stacked.zarr", length=2, stats=stats)
    good = compute_statistics(ds)
    only = good.select(["sea_surface_temperature", "temperature_500"])
    x, _ = StateDataset(tmp_path / "stacked.zarr", stats=only)[2]  # subset, reordered, by name
    np.testing.assert_allclose(x.numpy(), manual(ds, only.spec, only, 2), atol=2e-6)
    with pytest.raises(DataError, match="the statistics lack channels: temperature_850"):
        StateDataset(path, spec=ChannelSpec(("temperature_850",)), stats=only)
    with pytest.raises(DataError, match="does not exist"):
        StateDataset(tmp_path / "missing.zarr")


def _check_worker(worker_id: int) -> None:
    import os

    from torch.utils.data import get_worker_info

    data = get_worker_info().dataset
    assert data._pid != os.getpid()  # the parent's handle is not reused
    data[0]
    assert data._pid == os.getpid()


def test_pickles_arguments_only_and_workers_agree(store):
    ds, path = store
    stats = compute_statistics(ds)
    data = BlanketDataset(path, length=3, step=1, stats=stats, stride=2)
    first = data[0][0]
    assert data._array is not None  # opened in this process
    clone = pickle.loads(pickle.dumps(data))
    assert clone._array is None  # reopened lazily
    torch.testing.assert_close(clone[0][0], first)

    serial = list(DataLoader(data, batch_size=3, num_workers=0))
    # forked workers inherit an opened store from another process id: they must reopen it
    parallel = list(DataLoader(data, batch_size=3, num_workers=2, worker_init_fn=_check_worker))
    assert len(serial) == len(parallel) == 4
    for (xs, ds_), (xp, dp) in zip(serial, parallel):
        assert xs.shape[1:] == (3, 3, 6, 12)
        torch.testing.assert_close(xp, xs, rtol=0, atol=0)
        torch.testing.assert_close(dp, ds_, rtol=0, atol=0)


def test_in_memory_source_is_not_modified():
    ds = make_dataset()
    before = ds["sea_surface_temperature"].values.copy()
    data = StateDataset(ds)  # no statistics: raw values, NaNs filled in the item only
    x, _ = data[0]
    x.fill_(-1.0)
    np.testing.assert_array_equal(ds["sea_surface_temperature"].values, before)
    assert np.isnan(before).any()


@pytest.mark.parametrize("kind", ["state", "blanket"])
def test_loaded_items_equal_streamed_items(tmp_path, kind):
    """``load()`` reads the selected span once; every item is then bit-identical to a store read.

    The selection starts and ends inside the store (offsets), the store has a gap and two runs,
    and the items go through the standardisation and the NaN fill.
    """

    times = pd.date_range("2020-01-01", periods=NT, freq="6h").delete([13])
    ds = make_dataset(times=times).assign_coords(run=("time", np.repeat([0, 1], [17, NT - 18])))
    path = write_zarr(ds, tmp_path / "planet.zarr")
    spec = ChannelSpec(("sea_surface_temperature", "temperature_500"))
    stats = compute_statistics(ds, spec)
    window = (times[3], times[-2])

    def make():
        if kind == "state":
            return StateDataset(path, stats=stats, times=window)
        return BlanketDataset(path, length=3, step="6h", stats=stats, times=window, stride=1)

    streamed, loaded = make(), make()
    assert not loaded.in_memory
    span = NT - 1 - 3 - 1  # selected times: 4th to second last
    assert loaded.nbytes == span * 2 * 6 * 12 * 4
    assert loaded.load() is loaded and loaded.in_memory
    assert loaded._memory.shape == (span, 2, 6, 12)
    assert len(loaded) == len(streamed) > 0
    for i in range(len(streamed)):
        xs, ds_ = streamed[i]
        xl, dl = loaded[i]
        torch.testing.assert_close(xl, xs, rtol=0, atol=0)
        torch.testing.assert_close(dl, ds_, rtol=0, atol=0)
    # items are copies: changing one leaves the memory as it was
    x, _ = loaded[0]
    x.fill_(123.0)
    torch.testing.assert_close(loaded[0][0], streamed[0][0], rtol=0, atol=0)
    # and survive a DataLoader worker (fork or spawn pickles the array)
    batch = next(iter(DataLoader(loaded, batch_size=len(loaded), num_workers=1)))
    full = next(iter(DataLoader(streamed, batch_size=len(streamed))))
    torch.testing.assert_close(batch[0], full[0], rtol=0, atol=0)

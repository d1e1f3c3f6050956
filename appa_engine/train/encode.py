"""Encode a physical store into a latent store for training the diffusion prior.

The latent store is a zarr group with one variable ``latent`` of dims ``(time, channel,
latitude, longitude)`` on the latent grid (the latitude/longitude of each latent row/column is
the centre of the block of physical cells it summarises; they only serve area weighting). Its
attributes record the autoencoder checkpoint, the physical statistics, the physical grid and time
step, and the latent statistics (area-weighted mean and std of each latent channel, computed in
one streaming pass over the written store by :func:`~appa_engine.data.stats.compute_statistics`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader

from appa_engine.data.stats import Statistics, compute_statistics
from appa_engine.data.windows import StateDataset, open_store
from appa_engine.io.atomic import atomic_path
from appa_engine.train.autoencoder import load_autoencoder
from appa_engine.train.distributed import resolve_device

__all__ = ["encode_store", "latent_statistics"]

log = logging.getLogger(__name__)


def _latent_coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    lat = 90.0 - (np.arange(h) + 0.5) * 180.0 / h
    lon = (np.arange(w) + 0.5) * 360.0 / w
    return lat, lon


def encode_store(autoencoder: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, *,
                 batch_size: int = 16, device: str = "auto", progress: bool = True) -> Path:
    """Encode every state of ``data`` with a trained autoencoder into the latent store ``out``."""

    from appa_engine.model import latent_spec

    dev = resolve_device(device)
    model, ckpt = load_autoencoder(autoencoder, device=dev)
    stats = Statistics.from_dict(ckpt["stats"])
    dataset = StateDataset(data, stats=stats)
    store = open_store(data)
    runs = store["run"].values if "run" in store.coords and store["run"].dims == ("time",) else None
    H, W = store.sizes["latitude"], store.sizes["longitude"]
    h, w = model.latent_shape(H, W)
    Z = model.config.latent_channels
    lat, lon = _latent_coords(h, w)
    names = list(latent_spec(Z).names)

    from tqdm.auto import tqdm

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    out = Path(out)
    with atomic_path(out, directory=True) as tmp:
        start = 0
        for x, _ in tqdm(loader, desc="encode", unit="batch", disable=not progress):
            with torch.no_grad():
                z = model.encode(x.to(dev)).float().cpu().numpy()
            times = dataset.times[start : start + len(z)]
            coords = {"time": times, "channel": np.array(names, dtype=object), "latitude": lat, "longitude": lon}
            if runs is not None:
                coords["run"] = ("time", runs[dataset.indices[start : start + len(z)]])
            piece = xr.Dataset({"latent": (("time", "channel", "latitude", "longitude"), z)}, coords=coords)
            if start == 0:
                piece["latent"].encoding["chunks"] = (1, Z, h, w)
                piece.to_zarr(tmp, mode="w", consolidated=False)
            else:
                piece.to_zarr(tmp, append_dim="time", consolidated=False)
            start += len(z)
        latent = xr.open_zarr(tmp, consolidated=False, chunks=None)["latent"]
        latent_stats = compute_statistics(latent, progress=progress)
        import zarr

        group = zarr.open_group(tmp, mode="r+")
        group.attrs.update({
            "autoencoder": os.fspath(Path(autoencoder).resolve()),
            "stats": stats.to_dict(),
            "latent_stats": latent_stats.to_dict(),
            "grid": ckpt["grid"],
            "time_step_hours": ckpt["time_step_hours"],
            "source": os.fspath(data),
        })
    log.info("encoded %d states of %s into %s (%d×%d×%d latents)", start, data, out, Z, h, w)
    return out


def latent_statistics(store: str | os.PathLike) -> Statistics:
    """The latent statistics recorded in a latent store by :func:`encode_store`."""

    from appa_engine.errors import DataError

    ds = open_store(store)
    if "latent_stats" not in ds.attrs:
        raise DataError(f"'{store}' is not a latent store written by `appa encode` (no latent_stats)")
    attrs = ds.attrs["latent_stats"]
    return Statistics.from_dict(json.loads(attrs) if isinstance(attrs, str) else attrs)

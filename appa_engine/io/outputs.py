"""Writing datasets (ensembles, metrics) atomically to zarr or NetCDF, chosen by the extension."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from appa_engine.errors import ConfigError
from appa_engine.io.atomic import atomic_path

__all__ = ["write_dataset", "open_output"]


def _netcdf_safe(ds: xr.Dataset) -> xr.Dataset:
    """NetCDF attributes cannot be booleans, None, or nested: store those as strings."""

    def clean(attrs: dict) -> dict:
        out = {}
        for k, v in attrs.items():
            if (v is None or isinstance(v, (bool, dict))
                    or (isinstance(v, (list, tuple)) and not all(isinstance(i, (int, float, str)) for i in v))):
                out[k] = str(v)
            else:
                out[k] = v
        return out

    ds = ds.copy()
    ds.attrs = clean(ds.attrs)
    for name in ds.variables:
        ds[name].attrs = clean(ds[name].attrs)
        if ds[name].dtype == bool:
            ds[name] = ds[name].astype(np.uint8)
    return ds


def write_dataset(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to ``path`` (``.zarr`` directory or ``.nc`` file), atomically."""

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".zarr":
        with atomic_path(path, directory=True) as tmp:
            ds.to_zarr(tmp, mode="w", consolidated=False)
    elif suffix in (".nc", ".nc4", ".netcdf"):
        with atomic_path(path) as tmp:
            _netcdf_safe(ds).to_netcdf(tmp)
    else:
        raise ConfigError(f"cannot tell the format of '{path}' from its extension",
                          hint="end the path with .zarr or .nc")
    return path


def open_output(path: str | os.PathLike) -> xr.Dataset:
    """Open a dataset written by :func:`write_dataset`."""

    path = Path(path)
    if path.suffix.lower() == ".zarr":
        return xr.open_zarr(path, consolidated=False)
    return xr.open_dataset(path)

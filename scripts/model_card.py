r"""Write the model card of a model package: ``PACKAGE/MODEL_CARD.md`` and ``PACKAGE/figures/*.png``.

The card states what the model was trained on, how, for how long and on what, and how well it
does on held-out truth (the package's ``truth.zarr``, days of the test split):

- **Data**: the planet (the store's attributes), grid, channels, time step and the number of
  states in each split (:func:`appa_engine.data.windows.split_by_time` with ``valid = test = 0.1``,
  as in training).
- **Training**: configs, parameter counts, steps, training time and hardware (the manifest's
  provenance), final losses and a loss-curve figure (the runs' ``metrics.jsonl``).
- **Autoencoder reconstruction** of every held-out state :math:`x`, per channel :math:`c`, in
  physical units and as a fraction of the channel's standardisation scale :math:`s_c`:

  .. math:: \mathrm{RMSE}_c = \sqrt{\big\langle (D(E(x))_c - x_c)^2 \big\rangle_{t,\phi,\lambda}},
      \qquad \mathrm{RMSE}_c / s_c

  with :math:`\langle\cdot\rangle` the area-weighted mean over latitude rows
  (:func:`appa_engine.metrics.area_mean`) and the plain mean over time.
- **Prior diagnostics**: an unconditional ensemble of the prior over the truth window (same dates,
  so the same date conditioning), compared with the truth *statistically*: per channel the
  area-weighted mean and standard deviation over members, times and grid points, the standard
  deviation of departures from the zonal mean (eddy variability), zonal power spectra
  (:func:`appa_engine.metrics.zonal_spectrum`), zonal-mean profiles, and maps of one sample beside
  the truth and its reconstruction. Prior samples are not meant to match the truth state.

Usage::

    python scripts/model_card.py --model assets/default-model --work runs/default
    python scripts/model_card.py --model PKG --truth held_out.zarr --planet planet.zarr \
        --ae-run runs/ae --prior-run runs/prior --members 4 --steps 32 --days 2

``--work DIR`` stands for ``--planet DIR/planet.zarr --ae-run DIR/ae --prior-run DIR/prior``
(the layout of ``scripts/make_default_model.py``); what is missing is reported as not available.
Nothing in the package is changed but the card and the ``figures`` folder (the manifest's hashes
cover the weights and statistics only), both written atomically.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from appa_engine.data.channels import parse_channel  # noqa: E402
from appa_engine.cli import report_error  # noqa: E402
from appa_engine.errors import AppaError, DataError  # noqa: E402

if TYPE_CHECKING:
    import torch

log = logging.getLogger("model_card")

#: Channels shown in the spectra and map figures when the model has them (others fill up to 4).
FIGURE_CHANNELS = ("temperature_500", "temperature_850", "u_component_of_wind_250", "2m_temperature")
#: Dims reduced by the per-channel statistics (``member`` too for the ensemble).
_REDUCE = ("time", "latitude", "longitude")
_DPI = 80

SECTIONS = ("Summary", "Data", "Model and training", "Autoencoder reconstruction",
            "Prior diagnostics", "How to reproduce", "Limitations")


# --------------------------------------------------------------------------- inputs
@dataclass
class Run:
    """A training run directory: resolved config and the records of ``metrics.jsonl``."""

    path: Path | None
    config: dict | None = None
    train: list[dict] = field(default_factory=list)  # {"step", "loss", "samples_per_s", ...}
    valid: list[dict] = field(default_factory=list)  # {"step", "valid_loss"}

    @classmethod
    def read(cls, path: Path | None) -> "Run":
        run = cls(path)
        if path is None or not path.is_dir():
            if path is not None:
                log.warning("no training run at %s: its section says 'not available'", path)
            return run
        cfg = path / "config.yaml"
        if cfg.exists():
            import yaml

            run.config = yaml.safe_load(cfg.read_text())
        metrics = path / "metrics.jsonl"
        if metrics.exists():
            for line in metrics.read_text().splitlines():
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("skipping an unreadable line of %s", metrics)
                    continue
                if "valid_loss" in record:
                    run.valid.append(record)
                elif "loss" in record:
                    run.train.append(record)
        return run

    def _loop(self, key: str) -> Any:
        return ((self.config or {}).get("loop") or {}).get(key)

    @property
    def steps(self) -> int | None:
        return self.train[-1]["step"] if self.train else None

    @property
    def compute_seconds(self) -> float | None:
        r"""Time spent in training steps, :math:`\sum_i \Delta\mathrm{step}_i B / \mathrm{throughput}_i`.

        Each log record's throughput covers the steps since the previous record (evaluation and
        checkpointing excluded); with a resumed run the log was truncated at the resumed step, so
        every step is counted once.
        """

        batch = self._loop("batch_size")
        if not self.train or not batch:
            return None
        total, previous = 0.0, 0
        for r in self.train:
            rate = r.get("samples_per_s")
            if not rate:
                return None
            total += (r["step"] - previous) * batch / rate
            previous = r["step"]
        return total


def _open(path: Path):
    from appa_engine.data.windows import open_store

    return open_store(path)


def _truth_window(model, truth: xr.Dataset, days: float | None) -> np.ndarray:
    """Indices of the truth states of the window: a regular run at the model's time step from the start."""

    times = truth["time"].values.astype("datetime64[ns]")
    if times.size == 0:
        raise DataError("the truth store has no states")
    dt = model.time_step.astype("timedelta64[ns]")
    n = len(times)
    if days is not None:
        if days <= 0:
            raise DataError(f"--days must be positive, got {days}")
        n = min(n, int(math.floor(days * 24 / model.spec.time_step_hours + 1e-9)))
    regular = np.flatnonzero(np.diff(times[:n]) != dt)
    if regular.size:
        n = int(regular[0]) + 1
        log.warning("the truth is not regular at the model's time step after %s: using %d states",
                    times[n - 1], n)
    if n < 1:
        raise DataError("the truth window is empty", hint="raise --days")
    return np.arange(n)


# --------------------------------------------------------------------------- statistics
def _as_array(x, *, times, names, grid, member: bool = False) -> xr.DataArray:
    dims = (("member",) if member else ()) + ("time", "channel", "latitude", "longitude")
    coords = {"time": times, "channel": list(names), "latitude": grid.lat, "longitude": grid.lon}
    return xr.DataArray(np.asarray(x, dtype=np.float64), dims=dims, coords=coords)


def moments(x: xr.DataArray) -> dict[str, np.ndarray]:
    r"""Per-channel area-weighted mean, standard deviation and eddy standard deviation.

    .. math:: \mu_c = \langle x_c \rangle, \quad \sigma_c = \sqrt{\langle (x_c - \mu_c)^2 \rangle},
        \quad \sigma^\ast_c = \sqrt{\langle (x_c - [x_c])^2 \rangle}

    with :math:`\langle\cdot\rangle` the area-weighted mean over members (if any), time and grid,
    and :math:`[x]` the zonal mean (so :math:`\sigma^\ast` measures the waves, not the
    equator-to-pole gradient).

    Arguments:
        x: ``(member?, time, channel, latitude, longitude)``.
    """

    from appa_engine.metrics import area_mean

    dims = [d for d in ("member", *_REDUCE) if d in x.dims]
    mean = area_mean(x, dims=dims)
    std = np.sqrt(area_mean((x - mean) ** 2, dims=dims))
    eddy = np.sqrt(area_mean((x - x.mean("longitude")) ** 2, dims=dims))
    return {"mean": mean.values, "std": std.values, "eddy": eddy.values}


def reconstruct(model, x: torch.Tensor, *, chunk: int = 8) -> torch.Tensor:
    """Reconstruction :math:`D(E(x))` of physical states ``(T, C, H, W)``, physical.

    NaNs of ``x`` enter the encoder as the channel mean (0 once standardised), as in training.
    """

    import torch

    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], chunk):
            x_std = torch.nan_to_num(model.standardize(x[i : i + chunk].to(model.device)), nan=0.0)
            out.append(model.destandardize(model.decode(model.encode(x_std))).cpu())
    return torch.cat(out)


def prior_ensemble(model, *, start, hours: float, members: int, steps: int, seed: int,
                   device: str | torch.device = "auto") -> np.ndarray:
    """Prior samples over a window, physical, ``(M, L, C, H, W)`` (Heun, no observations)."""

    from appa_engine.observations.scenario import SamplerSettings
    from appa_engine.tasks import Assimilator

    ds = Assimilator(model, device=device).reanalysis(
        start=start, hours=hours, members=members, seed=seed,
        sampler=SamplerSettings(name="heun", steps=steps, corrections=0),
    )
    return np.stack([model.channels.stack(ds.isel(member=m)).values for m in range(ds.sizes["member"])])


# --------------------------------------------------------------------------- figures
def _png(fig) -> bytes:
    """PNG bytes of a figure, reduced to a 256-colour palette (small files, no visible loss)."""

    import matplotlib.pyplot as plt
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    buf.seek(0)
    image = Image.open(buf).convert("RGB").quantize(colors=256)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_losses(runs: dict[str, Run]) -> bytes | None:
    plt = _pyplot()
    present = {k: r for k, r in runs.items() if r.train}
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.0), squeeze=False,
                             gridspec_kw={"wspace": 0.3})
    for ax, (name, run) in zip(axes[0], present.items()):
        step = np.array([r["step"] for r in run.train])
        loss = np.array([r["loss"] for r in run.train], dtype=float)
        ax.plot(step, loss, lw=0.6, alpha=0.5, color="C0", label="training (per log)")
        if loss.size >= 20:
            k = max(loss.size // 20, 2)
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(step[k - 1 :], smooth, lw=1.5, color="C0", label=f"training ({k}-log mean)")
        if run.valid:
            ax.plot([r["step"] for r in run.valid], [r["valid_loss"] for r in run.valid], "o-",
                    ms=3, color="C3", label="validation")
        if np.all(loss > 0):
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _png(fig)


def figure_spectra(sample: xr.DataArray, truth: xr.DataArray, channels: Sequence[str],
                   units: dict) -> bytes:
    """Zonal spectra (k ≥ 1): truth (time mean) and sample (time and member mean, member range)."""

    from appa_engine.metrics import zonal_spectrum

    plt = _pyplot()
    n = len(channels)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False,
                             gridspec_kw={"wspace": 0.35, "hspace": 0.45})
    for ax, c in zip(axes.flat, channels):
        p_true = zonal_spectrum(truth.sel(channel=c)).mean("time")
        p_members = zonal_spectrum(sample.sel(channel=c)).mean("time")
        k = p_true["wavenumber"].values[1:]
        ax.loglog(k, p_true.values[1:], color="k", lw=1.8, label="truth")
        ax.loglog(k, p_members.mean("member").values[1:], color="C1", lw=1.5, label="prior samples")
        ax.fill_between(k, p_members.min("member").values[1:], p_members.max("member").values[1:],
                        color="C1", alpha=0.25, lw=0, label="member range")
        ax.set_title(c, fontsize=9)
        ax.set_xlabel("zonal wavenumber")
        u = units.get(c, "")
        ax.set_ylabel(f"power ({u})²" if u else "power")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return _png(fig)


def figure_zonal_means(sample: xr.DataArray, truth: xr.DataArray, channels: Sequence[str],
                       units: dict) -> bytes:
    """Time- and zonal-mean profiles against latitude: truth and each prior member."""

    plt = _pyplot()
    n = len(channels)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.0), squeeze=False, sharey=True,
                             gridspec_kw={"wspace": 0.15})
    for ax, c in zip(axes[0], channels):
        lat = truth["latitude"].values
        zm = sample.sel(channel=c).mean(("time", "longitude"))
        for m in range(zm.sizes["member"]):
            ax.plot(zm.isel(member=m).values, lat, color="C1", lw=0.8, alpha=0.7,
                    label="prior members" if m == 0 else None)
        zm_true = truth.sel(channel=c).mean(("time", "longitude"))
        ax.plot(zm_true.values, lat, color="k", lw=1.8, label="truth")
        ax.set_title(c, fontsize=8)
        ax.set_xlabel(units.get(c, ""), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("latitude")
    axes[0, 0].legend(fontsize=7)
    return _png(fig)


def figure_maps(truth: xr.DataArray, recon: xr.DataArray, sample: xr.DataArray, channels: Sequence[str],
                units: dict, *, index: int) -> bytes:
    """One state: truth, its autoencoder reconstruction and prior member 0, same colour scale per row."""

    plt = _pyplot()
    lat, lon = truth["latitude"].values, truth["longitude"].values
    dlat = abs(lat[0] - lat[1]) if lat.size > 1 else 1.0
    dlon = lon[1] - lon[0] if lon.size > 1 else 1.0
    extent = (lon[0] - dlon / 2, lon[-1] + dlon / 2, lat[-1] - dlat / 2, lat[0] + dlat / 2)
    n = len(channels)
    fig, axes = plt.subplots(n, 3, figsize=(9.0, 1.75 * n + 0.4), squeeze=False)
    when = str(truth["time"].values[index])[:16]
    titles = (f"truth {when}", "autoencoder reconstruction", "prior sample (member 0)")
    for row, c in enumerate(channels):
        fields = (truth.sel(channel=c).isel(time=index).values, recon.sel(channel=c).isel(time=index).values,
                  sample.sel(channel=c).isel(member=0, time=index).values)
        vmin, vmax = np.nanpercentile(fields[0], [1, 99])
        if not vmax > vmin:
            vmin, vmax = vmin - 1, vmax + 1
        for col, f in enumerate(fields):
            ax = axes[row, col]
            im = ax.imshow(f, extent=extent, origin="upper", vmin=vmin, vmax=vmax, cmap="RdYlBu_r",
                           aspect="auto", interpolation="nearest")
            ax.set_xticks([0, 90, 180, 270, 360])
            ax.set_yticks([-90, 0, 90])
            ax.tick_params(labelsize=6)
            if row == 0:
                ax.set_title(titles[col], fontsize=8)
            if col == 0:
                ax.set_ylabel(c, fontsize=7)
        cb = fig.colorbar(im, ax=list(axes[row]), fraction=0.02, pad=0.01)
        cb.ax.tick_params(labelsize=6)
        cb.set_label(units.get(c, ""), fontsize=6)
    return _png(fig)


# --------------------------------------------------------------------------- formatting
def _g(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "n/a"
        return f"{v:.{digits}g}"
    return str(v)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 120:
        return f"{minutes:.1f} min"
    return f"{minutes / 60:.2f} h"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_g(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _details(summary: str, body: str, lang: str = "") -> str:
    return f"<details><summary>{summary}</summary>\n\n```{lang}\n{body.rstrip()}\n```\n\n</details>"


def _units(variable: str, ds: xr.Dataset, metadata: dict) -> str:
    """Units of a variable: the store's attribute, else the statistics' metadata, else ``""``."""

    if variable in ds and ds[variable].attrs.get("units"):
        return str(ds[variable].attrs["units"])
    return str((metadata.get("units") or {}).get(variable, ""))


def _show(path: Path) -> str:
    """A path relative to the working directory when it lies under it (cards travel with a checkout)."""

    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _pick_channels(names: Sequence[str], limit: int = 4) -> list[str]:
    chosen = [c for c in FIGURE_CHANNELS if c in names]
    chosen += [c for c in names if c not in chosen][: max(limit - len(chosen), 0)]
    return chosen[:limit]


# --------------------------------------------------------------------------- the card
def write_model_card(
    package: str | os.PathLike,
    *,
    work: str | os.PathLike | None = None,
    truth: str | os.PathLike | None = None,
    planet: str | os.PathLike | None = None,
    ae_run: str | os.PathLike | None = None,
    prior_run: str | os.PathLike | None = None,
    members: int = 4,
    steps: int = 32,
    days: float | None = None,
    seed: int = 0,
    device: str = "auto",
) -> Path:
    """Write ``package/MODEL_CARD.md`` and ``package/figures/*.png``; returns the card's path.

    Arguments:
        package: Model package directory.
        work: Working directory of ``scripts/make_default_model.py``; defaults ``planet``,
            ``ae_run`` and ``prior_run`` to ``work/planet.zarr``, ``work/ae``, ``work/prior``.
        truth: Held-out truth store (default ``package/truth.zarr``).
        planet: The whole training record (split counts, planet description).
        ae_run: Autoencoder run directory (``config.yaml``, ``metrics.jsonl``).
        prior_run: Prior run directory.
        members: Prior ensemble size M.
        steps: Sampler steps (Heun).
        days: Length of the diagnostic window from the start of the truth (default: all of it).
        seed: Seed of the prior samples.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    from appa_engine.data.grid import Grid
    from appa_engine.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text
    from appa_engine.io.package import load_model
    from appa_engine.metrics import area_mean
    from appa_engine.train.distributed import resolve_device

    if members < 1 or steps < 1:
        raise DataError(f"--members and --steps must be at least 1, got {members} and {steps}")
    package = Path(package)
    work = Path(work) if work is not None else None
    planet = Path(planet) if planet is not None else (work / "planet.zarr" if work else None)
    ae_run = Path(ae_run) if ae_run is not None else (work / "ae" if work else None)
    prior_run = Path(prior_run) if prior_run is not None else (work / "prior" if work else None)
    truth_path = Path(truth) if truth is not None else package / "truth.zarr"
    if not truth_path.exists():
        raise DataError(f"no held-out truth at '{truth_path}'",
                        hint="pass --truth STORE (a canonical zarr store of held-out states)")

    t_start = time.perf_counter()
    model = load_model(package)
    manifest = model.manifest
    names = list(model.channels.names)
    grid: Grid = model.grid

    # ---- truth window
    truth_ds = _open(truth_path)
    window = _truth_window(model, truth_ds, days)
    truth_ds = truth_ds.isel(time=window)
    if truth_ds.sizes["latitude"] != grid.shape[0] or truth_ds.sizes["longitude"] != grid.shape[1]:
        raise DataError(
            f"the truth grid {truth_ds.sizes['latitude']}×{truth_ds.sizes['longitude']} is not the "
            f"model's {grid.shape[0]}×{grid.shape[1]}", hint="pass the truth of this model's planet")
    x_true = model.channels.to_tensor(truth_ds)  # (T, C, H, W) physical
    times = truth_ds["time"].values
    units = {c: _units(parse_channel(c)[0], truth_ds, model.stats.metadata) for c in names}

    # ---- autoencoder reconstruction
    t0 = time.perf_counter()
    dev = resolve_device(device)
    model = model.to(dev)
    x_rec = reconstruct(model, x_true)
    truth_da = _as_array(x_true.numpy(), times=times, names=names, grid=grid)
    recon_da = _as_array(x_rec.numpy(), times=times, names=names, grid=grid)
    rmse = np.sqrt(area_mean((recon_da - truth_da) ** 2, dims=_REDUCE)).values
    scale = np.asarray(model.stats.std, dtype=np.float64)
    t_ae = time.perf_counter() - t0

    # ---- prior ensemble over the truth window (same dates)
    t0 = time.perf_counter()
    hours = (len(times) - 1) * model.spec.time_step_hours
    log.info("sampling %d prior members over %d states (%g h), Heun %d steps",
             members, len(times), hours, steps)
    x_prior = prior_ensemble(model, start=times[0], hours=hours, members=members, steps=steps,
                             seed=seed, device=dev)
    sample_da = _as_array(x_prior, times=times, names=names, grid=grid, member=True)
    t_prior = time.perf_counter() - t0
    m_true, m_prior = moments(truth_da), moments(sample_da)

    # ---- figures
    shown = _pick_channels(names)
    figures: dict[str, bytes] = {}
    runs = {"autoencoder": Run.read(ae_run), "prior": Run.read(prior_run)}
    loss_png = figure_losses(runs)
    if loss_png is not None:
        figures["losses.png"] = loss_png
    figures["spectra.png"] = figure_spectra(sample_da, truth_da, shown, units)
    figures["zonal_means.png"] = figure_zonal_means(sample_da, truth_da, shown, units)
    figures["maps.png"] = figure_maps(truth_da, recon_da, sample_da, shown, units, index=len(times) // 2)

    # ---- data record
    planet_ds = None
    if planet is not None and planet.exists():
        planet_ds = _open(planet)
    elif planet is not None:
        log.warning("no planet store at %s: split counts are not available", planet)
    attrs = {**dict(truth_ds.attrs), **(dict(planet_ds.attrs) if planet_ds is not None else {})}

    command = ["python scripts/model_card.py", "--model", _show(package)]
    if truth is not None:
        command += ["--truth", _show(truth_path)]
    for flag, path in (("--planet", planet), ("--ae-run", ae_run), ("--prior-run", prior_run)):
        if path is not None:
            command += [flag, _show(path)]
    command += ["--members", str(members), "--steps", str(steps), "--seed", str(seed)]
    if days is not None:
        command += ["--days", f"{days:g}"]
    text = _render(
        package=package, command=" ".join(command), manifest=manifest, model=model, names=names,
        units=units, grid=grid, attrs=attrs, planet=planet, planet_ds=planet_ds, truth_path=truth_path,
        times=times, runs=runs, rmse=rmse, scale=scale, m_true=m_true, m_prior=m_prior,
        members=members, steps=steps, seed=seed, figures=figures,
        timing={"autoencoder": t_ae, "prior": t_prior, "total": time.perf_counter() - t_start},
    )
    with atomic_path(package / "figures", directory=True) as tmp:
        tmp.mkdir(parents=True)
        for name, data in figures.items():
            atomic_write_bytes(tmp / name, data)
    card = package / "MODEL_CARD.md"
    atomic_write_text(card, text)
    log.info("wrote %s and %d figures in %.1f s", card, len(figures), time.perf_counter() - t_start)
    return card


def _render(*, package, command, manifest, model, names, units, grid, attrs, planet, planet_ds,
            truth_path, times, runs, rmse, scale, m_true, m_prior, members, steps, seed, figures,
            timing) -> str:
    """The card's Markdown text from what :func:`write_model_card` gathered."""

    import yaml

    from appa_engine.data.windows import split_by_time

    prov = manifest.get("provenance") or {}
    params = manifest.get("parameters") or {}
    dt_h = model.spec.time_step_hours
    title = attrs.get("title", "a store without a title")
    out: list[str] = []
    add = out.append

    add(f"# Model card: `{package.name}`\n")
    add("*Generated by `scripts/model_card.py`; regenerate it after retraining.*\n")

    # ---------------------------------------------------------------- summary
    add("## Summary\n")
    n_params = sum(int(v) for v in params.values()) if params else None
    frac = rmse / scale
    add(f"- **What:** an Appa latent diffusion model (preset `{manifest.get('preset', 'custom')}`): a "
        f"convolutional autoencoder and a space-time transformer prior over blankets of "
        f"K = {model.blanket} states, {dt_h:g} h apart ({(model.blanket - 1) * dt_h:g} h per blanket).")
    add(f"- **Trained on:** {title}; {len(names)} channels on a {grid.shape[0]} × {grid.shape[1]} grid.")
    if n_params is not None:
        add(f"- **Size:** {n_params:,} parameters ("
            + ", ".join(f"{k} {int(v):,}" for k, v in params.items()) + ").")
    add(f"- **Autoencoder reconstruction** on {len(times)} truth states: RMSE / channel scale "
        f"{np.nanmin(frac):.3g} to {np.nanmax(frac):.3g} (median {np.nanmedian(frac):.3g}).")
    ratio = m_prior["std"] / m_true["std"]
    add(f"- **Prior:** sample / truth standard deviation per channel {np.nanmin(ratio):.3g} to "
        f"{np.nanmax(ratio):.3g} (median {np.nanmedian(ratio):.3g}); {members} members over the "
        "truth window.\n")

    # ---------------------------------------------------------------- data
    add("## Data\n")
    for key in ("title", "model", "forcing", "resolution", "grid", "spinup", "runs", "time", "source"):
        if attrs.get(key):
            add(f"- **{key}:** {attrs[key]}")
    if not attrs:
        add("- The data store carries no description.")
    add("")
    lat, lon = grid.lat, grid.lon
    add(f"- **Model grid:** {grid.shape[0]} latitudes × {grid.shape[1]} longitudes "
        f"({abs(grid.dlat):g}° × {grid.dlon:g}°), latitude {lat[0]:g} → {lat[-1]:g}, longitude "
        f"{lon[0]:g} → {lon[-1]:g}{' (with poles)' if grid.has_poles else ''}.")
    add(f"- **Time step:** {dt_h:g} h; blanket K = {model.blanket} states.")
    add(f"- **Channels ({len(names)}):** " + ", ".join(f"`{c}` ({units.get(c) or '-'})" for c in names) + ".")
    if prov.get("data"):
        add(f"- **Training store** (provenance): `{prov['data']}`.")
    if planet_ds is not None:
        ptimes = planet_ds["time"].values
        split = split_by_time(ptimes, valid=0.1, test=0.1)
        counts = [int(r.mask(ptimes).sum()) for r in split]
        add(f"- **Record:** `{_show(planet)}`, {len(ptimes)} states from {str(ptimes[0])[:16]} to "
            f"{str(ptimes[-1])[:16]}" + (f" in {np.unique(planet_ds['run'].values).size} runs"
                                         if "run" in planet_ds.coords else "") + ".")
        add("- **Split** (by time, as in training: the last 10 % is test, the 10 % before it validation):\n")
        add(_table(("split", "states", "from", "to"),
                   [(name, n, str(r.start)[:16], str(r.end)[:16])
                    for name, n, r in zip(("train", "valid", "test"), counts, split)]))
        add("")
        in_test = split.test.mask(times)
        if in_test.all():
            add(f"- **Held-out truth** (`{truth_path.name}`): {len(times)} states from {str(times[0])[:16]} "
                f"to {str(times[-1])[:16]}, all in the test split.")
        else:
            add(f"- **Held-out truth** (`{truth_path.name}`): {len(times)} states from {str(times[0])[:16]} "
                f"to {str(times[-1])[:16]}. **Warning: {int((~in_test).sum())} of them are not in the test "
                f"split**, so the diagnostics below are not on unseen data.")
    else:
        add("- **Record and split:** not available (no planet store given).")
        add(f"- **Held-out truth** (`{truth_path.name}`): {len(times)} states from {str(times[0])[:16]} "
            f"to {str(times[-1])[:16]}.")
    add("")

    # ---------------------------------------------------------------- training
    add("## Model and training\n")
    rows = []
    for name in ("autoencoder", "prior"):
        run, p = runs[name], prov.get(name) or {}
        best = min((r["valid_loss"] for r in run.valid), default=None)
        rows.append((name, f"{int(params[name]):,}" if name in params else "n/a",
                     run.steps if run.steps is not None else "n/a",
                     (run.config or {}).get("loop", {}).get("batch_size", "n/a"),
                     _duration(run.compute_seconds),
                     f"{p.get('hardware', '?')} ({p.get('device', '?')}, "
                     f"{p.get('world_size', 1)} process(es))" if p else "n/a",
                     run.train[-1]["loss"] if run.train else None,
                     run.valid[-1]["valid_loss"] if run.valid else None, best))
    add(_table(("network", "parameters", "steps", "batch", "training time*", "hardware",
                "final training loss", "final validation loss", "best validation loss"), rows))
    add("\n\\* time spent in training steps, from the throughput logged in `metrics.jsonl` "
        "(evaluation, checkpointing and data preparation excluded).")
    if prov.get("wall_hours_this_invocation") is not None:
        add(f"Wall time of the whole recipe (data, statistics, both trainings, encoding) in its last "
            f"invocation: {prov['wall_hours_this_invocation']} h.")
    torch_v = {(prov.get(k) or {}).get("torch") for k in ("autoencoder", "prior")} - {None}
    commits = {(prov.get(k) or {}).get("commit") for k in ("autoencoder", "prior")} - {None}
    if torch_v or commits:
        add(f"Software: torch {', '.join(sorted(torch_v)) or 'n/a'}; appa-studio commit "
            f"{', '.join(sorted(commits)) or 'n/a'}.")
    add("")
    if "losses.png" in figures:
        add("![Training and validation losses](figures/losses.png)\n")
        add("Losses: the autoencoder's is the latitude-weighted MSE of standardised states; the "
            "prior's is the weighted denoising loss (weight 1 + 1/σ²) averaged over noise levels.\n")
    for name, key in (("Autoencoder", "autoencoder"), ("Prior (space-time transformer)", "prior")):
        cfg = manifest.get(key) or {}
        fields = ", ".join(f"{k} = `{json.dumps(v)}`" for k, v in cfg.items())
        add(f"**{name} architecture:** {fields}\n")
    for name, key in (("autoencoder", "autoencoder"), ("prior", "prior")):
        cfg = runs[key].config
        if cfg:
            loop, optim = cfg.get("loop") or {}, cfg.get("optim") or {}
            add(f"- **{name} training:** {loop.get('steps')} steps, batch {loop.get('batch_size')}, "
                f"AdamW lr {optim.get('lr')} ({optim.get('schedule')}, warmup {optim.get('warmup')}), "
                f"weight decay {optim.get('weight_decay')}, EMA decay {loop.get('ema_decay')}, "
                f"precision {loop.get('precision')}.")
    add("")
    for name, key in (("autoencoder", "autoencoder"), ("prior", "prior")):
        cfg = runs[key].config
        if cfg:
            add(_details(f"Resolved training config of the {name} (<code>config.yaml</code>)",
                         yaml.safe_dump(cfg, sort_keys=False), "yaml"))
            add("")
        else:
            add(f"- The {name}'s training config is not available.")
    add("")

    # ---------------------------------------------------------------- autoencoder
    add("## Autoencoder reconstruction\n")
    add(f"Every held-out state x ({len(times)} states) is encoded and decoded, x̂ = D(E(x)). Per channel: "
        "RMSE = sqrt(area-weighted mean over time and grid of (x̂ − x)²) in physical units, and the same "
        "divided by the channel's standardisation scale s (its standard deviation over the training "
        "record, `stats.json`): 0 is perfect, 1 is as bad as predicting the training mean "
        "everywhere.\n")
    add(_table(("channel", "units", "RMSE", "scale s", "RMSE / s"),
               [(c, units.get(c) or "-", rmse[i], scale[i], frac[i]) for i, c in enumerate(names)]))
    add("")

    # ---------------------------------------------------------------- prior
    add("## Prior diagnostics\n")
    add(f"The prior is sampled without observations over the truth window ({len(times)} states from "
        f"{str(times[0])[:16]}, the same dates and hence the same date conditioning): {members} members, "
        f"Heun sampler with {steps} steps, seed {seed}, blankets stitched symmetrically.\n")
    add("**Prior samples are not expected to match the truth state**, only its statistics: a sample is "
        "a plausible atmosphere for those dates, not a forecast or a reanalysis of that particular "
        "weather. Hence the comparisons below are of means, variability and spectra, never of "
        "point-wise errors.\n")
    add("Per channel, area-weighted over the grid and averaged over times (and members): mean, "
        "standard deviation, and *eddy* standard deviation (of departures from the zonal mean, i.e. "
        "the waves rather than the equator-to-pole gradient). The truth's statistics come from only "
        f"{len(times)} states, so they carry sampling noise too.\n")
    add(_table(("channel", "units", "truth mean", "sample mean", "truth std", "sample std", "std ratio",
                "truth eddy std", "sample eddy std", "eddy ratio"),
               [(c, units.get(c) or "-", m_true["mean"][i], m_prior["mean"][i], m_true["std"][i],
                 m_prior["std"][i], m_prior["std"][i] / m_true["std"][i], m_true["eddy"][i],
                 m_prior["eddy"][i], m_prior["eddy"][i] / m_true["eddy"][i]) for i, c in enumerate(names)]))
    add("")
    add("![Zonal power spectra, prior samples vs truth](figures/spectra.png)\n")
    add("Zonal power spectra (one-sided FFT power along each latitude row, area-weighted mean over all "
        "rows, wavenumber 0 omitted), averaged over the window: the truth (black) and the prior "
        "(orange: mean over members, shaded: range of the members).\n")
    add("![Zonal-mean profiles, prior members vs truth](figures/zonal_means.png)\n")
    add("Time- and zonal-mean profiles against latitude: the truth (black) and each prior member.\n")
    add("![Maps: truth, reconstruction, prior sample](figures/maps.png)\n")
    add("One state in the middle of the window: the truth, its autoencoder reconstruction, and "
        "prior member 0 at the same date (colour scale of the truth per row).\n")
    add(f"Diagnostics took {_duration(timing['total'])} "
        f"(reconstruction {_duration(timing['autoencoder'])}, prior sampling {_duration(timing['prior'])}) "
        f"on {model.device}.\n")

    # ---------------------------------------------------------------- reproduce
    add("## How to reproduce\n")
    if prov.get("recipe"):
        add("The package was made with:\n")
        add(f"```bash\n{prov['recipe']}\n```\n")
    else:
        add("No recipe is recorded in the manifest's provenance. The runs' resolved configs (above) "
            "retrain the networks:\n")
        add("```bash\nappa train autoencoder --config AE_RUN/config.yaml --out AE_RUN\n"
            "appa encode --autoencoder AE_RUN/model.pt --data PLANET.zarr --out LATENTS.zarr\n"
            "appa train diffusion --config PRIOR_RUN/config.yaml --out PRIOR_RUN\n```\n")
    add("Regenerate this card (the numbers depend on the seed, members and steps):\n")
    add(f"```bash\n{command}\n```\n")

    # ---------------------------------------------------------------- limitations
    add("## Limitations\n")
    synthetic = ("synthetic" in str(attrs.get("title", "")).lower()
                 or "held" in str(attrs.get("forcing", "")).lower())
    if synthetic:
        add("- Trained on a **synthetic** dry Held–Suarez planet: no moisture, orography, land–sea "
            "contrast, seasons or diurnal cycle. Channels named like ERA5 variables stand in for them "
            "(e.g. `2m_temperature` is the lowest model level) and the model knows nothing of the real "
            "Earth's atmosphere. The dates are a synthetic calendar and carry no information.")
    add(f"- A small model for a laptop demo; its grid ({grid.shape[0]} × {grid.shape[1]}) resolves "
        "only large-scale weather, and the autoencoder smooths the smallest resolved scales (see the "
        "reconstruction table and the spectra).")
    add(f"- The diagnostics use {members} members over {len(times)} states: the statistics above are "
        "estimates with sampling noise, good for spotting gross errors (wrong variance, missing jets, "
        "too smooth or too noisy fields), not for ranking similar models.")
    add("- Samples are drawn with the deterministic Heun sampler; assimilation uses the "
        "predictor–corrector sampler with guidance, whose statistics can differ.")
    add("- Prior samples are unconditional: they show what the model believes weather looks like, "
        "not how well it assimilates observations (see `appa evaluate` for that).")
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model package directory")
    p.add_argument("--work", type=Path, help="working directory of make_default_model.py "
                   "(planet.zarr, ae/, prior/)")
    p.add_argument("--truth", type=Path, help="held-out truth store (default MODEL/truth.zarr)")
    p.add_argument("--planet", type=Path, help="the whole training record (default WORK/planet.zarr)")
    p.add_argument("--ae-run", type=Path, help="autoencoder run directory (default WORK/ae)")
    p.add_argument("--prior-run", type=Path, help="prior run directory (default WORK/prior)")
    p.add_argument("--members", type=int, default=4, help="prior ensemble members (default 4)")
    p.add_argument("--steps", type=int, default=32, help="Heun sampler steps (default 32)")
    p.add_argument("--days", type=float, help="days of truth to use from its start (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior samples (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        card = write_model_card(args.model, work=args.work, truth=args.truth, planet=args.planet,
                                ae_run=args.ae_run, prior_run=args.prior_run, members=args.members,
                                steps=args.steps, days=args.days, seed=args.seed, device=args.device)
    except AppaError as e:
        return report_error(e)
    print(card)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Helpers shared by the benchmarks: machine report, timing, random models of a preset, tables.

Not a library module: the benchmarks import it as ``_common`` (``bench/`` is on ``sys.path``
when a script in it runs). Timings follow one rule: a warm-up call first, then the median of
``repeats`` timed calls, with the device synchronised around each call.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

__all__ = [
    "add_common_arguments",
    "positive",
    "resolve_device",
    "setup",
    "machine_lines",
    "sync",
    "Timing",
    "measure",
    "preset_channel_names",
    "random_model",
    "table",
]


# ----------------------------------------------------------------------------- arguments
def positive(text: str) -> int:
    """An ``argparse`` type: an integer ≥ 1."""

    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_common_arguments(p: argparse.ArgumentParser, *, repeats: int = 3) -> None:
    """``--device``, ``--repeats``, ``--threads`` and ``--quick``."""

    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run: auto picks the GPU when there is one")
    p.add_argument("--repeats", type=positive, default=repeats,
                   help="timed repetitions of each measurement (the median is shown)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--quick", action="store_true",
                   help="smallest sizes (tiny preset), for the smoke test; the figures mean little")


def resolve_device(name: str) -> torch.device:
    """``auto`` → the GPU when CUDA is available, else the CPU; ``cuda`` without a GPU exits."""

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def setup(args: argparse.Namespace) -> torch.device:
    """Apply the common arguments (:func:`add_common_arguments`): torch's CPU threads, then the
    device they ask for."""

    if args.threads:
        torch.set_num_threads(args.threads)
    return resolve_device(args.device)


# ----------------------------------------------------------------------------- machine
def machine_lines(device: torch.device) -> list[str]:
    """What the figures were measured on: torch, device, threads, load."""

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    lines = [
        f"torch {torch.__version__}, python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}",
        f"CPU: {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}",
    ]
    if hasattr(os, "getloadavg"):
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        lines.append(f"load average (1, 5, 15 min): {load}  (a loaded machine inflates CPU times)")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.append(f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
                     f"CUDA {torch.version.cuda}")
    else:
        lines.append("device: cpu")
    return lines


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on the CPU)."""

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- timing
@dataclass(frozen=True)
class Timing:
    """Wall times of the repetitions of one measurement, in seconds."""

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """(max − min) / median: how noisy the repetitions were."""
        return (max(self.times) - min(self.times)) / self.median if self.median > 0 else 0.0


def measure(fn: Callable[[], object], *, device: torch.device, repeats: int,
            warmup: int = 1) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed (device synchronised)."""

    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return Timing(tuple(times))


# ----------------------------------------------------------------------------- models
#: ERA5-like (WeatherBench2) variables used to name the channels of a random model.
LEVEL_VARIABLES = ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind",
                   "specific_humidity")
SURFACE_VARIABLES = ("2m_temperature", "mean_sea_level_pressure", "10m_u_component_of_wind",
                     "10m_v_component_of_wind", "surface_pressure", "total_precipitation_6hr")
#: (level variables, levels, surface variables) of the presets' channel counts.
_LAYOUTS = {
    8: (3, (500, 850), 2),  # tiny: like the test store
    29: (4, (100, 250, 500, 700, 850, 925), 5),  # default: the synthetic planet
    71: (5, (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000), 6),  # ERA5 (WB2)
}


def preset_channel_names(channels: int) -> tuple[str, ...]:
    """Plausible channel names for ``channels`` channels: level variables first, then surface."""

    if channels in _LAYOUTS:
        n_var, levels, n_surface = _LAYOUTS[channels]
    else:  # any other count: one level variable per level, two surface variables
        n_surface = min(2, channels - 1) if channels > 1 else 1
        n_var, levels = 1, tuple(range(100, 100 + 50 * (channels - n_surface), 50))
        if channels == 1:
            n_var, levels = 0, ()
    names = [f"{v}_{p}" for v in LEVEL_VARIABLES[:n_var] for p in levels]
    names += list(SURFACE_VARIABLES[:n_surface])
    assert len(names) == channels, (channels, names)
    return tuple(names)


def random_model(preset_name: str, *, device: torch.device, seed: int = 0,
                 time_step_hours: float | None = None):
    """An :class:`~appa_engine.model.AppaModel` of a preset with random weights, in eval mode.

    The statistics are zero mean and unit std (physical = standardised units) and the latent
    statistics too; the weights are PyTorch's initialisation except the prior's output layer,
    which is zero at initialisation and is drawn small instead so that the denoiser is not
    trivially linear. Speed does not depend on the weights.
    """

    from appa_engine.data.channels import ChannelSpec
    from appa_engine.data.grid import Grid
    from appa_engine.data.stats import Statistics
    from appa_engine.model import AppaModel, ModelSpec, latent_spec
    from appa_engine.nn.presets import get_preset

    preset = get_preset(preset_name)
    names = preset_channel_names(preset.channels)
    H, W = preset.grid
    grid = Grid.regular(H, W, poles=bool(preset.autoencoder.poles))
    if time_step_hours is None:
        time_step_hours = 1.0 if preset.name.startswith("paper") else 6.0
    spec = ModelSpec(autoencoder=preset.autoencoder, prior=preset.prior,
                     channels=ChannelSpec(names), grid=grid, blanket=preset.blanket,
                     time_step_hours=time_step_hours, preset=preset.name)
    Z = preset.autoencoder.latent_channels
    stats = Statistics(ChannelSpec(names), np.zeros(len(names)), np.ones(len(names)))
    latent_stats = Statistics(latent_spec(Z), np.zeros(Z), np.ones(Z))
    torch.manual_seed(seed)
    model = AppaModel(spec, stats, latent_stats)
    head = model.denoiser.backbone.head
    with torch.no_grad():
        head.weight.normal_(0.0, 0.02)
    return model.to(device).eval()


# ----------------------------------------------------------------------------- tables
def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *,
          title: str | None = None) -> str:
    """A plain-text table: strings left-aligned, numbers right-aligned."""

    def fmt(v: object) -> str:
        if isinstance(v, (float, np.floating)):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        if isinstance(v, (int, np.integer)):
            return f"{int(v):,}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    number = (int, float, np.integer, np.floating)
    numeric = [bool(rows) and all(isinstance(row[i], number) for row in rows)
               for i in range(len(headers))]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = (v.rjust(w) if numeric[i] else v.ljust(w)
                 for i, (v, w) in enumerate(zip(values, widths)))
        return "  ".join(parts).rstrip()

    out = [] if title is None else ["", title]
    out.append(line(list(headers)))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in cells)
    return "\n".join(out)

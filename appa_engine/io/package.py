"""Model packages: one directory that holds everything a trained Appa model needs.

Layout::

    model/
      manifest.json      format, version, configs, channels, grid, time step, provenance,
                         and the SHA-256 of every file below
      autoencoder.pt     autoencoder weights (state dict, loaded with weights_only=True)
      prior.pt           diffusion backbone weights (EMA when trained with it)
      stats.json         statistics of the physical channels
      latent_stats.json  statistics of the latent channels
      MODEL_CARD.md      optional: data, training, diagnostics
      truth.zarr         optional: held-out truth for demos

:func:`load_model` checks the hashes (a truncated or corrupted file is named), that the weights
match the configs, and that the statistics cover the model's channels.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from appa_engine.config import from_dict, to_dict
from appa_engine.data.channels import ChannelSpec
from appa_engine.data.grid import Grid
from appa_engine.data.stats import Statistics
from appa_engine.errors import CheckpointError, ConfigError, DataError
from appa_engine.io.atomic import atomic_path, atomic_write_text
from appa_engine.io.checkpoint import load_checkpoint, save_checkpoint, sha256

__all__ = ["save_package", "load_model", "read_manifest", "default_model_path", "resolve_model_path",
           "PACKAGE_VERSION"]

PACKAGE_VERSION = 1
_FORMAT = "appa-model"
_WEIGHTS = ("autoencoder.pt", "prior.pt")
_STATS = ("stats.json", "latent_stats.json")


def default_model_path() -> Path:
    """Where ``load_model("default")`` looks: ``$APPA_DEFAULT_MODEL`` or ``assets/default-model``."""

    env = os.environ.get("APPA_DEFAULT_MODEL")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "assets" / "default-model"


def resolve_model_path(path: str | os.PathLike) -> Path:
    """The directory of a model package: ``"default"`` → :func:`default_model_path`, checked."""

    is_default = str(path) == "default"
    resolved = default_model_path() if is_default else Path(path)
    if not (resolved / "manifest.json").exists():
        if is_default:
            raise CheckpointError(
                f"the default model is not installed at '{resolved}'",
                hint="train it with `make default-model`, or pass a package with --model",
            )
        read_manifest(resolved)  # raises the precise error (missing, not a package, ...)
    return resolved


def save_package(model, path: str | os.PathLike, *, provenance: dict | None = None,
                 card: str | None = None, truth: str | os.PathLike | None = None) -> Path:
    """Write ``model`` (an :class:`~appa_engine.model.AppaModel`) as a package, atomically."""

    path = Path(path)
    with atomic_path(path, directory=True) as tmp:
        tmp.mkdir(parents=True)
        save_checkpoint({"state_dict": model.autoencoder.state_dict()}, tmp / "autoencoder.pt")
        save_checkpoint({"state_dict": model.denoiser.backbone.state_dict()}, tmp / "prior.pt")
        model.stats.save(tmp / "stats.json")
        model.latent_stats.save(tmp / "latent_stats.json")
        files = {name: sha256(tmp / name) for name in (*_WEIGHTS, *_STATS)}
        if card is not None:
            (tmp / "MODEL_CARD.md").write_text(card)
        if truth is not None:
            shutil.copytree(truth, tmp / "truth.zarr")
        spec = model.spec
        manifest = {
            "format": _FORMAT,
            "version": PACKAGE_VERSION,
            "preset": spec.preset,
            "channels": list(spec.channels.names),
            "grid": spec.grid.to_dict(),
            "blanket": spec.blanket,
            "time_step_hours": spec.time_step_hours,
            "autoencoder": to_dict(spec.autoencoder),
            "prior": to_dict(spec.prior),
            "parameters": model.num_parameters(),
            "files": files,
            "truth": "truth.zarr" if truth is not None else None,
            "provenance": provenance or {},
        }
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return path


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a package, checked for format and version."""

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model package '{path}' does not exist",
                              hint="pass 'default' or the directory written by training")
    file = path / "manifest.json" if path.is_dir() else path
    try:
        manifest = json.loads(file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"'{path}' is not a model package (no manifest.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"the manifest of '{path}' is corrupted: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise CheckpointError(f"'{path}' is not an Appa model package (format is not '{_FORMAT}')")
    version = manifest.get("version")
    if not isinstance(version, int) or not 1 <= version <= PACKAGE_VERSION:
        raise CheckpointError(
            f"model package '{path}' has version {version!r}; this Appa Studio reads 1 to {PACKAGE_VERSION}",
            hint="upgrade appa-studio",
        )
    return manifest


def model_spec(manifest: dict, *, source: str = "model package"):
    """The :class:`~appa_engine.model.ModelSpec` described by a manifest."""

    from appa_engine.model import ModelSpec
    from appa_engine.nn.autoencoder import AutoencoderConfig
    from appa_engine.nn.transformer import TransformerConfig

    try:
        return ModelSpec(
            autoencoder=from_dict(AutoencoderConfig, manifest["autoencoder"]),
            prior=from_dict(TransformerConfig, manifest["prior"]),
            channels=ChannelSpec(tuple(manifest["channels"])),
            grid=Grid.from_dict(manifest["grid"]),
            blanket=int(manifest["blanket"]),
            time_step_hours=float(manifest["time_step_hours"]),
            preset=str(manifest.get("preset", "custom")),
        )
    except KeyError as e:
        raise CheckpointError(f"the manifest of {source} lacks {e}") from e
    except (ConfigError, DataError) as e:
        raise CheckpointError(f"the manifest of {source} is invalid: {e.message}") from e


def _load_state(model: torch.nn.Module, file: Path, what: str) -> None:
    state = load_checkpoint(file).get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"'{file}' holds no state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(
            f"the {what} weights in '{file}' do not match the {what} config of the package "
            f"(another preset or grid?): {str(e).splitlines()[0]}",
            hint="use the manifest written together with these weights",
        ) from e


def load_model(path: str | os.PathLike = "default", *, device: str | torch.device = "cpu",
               verify: bool = True) -> Any:
    """Load a model package as an :class:`~appa_engine.model.AppaModel` in eval mode.

    Arguments:
        path: ``"default"`` (the model shipped in ``assets/``) or a package directory.
        device: Where to put the weights.
        verify: Check the SHA-256 of every file against the manifest.
    """

    from appa_engine.model import AppaModel

    path = resolve_model_path(path)
    manifest = read_manifest(path)
    for name, digest in manifest.get("files", {}).items():
        file = path / name
        if not file.exists():
            raise CheckpointError(f"model package '{path}' lacks '{name}'")
        if verify and sha256(file) != digest:
            raise CheckpointError(
                f"'{file}' is corrupted or was modified (its SHA-256 does not match the manifest)",
                hint="copy the package again",
            )
    spec = model_spec(manifest, source=f"'{path}'")
    stats = Statistics.load(path / "stats.json")
    latent_stats = Statistics.load(path / "latent_stats.json")
    try:
        model = AppaModel(spec, stats, latent_stats)
    except DataError as e:
        raise CheckpointError(f"the statistics of '{path}' do not cover its channels: {e.message}") from e
    _load_state(model.autoencoder, path / "autoencoder.pt", "autoencoder")
    _load_state(model.denoiser.backbone, path / "prior.pt", "prior")
    model.package_path = path
    model.manifest = manifest
    return model.to(device).eval()

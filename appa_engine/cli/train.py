"""``appa train autoencoder|diffusion``, ``appa encode`` and ``appa presets``."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="run directory (config, metrics, checkpoints)")
    p.add_argument("--preset", help="model preset: tiny, default, paper, paper-v1 (see `appa presets`)")
    p.add_argument("--config", type=Path, help="config file (TOML, YAML or JSON)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set loop.steps=500 --set optim.lr=3e-4 (repeatable)")
    p.add_argument("--steps", type=int, help="shortcut for --set loop.steps=N")
    p.add_argument("--batch-size", type=int, help="shortcut for --set loop.batch_size=N (global batch)")
    p.add_argument("--device", help="auto, cpu or cuda (shortcut for --set loop.device=...)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def _overrides(args, **shortcuts) -> list[str]:
    over = []
    for key, value in {"preset": args.preset, "loop.steps": args.steps, "loop.batch_size": args.batch_size,
                       "loop.device": args.device, **shortcuts}.items():
        if value is not None:
            over.append(f"{key}={value}")
    return over + list(args.set)


def _run(args, config, task_factory) -> int:
    import yaml

    from appa_engine.config import to_dict
    from appa_engine.train.distributed import setup, teardown
    from appa_engine.train.loop import fit

    if args.dry_run:
        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return 0
    ctx = setup(config.loop.device)
    try:
        task = task_factory(config)
        record = fit(task, config.loop, config.optim, out=args.out, ctx=ctx, config=config, resume=args.resume)
        if ctx.is_main:
            if "loss" in record:
                done = f"loss {record['loss']:.4g}" + (f", valid {record['valid_loss']:.4g}"
                                                      if "valid_loss" in record else "")
            else:  # --resume of a run that had already reached its steps
                done = "nothing left to train"
            print(f"{task.name}: step {record.get('step')}, {done}; outputs in {args.out}")
            if task.name == "diffusion" and record["finished"]:
                from appa_engine.train.diffusion import build_package

                package = build_package(config, Path(args.out) / "model.pt", Path(args.out) / "package")
                print(f"model package: {package} (load with appa_engine.load_model('{package}'))")
    finally:
        teardown()
    return 0


def _train_autoencoder(args) -> int:
    from appa_engine.train.autoencoder import AutoencoderTask, AutoencoderTrainConfig, preset_defaults
    from appa_engine.train.common import resolve

    over = _overrides(args, data=args.data, stats=args.stats)
    config = resolve(AutoencoderTrainConfig, file=args.config, overrides=over, preset_defaults=preset_defaults)
    return _run(args, config, AutoencoderTask)


def _train_diffusion(args) -> int:
    from appa_engine.train.common import resolve
    from appa_engine.train.diffusion import DiffusionTask, DiffusionTrainConfig, preset_defaults

    over = _overrides(args, latents=args.latents)
    config = resolve(DiffusionTrainConfig, file=args.config, overrides=over, preset_defaults=preset_defaults)
    return _run(args, config, DiffusionTask)


def _encode(args) -> int:
    from appa_engine.train.encode import encode_store

    out = encode_store(args.autoencoder, args.data, args.out, batch_size=args.batch_size,
                       device=args.device, progress=not args.quiet)
    print(f"latent store: {out}")
    return 0


def _presets(args) -> int:
    from appa_engine.nn.presets import PRESETS, count_parameters, get_preset

    names = [args.name] if args.name else list(PRESETS)
    print(f"{'preset':<10} {'autoencoder':>14} {'prior':>14} {'total':>14}  grid, channels, blanket")
    for name in names:
        preset = get_preset(name)
        n = count_parameters(preset)
        print(f"{name:<10} {n['autoencoder']:>14,} {n['prior']:>14,} {n['autoencoder'] + n['prior']:>14,}"
              f"  {preset.grid[0]}×{preset.grid[1]}, C={preset.channels}, K={preset.blanket}")
    return 0


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="train the autoencoder or the diffusion prior",
                                  description="Train on one process, or on many GPUs/nodes with torchrun.")
    sub = train.add_subparsers(dest="model", metavar="MODEL", required=True)

    ae = sub.add_parser("autoencoder", help="train the state autoencoder on a canonical store",
                        description="Area-weighted MSE on standardised states. Multi-GPU: "
                        "torchrun --nproc_per_node=N -m appa_engine.cli train autoencoder ...")
    ae.add_argument("--data", help="canonical zarr store (see `appa data convert` / `appa data synth`)")
    ae.add_argument("--stats", help="statistics JSON (see `appa data stats`)")
    _common(ae)
    ae.set_defaults(handler=_train_autoencoder)

    dm = sub.add_parser("diffusion", help="train the latent diffusion prior on a latent store",
                        description="EDM-preconditioned transformer on latent blankets; writes a model "
                        "package in <out>/package at the end.")
    dm.add_argument("--latents", help="latent store (see `appa encode`)")
    _common(dm)
    dm.set_defaults(handler=_train_diffusion)

    enc = subparsers.add_parser("encode", help="encode a canonical store into a latent store",
                                description="Writes the latents and their statistics for `appa train diffusion`.")
    enc.add_argument("--autoencoder", type=Path, required=True, help="model.pt of `appa train autoencoder`")
    enc.add_argument("--data", type=Path, required=True, help="canonical zarr store")
    enc.add_argument("--out", type=Path, required=True, help="latent zarr store to write")
    enc.add_argument("--batch-size", type=int, default=16, help="states encoded at once (default 16)")
    enc.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    enc.add_argument("--quiet", action="store_true", help="no progress bar")
    enc.set_defaults(handler=_encode)

    pre = subparsers.add_parser("presets", help="list the model presets and their parameter counts")
    pre.add_argument("name", nargs="?", help="one preset (default: all)")
    pre.set_defaults(handler=_presets)

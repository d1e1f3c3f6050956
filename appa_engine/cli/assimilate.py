"""``appa sample``, ``appa assimilate`` and ``appa scenario``.

``appa sample`` and ``appa assimilate`` run on one process, or on many under ``torchrun``::

    appa assimilate --scenario s.yaml --out run.zarr                      # one GPU (or the CPU)
    torchrun --nproc_per_node 4 -m appa_engine.cli assimilate --scenario s.yaml --out run.zarr

Under ``torchrun`` each process samples its share of the members on its own GPU (NCCL; gloo on
CPU), rank 0 gathers the latent trajectories, decodes them and writes the output (the other ranks
write nothing), with the same members as one process would give.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

__all__ = ["register"]


def _progress_bar(desc: str, quiet: bool):
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit="step", disable=quiet)

    def update(i: int, n: int) -> None:
        bar.total = n
        bar.n = i
        bar.refresh()

    return bar, update


def _sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", choices=("pc", "ddim", "heun", "lms"), help="diffusion sampler")
    p.add_argument("--steps", type=int, help="diffusion steps")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto; under torchrun: "
                   "each process's GPU)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="network precision: bf16 autocast of the denoiser and decoder; auto = bf16 on CUDA, "
                        "fp32 elsewhere (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@contextlib.contextmanager
def _processes(device: str):
    """This process's :class:`~appa_engine.train.distributed.Context`: the process group is set up
    under ``torchrun`` (and torn down after, when this command set it up)."""

    import torch.distributed as dist

    from appa_engine.train.distributed import setup, teardown

    owned = not dist.is_initialized()
    ctx = setup(device)
    try:
        yield ctx
    finally:
        if owned:
            teardown()


def _sample(args) -> int:
    from appa_engine.io.outputs import write_dataset
    from appa_engine.io.package import load_model
    from appa_engine.observations.scenario import SamplerSettings
    from appa_engine.tasks.assimilator import Assimilator

    with _processes(args.device) as ctx:
        model = load_model(args.model)
        assim = Assimilator(model, device=ctx.device, precision=args.precision)
        sampler = SamplerSettings(name=args.sampler or "heun", steps=args.steps or 64, corrections=0)
        bar, update = _progress_bar("prior", args.quiet or not ctx.is_main)
        ds = assim.reanalysis(start=args.start, hours=args.hours, members=args.members, sampler=sampler,
                              seed=args.seed, progress=update)
        bar.close()
        if ctx.is_main:
            write_dataset(ds, args.out)
            print(f"{args.members} prior trajectories of {ds.sizes['time']} states written to {args.out}")
    return 0


def _assimilate(args) -> int:
    import dataclasses

    from appa_engine.io.outputs import write_dataset
    from appa_engine.io.package import load_model
    from appa_engine.observations.scenario import Scenario
    from appa_engine.tasks.assimilator import Assimilator

    scenario = Scenario.load(args.scenario)
    changes = {k: v for k, v in {"members": args.members, "seed": args.seed}.items() if v is not None}
    if args.sampler or args.steps:
        changes["sampler"] = dataclasses.replace(
            scenario.sampler, **{k: v for k, v in {"name": args.sampler, "steps": args.steps}.items() if v})
    scenario = dataclasses.replace(scenario, **changes)
    with _processes(args.device) as ctx:
        model = load_model(args.model or scenario.model)
        assim = Assimilator(model, device=ctx.device, precision=args.precision)
        bar, update = _progress_bar(scenario.task, args.quiet or not ctx.is_main)
        ds = assim.run(scenario, progress=update, background=args.background)
        bar.close()
        if ctx.is_main:  # the other ranks have no output (None)
            write_dataset(ds, args.out)
            n = ds.sizes.get("obs", 0)
            print(f"{scenario.task}: {ds.sizes['member']} members × {ds.sizes['time']} states, {n} observations "
                  f"→ {args.out}" + (f" ({ctx.world_size} processes)" if ctx.distributed else ""))
    return 0


def _scenario(args) -> int:
    from appa_engine.data.readers import open_dataset
    from appa_engine.io.package import load_model
    from appa_engine.tasks.simulate import make_scenario

    model = load_model(args.model)
    truth_path = args.truth or (model.package_path / "truth.zarr")
    truth = open_dataset(truth_path)
    scenario = make_scenario(model, truth, start=args.start, hours=args.hours, stations=args.stations,
                             satellite=args.satellite, task=args.task, lead_hours=args.lead_hours,
                             members=args.members, seed=args.seed, model_name=str(args.model))
    scenario.save(args.out)
    print(f"scenario with {len(scenario.observations.observers)} observer(s) written to {args.out}")
    return 0


def register(subparsers) -> None:
    s = subparsers.add_parser("sample", help="sample prior trajectories (no observations)",
                              description="Unconditional trajectories from the latent diffusion prior, "
                              "stitched from overlapping blankets, in physical units.")
    s.add_argument("--model", default="default", help="'default' or a model package directory")
    s.add_argument("--start", required=True, help="date of the first state, e.g. 2000-06-01T00")
    s.add_argument("--hours", type=float, required=True, help="window length in hours")
    s.add_argument("--members", type=int, default=4, help="number of trajectories (default 4)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--out", type=Path, required=True, help="output .zarr or .nc")
    _sampler_args(s)
    s.set_defaults(handler=_sample)

    a = subparsers.add_parser("assimilate", help="run a scenario: reanalysis, filtering or forecast",
                              description="Guided posterior sampling (MMPS or DPS) of the scenario's task. "
                              "Under torchrun (torchrun --nproc_per_node N -m appa_engine.cli assimilate ...) the "
                              "members are split over the processes and rank 0 writes the output.")
    a.add_argument("--scenario", type=Path, required=True, help="scenario file (YAML or JSON)")
    a.add_argument("--model", help="override the scenario's model ('default' or a package directory)")
    a.add_argument("--out", type=Path, required=True, help="output .zarr or .nc")
    a.add_argument("--members", type=int, help="override the ensemble size")
    a.add_argument("--seed", type=int, help="override the seed")
    a.add_argument("--background", action="store_true",
                   help="also sample the prior ensemble for O−B statistics (about doubles the cost)")
    _sampler_args(a)
    a.set_defaults(handler=_assimilate)

    c = subparsers.add_parser("scenario", help="write a scenario whose observations are simulated from a truth",
                              description="Random stations (uniform on the sphere) and/or Appa's polar "
                              "orbiter, with values drawn from a truth store plus noise.")
    c.add_argument("--model", default="default", help="'default' or a model package directory")
    c.add_argument("--truth", help="truth store on the model grid (default: the package's truth.zarr)")
    c.add_argument("--start", required=True, help="date of the first state")
    c.add_argument("--hours", type=int, default=24, help="window length in hours (default 24)")
    c.add_argument("--stations", type=int, default=200, help="random stations (default 200)")
    c.add_argument("--satellite", action="store_true", help="add the paper's polar orbiter")
    c.add_argument("--task", choices=("reanalysis", "filter", "forecast"), default="reanalysis")
    c.add_argument("--lead-hours", type=int, default=0, help="forecast lead time in hours")
    c.add_argument("--members", type=int, default=8, help="ensemble size (default 8)")
    c.add_argument("--seed", type=int, default=0, help="seed of the stations and of the noise")
    c.add_argument("--out", type=Path, required=True, help="scenario file to write (.yaml or .json)")
    c.set_defaults(handler=_scenario)

"""Reproduce the default model package shipped in ``assets/default-model``.

One command (``make default-model``) runs the whole chain with the ``appa`` CLI, resuming every
step that was interrupted:

1. ``appa data synth``: the synthetic Held–Suarez planet (``default``: T42, 64 × 128, 6-hourly,
   two runs of 360 days, the first after 150 days of spin-up, the second 20 days after the first,
   2,880 states; ``--synth-preset small``: T21);
2. ``appa data stats``: per-channel statistics;
3. ``appa train autoencoder`` and ``appa encode``;
4. ``appa train diffusion`` (writes a model package);
5. the package is copied to ``assets/default-model`` with held-out truth days from the test split
   and a model card (``scripts/model_card.py``).

Run on a GPU when there is one (``--device cuda``); the CPU path works too: on two cores, about
90 minutes for the planet (50 for the first run, 42 for the second; ``--runs`` grows an existing
planet), 11 for the autoencoder and 40 for the prior with the default step counts (the shipped
model's recipe).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def appa(*args: str) -> None:
    from appa_engine.cli import main

    print("$ appa " + " ".join(args), flush=True)
    code = main(list(args))
    if code:
        sys.exit(code)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "default", help="working directory")
    p.add_argument("--out", type=Path, default=ROOT / "assets" / "default-model", help="package to write")
    p.add_argument("--synth-preset", default="default", help="synthetic planet preset (default: T42)")
    p.add_argument("--runs", type=int, default=2, help="independent runs of the planet")
    p.add_argument("--days", type=int, default=360, help="written days per run")
    p.add_argument("--spinup-days", type=int, default=150, help="days simulated before the first written state")
    p.add_argument("--ae-steps", type=int, default=3000, help="autoencoder training steps")
    p.add_argument("--prior-steps", type=int, default=10000, help="prior training steps")
    p.add_argument("--batch-size", type=int, default=8, help="global batch size")
    p.add_argument("--truth-days", type=int, default=6, help="held-out days shipped with the model")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    # The T42 planet (2.7 GB as float32) is read into memory: above the 2 GiB default, training
    # would stream it from zarr, and reading a state costs more than a step of this autoencoder.
    p.add_argument("--set-ae", action="append", default=["loop.in_memory_gib=4"],
                   help="extra --set for the autoencoder")
    p.add_argument("--set-prior", action="append", default=[], help="extra --set for the prior")
    args = p.parse_args()

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    planet, stats = work / "planet.zarr", work / "planet.stats.json"
    t0 = time.time()
    appa("data", "synth", "--out", str(planet), "--preset", args.synth_preset, "--runs", str(args.runs),
         "--days", str(args.days), "--spinup-days", str(args.spinup_days))
    if not stats.exists():
        appa("data", "stats", str(planet), "--out", str(stats))

    # The default preset is sized for a 64×128 grid with 8× downsampling (8×16 latents). On the
    # T21 planet (32×64), 4× downsampling (2×2 patches, one merge) keeps the same 8×16 latents.
    downsample = ["--set", "model.downsample=[true, false]"] if args.synth_preset in ("tiny", "small") else []
    common = ["--preset", "default", "--batch-size", str(args.batch_size), "--device", args.device]
    ae = work / "ae"
    appa("train", "autoencoder", "--data", str(planet), "--stats", str(stats), "--out", str(ae),
         "--steps", str(args.ae_steps), *common, *downsample, *[x for s in args.set_ae for x in ("--set", s)],
         *(["--resume"] if (ae / "last.pt").exists() else []))
    latents = work / "latents.zarr"
    if not latents.exists():
        appa("encode", "--autoencoder", str(ae / "model.pt"), "--data", str(planet), "--out", str(latents),
             "--device", args.device)
    prior = work / "prior"
    appa("train", "diffusion", "--latents", str(latents), "--out", str(prior), "--steps", str(args.prior_steps),
         *common, *[x for s in args.set_prior for x in ("--set", s)],
         *(["--resume"] if (prior / "last.pt").exists() else []))
    hours = (time.time() - t0) / 3600

    # held-out truth: the first days of the test split (the last 10 % of the record)
    import numpy as np

    from appa_engine.data.windows import open_store, split_by_time

    times = open_store(planet)["time"].values
    test = split_by_time(times, valid=0.1, test=0.1).test
    start = np.datetime64(test.start, "s")
    end = start + np.timedelta64(args.truth_days * 24 - 6, "h")
    truth = work / "truth.zarr"
    if truth.exists():
        shutil.rmtree(truth)
    appa("data", "convert", str(planet), str(truth), "--time", f"{start}..{end}", "--chunk-time", "4")

    from appa_engine.io.package import load_model, save_package

    model = load_model(prior / "package")
    provenance = dict(model.manifest["provenance"])
    provenance["recipe"] = "python scripts/make_default_model.py " + " ".join(sys.argv[1:])
    provenance["wall_hours_this_invocation"] = round(hours, 2)
    save_package(model, args.out, provenance=provenance, truth=truth)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "model_card.py"), "--model", str(args.out),
                    "--work", str(work)], check=True)
    print(json.dumps(model.num_parameters()), f"→ {args.out}")


if __name__ == "__main__":
    main()

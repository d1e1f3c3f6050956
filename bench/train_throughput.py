"""Training throughput of the autoencoder and of the diffusion prior, for each model preset.

A training step here is what :func:`appa_engine.train.loop.fit` does per batch: forward, loss,
backward, gradient clipping and an AdamW step, on random data of the preset's shape (states
``(B, C, H, W)`` for the autoencoder, latent blankets ``(B, K, Z, h, w)`` for the prior), in
bf16 autocast on a GPU and float32 on a CPU. For each preset that fits, and each batch size that
fits, it prints the median step time, samples/s and the ratio to the smallest batch (scaling);
prior tokens/s (tokens per blanket = ⌈K/p_t⌉·⌈h/p_h⌉·⌈w/p_w⌉); the model FLOPs per sample
and the achieved FLOP rate; on a GPU also the peak memory (``torch.cuda.max_memory_allocated``)
and the model FLOPs utilisation (MFU).

Estimates, and said to be: FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode`
on one forward + backward of the network built on PyTorch's ``meta`` device without activation
checkpointing (model FLOPs: recomputation is not counted, the optimizer's element-wise work is
not counted either); MFU divides the achieved model FLOP rate by the device's dense bf16 peak
(H100/H200 ≈ 989 TFLOP/s, A100 312; ``--peak-tflops`` for others). Memory is estimated before
running as 16 bytes per parameter (weights, gradients, two AdamW moments) plus 1.5× the bytes
the forward pass saves for backward (measured on ``meta``, checkpointing as configured);
presets or batches that would not fit in 80 % of the free memory are skipped with a message.

Presets: ``tiny`` and ``default`` everywhere; ``paper`` and ``paper-v1`` only on a GPU or
when named with ``--presets``. Not a test::

    python bench/train_throughput.py                         # tiny, default (CPU) / all (GPU)
    python bench/train_throughput.py --presets paper --batch-sizes 1 2 4
    python bench/train_throughput.py --quick                 # tiny only, seconds (smoke test)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    add_common_arguments,
    machine_lines,
    measure,
    positive,
    setup,
    table,
)

#: Dense bf16 peak FLOP/s of known GPUs (vendor figures, no sparsity).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}
#: Batch sizes tried by default.
BATCHES = {"cpu": (4, 16), "cuda": (8, 32, 128)}
BATCHES_LARGE = {"cpu": (1,), "cuda": (1, 2, 4, 8)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_arguments(p)
    p.add_argument("--presets", nargs="+", default=None,
                   help="presets to measure (default: tiny default on a CPU, all four on a GPU)")
    p.add_argument("--models", nargs="+", choices=("autoencoder", "prior"),
                   default=["autoencoder", "prior"], help="which networks to train")
    p.add_argument("--batch-sizes", type=positive, nargs="+", default=None,
                   help="batch sizes (default: 4 16 on a CPU, 8 32 128 on a GPU; for the paper "
                   "presets 1 on a CPU, 1 2 4 8 on a GPU)")
    p.add_argument("--steps", type=positive, default=None,
                   help="optimizer steps per timed repetition (default: 2 on a CPU, 10 on a GPU)")
    p.add_argument("--warmup", type=positive, default=2,
                   help="untimed steps first (AdamW state, allocator)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense bf16 peak, TFLOP/s, for MFU (default: H100/H200/A100 "
                   "are known)")
    p.add_argument("--memory-fraction", type=float, default=0.8,
                   help="share of the free memory a run may be estimated to use")
    args = p.parse_args(argv)
    if args.quick:
        args.presets, args.batch_sizes = args.presets or ["tiny"], args.batch_sizes or [2, 4]
        args.repeats, args.steps, args.warmup = 1, 1, 1
        args.threads = args.threads or 1  # on a shared, loaded machine 2 threads can be much slower
    return args


# ----------------------------------------------------------------------------- networks
def build(preset, which: str, *, checkpointing: bool | None = None):
    """The network of ``which`` and a function making one random batch: ``batch(B) -> loss()``."""

    from appa_engine.data.grid import Grid
    from appa_engine.diffusion.denoiser import PreconditionedDenoiser, denoising_loss
    from appa_engine.diffusion.schedule import RectifiedSchedule
    from appa_engine.nn.autoencoder import Autoencoder, area_weighted_mse
    from appa_engine.nn.transformer import SpaceTimeTransformer

    if which == "autoencoder":
        config = preset.autoencoder
        if checkpointing is not None:
            config = dataclasses.replace(config, checkpointing=checkpointing)
        net = Autoencoder(config)
        H, W = preset.grid
        grid = Grid.regular(H, W, poles=bool(config.poles))
        weights = torch.as_tensor(grid.weights(), dtype=torch.float32)

        def batch(B: int, device) -> Callable[[], torch.Tensor]:
            x = torch.randn(B, preset.channels, H, W, device=device)
            w = weights.to(device)
            return lambda: area_weighted_mse(net(x).float(), x, w)

        return net, batch

    config = preset.prior
    if checkpointing is not None:
        config = dataclasses.replace(config, checkpointing=checkpointing)
    net = PreconditionedDenoiser(SpaceTimeTransformer(config))
    Z, h, w = preset.latent_shape
    K = preset.blanket

    def batch(B: int, device) -> Callable[[], torch.Tensor]:
        x = torch.randn(B, K, Z, h, w, device=device)
        date = torch.randn(B, K, config.date_features, device=device)
        schedule = RectifiedSchedule().to(device)
        return lambda: denoising_loss(net, x, schedule=schedule, date=date)

    return net, batch


def tokens_per_blanket(preset) -> int:
    _, h, w = preset.latent_shape
    p_t, p_h, p_w = preset.prior.patch
    return math.ceil(preset.blanket / p_t) * math.ceil(h / p_h) * math.ceil(w / p_w)


def meta_profile(preset, which: str) -> tuple[int, int, int]:
    """``(parameters, model FLOPs per sample, saved activation bytes per sample)`` on ``meta``.

    FLOPs: forward + backward without checkpointing. Activations: bytes of the tensors the forward
    saves for backward with checkpointing as configured (float32).
    """

    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net, batch = build(preset, which, checkpointing=False)
        net.train()
        params = sum(p.numel() for p in net.parameters())
        with FlopCounterMode(display=False) as counter:
            batch(1, "meta")().backward()
        flops = counter.get_total_flops()

        net, batch = build(preset, which)
        net.train()
        saved: dict[int, int] = {}

        def pack(t):
            saved[id(t)] = t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            batch(1, "meta")()
    return params, int(flops), sum(saved.values())


def free_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


# ----------------------------------------------------------------------------- timing
def time_steps(preset, which: str, B: int, args, device) -> dict:
    """Build, warm up and time ``args.steps`` optimizer steps per repetition."""

    torch.manual_seed(0)
    net, batch = build(preset, which)
    net.to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss_fn = batch(B, device)
    cuda = device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    def steps():
        for _ in range(args.steps):
            step()

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t = measure(steps, device=device, repeats=args.repeats, warmup=0)
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    return {"step": t.median / args.steps, "spread": t.spread, "peak": peak}


def run(args, device) -> list[str]:
    from appa_engine.nn.presets import get_preset

    from appa_engine.errors import ConfigError

    presets = args.presets or (["tiny", "default"] if device.type == "cpu"
                               else ["tiny", "default", "paper", "paper-v1"])
    try:
        [get_preset(name) for name in presets]
    except ConfigError as e:
        raise SystemExit(f"{e.message} ({e.hint})") from e
    budget = args.memory_fraction * free_memory(device)
    peak = peak_flops(device, args.peak_tflops)
    cuda = device.type == "cuda"
    rate_unit, rate_name = (1e12, "TFLOP/s") if cuda else (1e9, "GFLOP/s")
    messages, rows = [], []
    for name in presets:
        preset = get_preset(name)
        large = name.startswith("paper")
        sizes = args.batch_sizes or (BATCHES_LARGE if large else BATCHES)[device.type]
        for which in args.models:
            params, flops, act = meta_profile(preset, which)
            tokens = tokens_per_blanket(preset) if which == "prior" else None
            first = None
            for B in sizes:
                need = 16 * params + 1.5 * B * act
                if need > budget:
                    messages.append(f"  skipped {name} {which} batch {B}: needs about "
                                    f"{need / 2**30:.1f} GiB (estimate), "
                                    f"{budget / 2**30:.1f} GiB allowed")
                    continue
                r = time_steps(preset, which, B, args, device)
                if cuda:  # the model and optimizer of that size are gone: hand their memory back
                    torch.cuda.empty_cache()
                sps = B / r["step"]
                first = first or sps
                row = [name, which, params / 1e6, B, 1e3 * r["step"], sps, sps / first]
                row.append(f"{tokens * sps:,.0f}" if tokens else "-")
                row += [flops / 1e9, flops * sps / rate_unit]
                if cuda:
                    row.append(f"{100 * flops * sps / peak:.1f}" if peak else "n/a")
                    row.append(r["peak"] / 2**30)
                row.append(need / 2**30)
                rows.append(row)
                print(f"  measured {name} {which} batch {B}: {1e3 * r['step']:.1f} ms/step "
                      f"(spread {100 * r['spread']:.0f} %)", flush=True)
    headers = ["preset", "model", "params M", "batch", "ms/step", "samples/s", "x batch 1st",
               "tokens/s", "GFLOP/sample", rate_name]
    if cuda:
        headers += ["MFU %", "peak GiB"]
    headers.append("est GiB")
    title = "Training steps (forward + backward + clip + AdamW), median of repetitions"
    out = [table(headers, rows, title=title)]
    notes = [
        "  samples: states for the autoencoder, blankets for the prior; 'x batch 1st': samples/s "
        "over the first batch size's.",
        f"  GFLOP/sample, {rate_name}: model FLOPs (forward + backward, FlopCounterMode on meta, "
        "no recompute) - an estimate.",
    ]
    if cuda:
        known = f"{peak / 1e12:.0f} TFLOP/s" if peak else "unknown: pass --peak-tflops"
        notes.append(f"  MFU: achieved model FLOP/s over the dense bf16 peak ({known}) - "
                     "an estimate.")
    notes.append("  est GiB: 16 B/parameter + 1.5 x saved activations (float32), the estimate used "
                 "to skip runs.")
    out += notes + messages
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    device = setup(args)
    if args.steps is None:
        args.steps = 10 if device.type == "cuda" else 2
    t0 = time.perf_counter()
    quick = " (--quick: tiny sizes, figures mean little)" if args.quick else ""
    print("Appa Studio training throughput" + quick)
    for line in machine_lines(device):
        print("  " + line)
    precision = "bf16 autocast" if device.type == "cuda" else "float32"
    print(f"  {precision}; {args.warmup} warm-up steps, then median of {args.repeats} "
          f"repetitions of {args.steps} steps; random data of each preset's shape", flush=True)
    for line in run(args, device):
        print(line)
    print(f"\ntotal benchmark time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

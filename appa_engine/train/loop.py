"""The training loop shared by the autoencoder and the diffusion prior.

It reads top to bottom like nanoGPT's: seed → data → model → optimizer → resume → loop (step,
log, evaluate, checkpoint). What differs between the two models is a :class:`Task`: it builds the
model, the datasets and the loss of one batch; everything else lives here once.

Reproducibility is by construction rather than by saved random states:

- the global batch of step ``s`` is drawn from a generator seeded by ``(seed, epoch)``, and rank
  ``r`` of ``W`` processes takes every ``W``-th index of it (:class:`GlobalBatchSampler`);
- tasks draw per-sample randomness (diffusion times, noise) from generators seeded by
  ``(seed, step, sample index)`` (:func:`sample_generator`).

So the same global batch gives the same loss on one process or several, and ``--resume``
continues exactly where training stopped (tested).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Protocol

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from appa_engine.config import dump_config, to_dict
from appa_engine.errors import CheckpointError, ConfigError
from appa_engine.io.checkpoint import load_checkpoint, save_checkpoint
from appa_engine.train.distributed import Context, all_reduce_mean

__all__ = [
    "OptimConfig",
    "LoopConfig",
    "Task",
    "GlobalBatchSampler",
    "sample_generator",
    "fit",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and a cosine, linear or constant decay."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: int = 100
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    grad_clip: float = 1.0

    def __post_init__(self):
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if self.warmup < 0 or self.grad_clip < 0:
            raise ConfigError("optim.warmup and optim.grad_clip must be non-negative")


@dataclass(frozen=True)
class LoopConfig:
    """Steps, batch and bookkeeping of a training run."""

    steps: int = 1000
    batch_size: int = 16  # global: split across processes
    log_every: int = 10
    eval_every: int = 200
    eval_batches: int = 4
    checkpoint_every: int = 200
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    num_workers: int = 0
    in_memory_gib: float = 2.0  # datasets that fit are read into memory once per process; 0: stream
    ema_decay: float = 0.0  # 0 disables the exponential moving average of weights
    stop_after: int = 0  # stop this invocation after N steps (e.g. a job's time limit; resume later)
    progress: bool = True

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("loop.steps and loop.batch_size must be at least 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"loop.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.stop_after < 0:
            raise ConfigError(f"loop.stop_after must be non-negative, got {self.stop_after}")
        if self.in_memory_gib < 0:
            raise ConfigError(f"loop.in_memory_gib must be non-negative, got {self.in_memory_gib}")
        for name in ("log_every", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"loop.{name} must be at least 1")


class Task(Protocol):
    """What a model brings to :func:`fit`."""

    name: str

    def build_model(self) -> nn.Module: ...

    def datasets(self) -> tuple[Dataset, Dataset | None]: ...

    def loss(self, model: nn.Module, batch: Any, *, step: int) -> torch.Tensor:
        """Mean loss of this process's part of the global batch of ``step``."""

    def package(self, model: nn.Module, ema: nn.Module | None) -> dict:
        """Extra entries for the checkpoint (configs, statistics, ...)."""


def sample_generator(seed: int, step: int, index: int, *, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for the randomness of one sample at one step, independent of the partition."""

    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step) * 1_000_033 + index)
    return g


class GlobalBatchSampler(Sampler[list[int]]):
    """Indices of this rank's share of the global batch of each step, from ``start_step`` on.

    Epochs are seeded permutations of ``range(n)``; the global batch of step ``s`` is the slice
    ``[s·B, (s+1)·B)`` of the concatenated epochs; rank ``r`` takes its elements ``r, r+W, …``.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, steps: int | None = None):
        if n < 1:
            raise ConfigError("the training set is empty", hint="check the data path and the time split")
        if batch_size % world_size:
            raise ConfigError(
                f"the global batch size {batch_size} is not divisible by the {world_size} processes",
                hint=f"use a multiple of {world_size}",
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.start_step, self.steps = start_step, steps

    def global_batch(self, step: int) -> list[int]:
        out = []
        pos = step * self.batch_size
        while len(out) < self.batch_size:
            epoch, offset = divmod(pos, self.n)
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
            take = min(self.n - offset, self.batch_size - len(out))
            out.extend(perm[offset : offset + take])
            pos += take
        return out

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while self.steps is None or step < self.steps:
            yield self.global_batch(step)[self.rank :: self.world_size]
            step += 1

    def __len__(self) -> int:
        if self.steps is None:
            raise TypeError("infinite sampler")
        return max(self.steps - self.start_step, 0)


class IndexedDataset(Dataset):
    """Wraps a dataset so that each item also carries its index (for per-sample generators)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        return i, self.dataset[i]


def lr_lambda(config: OptimConfig, steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if config.warmup and step < config.warmup:
            return (step + 1) / config.warmup
        if config.schedule == "constant":
            return 1.0
        progress = min((step - config.warmup) / max(steps - config.warmup, 1), 1.0)
        if config.schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def autocast(ctx: Context, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and ctx.device.type == "cuda")
    if use_bf16 and ctx.device.type != "cuda":
        log.warning("bf16 autocast requested on %s: running in fp32", ctx.device)
        use_bf16 = False
    return torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=use_bf16)


def provenance(ctx: Context) -> dict:
    """Where and with what a checkpoint was made."""

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).parent,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    hardware = (torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda"
                else platform.processor() or platform.machine())
    return {
        "commit": commit,
        "torch": str(torch.__version__),
        "device": str(ctx.device),
        "hardware": hardware,
        "world_size": ctx.world_size,
        "host": platform.node(),
    }


def check_memory(model: nn.Module, ctx: Context, *, batch_bytes: int) -> None:
    """Refuse a run that cannot fit on the GPU, before it starts (a rough lower bound).

    Weights, gradients and two AdamW moments take 16 bytes per fp32 parameter; activations are
    at least a few times the input batch. Only checked on CUDA, where free memory is known.
    """

    if ctx.device.type != "cuda":
        return
    params = sum(p.numel() for p in model.parameters())
    need = 16 * params + 4 * batch_bytes
    free, _ = torch.cuda.mem_get_info(ctx.device)
    if need > free:
        raise ConfigError(
            f"this run needs at least {need / 2**30:.1f} GiB on {ctx.device} "
            f"({params / 1e6:.0f}M parameters, batch of {batch_bytes / 2**20:.0f} MiB) but only "
            f"{free / 2**30:.1f} GiB are free",
            hint="lower loop.batch_size, use more GPUs (torchrun), or a smaller preset",
        )


def load_small_datasets(datasets: list, budget_gib: float) -> list[bool]:
    """Read into memory the datasets (with ``nbytes`` and ``load()``) that fit the budget together.

    Reading a state costs more than a training step of a small model on a CPU (tens of
    milliseconds in xarray and zarr); a dataset of a few GiB is read once instead. Datasets are
    taken in order, each if it fits what the earlier ones left; the others stream from the store.
    """

    left, loaded = budget_gib * 2**30, []
    for ds in datasets:
        nbytes = getattr(ds, "nbytes", None)
        ok = ds is not None and hasattr(ds, "load") and nbytes is not None and nbytes <= left
        if ok:
            t0 = time.perf_counter()
            ds.load()
            left -= nbytes
            log.info("read %d items (%.2f GiB) into memory in %.1f s", len(ds), nbytes / 2**30,
                     time.perf_counter() - t0)
        elif nbytes is not None:
            log.info("streaming %d items from the store: %.2f GiB exceed loop.in_memory_gib's %.2f GiB left",
                     len(ds), nbytes / 2**30, left / 2**30)
        loaded.append(ok)
    return loaded


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def _truncate_log(path: Path, step: int) -> None:
    """On resume, drop log records written after the checkpoint (they will be redone)."""

    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))


def fit(task: Task, loop: LoopConfig, optim: OptimConfig, *, out: str | os.PathLike, ctx: Context,
        config: Any = None, resume: bool = False) -> dict:
    """Train ``task``'s model; returns the last logged record (with ``finished``).

    Writes, in ``out``: ``config.yaml`` (resolved), ``metrics.jsonl`` (one record per log / eval),
    ``last.pt`` (resumable checkpoint, atomic) and ``model.pt`` (final weights, EMA if enabled).
    """

    out = Path(out)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if config is not None:
            dump_config(config, out / "config.yaml")
    metrics_path = out / "metrics.jsonl"

    # seed → data
    torch.manual_seed(loop.seed + ctx.rank)
    train_set, valid_set = task.datasets()
    load_small_datasets([train_set, valid_set], loop.in_memory_gib)

    # model → optimizer
    model = task.build_model().to(ctx.device)
    opt = torch.optim.AdamW(model.parameters(), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(optim, loop.steps))
    ema = None
    if loop.ema_decay > 0:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(loop.ema_decay)
        )

    # resume
    start = 0
    last = out / "last.pt"
    if resume:
        if not last.exists():
            raise CheckpointError(f"nothing to resume: '{last}' does not exist", hint="drop --resume to start afresh")
        ckpt = load_checkpoint(last, map_location=ctx.device)
        if ckpt.get("task") != task.name:
            raise CheckpointError(f"'{last}' is a {ckpt.get('task')} checkpoint, not {task.name}")
        try:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            if ema is not None:
                ema.load_state_dict(ckpt["ema"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(
                f"'{last}' does not match this model or config ({str(e).splitlines()[0]})",
                hint="resume with the config the run was started with (see config.yaml next to it)",
            ) from e
        start = int(ckpt["step"])
        if ctx.is_main:
            _truncate_log(metrics_path, start)
        log.info("resumed %s at step %d", task.name, start)
    if start >= loop.steps:
        log.info("%s already trained for %d steps", task.name, start)

    net = (DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
           if ctx.distributed else model)
    sampler = GlobalBatchSampler(len(train_set), loop.batch_size, seed=loop.seed, rank=ctx.rank,
                                 world_size=ctx.world_size, start_step=start, steps=loop.steps)
    loader = DataLoader(IndexedDataset(train_set), batch_sampler=sampler, num_workers=loop.num_workers,
                        persistent_workers=loop.num_workers > 0, pin_memory=ctx.device.type == "cuda")

    def checkpoint(step: int) -> None:
        if not ctx.is_main:
            return
        save_checkpoint({
            "task": task.name, "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "ema": ema.state_dict() if ema is not None else None,
            "config": to_dict(config) if config is not None else None, "provenance": provenance(ctx),
            **task.package(model, ema.module if ema is not None else None),
        }, last)

    def evaluate(step: int) -> float | None:
        if valid_set is None or len(valid_set) == 0:
            return None
        target = ema.module if ema is not None else model
        target.eval()
        vs = GlobalBatchSampler(len(valid_set), loop.batch_size, seed=loop.seed + 1, rank=ctx.rank,
                                world_size=ctx.world_size, steps=loop.eval_batches)
        total = torch.zeros((), device=ctx.device)
        with torch.no_grad(), autocast(ctx, loop.precision):
            for k, batch in enumerate(DataLoader(IndexedDataset(valid_set), batch_sampler=vs)):
                # Fixed "step" for validation randomness: comparable across evaluations.
                total += task.loss(target, batch, step=-(k + 1)).float()
        target.train()
        return float(all_reduce_mean(total / loop.eval_batches, ctx))

    from tqdm.auto import tqdm

    bar = tqdm(total=loop.steps, initial=start, desc=f"train {task.name}", disable=not (loop.progress and ctx.is_main))
    record: dict = {"step": start}
    done = start
    t0, seen = time.perf_counter(), 0
    model.train()
    for step, batch in enumerate(loader, start=start):
        with autocast(ctx, loop.precision):
            loss = task.loss(net, batch, step=step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip or float("inf"))
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(model)
        seen += loop.batch_size
        done = step + 1
        bar.update(1)

        if done % loop.log_every == 0 or done == loop.steps:
            mean_loss = float(all_reduce_mean(loss.detach().float(), ctx))
            elapsed = time.perf_counter() - t0
            record = {"step": done, "loss": mean_loss, "grad_norm": float(grad_norm),
                      "lr": sched.get_last_lr()[0], "samples_per_s": seen / max(elapsed, 1e-9)}
            bar.set_postfix(loss=f"{mean_loss:.4g}")
            if ctx.is_main:
                _append_jsonl(metrics_path, record)
            t0, seen = time.perf_counter(), 0
        if done % loop.eval_every == 0 or done == loop.steps:
            valid = evaluate(done)
            if valid is not None:
                record = {**record, "step": done, "valid_loss": valid}
                if ctx.is_main:
                    _append_jsonl(metrics_path, {"step": done, "valid_loss": valid})
        stopping = loop.stop_after > 0 and done - start >= loop.stop_after
        if done % loop.checkpoint_every == 0 or done == loop.steps or stopping:
            checkpoint(done)
        if stopping:
            log.info("stopping after %d steps as asked (loop.stop_after); continue with --resume", loop.stop_after)
            break
    bar.close()

    record["finished"] = done >= loop.steps
    if ctx.is_main and record["finished"]:
        final = ema.module if ema is not None else model
        save_checkpoint({"task": task.name, "model": final.state_dict(),
                         "config": to_dict(config) if config is not None else None,
                         "provenance": provenance(ctx), **task.package(model, ema.module if ema is not None else None)},
                        out / "model.pt")
    return record

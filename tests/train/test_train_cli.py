"""The training commands end to end: configs, resumption, DDP equivalence, model packages."""

from __future__ import annotations

import json
import os
import shutil
import socket

import pytest
import torch

from appa_engine.cli import main

from tests.conftest import TRAIN


def _losses(run) -> dict[int, float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def test_package_is_complete_and_loads(tiny_package):
    from appa_engine.io.package import load_model, read_manifest

    manifest = read_manifest(tiny_package)
    assert set(manifest["files"]) == {"autoencoder.pt", "prior.pt", "stats.json", "latent_stats.json"}
    model = load_model(tiny_package)
    assert model.blanket == 4 and len(model.channels) == 3 * 2 + 2 and model.grid.shape == (16, 32)
    assert manifest["provenance"]["prior"]["torch"] == torch.__version__
    x = torch.randn(2, len(model.channels), 16, 32)
    assert model.decode(model.encode(x)).shape == x.shape


def test_dry_run_prints_the_resolved_config(tiny_store, tiny_stats, capsys):
    assert main(["train", "autoencoder", "--data", str(tiny_store), "--stats", str(tiny_stats), "--out", "unused",
                 "--dry-run", "--preset", "tiny", "--set", "optim.lr=0.002", "--set", "model.widths=[4, 8]",
                 "--set", "model.blocks=[1, 1]"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.002" in out and "- 4\n" in out and "- 8\n" in out


def test_unknown_config_key_is_a_clear_error(tiny_store, tiny_stats, capsys):
    code = main(["train", "autoencoder", "--data", str(tiny_store), "--stats", str(tiny_stats), "--out", "unused",
                 "--dry-run", "--set", "optim.learning_rate=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown config key 'optim.learning_rate'" in err and "valid keys of optim" in err


def test_resume_continues_exactly(tiny_package, tmp_path, capsys):
    latents = tiny_package.parent.parent / "latents.zarr"
    args = ["train", "diffusion", "--latents", str(latents), "--batch-size", "4", "--steps", "4",
            "--set", "blanket=4", *TRAIN]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    # interrupted after 2 steps, then resumed
    assert main([*args, "--out", str(tmp_path / "resumed"), "--set", "loop.stop_after=2"]) == 0
    assert not (tmp_path / "resumed" / "model.pt").exists()
    assert main([*args, "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    straight, resumed = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-6, abs=1e-7)
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # Resuming a finished run trains nothing and says so (no "loss nan").
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "diffusion: step 4, nothing left to train" in out and "nan" not in out
    assert sorted(_losses(tmp_path / "resumed")) == [1, 2, 3, 4]


def test_in_memory_and_streamed_training_agree(tiny_store, tiny_stats, tmp_path, caplog):
    """Datasets read into memory (the default for small ones) give the losses a streamed run gives."""

    args = ["train", "autoencoder", "--data", str(tiny_store), "--stats", str(tiny_stats), "--steps", "3",
            "--batch-size", "4", *TRAIN, "--set", "loop.eval_every=3"]
    with caplog.at_level("INFO", logger="appa_engine.train.loop"):
        assert main([*args, "--out", str(tmp_path / "memory")]) == 0
    assert "into memory" in caplog.text and "streaming" not in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="appa_engine.train.loop"):
        assert main([*args, "--out", str(tmp_path / "stream"), "--set", "loop.in_memory_gib=0"]) == 0
    assert "streaming" in caplog.text and "into memory" not in caplog.text
    memory, stream = _losses(tmp_path / "memory"), _losses(tmp_path / "stream")
    assert sorted(memory) == [1, 2, 3] and memory == stream


def test_memory_budget_is_shared_in_order(tiny_store, tiny_stats):
    from appa_engine.data.stats import Statistics
    from appa_engine.data.windows import StateDataset
    from appa_engine.train.loop import load_small_datasets

    stats = Statistics.load(tiny_stats)
    times = StateDataset(tiny_store, stats=stats).times
    first = StateDataset(tiny_store, stats=stats, times=times[:30])
    second = StateDataset(tiny_store, stats=stats, times=times[30:])
    assert first.nbytes == 30 * len(stats) * 16 * 32 * 4 and second.nbytes == 18 * first.nbytes // 30
    budget = (first.nbytes + second.nbytes - 1) / 2**30  # one byte short of both
    assert load_small_datasets([first, second, None], budget) == [True, False, False]
    assert first.in_memory and not second.in_memory
    fresh = StateDataset(tiny_store, stats=stats, times=times[30:])
    assert load_small_datasets([fresh], 0.0) == [False] and not fresh.in_memory


def test_resume_without_checkpoint_is_refused(tiny_package, tmp_path, capsys):
    latents = tiny_package.parent.parent / "latents.zarr"
    assert main(["train", "diffusion", "--latents", str(latents), "--out", str(tmp_path / "none"), "--resume",
                 "--set", "blanket=4", *TRAIN]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, args: list[str]) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    assert main(args) == 0


def test_ddp_two_processes_match_one(tiny_package, tmp_path):
    """The same global batch gives the same loss on one process and on two (gloo on CPU)."""

    latents = tiny_package.parent.parent / "latents.zarr"
    args = ["train", "diffusion", "--latents", str(latents), "--batch-size", "4", "--steps", "2",
            "--set", "blanket=4", "--device", "cpu", *TRAIN]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), [*args, "--out", str(tmp_path / "two")]),
                                nprocs=2, join=True)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2]
    for step in (1, 2):  # step 2 also checks that the averaged gradients gave the same update
        assert two[step] == pytest.approx(one[step], rel=1e-5)


def test_corrupted_and_mismatched_packages(tiny_package, tmp_path):
    from appa_engine.errors import CheckpointError
    from appa_engine.io.package import load_model

    bad = tmp_path / "bad"
    shutil.copytree(tiny_package, bad)
    data = (bad / "prior.pt").read_bytes()
    (bad / "prior.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted or was modified"):
        load_model(bad)
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(bad, verify=False)

    other = tmp_path / "other"
    shutil.copytree(tiny_package, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["prior"]["width"] = manifest["prior"]["width"] * 2  # another preset's config
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="do not match the prior config"):
        load_model(other)

    with pytest.raises(CheckpointError, match="not an Appa model package|no manifest"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere")

"""Checkpoints load with weights_only and fail clearly when damaged."""

from __future__ import annotations

import pytest
import torch

from appa_engine.errors import CheckpointError
from appa_engine.io.checkpoint import load_checkpoint, save_checkpoint, sha256

def test_roundtrip(tmp_path):
    obj = {"w": torch.arange(6.0).reshape(2, 3), "step": 7, "config": {"lr": 1e-3, "widths": [1, 2]}}
    save_checkpoint(obj, tmp_path / "a.pt")
    back = load_checkpoint(tmp_path / "a.pt")
    assert torch.equal(back["w"], obj["w"]) and back["step"] == 7 and back["config"] == obj["config"]
    assert len(sha256(tmp_path / "a.pt")) == 64

def test_truncated_and_garbage_files(tmp_path):
    save_checkpoint({"w": torch.randn(100, 100)}, tmp_path / "a.pt")
    data = (tmp_path / "a.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    for name in ("truncated.pt", "garbage.pt"):
        with pytest.raises(CheckpointError, match="truncated, corrupted or not a checkpoint"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")

class Payload:
    def __reduce__(self):  # would run code on a plain pickle load
        return (print, ("pwned",))

def test_code_in_a_checkpoint_is_refused(tmp_path):
    with open(tmp_path / "evil.pt", "wb") as f:
        torch.save({"x": Payload()}, f)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pt")

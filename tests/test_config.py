"""Typed configs: defaults, files, overrides, and clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from appa_engine.config import dump_config, load_config, parse_overrides, read_config_file, to_dict
from appa_engine.errors import ConfigError


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class Run:
    steps: int = 10
    name: str = "run"
    device: str | None = None
    mode: Literal["a", "b"] = "a"
    widths: tuple[int, ...] = (8, 16)
    amp: bool = False
    optim: Optim = field(default_factory=Optim)


def test_defaults_and_overrides():
    cfg = load_config(Run, overrides=["steps=20", "optim.lr=3e-4", "widths=[1, 2, 3]", "mode=b"])
    assert cfg.steps == 20 and cfg.optim.lr == 3e-4 and cfg.widths == (1, 2, 3) and cfg.mode == "b"
    assert cfg.optim.betas == (0.9, 0.999)


def test_file_then_overrides(tmp_path):
    (tmp_path / "c.toml").write_text('steps = 5\n[optim]\nlr = 0.01\n')
    (tmp_path / "c.yaml").write_text("steps: 6\noptim:\n  lr: 0.02\n")
    assert load_config(Run, file=tmp_path / "c.toml").optim.lr == 0.01
    cfg = load_config(Run, file=tmp_path / "c.yaml", overrides=["steps=7"])
    assert (cfg.steps, cfg.optim.lr) == (7, 0.02)


def test_roundtrip_through_saved_file(tmp_path):
    cfg = load_config(Run, overrides=["optim.lr=1e-3", "device=cuda"])
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_config(Run, file=tmp_path / "config.yaml") == cfg
    assert to_dict(cfg)["optim"]["betas"] == [0.9, 0.999]


@pytest.mark.parametrize(
    "override, match",
    [
        ("stepz=3", "unknown config key 'stepz'"),
        ("optim.lrr=3", "unknown config key 'optim.lrr'"),
        ("steps=3.5", "'steps' expects an integer"),
        ("amp=yes please", "'amp' expects true or false"),
        ("mode=c", "'mode' = 'c' is not one of"),
        ("widths=[1, x]", r"'widths\[1\]' expects an integer"),
        ("optim=3", "expects a section"),
        ("novalue", "not of the form key=value"),
    ],
)
def test_bad_overrides_raise_clear_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Run, overrides=[override])


def test_unknown_key_hint_lists_valid_keys():
    with pytest.raises(ConfigError) as info:
        load_config(Run, overrides=["optim.beta=1"])
    assert "betas" in info.value.hint and "lr" in info.value.hint


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("steps = = 3")
    with pytest.raises(ConfigError, match="cannot parse"):
        read_config_file(tmp_path / "bad.toml")
    (tmp_path / "c.ini").write_text("")
    with pytest.raises(ConfigError, match="unknown extension"):
        read_config_file(tmp_path / "c.ini")


def test_parse_overrides_nesting():
    assert parse_overrides(["a.b.c=1", "a.d=true", "e=null"]) == {"a": {"b": {"c": 1}, "d": True}, "e": None}

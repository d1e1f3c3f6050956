"""Atomic writes leave either the old or the new content, never a partial one."""

from __future__ import annotations

import pytest

from appa_engine.io.atomic import atomic_path, atomic_write_text


def test_file_written_atomically(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    assert target.read_text() == "one"
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_failure_keeps_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_directory_replaced_and_failure_cleans_up(tmp_path):
    target = tmp_path / "store.zarr"
    with atomic_path(target, directory=True) as tmp:
        tmp.mkdir()
        (tmp / "x").write_text("1")
    with atomic_path(target, directory=True) as tmp:
        tmp.mkdir()
        (tmp / "y").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["y"]
    with pytest.raises(KeyError):
        with atomic_path(target, directory=True) as tmp:
            tmp.mkdir()
            (tmp / "z").write_text("3")
            raise KeyError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["y"]
    assert [p.name for p in tmp_path.iterdir()] == ["store.zarr"]

"""Smoke test of bench/decoding.py: it runs with --quick and prints both tables, whose rows say
what each operator decoded and carry the figures the regional decoding is judged by.

No timed assertions (timings belong in the benchmark's output); the errors are checked where
they are exact (an exact window's VJP equals the globe's) or must be non-zero (frozen statistics).
"""

from __future__ import annotations

import re


from tests.test_bench_smoke import _table_rows, run_quick


def _rows(out: str, title_start: str) -> list[list[str]]:
    """Cells (split on runs of 2+ spaces) of the data rows of the table titled ``title_start``."""

    return [re.split(r"\s{2,}", line.strip()) for line in _table_rows(out, title_start)]


def test_decoding_quick_prints_its_tables(capsys):
    run_quick("decoding")
    out = capsys.readouterr().out
    assert "M1: default package (trained)" in out and "norm=group, RANDOM weights" in out
    ops = _rows(out, "1. Observation operator")
    # 3 models x 2 boxes; the default model has an extra truncated-halo row (--quick: halo 2)
    assert len(ops) == 2 * 4 + 2 * 2 * 3
    by = {(r[0], r[1], r[2].split(":")[0]): r for r in ops}
    for model in ("M1", "M2", "M3"):
        for box in ("Europe", "tropics"):
            globe = by[model, box, "globe"]
            assert globe[2] == "globe: globe" and globe[5] == "1" and globe[6] == "0"
    # the default model: its exact halo (5) spans most of its 8 x 16 latent grid -> auto is the globe
    assert by["M1", "tropics", "auto"][2] == "auto: globe"
    assert by["M1", "tropics", "approx h2"][2].endswith("halo 2, approximate")
    # layer norm: auto decodes an exact window; its VJP and JVP are the globe's
    auto = by["M2", "tropics", "auto"]
    assert auto[2].endswith("exact") and float(auto[3]) < 60
    assert float(auto[6]) < 1e-5 and float(auto[7]) < 1e-5
    # group norm: auto keeps the globe, approximate freezes the statistics (a small, real error)
    assert by["M3", "tropics", "auto"][2] == "auto: globe"
    approx = by["M3", "tropics", "approx"]
    assert approx[2].endswith("approximate") and 1e-4 < float(approx[6]) < 0.5
    guided = _rows(out, "2. One MMPS-guided call")
    assert len(guided) == len(ops)
    g = {(r[0], r[1], r[2].split(":")[0]): r for r in guided}
    assert float(g["M2", "tropics", "auto"][5]) < 1e-5  # exact window: the same correction
    assert 0 < float(g["M3", "tropics", "approx"][5]) < 0.5

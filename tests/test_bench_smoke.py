"""Smoke tests of the benchmarks in bench/: they run with --quick and print their tables.

No timed assertions (timings belong in the benchmarks' output, not in tests); the helpers the
benchmarks rely on are checked against hand-computed values and the engine's own counts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.scripts import load_file

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    """Import ``bench/<name>.py`` as a module (bench/ is not a package), executed afresh."""

    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return load_file(BENCH / f"{name}.py", f"bench_{name}", cached=False)


@pytest.fixture(scope="module")
def common():
    return _load("_common")


def run_quick(name: str):
    """Run ``bench/<name>.py --quick --device cpu`` in-process (it sets torch's thread count: restored)."""

    bench = _load(name)
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--quick", "--device", "cpu"]) == 0
    finally:
        torch.set_num_threads(threads)
    return bench


def _table_rows(out: str, title_start: str) -> list[str]:
    """Data rows of the table whose title line starts with ``title_start``."""

    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title_start))
    assert set(lines[start + 2].replace(" ", "")) == {"-"}, lines[start + 2]  # rule under header
    rows = []
    for line in lines[start + 3 :]:
        if not line.strip() or line.startswith(" "):
            break
        rows.append(line)
    return rows


def test_sampler_quick_prints_its_tables(capsys):
    run_quick("sampler")
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and "device: cpu" in out
    assert "'tiny' preset architecture with RANDOM weights" in out
    rows = _table_rows(out, "1. One guided call")
    assert [r.split("  ")[0].strip() for r in rows[:2]] == [
        "unguided: denoiser D over the blankets", "guided: MMPS, 2 CG iterations"]
    assert rows[0].split()[-1] == "1"  # the unguided call is the unit of the ratio column
    assert len(_table_rows(out, "2a. Against the ensemble size")) == 2  # --quick: 1 and 2 members
    assert len(_table_rows(out, "2b. Against the trajectory length")) == 2
    stations = _table_rows(out, "2c. Against the number of stations")
    assert [int(r.split()[2]) for r in stations] == [0, 20]
    assert int(stations[0].split()[4]) == 0 and int(stations[1].split()[4].replace(",", "")) > 0
    decoding = _table_rows(out, "3. Decoding")
    assert len(decoding) == 6 + 3  # 6 decode rows + 3 halos
    assert "observed states, the 2 of 8 channels observed" in decoding[2]
    assert "bench/decoding.py measures regional decoding" in out
    reanalysis = _table_rows(out, "4. Reanalysis")
    assert len(reanalysis) == 1
    assert reanalysis[0].startswith("measured: ddim, 2 steps = 2 guided calls")


def test_train_throughput_quick_prints_its_table(capsys):
    run_quick("train_throughput")
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out
    rows = _table_rows(out, "Training steps")
    assert [tuple(r.split()[:2]) + (int(r.split()[3]),) for r in rows] == [
        ("tiny", "autoencoder", 2), ("tiny", "autoencoder", 4),
        ("tiny", "prior", 2), ("tiny", "prior", 4)]
    for r in rows:
        samples_per_s = float(r.split()[5].replace(",", ""))
        assert samples_per_s > 0
    assert "an estimate" in out


def test_operators_quick_prints_its_tables(capsys):
    import re

    run_quick("operators")
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and "device: cpu" in out

    def cells(title):
        return [re.split(r"\s{2,}", r.strip()) for r in _table_rows(out, title)]

    swath = cells("1. A satellite swath: 2 h of ground track")
    assert [r[0] for r in swath] == ["swath_mask (union)", "cells_within (per sample)"]
    union, per_sample = (int(r[2].split()[0].replace(",", "")) for r in swath)
    assert 0 < union <= per_sample  # every observed cell is within reach of some sample
    assert swath[0][-1] == "1"  # the union is the unit of the ratio column
    stations = cells("2. 300 stations, 3 variables")
    assert [r[0] for r in stations] == ["compile (stations to operator)", "A(x) (bilinear, per time)", "VJP of A",
                                        "floor: gather", "floor: scatter-add"]
    assert {r[2] for r in stations} == {f"{300 * 6 * 3:,} obs"}  # stations x states x variables
    assert [r[-1] for r in stations[3:]] == ["1", "1"]
    assert all(float(r[3]) > 0 for r in stations)


def test_meta_profile_counts_the_presets_parameters():
    from appa_engine.nn.presets import count_parameters, get_preset

    train = _load("train_throughput")
    counts = count_parameters("tiny")
    for which in ("autoencoder", "prior"):
        params, flops, saved = train.meta_profile(get_preset("tiny"), which)
        assert params == counts[which]
        # a training step costs at least 2 FLOPs (multiply + add) per parameter and sample
        assert flops >= 2 * params and saved > 0


def test_tokens_per_blanket_by_hand_and_against_the_transformer():
    from appa_engine.nn.presets import get_preset
    from appa_engine.nn.transformer import SpaceTimeTransformer

    train = _load("train_throughput")
    # tiny: K = 4 states, 8x16 latents, patch (1, 2, 2)
    assert train.tokens_per_blanket(get_preset("tiny")) == 4 * 4 * 8
    for name in ("tiny", "default", "paper"):  # the tokens the transformer embeds (meta: no memory)
        preset = get_preset(name)
        seen = []
        with torch.device("meta"):
            net = SpaceTimeTransformer(preset.prior)
            net.embed.register_forward_hook(lambda m, i, o, seen=seen: seen.append(o.shape[1] * o.shape[2]))
            net(torch.zeros(1, preset.blanket, *preset.latent_shape), torch.zeros(1))
        assert train.tokens_per_blanket(preset) == seen[0], name


@pytest.mark.parametrize("channels", [8, 29, 71, 1, 5])
def test_channel_names_parse_and_count(common, channels):
    from appa_engine.data.channels import ChannelSpec, parse_channel

    names = common.preset_channel_names(channels)
    spec = ChannelSpec(names)
    assert len(spec) == channels
    levels = [parse_channel(n)[1] is not None for n in names]
    assert levels == sorted(levels, reverse=True)  # level channels first, then surface
    if channels == 29:
        assert spec.levels == (100, 250, 500, 700, 850, 925) and len(spec.surface_variables) == 5


def test_random_model_has_unit_statistics_and_the_preset_shapes(common):
    from appa_engine.nn.presets import get_preset

    model = common.random_model("tiny", device=torch.device("cpu"))
    preset = get_preset("tiny")
    x = torch.randn(2, preset.channels, *preset.grid)
    torch.testing.assert_close(model.standardize(x), x)  # zero mean, unit std
    with torch.no_grad():
        z = model.encode(x)
        assert tuple(z.shape) == (2, *preset.latent_shape)
        assert tuple(model.decode(z).shape) == tuple(x.shape)
    assert model.blanket == preset.blanket and model.grid.shape == preset.grid


def test_measure_warms_up_then_times_each_repeat(common):
    calls = []
    timing = common.measure(lambda: calls.append(1), device=torch.device("cpu"), repeats=4,
                            warmup=2)
    assert len(calls) == 6 and len(timing.times) == 4
    assert timing.median == float(np.median(timing.times))


def test_table_aligns_numbers_right_and_text_left(common):
    text = common.table(("name", "ms"), [("a", 1.5), ("long name", 12345.0)], title="T")
    lines = text.splitlines()
    assert lines[:2] == ["", "T"]
    assert lines[2] == "name" + " " * 11 + "ms"  # column widths 9 and 6, two spaces between
    assert lines[3] == "-" * 9 + "  " + "-" * 6
    assert lines[4] == "a" + " " * 13 + "1.5"
    assert lines[5] == "long name  12,345"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error(common):
    with pytest.raises(SystemExit, match="sees no CUDA GPU; use --device cpu"):
        common.resolve_device("cuda")


@pytest.mark.slow
def test_app_latency_quick_prints_its_figures(capsys, tiny_package, tiny_store):
    """The app-latency benchmark end to end in Chromium on the tiny model (about a minute)."""

    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is missing: apt-get install chromium (never `playwright install`)")
    bench = _load("app_latency")
    assert bench.main(["--quick", "--model", str(tiny_package), "--truth", str(tiny_store)]) == 0
    out = capsys.readouterr().out
    for figure in ("page load", "first result", "frame switch"):
        assert figure in out.lower(), figure
    assert "20 s" in out and "200 ms" in out  # the targets are printed beside the figures

"""scripts/skill_table.py: the assimilation skill table, end to end on the tiny model, and its parts."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from tests.scripts import ROOT, load_file


def _load_script():
    return load_file(ROOT / "scripts" / "skill_table.py", "appa_scripts_skill_table")


st = _load_script()

CONFIGS = ["prior", "50 stations", "200 stations", "1000 stations", "200 stations + satellite"]
COLUMNS = [*st.HEADLINE, st.ALL]  # the tiny model has every headline channel


def _table_after(text: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the first Markdown table after ``heading``."""

    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert set(rows[1]) <= {"---"}, "second line of a table is the separator"
    return rows[0], rows[2:]


def _numbers(text: str, heading: str) -> dict[str, dict[str, float]]:
    header, rows = _table_after(text, heading)
    return {row[0]: {col: float(v) for col, v in zip(header[1:], row[1:])} for row in rows}


@pytest.fixture(scope="module")
def page(tiny_package, tiny_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("skill") / "SKILL.md"
    code = st.main(["--model", str(tiny_package), "--truth", str(tiny_store), "--quick", "--out", str(out),
                    "--no-progress"])
    assert code == 0
    return out.read_text()


def test_sections_in_order(page):
    positions = [page.index(f"\n## {name}\n") for name in st.SECTIONS]
    assert positions == sorted(positions)
    assert page.startswith("# Assimilation skill: `package`")


def test_score_tables_schema(page):
    for score, title in st.SCORES.items():
        header, rows = _table_after(page, f"### {title}")
        assert header == ["configuration", *COLUMNS]
        assert [r[0] for r in rows] == CONFIGS
        values = np.array([[float(v) for v in r[1:]] for r in rows])
        assert np.isfinite(values).all(), score
        if score != "ssr":
            assert (values >= 0).all()
    # the reference row of the autoencoder, under the RMSE table
    header, rows = _table_after(page, "For reference, the error floor")
    assert header == ["reference", *COLUMNS] and rows[0][0] == st.FLOOR
    assert all(math.isfinite(float(v)) and float(v) >= 0 for v in rows[0][1:])
    header, rows = _table_after(page, "### Spread–skill ratio against the reconstructed truth")
    assert header == ["configuration", *COLUMNS] and [r[0] for r in rows] == CONFIGS
    assert all(math.isfinite(float(v)) and float(v) > 0 for r in rows for v in r[1:])


def test_ssr_consistent_with_rmse_and_spread(page):
    """SSR = spread / RMSE · sqrt((M+1)/M) with M = 3 (--quick), up to the 4 printed digits."""

    rmse = _numbers(page, "### RMSE of the ensemble mean")
    spread = _numbers(page, "### Ensemble spread")
    ssr = _numbers(page, "### Spread–skill ratio\n")
    for c in CONFIGS:
        for col in COLUMNS:
            expected = spread[c][col] / rmse[c][col] * math.sqrt(4 / 3)
            assert ssr[c][col] == pytest.approx(expected, rel=2e-3)


def test_summary_sentences_match_numbers(page):
    summary = page[page.index("## Summary"):page.index("## Settings")]
    pairs = [("prior", "50 stations"), ("50 stations", "200 stations"), ("200 stations", "1000 stations"),
             ("200 stations", "200 stations + satellite")]
    for title in ("RMSE of the ensemble mean", "CRPS (fair estimator)"):
        table = _numbers(page, f"### {title}")
        line = next(x for x in summary.splitlines() if x.startswith(f"- **{title.split(' (')[0]}**"))
        failing = [col for col in COLUMNS if any(not table[b][col] < table[a][col] for a, b in pairs)]
        ties = [col for col in COLUMNS if any(table[b][col] == table[a][col] for a, b in pairs)]
        if ties:  # equal after rounding: the sentence used the unrounded numbers
            continue
        k = len(COLUMNS) - len(failing)
        assert f"in {k} of {len(COLUMNS)} columns" in line
        if failing:
            tail = line[line.index("not in"):]
            for col in COLUMNS:
                assert (f"`{col}`" in tail) == (col in failing)
        else:
            assert "yes," in line and "not in" not in line
    for heading, start in (("### Spread–skill ratio\n", "- **Spread–skill ratio**"),
                           ("### Spread–skill ratio against", "- **Against D(E(x))**")):
        ssr = _numbers(page, heading)
        values = [v for row in ssr.values() for v in row.values()]
        guided = [v for name, row in ssr.items() if name != "prior" for v in row.values()]
        line = next(x for x in summary.splitlines() if x.startswith(start))
        assert f"ranges from {min(values):.4g} to {max(values):.4g} over all" in line
        assert f"({min(guided):.4g} to {max(guided):.4g} with observations)" in line
        # The sentence counts unrounded values; a table value printed as 0.8 or 1.25 may lie on
        # either side of the bound.
        sure = sum(0.8 < v < 1.25 for v in values)
        edge = sum(v in (0.8, 1.25) for v in values)
        said = re.search(r"(\d+) of (\d+) values lie within \[0\.8, 1\.25\]", line)
        assert said and int(said.group(2)) == len(values), line
        assert sure <= int(said.group(1)) <= sure + edge, (line, sure, edge)


def test_observation_space_and_run_times(page):
    header, rows = _table_after(page, "## Observation-space statistics")
    assert header[:3] == ["configuration", "observer", "observations"]
    assert {r[0] for r in rows} == set(CONFIGS[1:])
    assert {r[1] for r in rows if r[0] == "200 stations + satellite"} == {"stations", "polar-orbiter"}
    counts = {r[0]: int(r[2]) for r in rows if r[1] == "stations"}
    # stations × 2 surface variables × 5 states (a 24-h window at 6 h)
    assert counts == {"50 stations": 500, "200 stations": 2000, "1000 stations": 10000,
                      "200 stations + satellite": 2000}
    for r in rows:
        chi2 = float(r[-1])
        assert math.isfinite(chi2) and chi2 > 0
    header, rows = _table_after(page, "## Run times")
    assert [r[0] for r in rows] == CONFIGS
    assert rows[0][1] == "0" and all(float(r[-1]) > 0 for r in rows)
    assert "python scripts/skill_table.py --model" in page and "--members 3 --steps 2" in page


def test_truth_not_covering_a_window_is_a_clear_error(tiny_package, tiny_store, tmp_path, capsys):
    import xarray as xr

    short = tmp_path / "short.zarr"
    xr.open_zarr(tiny_store, consolidated=False).isel(time=slice(0, 3)).to_zarr(short, consolidated=False)
    out = tmp_path / "SKILL.md"
    code = st.main(["--model", str(tiny_package), "--truth", str(short), "--quick", "--out", str(out),
                    "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "does not cover one 24-h window" in err and "3 states" in err and "hint:" in err
    assert not out.exists()


def test_window_starts():
    dt = np.timedelta64(6, "h")
    t0 = np.datetime64("2000-01-01T00", "ns")
    times = t0 + np.arange(12) * dt  # 12 regular states: starts 0..7 for 5-state windows
    assert st.window_starts(times, states=5, time_step=dt, windows=2, hours=24).tolist() == [0, 7]
    assert st.window_starts(times, states=5, time_step=dt, windows=3, hours=24).tolist() == [0, 4, 7]
    gap = np.concatenate([times[:6], times[6:] + 3 * dt])  # a gap after state 5: starts 0, 1, 6, 7
    assert st.window_starts(gap, states=5, time_step=dt, windows=4, hours=24).tolist() == [0, 1, 6, 7]
    with pytest.raises(st.DataError, match="only 4 distinct 24-h window"):
        st.window_starts(gap, states=5, time_step=dt, windows=5, hours=24)
    with pytest.raises(st.DataError, match="does not cover one 24-h window"):
        st.window_starts(times[:4], states=5, time_step=dt, windows=1, hours=24)


def test_aggregate_and_additions():
    got = st.Collected()
    got.add("c", "rmse", np.array([1.0, 3.0]))
    got.add("c", "rmse", np.array([3.0]))
    got.add("c", "crps", np.array([1.0, 2.0, 6.0]))
    got.add("c", "spread", np.array([2.0, 2.0, 2.0]))
    got.add(st.ALL, "rmse2", np.array([4.0]))
    got.add(st.ALL, "crps", np.array([0.5]))
    got.add(st.ALL, "spread2", np.array([1.0]))
    out = st.aggregate(got, members=4)
    assert out["c"]["rmse"] == pytest.approx(math.sqrt(19 / 3))
    assert out["c"]["crps"] == pytest.approx(3.0)
    assert out["c"]["spread"] == pytest.approx(2.0)
    assert out["c"]["ssr"] == pytest.approx(2.0 / math.sqrt(19 / 3) * math.sqrt(5 / 4))
    assert out[st.ALL]["rmse"] == pytest.approx(2.0) and out[st.ALL]["ssr"] == pytest.approx(0.5 * math.sqrt(5 / 4))

    configs = st.configurations([200, 50], 200)
    assert [c.name for c in configs] == ["prior", "50 stations", "200 stations", "200 stations + satellite"]
    assert [(a.name, b.name) for a, b in st.additions(configs)] == [
        ("prior", "50 stations"), ("50 stations", "200 stations"), ("200 stations", "200 stations + satellite")]
    with pytest.raises(st.ConfigError, match="station counts must be positive"):
        st.configurations([0, 50], None)


def test_networks_are_nested(tiny_model):
    times = np.datetime64("2000-01-01T00", "ns") + np.arange(5) * np.timedelta64(6, "h")
    small = st.nested_network(tiny_model, 50, 1000, times=times, seed=3)
    large = st.nested_network(tiny_model, 200, 1000, times=times, seed=3)
    assert len(small.lon) == 50 and len(large.lon) == 200
    np.testing.assert_array_equal(small.lon, large.lon[:50])
    np.testing.assert_array_equal(small.lat, large.lat[:50])
    assert list(small.variables) == list(tiny_model.channels.surface_variables)


def test_bad_options(tiny_package, tiny_store, tmp_path, capsys):
    code = st.main(["--model", str(tiny_package), "--truth", str(tiny_store), "--quick", "--members", "1",
                    "--out", str(tmp_path / "x.md"), "--no-progress"])
    assert code == 2 and "at least 2" in capsys.readouterr().err
    code = st.main(["--model", str(tiny_package), "--truth", str(tiny_store), "--quick", "--channels", "nope",
                    "--out", str(tmp_path / "x.md"), "--no-progress"])
    assert code == 2 and "no channel(s) ['nope']" in capsys.readouterr().err

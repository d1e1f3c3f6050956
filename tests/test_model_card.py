"""``scripts/model_card.py`` on the tiny model package: sections, tables, figures, numbers, errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.scripts import ROOT, load_file

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load_script():
    return load_file(ROOT / "scripts" / "model_card.py", "appa_scripts_model_card")


@pytest.fixture(scope="module")
def card_module():
    return _load_script()


@pytest.fixture(scope="module")
def card(card_module, tiny_package, tiny_store, tmp_path_factory):
    """The card of a copy of the tiny package (truth: the tiny store's first day)."""

    package = tmp_path_factory.mktemp("card") / "package"
    shutil.copytree(tiny_package, package)
    runs = Path(tiny_package).parents[1]  # <root>/prior/package → <root>
    code = card_module.main(["--model", str(package), "--truth", str(tiny_store), "--planet", str(tiny_store),
                             "--ae-run", str(runs / "ae"), "--prior-run", str(runs / "prior"),
                             "--members", "2", "--steps", "4", "--days", "1", "--device", "cpu"])
    assert code == 0
    return package, (package / "MODEL_CARD.md").read_text()


def _section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"no section '{title}'"
    return match.group(1)


def _rows(section: str) -> dict[str, list[str]]:
    """Table rows keyed by their first cell (header and rule excluded)."""

    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_sections_in_order(card, card_module):
    _, text = card
    positions = [text.find(f"\n## {s}\n") for s in card_module.SECTIONS]
    assert all(p > 0 for p in positions), positions
    assert positions == sorted(positions)
    assert "not expected to match the truth state" in text


def test_reconstruction_table_matches_brute_force(card, tiny_model, tiny_store, card_module):
    _, text = card
    rows = _rows(_section(text, "Autoencoder reconstruction"))
    names = list(tiny_model.channels.names)
    assert set(names) <= set(rows)

    # brute force: 4 states (one day at 6 h), plain numpy; on a cell-centred grid without pole
    # rows the cell areas are exactly ∝ cos(latitude)
    import xarray as xr

    ds = xr.open_zarr(tiny_store, consolidated=False).isel(time=slice(0, 4))
    x = tiny_model.channels.to_tensor(ds)
    x_hat = card_module.reconstruct(tiny_model, x).numpy().astype(np.float64)
    x = x.numpy().astype(np.float64)
    w = np.cos(np.deg2rad(ds["latitude"].values))[None, :, None]
    for c, name in enumerate(names):
        err2 = (x_hat[:, c] - x[:, c]) ** 2
        expected = np.sqrt((err2 * w).sum() / (w.sum() * err2.shape[0] * err2.shape[2]))
        units, rmse, scale, frac = rows[name]
        assert float(rmse) == pytest.approx(expected, rel=1e-3), name
        assert float(scale) == pytest.approx(tiny_model.stats.std[c], rel=1e-3)
        assert float(frac) == pytest.approx(expected / tiny_model.stats.std[c], rel=1e-3)


def test_prior_table_truth_moments(card, tiny_model, tiny_store):
    _, text = card
    rows = _rows(_section(text, "Prior diagnostics"))
    import xarray as xr

    ds = xr.open_zarr(tiny_store, consolidated=False).isel(time=slice(0, 4))
    x = tiny_model.channels.to_tensor(ds).numpy().astype(np.float64)  # (T, C, H, W)
    w = np.broadcast_to(np.cos(np.deg2rad(ds["latitude"].values))[None, :, None], x[:, 0].shape)
    for c, name in enumerate(tiny_model.channels.names):
        mean = np.average(x[:, c], weights=w)
        std = np.sqrt(np.average((x[:, c] - mean) ** 2, weights=w))
        _, truth_mean, sample_mean, truth_std, sample_std, ratio, *_ = rows[name]
        assert float(truth_mean) == pytest.approx(mean, rel=1e-3)
        assert float(truth_std) == pytest.approx(std, rel=1e-3)
        assert float(sample_std) > 0 and np.isfinite(float(sample_mean))
        assert float(ratio) == pytest.approx(float(sample_std) / float(truth_std), rel=2e-3)


def test_data_section_split_counts(card):
    _, text = card
    rows = _rows(_section(text, "Data"))
    # 48 states, valid = test = round(0.1 · 48) = 5
    assert rows["train"][0] == "38" and rows["valid"][0] == "5" and rows["test"][0] == "5"
    # the truth here is the training record itself: the card must say so
    assert "not in the test split" in text


def test_training_section(card):
    _, text = card
    rows = _rows(_section(text, "Model and training"))
    for name in ("autoencoder", "prior"):
        params, steps, batch, *_ = rows[name]
        assert steps == "3" and batch == "4"
        assert int(params.replace(",", "")) > 0


def test_figures_are_small_pngs(card):
    package, text = card
    names = {"losses.png", "spectra.png", "zonal_means.png", "maps.png"}
    assert {p.name for p in (package / "figures").iterdir()} == names
    for name in names:
        data = (package / "figures" / name).read_bytes()
        assert data[:8] == PNG_MAGIC
        assert len(data) < 200_000
        assert f"(figures/{name})" in text


def test_missing_truth_is_a_clear_error(card_module, tiny_package, tmp_path, capsys):
    from appa_engine.errors import DataError

    with pytest.raises(DataError, match="no held-out truth"):
        card_module.write_model_card(tiny_package)  # the tiny package ships no truth.zarr
    assert card_module.main(["--model", str(tiny_package), "--truth", str(tmp_path / "none.zarr")]) == 2
    assert "--truth" in capsys.readouterr().err
    assert not (Path(tiny_package) / "MODEL_CARD.md").exists()


def test_bad_days_is_a_clear_error(card_module, tiny_package, tiny_store):
    from appa_engine.errors import DataError

    with pytest.raises(DataError, match="--days must be positive"):
        card_module.write_model_card(tiny_package, truth=tiny_store, days=0)

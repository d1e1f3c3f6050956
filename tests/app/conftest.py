"""Fixtures of the app tests: a small mock truth store in the canonical layout, and a headless
Chromium for the browser tests (skipped without Chromium or Playwright)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def truth_store(tmp_path_factory):
    """A 32 × 64 mock truth (engine's ``mock_canonical``), 4 six-hourly times, levels 500/850."""

    from app import adapter

    return adapter.mock_truth(tmp_path_factory.mktemp("truth") / "truth.zarr", times=4)


@pytest.fixture(scope="module")
def chromium():
    from tests.app.browser import launch_chromium, playwright_or_skip

    with launch_chromium(playwright_or_skip()) as browser:
        yield browser

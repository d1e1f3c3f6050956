"""``appa serve``: options, the import-safe entry point, and a served page over HTTP."""

from __future__ import annotations

import argparse
import subprocess
import sys
import urllib.request

import pytest

from appa_engine.cli import serve as cli_serve

# Panel 1.9 announces renames for 2.0 (name -> label, button_type -> color); the app keeps the
# names that work across the supported Panel versions.
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


def _parse(argv):
    parser = argparse.ArgumentParser(prog="appa")
    cli_serve.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def test_options_and_defaults():
    args = _parse([])
    assert (args.address, args.port, args.warm, args.model, args.truth) == ("127.0.0.1", 5006, True, None, None)
    assert args.handler is cli_serve.run
    args = _parse(["--truth", "t.zarr", "--port", "0", "--no-warm", "--address", "0.0.0.0",
                   "--allow-websocket-origin", "appa.example.org", "--allow-websocket-origin", "x:80"])
    assert (str(args.truth), args.port, args.warm, args.address) == ("t.zarr", 0, False, "0.0.0.0")
    assert args.allow_websocket_origin == ["appa.example.org", "x:80"]


@pytest.mark.parametrize("port", ["70000", "http"])
def test_bad_port_is_refused(port, capsys):
    with pytest.raises(SystemExit):
        _parse(["--port", port])
    assert "port" in capsys.readouterr().err


def test_missing_truth_fails_before_serving(tmp_path):
    from app.server import serve

    from appa_engine.errors import DataError

    with pytest.raises(DataError, match="missing.zarr"):
        serve(truth=tmp_path / "missing.zarr", port=0, warm_up=False, threaded=True)


def test_entry_point_is_import_safe():
    code = "import app.main, panel as pn; assert not pn.state.served; print(len(pn.state._servers))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_served_page_and_isolated_sessions(truth_store):
    from app.server import app_factory, bound_port, serve

    factory = app_factory(truth=truth_store)
    a, b = factory(), factory()
    assert a is not b  # one app (and state) per session

    server = serve(truth=truth_store, port=0, warm_up=False, threaded=True)
    try:
        port = bound_port(server)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/appa", timeout=60) as response:
            html = response.read().decode()
        assert response.status == 200 and "Appa Studio" in html
    finally:
        server.stop()

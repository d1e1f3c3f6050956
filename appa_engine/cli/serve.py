"""``appa serve``: serve the Appa Studio web app.

Examples::

    appa serve --truth truth.zarr                      # http://127.0.0.1:5006/appa
    appa serve --truth truth.zarr --model model/ --port 8080
    appa serve --truth truth.zarr --address 0.0.0.0 --allow-websocket-origin appa.example.org

The server binds to the loopback interface unless ``--address`` says otherwise; to reach it from
another machine, bind a public interface and allow the host name the browser uses with
``--allow-websocket-origin`` (or keep loopback and tunnel: ``ssh -L 5006:localhost:5006 host``).
Every browser session gets its own app: sessions share nothing but the files they read.
Until a default model ships, ``--model`` may be left out: the app shows the truth and the
observation editor and says that no model is loaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0-65535 (0 picks a free port)")
    return port


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``appa serve``."""

    parser = subparsers.add_parser(
        "serve",
        help="serve the web app (globe, observation editor, results)",
        description="Serve the Appa Studio web app: draw observations on a globe, run the guided "
        "sampler and explore the ensemble against the truth.",
    )
    parser.add_argument("--model", metavar="PATH", default=None,
                        help="'default' (the shipped model) or a model package directory; its truth.zarr "
                        "is shown unless --truth is given (default: none; the app then only edits observations)")
    parser.add_argument("--truth", metavar="PATH", type=Path, default=None,
                        help="truth dataset to show (zarr, NetCDF or GRIB, canonical or WeatherBench2 layout)")
    parser.add_argument("--port", type=_port, default=5006, help="TCP port (default: 5006; 0 picks a free one)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="interface to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--allow-websocket-origin", metavar="HOST[:PORT]", action="append", default=None,
                        help="host a browser may connect from (repeatable), e.g. the server's public name")
    parser.add_argument("--warm", action=argparse.BooleanOptionalAction, default=True,
                        help="compile the rendering kernels before accepting sessions (default: on)")
    parser.add_argument("--show", action="store_true", help="open a browser tab")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from app.server import serve
    from appa_engine.io.package import resolve_model_path

    model = resolve_model_path(args.model) if args.model is not None else None
    truth = args.truth
    if truth is None and model is not None and (model / "truth.zarr").exists():
        truth = model / "truth.zarr"  # the held-out days shipped with the model
    serve(
        truth=truth,
        model=model,
        port=args.port,
        address=args.address,
        allow_websocket_origin=args.allow_websocket_origin,
        warm_up=args.warm,
        show=args.show,
    )
    return 0

"""Importing the project's stand-alone files (``scripts/*.py``, ``bench/*.py``: not packages)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_file(path: Path, name: str, *, cached: bool = True) -> ModuleType:
    """The module of the Python file ``path``, registered as ``sys.modules[name]`` (dataclasses look
    their module up there while the file executes); ``cached``: the module already loaded under
    ``name``, if any, instead of executing the file again."""

    if cached and name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

"""The ``phenoscout`` command line: one sub-parser per subcommand; each imports what it needs on
use.

Public names load lazily on first use (like ``labeling`` itself), so importing the package is
cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_parser": "labeling.cli.commands",
    "main": "labeling.cli.commands",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'labeling.cli' has no attribute {name!r}")

"""The ``phenoscout`` command line: one sub-parser per subcommand; each imports what it needs on
use.

Public names load lazily on first use (like ``labeling`` itself), so importing the package is
cheap.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

_EXPORTS = {
    "build_parser": "labeling.cli.commands",
}

__all__ = sorted([*_EXPORTS, "main"])


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``phenoscout`` command (:func:`labeling.cli.commands.main`); a Ctrl-C
    while its modules load ends as quietly as one while it runs."""
    try:
        from labeling.cli.commands import main as run
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return run(argv)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'labeling.cli' has no attribute {name!r}")

"""The progress callback every long job takes (one definition for all layers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

Progress: TypeAlias = Callable[[int, int], None]
"""``progress(done, total)``: the CLI passes a tqdm adapter, the app ``st.progress``."""

__all__ = ["Progress"]

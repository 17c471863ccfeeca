"""Shared fixtures: seeded randomness and a small demo screen built once per session."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

#: The project's shared real data (read-only): ../shared/data beside the repository, or
#: $PHENOSCOUT_SHARED_DATA. Tests that need it skip when it is absent.
SHARED_DATA = Path(
    os.environ.get(
        "PHENOSCOUT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
    )
)
JURKAT = SHARED_DATA / "jurkat_cellcycle_ifc"
# The app starts a background trainer per project unless this says off: tests (and the app
# servers they start, which inherit the environment) run without one unless a test asks.
os.environ.setdefault("PHENOSCOUT_TRAINER", "off")
NUCLEI_FIELD = SHARED_DATA / "dsb2018_nuclei_field"


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """A 600-cell demo screen folder (crops, labels.csv, metadata.csv)."""
    from datasets.crops.demo import generate_demo

    out = tmp_path_factory.mktemp("demo") / "screen"
    generate_demo(out, n_cells=600, seed=3)
    return out


@pytest.fixture(scope="session")
def small_project(tmp_path_factory, small_demo) -> Path:
    """A project created from :func:`small_demo` (treat as read-only; copy to modify)."""
    from labeling.project import create_project

    path = tmp_path_factory.mktemp("proj") / "demo_project"
    project, _ = create_project(path, small_demo)
    project.close()
    return path


def wait_until(predicate: Callable[[], object], timeout: float = 60.0) -> bool:
    """Poll ``predicate`` every 0.05 s until it is true (True) or ``timeout`` s pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False

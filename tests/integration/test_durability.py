"""Labels whose submit returned survive SIGKILL of the writer (see benchmarks/bench_kill.py)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

_BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_kill.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_kill", _BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_kill"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("writer", ["python", "cli"])
def test_sigkilled_writer_loses_no_acknowledged_label(tmp_path, small_project, writer):
    bench = _bench()
    project = tmp_path / "project"
    shutil.copytree(small_project, project)
    kill = bench.kill_python_writer if writer == "python" else bench.kill_cli_writer
    report = bench.verify(project, kill(project, 10, np.random.default_rng(7)))
    assert report.kills >= 10
    assert report.acknowledged, "no submit returned before a kill: the test proves nothing"
    assert report.lost == []
    assert report.integrity == "ok"
    assert report.opens

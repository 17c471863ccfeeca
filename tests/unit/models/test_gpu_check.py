"""benchmarks/gpu_check.sh --tiny: the GPU check's whole path on a CPU with a tiny network."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
JURKAT = REPO.parent / "shared" / "data" / "jurkat_cellcycle_ifc"


@pytest.mark.slow
@pytest.mark.skipif(not (JURKAT / "labels.csv").exists(), reason="needs ../shared Jurkat data")
def test_gpu_check_tiny_prints_every_figure(tmp_path):
    run = subprocess.run(
        [
            str(REPO / "benchmarks" / "gpu_check.sh"),
            "--tiny",
            "--device",
            "cpu",
            "--data",
            str(JURKAT),
            "--work",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    for needle in (
        "torch ",
        "device cpu",
        "deterministic True",
        "| morphology |",
        "| embedding (self-supervised) |",
        "| morphology + embedding |",
        "fine-tuned, all labels",
        "fine-tuned, 10 per class",
        "crops/s",
        "demo embed:",
        "demo embed, 8 views (--embed-views 8):",
        "demo fine-tune after a batch:",
        "demo re-score all:",
    ):
        assert needle in out, needle


def test_gpu_check_rejects_a_folder_without_labels(tmp_path):
    run = subprocess.run(
        [str(REPO / "benchmarks" / "gpu_check.sh"), "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "has no labels.csv" in run.stderr

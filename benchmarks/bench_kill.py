"""Durability under SIGKILL: labels whose submit returned survive a writer killed at any moment.

Two writers are killed at random (seeded) moments, each at least ``--kills`` times:

* ``python``: a child process opens the project and commits one label per
  :func:`labeling.loop.submit_labels` call (the app's code path), printing ``cell=class`` only
  after the call returned;
* ``cli``: one ``phenoscout label PROJECT CELL=CLASS`` process per label; a label counts as
  committed once the process printed ``committed 1``.

Afterwards every acknowledged label must be in the store's history, ``PRAGMA integrity_check``
must return ``ok`` and :func:`labeling.project.open_project` must work.

Usage::

    python benchmarks/bench_kill.py [PROJECT] [--kills 50] [--seed 0]

Without PROJECT a 300-cell demo project is created in a temporary folder; a given PROJECT is
copied first, never modified.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

_CLASSES = ("alpha", "beta, with comma", "gamma=3", 'delta "quoted"', "epsilon 🦠")


@dataclass
class KillReport:
    """What one writer kind went through."""

    writer: str  # "python" or "cli"
    kills: int = 0  # SIGKILLs delivered to a live child
    acknowledged: set[tuple[str, str, str]] = field(default_factory=set)  # (cell, class, who)
    lost: list[tuple[str, str, str]] = field(default_factory=list)  # acknowledged, not stored
    integrity: str = ""  # PRAGMA integrity_check
    opens: bool = False  # open_project + a store read worked afterwards


def _child_loop(project_dir: str, annotator: str, start: int) -> None:
    """Child of the ``python`` writer: commit one label per submit until killed."""
    from labeling.loop import submit_labels
    from labeling.project import open_project

    project = open_project(Path(project_dir))
    ids = project.cells(columns=["cell_id"])["cell_id"].tolist()
    print("ready", flush=True)
    i = start
    while True:
        cell, label = ids[i % len(ids)], _CLASSES[i % len(_CLASSES)]
        submit_labels(project, {cell: label}, annotator=annotator, source="batch")
        print(f"{cell}\t{label}", flush=True)
        i += 1


def _ack_lines(text: str, annotator: str) -> set[tuple[str, str, str]]:
    out = set()
    for line in text.splitlines():
        cell, sep, label = line.partition("\t")
        if sep:
            out.add((cell, label, annotator))
    return out


def kill_python_writer(project: Path, n_kills: int, rng: np.random.Generator) -> KillReport:
    """SIGKILL a ``submit_labels`` child ``n_kills`` times at random moments while it labels."""
    report = KillReport("python")
    attempt = 0
    while report.kills < n_kills:
        who = f"kill-py-{attempt}"
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(project), who, str(attempt * 7)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
        )  # fmt: skip
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"child {who} did not start (exit {proc.wait()})")
        time.sleep(float(rng.uniform(0.0, 0.4)))
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate()
        report.kills += int(alive)
        report.acknowledged |= _ack_lines(rest, who)
        attempt += 1
    return report


def _cli_runtime(exe: str, project: Path, cell: str) -> float:
    """Median seconds of three uninterrupted ``phenoscout label`` runs (calibrates kill times)."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([exe, "label", str(project), "--no-refit", "--annotator", "calibrate",
                        f"{cell}=alpha"], check=True, capture_output=True)  # fmt: skip
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def kill_cli_writer(project: Path, n_kills: int, rng: np.random.Generator) -> KillReport:
    """SIGKILL ``phenoscout label`` processes ``n_kills`` times, around their commit."""
    from datasets.cells import read_cells

    exe = shutil.which("phenoscout", path=str(Path(sys.executable).parent))
    if exe is None:
        raise RuntimeError("the phenoscout console script is not installed next to python")
    ids = read_cells(project, columns=["cell_id"])["cell_id"].tolist()
    runtime = _cli_runtime(exe, project, ids[0])
    report = KillReport("cli")
    attempt = 0
    # on a loaded machine a run of early kills can leave nothing acknowledged: go on (within a
    # cap) until at least one label was acknowledged before its kill, or the test proves nothing
    while report.kills < n_kills or (not report.acknowledged and attempt < 5 * n_kills):
        who = f"kill-cli-{attempt}"
        cell, label = ids[(attempt * 13) % len(ids)], _CLASSES[attempt % len(_CLASSES)]
        refit = [] if rng.random() < 0.5 else ["--no-refit"]
        proc = subprocess.Popen(
            [exe, "label", str(project), *refit, "--annotator", who, f"{cell}={label}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
        )  # fmt: skip
        time.sleep(float(rng.uniform(0.5, 1.1)) * runtime)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        report.kills += int(alive)
        if any(line.strip() == "committed 1" for line in out.splitlines()):
            report.acknowledged.add((cell, label, who))
        attempt += 1
    return report


def verify(project: Path, report: KillReport) -> KillReport:
    """Fill ``lost``, ``integrity`` and ``opens`` of ``report`` from the project on disk."""
    from labeling.project import open_project
    from labeling.store.names import normalise_class_name

    with sqlite3.connect(project / "labels.db") as conn:
        report.integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        stored = set(
            conn.execute(
                "SELECT l.cell_id, c.name, l.annotator FROM labels l "
                "JOIN classes c ON c.class_id = l.class_id"
            ).fetchall()
        )
    conn.close()
    want = {(c, normalise_class_name(lab), who) for c, lab, who in report.acknowledged}
    report.lost = sorted(want - stored)
    opened = open_project(project)
    try:
        report.opens = opened.store.n_labels_given() >= len(want)
    finally:
        opened.close()
    return report


def make_demo_project(folder: Path, n_cells: int = 300) -> Path:
    """A fresh demo project under ``folder`` (for running without a PROJECT argument)."""
    from datasets.crops.demo import generate_demo
    from labeling.project import create_project

    generate_demo(folder / "screen", n_cells=n_cells, seed=11)
    project, _ = create_project(folder / "project", folder / "screen")
    project.close()
    return folder / "project"


def _summary(report: KillReport) -> str:
    return (
        f"{report.writer:>6}: kills {report.kills}, labels acknowledged "
        f"{len(report.acknowledged)}, labels lost {len(report.lost)}, "
        f"integrity_check {report.integrity!r}, open_project {'ok' if report.opens else 'FAILED'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", nargs="?", type=Path, help="project to copy (default: demo)")
    parser.add_argument("--kills", type=int, default=50, help="kills per writer (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_kill_") as tmp:
        work = Path(tmp) / "project"
        if args.project is not None:
            shutil.copytree(args.project, work)
        else:
            work = make_demo_project(Path(tmp))
        t0 = time.perf_counter()
        reports = [
            verify(work, kill_python_writer(work, args.kills, rng)),
            verify(work, kill_cli_writer(work, args.kills, rng)),
        ]
        print(f"SIGKILL durability ({time.perf_counter() - t0:.0f} s, seed {args.seed}):")
        for report in reports:
            print(_summary(report))
    ok = all(not r.lost and r.integrity == "ok" and r.opens for r in reports)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        os.environ.setdefault("PYTHONHASHSEED", "0")
        _child_loop(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(main())

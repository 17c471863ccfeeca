"""The trainer SIGKILLed while fine-tuning or publishing: labeling carries on with the previous
model version, the half-written version is never used, and a restarted trainer publishes.

The trainer runs in a child process with a tiny network. Its progress callback pauses (sleeps)
at the first step of the chosen phase once trainer.json says it is in that phase, so the
SIGKILL lands inside it: mid fine-tune, or mid publish with ``models/.tmp-v0002/`` half
written.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from datasets.cells import read_cells  # noqa: E402
from labeling.loop import next_batch, submit_labels  # noqa: E402
from labeling.project import open_project  # noqa: E402
from labeling.store.labels import LabelStore  # noqa: E402
from labeling.training import run_trainer  # noqa: E402
from models.backbone.finetune import FinetuneConfig  # noqa: E402
from models.backbone.pretrain import TrainConfig  # noqa: E402
from models.folder import MODELS_DIR, latest_version, list_versions  # noqa: E402
from models.trainer.trainer import TrainerConfig, trainer_lock  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY = TrainerConfig(
    width=2, depth=2, embed_batch=64, cpu_threads=1, nice=0,
    pretrain=TrainConfig(max_steps=3, batch_size=16),
    finetune=FinetuneConfig(max_epochs=2, short_epochs=1, min_steps=2, batch_size=16),
)  # fmt: skip

_CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from models.backbone.finetune import FinetuneConfig
    from models.backbone.pretrain import TrainConfig
    from labeling.training import run_trainer
    from models.trainer.trainer import TrainerConfig
    project, phase, marker = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    status = project / "models" / "trainer.json"
    config = TrainerConfig(
        width=2, depth=2, embed_batch=64, cpu_threads=1, nice=0,
        pretrain=TrainConfig(max_steps=3, batch_size=16),
        finetune=FinetuneConfig(max_epochs=2, short_epochs=1, min_steps=2, batch_size=16))

    def pause_in_phase(done, total):
        state = json.loads(status.read_text())["state"]
        if state == phase and done >= 1:  # inside the phase, with some of its work done
            marker.write_text(state)
            time.sleep(600)  # the parent SIGKILLs us here

    run_trainer(project, "cpu", config=config, progress=pause_in_phase)
    sys.exit("the trainer finished before it was killed")
""")


@pytest.fixture
def project(tmp_path, small_project):
    path = tmp_path / "p"
    shutil.copytree(small_project, path)
    return path


def _labels(project: Path, per_class: int, skip: int = 0) -> dict[str, str]:
    cells = read_cells(project, ["cell_id", "truth"])
    picked = cells.groupby("truth").nth(list(range(skip, skip + per_class)))
    return dict(zip(picked["cell_id"], picked["truth"]))


def _head_on_embeddings(project: Path) -> None:
    """Make the loop's head learn from the published backbone embeddings only, so a round
    records which model version it used."""
    from dataclasses import replace

    from labeling.config import load_config, save_config

    config = load_config(project / "project.toml")
    save_config(replace(config, loop=replace(config.loop, features="embedding")),
                project / "project.toml")  # fmt: skip


def _kill_trainer_in(project: Path, phase: str, marker: Path) -> dict:
    """Start the child trainer, wait until it pauses in ``phase``, SIGKILL it; returns the
    trainer.json it left behind."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(project), phase, str(marker)],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, f"the trainer never reached {phase}"
            time.sleep(0.05)
        status = json.loads((project / MODELS_DIR / "trainer.json").read_text())
        assert status["state"] == phase and status["pid"] == proc.pid
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return status


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["finetuning", "embedding"])
def test_a_trainer_killed_mid_round_leaves_labeling_on_the_previous_version(project, phase):
    assert run_trainer(project, "cpu", config=TINY) == 1  # v1: the pretrained backbone
    _head_on_embeddings(project)
    first = _labels(project, 4)
    with LabelStore(project / "labels.db") as store:
        store.submit(first, "tester", "cli")

    status = _kill_trainer_in(project, phase, project.parent / "paused")
    tmp = project / MODELS_DIR / ".tmp-v0002"
    if phase == "embedding":  # killed mid publish: a half-written version folder is left
        assert tmp.is_dir() and (tmp / "checkpoint.pt").is_file()
        assert not (tmp / "meta.json").exists()
    # 1. the half-written version is never returned; v1 still serves
    assert [v.version for v in list_versions(project)] == [1]
    assert latest_version(project).version == 1 and status["version"] == 1
    # 2. labeling carries on, on the previous version
    proj = open_project(project)
    try:
        batch = next_batch(proj, 6, annotator="ann")
        assert len(batch) == 6 and all(b["guess"] is not None for b in batch)
        assert proj.store.rounds()[-1]["timings"]["features"] == "embedding@1"
        truth = read_cells(project, ["cell_id", "truth"]).set_index("cell_id")["truth"]
        assert submit_labels(proj, {b["cell_id"]: truth[b["cell_id"]] for b in batch}, "ann") == 6
        n_labels = proj.store.n_labels_given()
    finally:
        proj.close()
    assert latest_version(project).version == 1
    # 3. the dead trainer's lock does not block: the kernel released its flock
    with trainer_lock(project):
        pass
    # 4. a restarted trainer removes the half-written folder and publishes a complete v2
    assert run_trainer(project, "cpu", config=TINY) == 2
    assert not tmp.exists()
    assert [p.name for p in (project / MODELS_DIR).iterdir() if p.name.startswith(".tmp")] == []
    second = latest_version(project)
    assert second.version == 2 and second.has_predictions and second.n_labels == n_labels
    restarted = json.loads((project / MODELS_DIR / "trainer.json").read_text())
    assert restarted["state"] == "stopped" and restarted["version"] == 2
    assert restarted["pid"] == os.getpid()
    proj = open_project(project)  # and the next round moves on to it
    try:
        next_batch(proj, 6, annotator="ann", resume=False)  # on the newest, fine-tuned embedding
        assert proj.store.rounds()[-1]["timings"]["features"] == "finetuned@2"
    finally:
        proj.close()

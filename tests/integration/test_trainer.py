"""The background trainer on a small demo project, with labels written straight into the store."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading

import numpy as np
import pytest

from tests.conftest import wait_until

torch = pytest.importorskip("torch")

from datasets.cells import read_cells  # noqa: E402
from labeling.store.labels import LabelStore  # noqa: E402
from labeling.training import run_trainer  # noqa: E402
from models.backbone.finetune import FinetuneConfig  # noqa: E402
from models.backbone.pretrain import TrainConfig  # noqa: E402
from models.errors import ModelError  # noqa: E402
from models.folder import latest_version, load_embeddings, load_predictions  # noqa: E402
from models.trainer.trainer import ServeConfig, TrainerConfig, trainer_lock  # noqa: E402

TINY = TrainerConfig(
    width=2,
    depth=2,
    embed_batch=128,
    cpu_threads=0,
    nice=0,
    pretrain=TrainConfig(max_steps=3, batch_size=16),
    finetune=FinetuneConfig(max_epochs=2, short_epochs=1, min_steps=2, batch_size=16),
)


@pytest.fixture
def project(tmp_path, small_project):
    path = tmp_path / "p"
    shutil.copytree(small_project, path)
    return path


@pytest.mark.slow
def test_watch_trainer_picks_up_new_labels(project):
    stop = threading.Event()
    errors = []

    def target():
        try:
            serve = ServeConfig(watch=True, poll_s=0.05, stop=stop)
            run_trainer(project, "cpu", config=TINY, serve=serve)
        except Exception as err:  # surfaced by the assertion below
            errors.append(err)

    thread = threading.Thread(target=target)
    thread.start()
    try:
        assert wait_until(lambda: latest_version(project) is not None), errors
        first = latest_version(project)
        assert first.version == 1 and not first.has_predictions and first.n_labels == 0
        ids, emb = load_embeddings(project, first)
        cells = read_cells(project, ["cell_id", "truth"])
        assert ids.tolist() == cells["cell_id"].tolist() and emb.shape == (len(cells), 6)
        status_file = project / "models" / "trainer.json"
        # published first, then the status says idle: wait for it
        assert wait_until(lambda: json.loads(status_file.read_text())["state"] == "idle")
        assert json.loads(status_file.read_text())["version"] == 1
        # a second trainer on the same project is refused while this one runs
        with pytest.raises(ModelError, match=r"already running on .* \(pid \d+\)"):
            run_trainer(project, "cpu", config=TINY)
        # a round of labels arrives straight in the store
        picked = cells.groupby("truth").head(6)
        with LabelStore(project / "labels.db") as store:
            store.submit(dict(zip(picked["cell_id"], picked["truth"])), "tester", "cli")
        assert wait_until(lambda: latest_version(project).version == 2), errors
        second = latest_version(project)
        assert second.has_predictions and second.n_labels == len(picked)
        # a classifier version also carries the backbone's label-free embeddings, linked
        from models.folder import load_backbone_embeddings

        b_ids, b_emb = load_backbone_embeddings(project, second)
        assert b_ids.tolist() == ids.tolist()
        np.testing.assert_array_equal(b_emb, emb)
        assert second.classes == tuple(sorted(picked["truth"].unique()))
        _, classes, probs = load_predictions(project, second)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
        # it lists the cells it was trained on: the loop judges it on the others only
        from models.folder import describe_version, load_trained_cells

        assert sorted(load_trained_cells(second).tolist()) == sorted(picked["cell_id"])
        assert second.meta["n_trained"] == len(picked)
        assert describe_version(second) == f"v0002 (fine-tuned on {len(picked)} labels)"
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not errors and not thread.is_alive()
    assert json.loads((project / "models" / "trainer.json").read_text())["state"] == "stopped"


@pytest.mark.slow
def test_restart_after_killed_publish_keeps_serving(project):
    assert run_trainer(project, "cpu", config=TINY) == 1
    stale = project / "models" / ".tmp-v0002"
    stale.mkdir()
    (stale / "embeddings.npy").write_bytes(b"partial")
    assert latest_version(project).version == 1  # readers ignore the half-written version
    assert run_trainer(project, "cpu", config=TINY) == 1  # no new labels: nothing to do
    assert not stale.exists() and latest_version(project).version == 1


def test_second_trainer_is_refused(tmp_path):
    with trainer_lock(tmp_path):
        with pytest.raises(ModelError, match=r"already running on .* \(pid \d+\)"):
            run_trainer(tmp_path, "cpu", config=TINY)


@pytest.mark.slow
def test_one_class_publishes_nothing_new(project):
    with LabelStore(project / "labels.db") as store:
        cell = read_cells(project, ["cell_id"])["cell_id"].iloc[0]
        store.submit({cell: "only"}, "tester", "cli")
    assert run_trainer(project, "cpu", config=TINY) == 1
    status = json.loads((project / "models" / "trainer.json").read_text())
    assert status["state"] == "stopped" and latest_version(project).version == 1


@pytest.mark.slow
def test_pretraining_time_budget_is_recorded_in_the_backbone(project):
    import dataclasses

    from models.backbone.checkpoint import load_checkpoint

    budget = dataclasses.replace(TINY.pretrain, max_steps=50, max_seconds=1e-6)
    assert run_trainer(project, "cpu", config=dataclasses.replace(TINY, pretrain=budget)) == 1
    extra = load_checkpoint(project / "models" / "backbone.pt").extra
    assert extra["history"][-1]["step"] == 1 and extra["history"][-1]["stopped"] == "max_seconds"
    assert extra["pretrain"]["max_seconds"] == 1e-6


def test_cpu_schedule_bounds_each_round():
    cpu = TrainerConfig.for_device("cpu")
    assert cpu.finetune_every == 20 and cpu.finetune_max_steps == 16
    assert TrainerConfig.for_device("cpu", finetune_every=1).finetune_every == 1
    assert TrainerConfig().finetune_every == 1 and TrainerConfig().finetune_max_steps == 0


@pytest.mark.slow
def test_watch_mode_waits_for_enough_new_labels(project, monkeypatch):
    """With finetune_every=N a watching trainer fine-tunes once N label events have arrived,
    capped at finetune_max_steps steps per epoch."""
    import models.trainer.trainer as trainer_module

    seen_steps = []
    real = trainer_module.finetune

    def spy(model, pixels, cells, schedule, *args, **kwargs):
        seen_steps.append(schedule.steps_per_epoch)
        return real(model, pixels, cells, schedule, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "finetune", spy)
    config = dataclasses.replace(TINY, finetune_every=20, finetune_max_steps=2)
    assert run_trainer(project, "cpu", config=config) == 1  # pretrained, version 1
    cells = read_cells(project, ["cell_id", "truth"])
    stop = threading.Event()
    thread = threading.Thread(
        target=run_trainer,
        args=(project, "cpu"),
        kwargs=dict(config=config, serve=ServeConfig(watch=True, poll_s=0.05, stop=stop)),
    )
    with LabelStore(project / "labels.db") as store:
        store.submit(dict(zip(cells["cell_id"][:6], cells["truth"][:6])), "tester", "cli")
        thread.start()
        try:
            assert not wait_until(lambda: latest_version(project).version == 2, timeout=2.0)
            more = cells.iloc[6:40]
            store.submit(dict(zip(more["cell_id"], more["truth"])), "tester", "cli")
            assert wait_until(lambda: latest_version(project).version == 2, timeout=120)
        finally:
            stop.set()
            thread.join(timeout=60)
    assert seen_steps == [2]  # 40 labels / batch 16 -> 3 steps an epoch, capped at 2

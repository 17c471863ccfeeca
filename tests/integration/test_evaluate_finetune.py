"""``evaluate --finetune``: a fine-tuned row from the project's backbone, per fold."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from labeling.evaluate import FINETUNED, FinetuneEval, evaluate_project  # noqa: E402
from models.backbone.finetune import FinetuneConfig  # noqa: E402
from models.backbone.pretrain import TrainConfig  # noqa: E402
from models.trainer.trainer import Trainer, TrainerConfig  # noqa: E402

TINY = FinetuneConfig(max_epochs=1, short_epochs=1, min_steps=2, batch_size=16)


@pytest.fixture
def trained(tmp_path, small_project):
    path = tmp_path / "p"
    shutil.copytree(small_project, path)
    config = TrainerConfig(
        width=2, depth=2, cpu_threads=0, nice=0, pretrain=TrainConfig(max_steps=2, batch_size=16)
    )
    Trainer(path, torch.device("cpu"), config).backbone()  # writes models/backbone.pt
    return path


def test_evaluate_adds_the_fine_tuned_row(trained):
    done = []
    finetune = FinetuneEval("cpu", 1, lambda i, n: done.append((i, n)), schedule=TINY)
    table, _ = evaluate_project(trained, repeats=1, finetune=finetune)
    tuned = table[table["features"] == FINETUNED]
    assert tuned["labels"].tolist() == ["all", "10 per class"]
    assert tuned["balanced_accuracy"].between(0, 1).all() and (tuned["repeats"] == 1).all()
    assert done[-1] == (10, 10) and len(done) == 10  # 5 folds x 2 label settings


def test_cli_evaluate_finetune_without_a_backbone_says_so(small_project):
    run = subprocess.run(
        [sys.executable, "-m", "labeling.cli.commands", "evaluate", str(small_project)]
        + ["--repeats", "1", "--finetune", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "no pretrained backbone" in run.stderr
    assert "phenoscout train" in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_embed_ids_equals_the_rows_of_embed_cells(small_project, tmp_path):
    import numpy as np

    from datasets.pixels.store import PixelStore
    from models.backbone.embed import EmbedConfig, embed_cells, embed_ids
    from models.backbone.unet import UNet, UNetConfig

    torch.manual_seed(0)
    model = UNet(UNetConfig(in_channels=2, width=4, depth=3))
    pixels = PixelStore(small_project)
    embed_cells(model, pixels, tmp_path, torch.device("cpu"), EmbedConfig(batch_size=64))
    every = np.load(tmp_path / "embeddings.npy")
    ids = np.load(tmp_path / "cell_ids.npy")
    pick = [17, 3, 250, 3]  # any order, repeats allowed
    some = embed_ids(model, pixels, ids[pick].tolist(), torch.device("cpu"), EmbedConfig(64))
    np.testing.assert_allclose(some, every[pick], rtol=0, atol=1e-5)
    assert embed_ids(model, pixels, [], torch.device("cpu")).shape == (0, every.shape[1])

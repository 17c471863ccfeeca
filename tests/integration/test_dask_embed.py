"""Embedding on Dask: a 2-worker LocalCluster writes the same embeddings as one process, and a
worker killed mid-task costs a retry, never a missing or doubled row."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("distributed")

from datasets.parallel import ParallelConfig  # noqa: E402
from datasets.pixels.store import PixelStore  # noqa: E402
from models.backbone import embed_tasks  # noqa: E402
from models.backbone.embed import EmbedConfig, embed_cells  # noqa: E402
from models.backbone.embed_tasks import embed_cells_distributed  # noqa: E402
from models.backbone.unet import UNet, UNetConfig  # noqa: E402
from tests.integration.test_dask import _KillingRunner  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("classifier", [False, True])
def test_distributed_embedding_equals_one_process(small_project, tmp_path, monkeypatch,
                                                  classifier):  # fmt: skip
    from models.backbone.unet import Classifier

    monkeypatch.setattr(embed_tasks, "CHUNK_CELLS", 128)  # 600 cells: 5 tasks
    torch.manual_seed(0)
    config = UNetConfig(in_channels=2, width=4, depth=3)
    model = Classifier(config, 3) if classifier else UNet(config)
    pixels = PixelStore(small_project)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    torch.set_num_threads(1)
    embed_cells(model, pixels, one, torch.device("cpu"), EmbedConfig(batch_size=64))
    with _KillingRunner(ParallelConfig(workers=2), tmp_path / "killed", "after") as runner:
        result = embed_cells_distributed(model, pixels, two, runner, EmbedConfig(batch_size=64))
        assert not runner.local
    assert (tmp_path / "killed").exists() and result.n_cells == pixels.n_cells
    assert np.array_equal(np.load(one / "cell_ids.npy"), np.load(two / "cell_ids.npy"))
    names = ["embeddings.npy", "predictions.npy"] if classifier else ["embeddings.npy"]
    for name in names:
        np.testing.assert_allclose(np.load(two / name), np.load(one / name), rtol=0, atol=1e-5)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())

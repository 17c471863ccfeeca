"""An embedding averaged over a crop's rotations and flips (``EmbedConfig.views``)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.models.conftest import FakePixels

torch = pytest.importorskip("torch")

from models.backbone.embed import EmbedConfig, dihedral, embed_ids  # noqa: E402
from models.backbone.unet import UNet  # noqa: E402
from models.errors import ModelError  # noqa: E402


def test_the_eight_views_are_the_squares_symmetries():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    views = [dihedral(x, i) for i in range(8)]
    assert torch.equal(views[0], x)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8


def test_eight_views_give_the_same_embedding_whichever_way_a_cell_lies(tiny_config):
    torch.manual_seed(0)
    net = UNet(tiny_config).eval()
    cells = FakePixels(n=6)
    turned = FakePixels(n=6)
    turned.crops = np.ascontiguousarray(np.rot90(cells.crops, 1, axes=(2, 3)))
    ids, cpu = cells.cell_ids, torch.device("cpu")
    for views, invariant in ((1, False), (8, True)):
        config = EmbedConfig(batch_size=4, views=views)
        a = embed_ids(net, cells, ids, cpu, config)  # type: ignore[arg-type]
        b = embed_ids(net, turned, ids, cpu, config)  # type: ignore[arg-type]
        assert np.allclose(a, b, atol=1e-5) == invariant, views


def test_views_must_be_a_divisor_of_eight():
    with pytest.raises(ModelError, match="views=3"):
        EmbedConfig(views=3)

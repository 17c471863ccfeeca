from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from models.backbone.checkpoint import (  # noqa: E402
    build_model,
    get_project_id,
    init_encoder_from,
    load_checkpoint,
    save_checkpoint,
)
from models.backbone.unet import Classifier, UNet, UNetConfig  # noqa: E402
from models.errors import ModelError  # noqa: E402

CLASSES = ("a", "b", "c")


def test_round_trip_classifier(tmp_path, tiny_config):
    torch.manual_seed(0)
    model = Classifier(tiny_config, 3).eval()
    path = save_checkpoint(tmp_path / "c.pt", model, "p1", CLASSES, extra={"epochs": 2})
    ckpt = load_checkpoint(path, project="p1", classes=CLASSES)
    assert (ckpt.kind, ckpt.classes, ckpt.config, ckpt.extra) == (
        "classifier",
        CLASSES,
        tiny_config,
        {"epochs": 2},
    )
    x = torch.rand(2, 2, 16, 16)
    assert torch.equal(build_model(ckpt)(x), model(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_round_trip_unet(tmp_path, tiny_config):
    model = UNet(tiny_config).eval()
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "u.pt", model))
    x = torch.rand(1, 2, 16, 16)
    assert ckpt.kind == "unet" and torch.equal(build_model(ckpt)(x), model(x))


def test_corrupt_and_foreign_checkpoints(tmp_path, tiny_config):
    path = save_checkpoint(tmp_path / "c.pt", Classifier(tiny_config, 3), "p1", CLASSES)
    with pytest.raises(ModelError, match="another project"):
        load_checkpoint(path, project="p2")
    with pytest.raises(ModelError, match=r"classes \['a', 'b', 'c'\] differ"):
        load_checkpoint(path, classes=("a", "b"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelError, match="corrupt or not a PhenoScout checkpoint"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ModelError, match="keys missing"):
        load_checkpoint(other)
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "obj": object()}, path)
    with pytest.raises(ModelError, match="corrupt or not a PhenoScout"):
        load_checkpoint(path)


def test_init_encoder_from_user_checkpoint(tmp_path, tiny_config):
    source = UNet(tiny_config)
    path = save_checkpoint(tmp_path / "user.pt", source, "elsewhere")
    target = Classifier(tiny_config, 2)
    init_encoder_from(target, path)
    for k, v in source.encoder.state_dict().items():
        assert torch.equal(target.encoder.state_dict()[k], v)
    with pytest.raises(ModelError, match="does not fit this model"):
        init_encoder_from(UNet(UNetConfig(in_channels=2, width=8, depth=2)), path)


def test_project_id_is_stable(tmp_path):
    first = get_project_id(tmp_path)
    assert first == get_project_id(tmp_path) and len(first) == 32

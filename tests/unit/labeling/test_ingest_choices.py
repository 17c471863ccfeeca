"""What ingest decides for a whole screen is stored in project.toml as a value, never "auto":
the scale for crops larger than the crop size, and the modality (fluorescence or stained RGB)."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
from PIL import Image

from datasets.config import IngestConfig
from datasets.features import read_features
from labeling.project import create_project


def _rgb_screen(root, n=12, size=120):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    lines = ["path,label"]
    for i in range(n):
        r = size / 5 if i % 2 else size / 3
        disc = np.hypot(yy, xx) < r
        rgb = np.stack([np.where(disc, c, 240) for c in (110, 60, 150)], axis=-1)
        rgb = np.clip(rgb + rng.normal(0, 5, rgb.shape), 0, 255).astype(np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(root / "images" / f"c{i}.png")
        lines.append(f"images/c{i}.png,{'small' if i % 2 else 'big'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def rgb_project(tmp_path_factory):
    src = _rgb_screen(tmp_path_factory.mktemp("rgb"))
    project, report = create_project(tmp_path_factory.mktemp("p") / "proj", src)
    project.close()
    return project.path, report


def test_scale_and_modality_are_stored_as_values(rgb_project):
    path, report = rgb_project
    saved = tomllib.loads((path / "project.toml").read_text())["ingest"]
    # 120-px crops around cells of up to 80 px: the cells, with a quarter more, into 64 px
    assert saved["scale"] == report.scale == 0.64
    assert saved["modality"] == "stained_rgb"
    assert any("scaled by 0.64" in n and "around smaller cells" in n for n in report.notes)
    _, _, names = read_features(path)
    assert any(n.startswith("stain_hema") for n in names)
    assert "Features for stained brightfield RGB" in report.summary()
    assert "detected from the pixels (--modality fluorescence to override)" in report.summary()
    # shown in their own colours: red as red, blue as blue
    channels = tomllib.loads((path / "project.toml").read_text())["channels"]
    assert [(c["name"], c["colour"]) for c in channels] == [
        ("R", "#ff0000"), ("G", "#00ff00"), ("B", "#0000ff")
    ]  # fmt: skip
    assert "Channels: 3 (R, G, B)" in report.summary()  # the report says the names kept


def test_modality_and_scale_can_be_overridden(tmp_path, rgb_project):
    src = _rgb_screen(tmp_path / "src", n=4)
    cfg = IngestConfig(scale=1.0, modality="fluorescence")
    project, report = create_project(tmp_path / "p", src, cfg)
    project.close()
    saved = tomllib.loads((tmp_path / "p" / "project.toml").read_text())
    assert (saved["ingest"]["scale"], saved["ingest"]["modality"]) == (1.0, "fluorescence")
    assert saved["channels"][0]["colour"] == "#3b82f6"  # as fluorescence: the usual colours
    assert "Features for fluorescence (morphology features per channel), as asked" in (
        report.summary()
    )
    _, _, names = read_features(tmp_path / "p")
    assert not any(n.startswith("stain_") for n in names)


def test_adding_crops_of_another_bit_depth_or_colour_is_said(tmp_path):
    import tifffile

    from labeling.project import add_crops

    src = _rgb_screen(tmp_path / "rgb", n=4)  # 8-bit RGB PNGs
    other = tmp_path / "fluo"
    other.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):  # 16-bit, three channels first
        image = rng.integers(0, 4000, (3, 40, 40), dtype=np.uint16)
        tifffile.imwrite(other / f"f{i}.tif", image, photometric="minisblack")
    project, _ = create_project(tmp_path / "p", src)
    report = add_crops(project, other)
    note = next(n for n in report.notes if n.startswith("These crops differ from the project's"))
    assert "bit depth uint16 (the project's: uint8)" in note
    assert "grey or multichannel images (the project's: colour (RGB))" in note
    again = add_crops(project, _rgb_screen(tmp_path / "rgb2", n=4))  # the same kind: no note
    assert not any(n.startswith("These crops differ") for n in again.notes)
    project.close()


def test_predict_refuses_fluorescence_like_images_on_a_stained_project(rgb_project, tmp_path):
    from labeling.errors import DataError
    from labeling.io.bundles import predict_screen
    from labeling.loop import submit_labels
    from labeling.project import open_project

    path, _ = rgb_project
    project = open_project(path)
    ids = project.cells(columns=["cell_id"])["cell_id"].tolist()
    submit_labels(project, {c: ("big", "small")[i % 2] for i, c in enumerate(ids)}, "ann")
    dark = tmp_path / "dark"  # the same kind of file (8-bit RGB PNG), bright cells on black
    dark.mkdir()
    yy, xx = np.mgrid[:120, :120] - 59.5
    for i in range(6):
        disc = np.hypot(yy, xx) < (24 if i % 2 else 40)
        rgb = np.stack([np.where(disc, c, 8) for c in (200, 40, 90)], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(dark / f"d{i}.png")
    with pytest.raises(DataError, match="look like fluorescence channels, the project's like "
                       "stained brightfield RGB") as err:  # fmt: skip
        predict_screen(project, dark)
    assert str(dark) in str(err.value)
    assert len(predict_screen(project, dark, allow_other_kind=True)) == 6
    same = predict_screen(project, _rgb_screen(tmp_path / "more", n=4))  # its own kind: scored
    assert len(same) == 4
    project.close()


def test_crops_whose_pixels_fail_to_read_choose_no_scale(tmp_path):
    from datasets.crops.ingest import ingest_crops

    good = _rgb_screen(tmp_path / "good", n=8)
    mixed = _rgb_screen(tmp_path / "mixed", n=8)
    rng = np.random.default_rng(1)
    for i in range(4):  # large crops whose headers read and whose pixels are cut short
        big = rng.integers(0, 255, (260, 260, 3), dtype=np.uint8)
        path = mixed / "images" / f"cut{i}.png"
        Image.fromarray(big).save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    alone = ingest_crops(good, tmp_path / "p1")
    report = ingest_crops(mixed, tmp_path / "p2")
    assert report.scale == alone.scale and report.n_cells == 8
    assert sorted(f for f, _ in report.skipped) == [f"images/cut{i}.png" for i in range(4)]
    said = [[n for n in r.notes if n.startswith("Crops larger")] for r in (report, alone)]
    assert said[0] == said[1] and "up to 120 px" in said[0][0]  # not the cut files' 260 px

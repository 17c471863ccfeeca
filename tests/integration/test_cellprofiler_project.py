"""A CellProfiler export becomes a project whose exports carry ImageNumber/ObjectNumber back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from datasets.cellprofiler.reader import cellprofiler_channels, read_cellprofiler
from datasets.config import IngestConfig
from labeling.cli.commands import main
from labeling.project import open_project

SIZE = 96  # field side in pixels
CENTRES = [(20, 22), (22, 70), (48, 46), (74, 20), (72, 74)]  # (y, x) of the nuclei per field
SITES = [("P1", "A01", 1), ("P1", "A01", 2), ("P1", "B02", 1), ("P1", "B02", 2)]
IDS = ["ImageNumber", "ObjectNumber"]


def phenotype(image: int, obj: int) -> str:
    return "big" if (image + obj) % 2 else "small"


def write_export(root: Path) -> dict[str, Path]:
    """Fields with bright discs (DNA, Actin), Image.csv + Nuclei.csv and the same as SQLite.

    Image paths are recorded as on the cluster that ran CellProfiler; the images sit in
    ``root/images`` beside the tables, where the reader looks next.
    """
    (root / "images").mkdir(parents=True)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    rng = np.random.default_rng(0)
    image_rows, object_rows = [], []
    for n, (plate, well, site) in enumerate(SITES, start=1):
        stack = rng.normal(100, 5, (2, SIZE, SIZE))
        for o, (y, x) in enumerate(CENTRES, start=1):
            radius = 9 if phenotype(n, o) == "big" else 5
            disc = (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
            stack[0][disc] += 2000
            stack[1][disc] += 800
            object_rows.append(
                {
                    "ImageNumber": n,
                    "ObjectNumber": o,
                    "Number_Object_Number": o,
                    "Location_Center_X": x + 0.3,
                    "Location_Center_Y": y - 0.2,
                    "AreaShape_Area": float(disc.sum()),
                    "Intensity_MeanIntensity_DNA": 0.5 if radius == 9 else np.nan,
                }
            )
        row = {"ImageNumber": n, "Metadata_Plate": plate, "Metadata_Well": well}
        row["Metadata_Site"] = site
        for c, ch in enumerate(("DNA", "Actin")):
            name = f"{plate}_{well}_s{site}_{ch}.tif"
            tifffile.imwrite(root / "images" / name, stack[c].astype(np.uint16))
            row.update({f"FileName_{ch}": name, f"PathName_{ch}": "/cluster/screen/images"})
        image_rows.append(row)
    images, objects = pd.DataFrame(image_rows), pd.DataFrame(object_rows)
    images.to_csv(root / "Image.csv", index=False)
    objects.to_csv(root / "Nuclei.csv", index=False)
    con = sqlite3.connect(root / "cp.db")
    images.rename(columns=lambda c: c if c == "ImageNumber" else f"Image_{c}").to_sql(
        "MyExpt_Per_Image", con, index=False
    )
    objects.drop(columns=["ObjectNumber"]).rename(
        columns=lambda c: c if c == "ImageNumber" else f"Nuclei_{c}"
    ).to_sql("MyExpt_Per_Nuclei", con, index=False)
    con.commit()
    con.close()
    return {"csv": root / "Nuclei.csv", "db": root / "cp.db", "images": root / "images"}


@pytest.fixture
def cp_export(tmp_path: Path) -> dict[str, Path]:
    return write_export(tmp_path / "export")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_project_from_cellprofiler_csv_carries_ids_into_every_export(tmp_path, capsys, cp_export):
    from labeling.loop import submit_labels
    from labeling.project import FieldSource, create_project_from_fields

    fields, skipped = read_cellprofiler(cp_export["csv"])
    names = tuple(cellprofiler_channels(cp_export["csv"]))
    assert skipped == [] and len(fields) == 4 and names == ("Actin", "DNA")
    ingest = IngestConfig(crop_size=32, channel_names=names)
    source = FieldSource(fields, segment="given")
    project, report = create_project_from_fields(tmp_path / "proj", source, ingest)
    assert project.channel_names == ["Actin", "DNA"]
    cells = project.cells()
    assert len(cells) == len(SITES) * len(CENTRES) == report.n_cells
    pairs = set(zip(cells["ImageNumber"], cells["ObjectNumber"]))
    assert pairs == {(n, o) for n in range(1, 5) for o in range(1, 6)}
    assert cells["cp_AreaShape_Area"].dtype == np.float64
    assert cells["cp_Intensity_MeanIntensity_DNA"].isna().sum() == 10  # NaN kept
    assert {"plate", "well", "site"} <= set(cells.columns)
    labels = {
        cid: phenotype(int(n), int(o))
        for cid, n, o in zip(cells["cell_id"], cells["ImageNumber"], cells["ObjectNumber"])
    }
    submit_labels(project, dict(list(labels.items())[:12]), "ann")
    project.close()
    for what in ("labels", "cells", "predictions"):
        out = tmp_path / f"{what}.csv"
        code, _, err = run(capsys, "export", tmp_path / "proj", "--what", what, "--out", out)
        assert code == 0, err
        table = pd.read_csv(out)
        assert set(IDS) <= set(table.columns), what
        assert len(table) == (12 if what == "labels" else 20)
        back = {cid: phenotype(n, o) for cid, n, o in zip(table.cell_id, *table[IDS].T.values)}
        assert all(back[c] == labels[c] for c in back)  # each row keeps its own ids
    labeled = pd.read_csv(tmp_path / "labels.csv")
    assert (labeled["label"] == [phenotype(n, o) for n, o in labeled[IDS].values]).all()


def test_cli_init_from_database_skips_a_missing_image_and_ingests_the_rest(
    tmp_path, capsys, cp_export
):
    missing = cp_export["images"] / "P1_A01_s2_Actin.tif"
    missing.unlink()
    code, out, err = run(
        capsys, "init", tmp_path / "proj", "--cellprofiler", cp_export["db"], "--crop-size", 32
    )
    assert code == 0, err
    assert "P1_A01_s2_Actin.tif" in out and "not found" in out
    code, _, err = run(
        capsys, "export", tmp_path / "proj", "--what", "cells", "--out", tmp_path / "c.parquet"
    )
    cells = pd.read_parquet(tmp_path / "c.parquet")
    assert code == 0 and len(cells) == 15 and 2 not in set(cells["ImageNumber"])
    assert sorted(cells.loc[cells["ImageNumber"] == 3, "ObjectNumber"]) == [1, 2, 3, 4, 5]


def test_cli_init_from_csv_with_explicit_image_table(tmp_path, capsys, cp_export):
    moved = cp_export["csv"].parent / "tables"
    moved.mkdir()
    images_csv = cp_export["csv"].with_name("Image.csv").rename(moved / "per_image.csv")
    code, out, err = run(
        capsys,
        "init",
        tmp_path / "proj",
        "--cellprofiler",
        cp_export["csv"],
        "--images-csv",
        images_csv,
        "--crop-size",
        32,
    )
    assert code == 0, err
    cells = pd.read_parquet(tmp_path / "proj" / "cells.parquet")
    assert len(cells) == 20 and cells["ObjectNumber"].dtype == np.int64
    assert open_project(tmp_path / "proj").channel_names == ["Actin", "DNA"]  # CellProfiler's


def test_cli_image_root_finds_images_moved_away_from_the_recorded_paths(
    tmp_path, capsys, cp_export
):
    moved = tmp_path / "elsewhere"
    cp_export["images"].rename(moved)
    code, out, err = run(
        capsys, "init", tmp_path / "proj", "--cellprofiler", cp_export["db"],
        "--image-root", moved, "--object-name", "Nuclei", "--crop-size", 32,
    )  # fmt: skip
    assert code == 0, err
    assert len(pd.read_parquet(tmp_path / "proj" / "cells.parquet")) == 20


def test_cli_refuses_cellprofiler_flags_with_crops(tmp_path, capsys, cp_export):
    code, _, err = run(
        capsys, "init", tmp_path / "p", "--crops", tmp_path, "--image-root", tmp_path
    )
    assert code == 2 and "--image-root cannot be used with --crops" in err

"""Reading CellProfiler exports: ExportToSpreadsheet CSVs and ExportToDatabase SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from datasets.cellprofiler.reader import cellprofiler_channels, read_cellprofiler
from datasets.errors import DataError

CHANNELS = ("DNA", "Actin")
SITES = [("P1", "A01", 1), ("P1", "A01", 2), ("P1", "B02", 1)]


def image_table(folder: str = "images", sites=SITES) -> pd.DataFrame:
    """Image.csv as ExportToSpreadsheet writes it (channels DNA and Actin, plus a saved image)."""
    rows = []
    for n, (plate, well, site) in enumerate(sites, start=1):
        row = {"ImageNumber": n, "Count_Nuclei": 2, "Metadata_Plate": plate}
        row.update({"Metadata_Well": well, "Metadata_Site": site, "Metadata_Compound": "DMSO"})
        for ch in CHANNELS:
            row[f"FileName_{ch}"] = f"{plate}_{well}_s{site}_{ch}.tif"
            row[f"PathName_{ch}"] = folder
            row[f"Height_{ch}"] = 32
        row["FileName_Outlines"] = f"outlines_{n}.png"  # saved by SaveImages: not a channel
        row["PathName_Outlines"] = "/elsewhere"
        rows.append(row)
    return pd.DataFrame(rows)


def object_table(n_images: int = 3, per_image: int = 2) -> pd.DataFrame:
    """Nuclei.csv: two objects per image with ids, positions and measurements."""
    n = n_images * per_image
    return pd.DataFrame(
        {
            "ImageNumber": np.repeat(np.arange(1, n_images + 1), per_image),
            "ObjectNumber": np.tile(np.arange(1, per_image + 1), n_images),
            "Location_Center_X": np.linspace(5, 25, n),
            "Location_Center_Y": np.linspace(8, 20, n),
            "AreaShape_Area": np.arange(100.0, 100.0 + n),
            "AreaShape_Center_X": np.linspace(5, 25, n),
            "Intensity_MeanIntensity_DNA": np.linspace(0.1, 0.9, n),
            "Number_Object_Number": np.tile(np.arange(1, per_image + 1), n_images),
            "Parent_Seeds": np.ones(n, dtype=int),
            "Children_Cells_Count": np.ones(n, dtype=int),
            "Classification": ["a", "b"] * (n // 2) + ["a"] * (n % 2),
        }
    )


def write_images(folder: Path, images: pd.DataFrame) -> None:
    """A tiny TIFF for every FileName_DNA/Actin of ``images`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for ch in CHANNELS:
        for name in images[f"FileName_{ch}"]:
            tifffile.imwrite(folder / name, np.zeros((32, 32), np.uint16))


def write_db(
    path: Path, images: pd.DataFrame, objects: dict[str, pd.DataFrame], prefix="MyExpt_"
) -> Path:
    """An ExportToDatabase SQLite file with one Per_<Object> table per object type."""
    con = sqlite3.connect(path)
    prefixed = images.rename(columns=lambda c: c if c == "ImageNumber" else f"Image_{c}")
    prefixed.to_sql(f"{prefix}Per_Image", con, index=False)
    for name, frame in objects.items():
        # per-object-type tables keep the id as <Object>_Number_Object_Number only
        renamed = frame.drop(columns=["ObjectNumber"])
        renamed = renamed.rename(columns=lambda c, n=name: c if c == "ImageNumber" else f"{n}_{c}")
        renamed.to_sql(f"{prefix}Per_{name}", con, index=False)
    con.commit()
    con.close()
    return path


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """An ExportToSpreadsheet folder: Image.csv, Nuclei.csv and images/ (3 fields, 6 nuclei)."""
    images = image_table()
    write_images(tmp_path / "images", images)
    images.to_csv(tmp_path / "Image.csv", index=False)
    object_table().to_csv(tmp_path / "Nuclei.csv", index=False)
    return tmp_path


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# -- CSV --------------------------------------------------------------------------------------


def test_csv_fields_carry_files_metadata_and_objects(export):
    fields, skipped = read_cellprofiler(export / "Nuclei.csv")
    assert skipped == []
    assert [f.key for f in fields] == ["P1_A01_s1", "P1_A01_s2", "P1_B02_s1"]
    first = fields[0]
    assert first.channel_files == tuple(
        (export / "images" / f"P1_A01_s1_{ch}.tif").resolve() for ch in ("Actin", "DNA")
    )
    assert first.metadata == {"plate": "P1", "well": "A01", "site": "1", "Compound": "DMSO"}
    assert first.mask_file is None
    objs = first.objects
    assert list(objs.columns[:4]) == ["y", "x", "ImageNumber", "ObjectNumber"]
    assert objs["ObjectNumber"].tolist() == [1, 2] and set(objs["ImageNumber"]) == {1}
    assert objs["x"].tolist() == pytest.approx([5.0, 9.0]) and objs["y"].iloc[0] == 8.0
    assert objs["ImageNumber"].dtype == np.int64 and objs["ObjectNumber"].dtype == np.int64
    measured = [c for c in objs.columns if c.startswith("cp_")]
    assert measured == [
        "cp_AreaShape_Area",
        "cp_Intensity_MeanIntensity_DNA",
        "cp_Children_Cells_Count",
    ]
    assert all(objs[c].dtype == np.float64 for c in measured)
    assert sum(len(f.objects) for f in fields) == 6


def test_channels_sorted_without_saved_images_and_selectable(export):
    assert cellprofiler_channels(export / "Nuclei.csv") == ["Actin", "DNA"]
    fields, _ = read_cellprofiler(export / "Nuclei.csv", channels=["DNA"])
    assert [p.name for p in fields[0].channel_files] == ["P1_A01_s1_DNA.tif"]
    with pytest.raises(DataError, match="no image named GFP; choose channels among") as err:
        cellprofiler_channels(export / "Nuclei.csv", channels=["GFP"])
    assert "Outlines" in one_line(err)  # every FileName_ column is offered


def test_nan_kept_inf_read_as_nan_and_text_columns_left_out(tmp_path):
    images = image_table()
    write_images(tmp_path / "images", images)
    images.to_csv(tmp_path / "Image.csv", index=False)
    objects = object_table()
    objects.loc[0, "AreaShape_Area"] = np.nan
    objects.loc[1, "Intensity_MeanIntensity_DNA"] = np.inf
    objects.to_csv(tmp_path / "Nuclei.csv", index=False)
    fields, _ = read_cellprofiler(tmp_path / "Nuclei.csv")
    objs = fields[0].objects
    assert np.isnan(objs["cp_AreaShape_Area"].iloc[0]) and objs["cp_AreaShape_Area"].iloc[1] == 101
    assert np.isnan(objs["cp_Intensity_MeanIntensity_DNA"].iloc[1])
    assert "cp_Classification" not in objs.columns and "Classification" not in objs.columns


def test_metadata_keeps_leading_zeros_and_key_falls_back_to_image_number(tmp_path):
    images = image_table()
    images["Metadata_Plate"] = "007"
    write_images(tmp_path / "images", images)
    images.to_csv(tmp_path / "Image.csv", index=False)
    object_table().to_csv(tmp_path / "Nuclei.csv", index=False)
    fields, _ = read_cellprofiler(tmp_path / "Nuclei.csv")
    assert fields[0].metadata["plate"] == "007" and fields[0].key == "007_A01_s1"
    images.drop(columns=["Metadata_Plate", "Metadata_Well", "Metadata_Site"]).to_csv(
        tmp_path / "Image.csv", index=False
    )
    fields, _ = read_cellprofiler(tmp_path / "Nuclei.csv")
    assert [f.key for f in fields] == ["Image1", "Image2", "Image3"]
    assert fields[0].metadata == {"Compound": "DMSO"}


def test_duplicate_metadata_keys_are_made_unique(tmp_path):
    images = image_table(sites=[("P1", "A01", 1)] * 3)
    images["FileName_DNA"] = [f"d{i}.tif" for i in range(3)]
    images["FileName_Actin"] = [f"a{i}.tif" for i in range(3)]
    write_images(tmp_path / "images", images)
    images.to_csv(tmp_path / "Image.csv", index=False)
    object_table().to_csv(tmp_path / "Nuclei.csv", index=False)
    fields, _ = read_cellprofiler(tmp_path / "Nuclei.csv")
    assert [f.key for f in fields] == ["P1_A01_s1_Image1", "P1_A01_s1_Image2", "P1_A01_s1_Image3"]


def test_prefixed_file_names_find_their_image_table(tmp_path):
    images = image_table()
    write_images(tmp_path / "images", images)
    images.to_csv(tmp_path / "MyExpt_Image.csv", index=False)
    object_table().to_csv(tmp_path / "MyExpt_Nuclei.csv", index=False)
    fields, skipped = read_cellprofiler(tmp_path / "MyExpt_Nuclei.csv")
    assert len(fields) == 3 and skipped == []


def test_missing_image_table_says_how_to_pass_it(tmp_path):
    object_table().to_csv(tmp_path / "Nuclei.csv", index=False)
    with pytest.raises(DataError, match=r"Nuclei.csv: no per-image table beside it") as err:
        read_cellprofiler(tmp_path / "Nuclei.csv")
    assert "--images-csv" in one_line(err)
    with pytest.raises(DataError, match="Other.csv: per-image table not found"):
        read_cellprofiler(tmp_path / "Nuclei.csv", tmp_path / "Other.csv")


def test_explicit_image_table_anywhere(tmp_path):
    images = image_table()
    write_images(tmp_path / "images", images)
    (tmp_path / "tables").mkdir()
    images.to_csv(tmp_path / "tables" / "per_image.csv", index=False)
    object_table().to_csv(tmp_path / "Nuclei.csv", index=False)
    fields, skipped = read_cellprofiler(tmp_path / "Nuclei.csv", tmp_path / "tables/per_image.csv")
    assert len(fields) == 3 and skipped == []


def test_file_names_exported_into_the_object_file(tmp_path):
    images = image_table()
    write_images(tmp_path / "images", images)
    # "Add image metadata / file and folder names to your object data file?" set to Yes
    image_cols = [
        c for c in images.columns if c.startswith(("Metadata_", "FileName_", "PathName_"))
    ]
    merged = object_table().merge(images[["ImageNumber", *image_cols]], on="ImageNumber")
    merged.to_csv(tmp_path / "Nuclei.csv", index=False)
    fields, skipped = read_cellprofiler(tmp_path / "Nuclei.csv", channels=["Actin", "DNA"])
    assert [len(f.objects) for f in fields] == [2, 2, 2] and skipped == []
    assert fields[1].metadata["site"] == "2"
    assert [c for c in fields[0].objects if c.startswith("cp_")] == [
        "cp_AreaShape_Area",
        "cp_Intensity_MeanIntensity_DNA",
        "cp_Children_Cells_Count",
    ]


def test_tab_separated_export(tmp_path):
    images = image_table()
    write_images(tmp_path / "images", images)
    images.to_csv(tmp_path / "Image.csv", index=False, sep="\t")
    object_table().to_csv(tmp_path / "Nuclei.csv", index=False, sep="\t")
    fields, _ = read_cellprofiler(tmp_path / "Nuclei.csv")
    assert len(fields) == 3 and fields[0].objects["cp_AreaShape_Area"].tolist() == [100, 101]


def test_combined_objects_file_with_two_header_rows(tmp_path):
    """ExportToSpreadsheet writes object names above feature names when objects share a file."""
    images = image_table()
    write_images(tmp_path / "images", images)
    images.to_csv(tmp_path / "Image.csv", index=False)
    nuclei = object_table()
    header = [("Image", "ImageNumber"), ("Nuclei", "ObjectNumber")]
    header += [("Nuclei", c) for c in ("Location_Center_X", "Location_Center_Y", "AreaShape_Area")]
    header += [("Cells", c) for c in ("Location_Center_X", "Location_Center_Y", "AreaShape_Area")]
    values = nuclei[
        ["ImageNumber", "ObjectNumber", "Location_Center_X", "Location_Center_Y", "AreaShape_Area"]
    ].to_numpy()
    values = np.column_stack([values, values[:, 2:] + 1])
    lines = [",".join(h[0] for h in header), ",".join(h[1] for h in header)]
    lines += [",".join(str(v) for v in row) for row in values]
    (tmp_path / "Objects.csv").write_text("\n".join(lines) + "\n")
    fields, _ = read_cellprofiler(tmp_path / "Objects.csv")
    objs = fields[0].objects
    assert objs["x"].tolist() == pytest.approx([5.0, 9.0])  # Nuclei picked over Cells
    assert {"cp_AreaShape_Area", "cp_Cells_AreaShape_Area"} <= set(objs.columns)
    assert not any("Location" in c for c in objs.columns if c.startswith("cp_"))
    fields, _ = read_cellprofiler(tmp_path / "Objects.csv", object_name="Cells")
    assert fields[0].objects["x"].tolist() == pytest.approx([6.0, 10.0])


# -- SQLite -----------------------------------------------------------------------------------


def test_database_matches_the_csv_export(export):
    db = write_db(export / "cp.db", image_table(), {"Nuclei": object_table()})
    from_csv, _ = read_cellprofiler(export / "Nuclei.csv")
    from_db, skipped = read_cellprofiler(db)
    assert skipped == [] and cellprofiler_channels(db) == ["Actin", "DNA"]
    for a, b in zip(from_csv, from_db, strict=True):
        assert (a.key, a.channel_files, a.metadata) == (b.key, b.channel_files, b.metadata)
        pd.testing.assert_frame_equal(a.objects, b.objects)


def test_database_recognised_by_content_and_opened_read_only(export):
    db = write_db(export / "cp.db", image_table(), {"Nuclei": object_table()})
    renamed = db.rename(export / "cellprofiler_output.bin")
    before = renamed.read_bytes()
    fields, _ = read_cellprofiler(renamed)
    assert len(fields) == 3 and renamed.read_bytes() == before
    assert not (export / "cellprofiler_output.bin-journal").exists()


def test_database_with_several_object_tables_picks_nuclei_or_asks(export):
    cells = object_table()
    cells["Location_Center_X"] += 1
    db = write_db(export / "cp.db", image_table(), {"Nuclei": object_table(), "Cells": cells})
    fields, _ = read_cellprofiler(db)
    assert fields[0].objects["x"].tolist() == pytest.approx([5.0, 9.0])
    fields, _ = read_cellprofiler(db, object_name="cells")
    assert fields[0].objects["x"].tolist() == pytest.approx([6.0, 10.0])
    fields, _ = read_cellprofiler(db, object_name="MyExpt_Per_Cells")
    assert fields[0].objects["x"].tolist() == pytest.approx([6.0, 10.0])
    with pytest.raises(DataError, match=r"no objects named 'Speckles'; choose one of") as err:
        read_cellprofiler(db, object_name="Speckles")
    assert "Cells (MyExpt_Per_Cells)" in one_line(err)
    other = write_db(export / "other.db", image_table(), {"Speckles": cells, "Foci": cells})
    with pytest.raises(DataError, match="several object types; choose one of"):
        read_cellprofiler(other)


def test_single_per_object_table(export):
    """ExportToDatabase's single-table layout: ObjectNumber plus <Object>_ prefixed columns."""
    nuclei = object_table().drop(columns=["Classification"])
    table = pd.DataFrame(
        {"ImageNumber": nuclei["ImageNumber"], "ObjectNumber": nuclei["ObjectNumber"]}
    )
    for name, shift in (("Nuclei", 0), ("Cells", 1)):
        for col in nuclei.columns[2:]:
            table[f"{name}_{col}"] = nuclei[col] + (shift if "Location" in col else 0)
    extra = table.iloc[[0]].assign(
        ObjectNumber=3, Nuclei_Number_Object_Number=np.nan, Nuclei_Location_Center_X=np.nan
    )
    table = pd.concat([table, extra], ignore_index=True)  # a third cell without a nucleus
    con = sqlite3.connect(export / "cp.sqlite")
    image_table().rename(columns=lambda c: c if c == "ImageNumber" else f"Image_{c}").to_sql(
        "Per_Image", con, index=False
    )
    table.to_sql("Per_Object", con, index=False)
    con.commit()
    con.close()
    fields, skipped = read_cellprofiler(export / "cp.sqlite")
    assert skipped == [] and [len(f.objects) for f in fields] == [2, 2, 2]
    assert {"cp_AreaShape_Area", "cp_Cells_AreaShape_Area"} <= set(fields[0].objects.columns)
    fields, _ = read_cellprofiler(export / "cp.sqlite", object_name="Cells")
    assert len(fields[0].objects) == 3 and fields[0].objects["ObjectNumber"].tolist() == [1, 2, 3]


def test_corrupt_or_unrelated_database_is_one_line(tmp_path):
    bad = tmp_path / "broken.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DataError, match=r"broken.db: cannot read the database") as err:
        read_cellprofiler(bad)
    one_line(err)
    truncated = tmp_path / "truncated.db"
    write_db(tmp_path / "full.db", image_table(), {"Nuclei": object_table()})
    truncated.write_bytes((tmp_path / "full.db").read_bytes()[:200])
    with pytest.raises(DataError, match="truncated.db: "):
        read_cellprofiler(truncated)
    unrelated = tmp_path / "unrelated.sqlite"
    con = sqlite3.connect(unrelated)
    con.execute("CREATE TABLE songs (title TEXT)")
    con.commit()
    con.close()
    with pytest.raises(DataError, match="no object table with Location_Center_X/Y among songs"):
        read_cellprofiler(unrelated)


def test_database_without_image_table_or_rows(tmp_path):
    con = sqlite3.connect(tmp_path / "cp.db")
    object_table().rename(columns=lambda c: c if c == "ImageNumber" else f"Nuclei_{c}").to_sql(
        "Per_Nuclei", con, index=False
    )
    con.commit()
    with pytest.raises(DataError, match="no Per_Image table beside Per_Nuclei"):
        read_cellprofiler(tmp_path / "cp.db")
    image_table().iloc[:0].to_sql("Per_Image", con, index=False)
    con.commit()
    con.close()
    with pytest.raises(DataError, match="table Per_Image has no rows"):
        read_cellprofiler(tmp_path / "cp.db")


# -- finding the images -----------------------------------------------------------------------


def test_absolute_paths_from_another_machine_found_under_image_root(tmp_path):
    images = image_table(folder="/mnt/cluster/screen/plate1")
    write_images(tmp_path / "moved" / "plate1", images)
    images.to_csv(tmp_path / "Image.csv", index=False)
    object_table().to_csv(tmp_path / "Nuclei.csv", index=False)
    fields, skipped = read_cellprofiler(tmp_path / "Nuclei.csv", image_root=tmp_path / "moved")
    assert skipped == []
    assert fields[0].channel_files[0] == (tmp_path / "moved/plate1/P1_A01_s1_Actin.tif").resolve()


def test_windows_paths_found_beside_the_tables(tmp_path):
    images = image_table(folder=r"C:\Users\me\screen\images")
    write_images(tmp_path / "images", images)
    images.to_csv(tmp_path / "Image.csv", index=False)
    object_table().to_csv(tmp_path / "Nuclei.csv", index=False)
    fields, skipped = read_cellprofiler(tmp_path / "Nuclei.csv")
    assert skipped == [] and fields[2].channel_files[1].name == "P1_B02_s1_DNA.tif"


def test_existing_absolute_path_used_as_recorded(tmp_path):
    images = image_table(folder=str(tmp_path / "elsewhere"))
    write_images(tmp_path / "elsewhere", images)
    write_images(tmp_path / "tables", images)  # decoys beside the tables
    images.to_csv(tmp_path / "tables" / "Image.csv", index=False)
    object_table().to_csv(tmp_path / "tables" / "Nuclei.csv", index=False)
    fields, _ = read_cellprofiler(tmp_path / "tables" / "Nuclei.csv")
    assert fields[0].channel_files[0].parent == tmp_path / "elsewhere"


def test_relative_path_taken_against_image_root_first(tmp_path):
    images = image_table(folder="images")
    write_images(tmp_path / "root" / "images", images)
    write_images(tmp_path / "images", images)  # the tables' folder is tried after image_root
    images.to_csv(tmp_path / "Image.csv", index=False)
    object_table().to_csv(tmp_path / "Nuclei.csv", index=False)
    fields, _ = read_cellprofiler(tmp_path / "Nuclei.csv", image_root=tmp_path / "root")
    assert fields[0].channel_files[0].parent == (tmp_path / "root" / "images").resolve()


def test_missing_image_file_skips_that_image_only(export):
    (export / "images" / "P1_A01_s2_DNA.tif").unlink()
    fields, skipped = read_cellprofiler(export / "Nuclei.csv")
    assert [f.key for f in fields] == ["P1_A01_s1", "P1_B02_s1"]
    assert len(skipped) == 1
    file, cause = skipped[0]
    assert file == "images/P1_A01_s2_DNA.tif"
    assert "P1_A01_s2: DNA image file not found" in cause and "2 objects skipped" in cause
    assert "image_root" in cause and "\n" not in cause


def test_empty_file_name_skips_that_image(export):
    images = image_table()
    images.loc[0, "FileName_Actin"] = ""
    images.to_csv(export / "Image.csv", index=False)
    fields, skipped = read_cellprofiler(export / "Nuclei.csv")
    assert len(fields) == 2
    assert skipped == [
        (
            str(export / "Image.csv"),
            "image P1_A01_s1: no file name for channel Actin (FileName_Actin is empty); "
            "its 2 objects skipped",
        )
    ]


def test_no_image_found_at_all_is_an_error(export):
    for path in (export / "images").iterdir():
        path.unlink()
    with pytest.raises(DataError, match="no image of the export can be ingested; first cause") as e:
        read_cellprofiler(export / "Nuclei.csv")
    one_line(e)


# -- bad tables -------------------------------------------------------------------------------


def test_objects_of_unknown_images_and_images_without_objects_are_reported(export):
    objects = object_table()
    objects.loc[objects["ImageNumber"] == 3, "ImageNumber"] = 9
    objects.to_csv(export / "Nuclei.csv", index=False)
    fields, skipped = read_cellprofiler(export / "Nuclei.csv")
    assert [f.key for f in fields] == ["P1_A01_s1", "P1_A01_s2"]
    assert len(skipped) == 2
    assert skipped[0] == (
        str(export / "Nuclei.csv"),
        "2 objects of 1 ImageNumber not in the per-image table (9) are not ingested",
    )
    assert skipped[1] == (
        str(export / "Image.csv"),
        "1 images without Nuclei objects are not ingested: P1_B02_s1",
    )


def test_objects_without_location_are_counted(export):
    objects = object_table()
    objects.loc[[0, 3], "Location_Center_Y"] = np.nan
    objects.loc[5, "ImageNumber"] = np.nan
    objects.to_csv(export / "Nuclei.csv", index=False)
    fields, skipped = read_cellprofiler(export / "Nuclei.csv")
    assert [len(f.objects) for f in fields] == [1, 1, 1]
    assert skipped == [
        (
            str(export / "Nuclei.csv"),
            "3 Nuclei objects without a location, ImageNumber or ObjectNumber are not ingested",
        )
    ]


def test_repeated_object_ids_keep_the_first_row(export):
    objects = object_table()
    objects = pd.concat([objects, objects.iloc[[0]].assign(Location_Center_X=99.0)])
    objects.to_csv(export / "Nuclei.csv", index=False)
    fields, skipped = read_cellprofiler(export / "Nuclei.csv")
    assert fields[0].objects["x"].tolist() == pytest.approx([5.0, 9.0])
    assert skipped == [
        (
            str(export / "Nuclei.csv"),
            "1 Nuclei objects repeat the ImageNumber/ObjectNumber of an earlier row; only the "
            "first is ingested",
        )
    ]


def test_duplicate_image_numbers_are_skipped(export):
    images = image_table()
    images.loc[2, "ImageNumber"] = 2
    images.to_csv(export / "Image.csv", index=False)
    fields, skipped = read_cellprofiler(export / "Nuclei.csv")
    assert [f.key for f in fields] == ["P1_A01_s1"]
    assert sum("ImageNumber listed twice" in c for _, c in skipped) == 2


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("Location_Center_Y", "missing column\\(s\\) Location_Center_Y in the per-object table"),
        ("ObjectNumber", None),  # Number_Object_Number is not the object id of a CSV
        ("ImageNumber", "missing column\\(s\\) ImageNumber in the per-object table"),
    ],
)
def test_missing_object_columns_are_named(export, drop, message):
    objects = object_table().drop(columns=[drop])
    if drop == "ObjectNumber":
        objects = objects.drop(columns=["Number_Object_Number"])
        message = "missing column\\(s\\) ObjectNumber"
    objects.to_csv(export / "Nuclei.csv", index=False)
    with pytest.raises(DataError, match=message) as err:
        read_cellprofiler(export / "Nuclei.csv")
    assert one_line(err).startswith(str(export / "Nuclei.csv"))


def test_missing_image_columns_are_named(export):
    image_table().drop(columns=["ImageNumber"]).to_csv(export / "Image.csv", index=False)
    with pytest.raises(DataError, match="Image.csv: missing column ImageNumber"):
        read_cellprofiler(export / "Nuclei.csv")
    images = image_table()
    images[["ImageNumber", "Metadata_Well"]].to_csv(export / "Image.csv", index=False)
    with pytest.raises(DataError, match="Image.csv: missing FileName_<channel> columns"):
        cellprofiler_channels(export / "Nuclei.csv")


def test_empty_unreadable_and_absent_tables(export):
    (export / "Nuclei.csv").write_text(",".join(object_table().columns) + "\n")
    with pytest.raises(DataError, match="Nuclei.csv: the per-object table has no rows"):
        read_cellprofiler(export / "Nuclei.csv")
    (export / "Nuclei.csv").write_text("")
    with pytest.raises(DataError, match="Nuclei.csv: cannot read the per-object table"):
        read_cellprofiler(export / "Nuclei.csv")
    (export / "Nuclei.csv").write_bytes(b"\xff\xfe\x00\x81garbage\x00")
    with pytest.raises(DataError, match="Nuclei.csv: cannot read") as err:
        read_cellprofiler(export / "Nuclei.csv")
    one_line(err)
    with pytest.raises(DataError, match="Cells.csv: not found"):
        read_cellprofiler(export / "Cells.csv")


def test_table_number_joins_merged_tables(tmp_path):
    """CPA's merged tables repeat ImageNumber per TableNumber."""
    images = pd.concat([image_table().assign(TableNumber=t) for t in (1, 2)], ignore_index=True)
    images["FileName_DNA"] = [f"{t}_{n}" for t, n in zip(images.TableNumber, images.FileName_DNA)]
    images["FileName_Actin"] = [
        f"{t}_{n}" for t, n in zip(images.TableNumber, images.FileName_Actin)
    ]
    write_images(tmp_path / "images", images)
    images.to_csv(tmp_path / "Image.csv", index=False)
    objects = pd.concat([object_table().assign(TableNumber=t) for t in (1, 2)], ignore_index=True)
    objects.to_csv(tmp_path / "Nuclei.csv", index=False)
    fields, skipped = read_cellprofiler(tmp_path / "Nuclei.csv")
    assert skipped == [] and len(fields) == 6 and len({f.key for f in fields}) == 6
    assert fields[3].objects["TableNumber"].tolist() == [2, 2]
    assert fields[3].channel_files[0].name.startswith("2_")

"""Property tests over hostile input: loaders and the store raise only PhenoScout's typed errors.

Deterministic (``derandomize=True``) so CI sees the same ~1,300 examples every run.
"""

from __future__ import annotations

import shutil
import sqlite3
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from datasets.cells import read_labels_csv
from datasets.crops.readers import read_image_file
from datasets.errors import DataError
from labeling.errors import StoreError
from labeling.io.imports import import_labels
from labeling.project import open_project
from labeling.store.labels import LabelStore
from labeling.store.names import SKIP

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:tifffile")

_SETTINGS = dict(
    deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
)
#: Real magic numbers, so random tails reach past the format sniffing into the decoders.
_MAGIC = {
    ".tif": [b"", b"II*\x00", b"MM\x00*", b"II+\x00\x08\x00\x00\x00"],
    ".png": [b"", b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"],
    ".jpg": [b"", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\xff\xd8\xff"],
    ".npz": [b"", b"PK\x03\x04", b"PK\x05\x06" + b"\x00" * 18],
}
_DTYPES = [np.uint8, np.uint16, np.float32, np.int32, np.bool_, np.float64]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _check_pixels(pixels: np.ndarray, layout: str) -> None:
    assert isinstance(pixels, np.ndarray) and pixels.ndim == 4, pixels.shape
    assert pixels.shape[0] >= 1 and 1 <= pixels.shape[1] <= 5
    assert pixels.dtype.kind in "buif" and pixels.dtype.isnative
    assert isinstance(layout, str) and layout


@st.composite
def _image_files(draw):
    suffix = draw(st.sampled_from(sorted(_MAGIC)))
    head = draw(st.sampled_from(_MAGIC[suffix]))
    return suffix, head + draw(st.binary(max_size=600))


@settings(max_examples=300, **_SETTINGS)
@given(case=_image_files())
def test_random_bytes_are_read_or_rejected_with_dataerror(workdir, case):
    suffix, data = case
    path = workdir / f"random{suffix}"
    path.write_bytes(data)
    try:
        pixels, layout = read_image_file(path)
    except DataError as err:
        assert str(path) in str(err) and "\n" not in str(err)
    else:
        _check_pixels(pixels, layout)


_ARRAYS = st.sampled_from(_DTYPES).flatmap(
    lambda dtype: hnp.arrays(
        dtype, hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=9),
        elements=hnp.from_dtype(np.dtype(dtype), allow_nan=True, allow_infinity=True)
        if np.dtype(dtype).kind == "f" else None,
    )
)  # fmt: skip


@settings(max_examples=200, **_SETTINGS)
@given(array=_ARRAYS)
def test_random_tiff_shapes_and_dtypes(workdir, array):
    path = workdir / "shape.tif"
    tifffile.imwrite(path, array)
    try:
        pixels, layout = read_image_file(path)
    except DataError as err:
        assert str(path) in str(err)
    else:
        _check_pixels(pixels, layout)
        assert pixels.size == array.size  # nothing invented or dropped


@settings(max_examples=100, **_SETTINGS)
@given(array=_ARRAYS, key=st.sampled_from(["images", "images", "labels", "x"]))
def test_random_npz_arrays(workdir, array, key):
    path = workdir / "arrays.npz"
    np.savez(path, **{key: array})
    try:
        pixels, layout = read_image_file(path)
    except DataError as err:
        assert str(path) in str(err)
    else:
        _check_pixels(pixels, layout)
        assert pixels.size == array.size


_CSV_TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.lists(st.text(st.characters(blacklist_categories=["Cs"]), max_size=12), max_size=4),
        max_size=6,
    ).map(lambda rows: "path,label\n" + "\n".join(",".join(r) for r in rows)),
)
_CSV_BYTES = st.one_of(_CSV_TEXT.map(lambda t: t.encode("utf-8")), st.binary(max_size=200))


@settings(max_examples=150, **_SETTINGS)
@given(data=_CSV_BYTES)
def test_random_labels_csv_for_ingest(workdir, data):
    path = workdir / "labels.csv"
    path.write_bytes(data)
    try:
        table = read_labels_csv(path)
    except DataError as err:
        assert str(path) in str(err) and "\n" not in str(err).strip()
    else:  # only possible when every path names an existing file
        assert len(table.keys) == len(table.values)


@pytest.fixture(scope="module")
def import_project(tmp_path_factory, small_project):
    path = tmp_path_factory.mktemp("fuzz_import") / "project"
    shutil.copytree(small_project, path)
    project = open_project(path)
    yield project
    project.close()


@settings(max_examples=150, **_SETTINGS)
@given(data=_CSV_BYTES, use_cell=st.booleans())
def test_random_import_labels_csv(workdir, import_project, data, use_cell):
    if use_cell:  # a real cell id so some rows reach the store with a random class name
        cell = import_project.store._read("SELECT cell_id FROM cells LIMIT 1")[0][0]
        data = f"path,label\n{cell},".encode() + data
    path = workdir / "import.csv"
    path.write_bytes(data)
    before = import_project.store.n_labels_given()
    try:
        n = import_labels(import_project, path)
    except (DataError, StoreError) as err:  # a bad class name is the store's to reject
        assert import_project.store.n_labels_given() == before
        assert "\n" not in str(err).strip()
    else:
        assert import_project.store.n_labels_given() == before + n


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    db = LabelStore(tmp_path_factory.mktemp("fuzz_store") / "labels.db", create=True)
    db.add_cells([f"cell{i}" for i in range(50)])
    yield db
    db.close()


_NAMES = st.one_of(
    st.text(max_size=40),
    st.text(st.sampled_from("a\"',=; 🦠é\u0301\t\n\x00\u200b\u2028 "), max_size=20),
    st.text(min_size=195, max_size=520),
    st.sampled_from(["", " ", "=", "a,b", '"q"', "unsure", "Unsure", SKIP, "x" * 500]),
)


@settings(max_examples=300, **_SETTINGS)
@given(name=_NAMES, cell=st.integers(0, 49))
def test_class_names_commit_identically_or_raise_storeerror(store, name, cell):
    cell_id = f"cell{cell}"
    before = store.n_labels_given()
    try:
        n = store.submit({cell_id: name}, annotator="fuzz", source="batch")
    except StoreError as err:
        assert str(err) and store.n_labels_given() == before
    else:
        if name == SKIP:
            assert n == 0
        else:
            assert n == 1
            want = unicodedata.normalize("NFC", name).strip()
            assert store.current_labels(include_pseudo=True)[cell_id] == want
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()

"""The field ingest's work per field as a task: read the field, find its objects (mask file,
given centres or the segmenter), crop them and cut each object's own mask.

A task returns a :class:`FieldResult`. In this process it carries the arrays; on a cluster the
task writes them to files of its own in a chunk folder (temporary name, then a rename) and the
result carries their paths, so a task run again after its worker died rewrites the same files.
The driver (:func:`datasets.fields.ingest.ingest_fields`) appends the results in field order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import ndimage

from datasets.errors import DataError
from datasets.fields.files import read_field
from datasets.fields.masks import read_mask
from datasets.fields.spec import FieldSpec

__all__ = ["FieldJob", "FieldResult", "find_objects", "load_array", "process_field"]

Segmenter = Callable[[npt.NDArray], npt.NDArray]
_CHUNK = 256  # objects cropped at a time (bounds the temporary arrays on crowded fields)


@dataclass(frozen=True)
class FieldJob:
    """One field to read, segment and crop."""

    number: int  # position among the fields of this ingest
    spec: FieldSpec
    n_channels: int
    dtype: str
    crop_size: int
    keep_border: bool
    segmenter: Segmenter
    out_dir: str | None = None  # chunk folder for the arrays; None: keep them in the result


@dataclass
class FieldResult:
    """What one field gave: its objects and crops, or why it was skipped."""

    number: int
    key: str
    skipped: str | None = None  # the reason, when the field gave no cells
    notes: list[str] = field(default_factory=list)
    non_finite: list[tuple[str, int]] = field(default_factory=list)
    n_objects: int = 0
    dropped: tuple[int, int] = (0, 0)  # objects the segmenter left out: too small, too large
    kept: pd.DataFrame | None = None  # the kept objects' table
    height: int = 0
    width: int = 0
    crops: npt.NDArray | str | None = None  # (n, C, S, S), or the .npy file holding it
    masks: npt.NDArray | str | None = None  # (n, S, S) uint8, or its .npy file
    labels: npt.NDArray | str | None = None  # (H, W) label image or its .npy; None: centres
    image: npt.NDArray | str | None = None  # (C, H, W) field, or its .npy (for its OME-Zarr)


def load_array(value: npt.NDArray | str | None) -> npt.NDArray | None:
    """An array a :class:`FieldResult` carries, read from its file when it is a path."""
    if value is None or isinstance(value, np.ndarray):
        return value
    return np.load(value)


def _save(out_dir: str, name: str, array: npt.NDArray) -> str:
    path = Path(out_dir) / name
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)
    return str(path)


def find_objects(
    spec: FieldSpec, image: npt.NDArray, segmenter: Segmenter, notes: list[str]
) -> tuple[pd.DataFrame, npt.NDArray | None]:
    """The field's objects (the object table's columns, + carried columns) and label image
    (None for objects given as centres); what is worth telling goes to ``notes``."""
    size = image.shape[1:]
    if spec.mask_file is not None:
        labels = _split_binary(read_mask(spec.mask_file, size), spec, notes)
    elif spec.objects is not None:
        return _centre_objects(spec.key, spec.objects, size, notes), None
    else:
        labels = np.asarray(segmenter(image))
        if labels.shape != size or labels.dtype.kind not in "iu":
            raise DataError(
                f"field {spec.key}: segmentation gave {labels.shape} {labels.dtype}; "
                f"expected {size} integer labels"
            )
    from datasets.segmentation.classical import object_table

    names = {"label": "object", "min_row": "bbox_min_row", "min_col": "bbox_min_col",
             "max_row": "bbox_max_row", "max_col": "bbox_max_col"}  # fmt: skip
    return object_table(labels).rename(columns=names), labels


def _split_binary(mask: npt.NDArray, spec: FieldSpec, notes: list[str]) -> npt.NDArray:
    """A mask holding one value (a binary mask such as 0/255) becomes connected components."""
    top = mask.max()
    if top == 0 or (mask[mask != 0] != top).any():
        return mask
    labels, n = ndimage.label(mask)
    if n > 1:
        notes.append(
            f"{spec.mask_file}: binary mask (one value, {n} separate objects); its connected "
            "components are the objects"
        )
        return labels
    return mask


def _centre_objects(
    key: str, given: pd.DataFrame, size: tuple[int, int], notes: list[str]
) -> pd.DataFrame:
    """Objects given as centres (columns y, x + carried ones) in the object-table layout."""
    y, x = given["y"].to_numpy(np.float64), given["x"].to_numpy(np.float64)
    inside = np.isfinite(y) & np.isfinite(x) & (y > -0.5) & (x > -0.5)
    inside &= (y < size[0] - 0.5) & (x < size[1] - 0.5)
    if not inside.all():
        notes.append(
            f"Field {key}: {int((~inside).sum())} object(s) centred outside its "
            f"{size[0]}x{size[1]} image left out"
        )
    given = given[inside].reset_index(drop=True)
    number = given["ObjectNumber"] if "ObjectNumber" in given else np.arange(1, len(given) + 1)
    out = pd.DataFrame({"object": np.asarray(number, dtype=np.int64),
                        "centroid_y": y[inside], "centroid_x": x[inside]})  # fmt: skip
    for name in ("bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col", "area"):
        out[name] = pd.array([pd.NA] * len(out), dtype="Int64")
    out["touches_border"] = False
    carried = given.drop(columns=["y", "x"])
    return pd.concat([out, carried], axis=1)


def refuse_a_label_image(spec: FieldSpec, image: npt.NDArray) -> None:
    """A DataError for a field whose one channel is a label image (a mask left among the
    fields: objects numbered 1..n, each a flat patch), not a microscope image, which would be
    segmented and cropped as if it were one: integer values, a background of 0 over 5% of the
    field or more, at least 2 objects, and 80% of object pixels equal to their right neighbour
    (0.94 on dsb2018's mask; 0.05 on its image: a microscope image's noise makes neighbours
    differ)."""
    if image.shape[0] != 1 or image.dtype.kind not in "iu":
        return
    plane = image[0]
    background = plane == 0
    if background.mean() < 0.05:
        return
    inside = ~background[:, :-1]
    if not inside.any() or (plane[:, 1:] == plane[:, :-1])[inside].mean() < 0.8:
        return
    n = len(np.unique(plane)) - 1
    if n < 2:
        return
    raise DataError(
        f"{spec.channel_files[0]}: a label image ({n} numbered objects), not a microscope "
        "image: put masks in a masks folder (--masks) or name them FIELD_mask.tif"
    )


def process_field(job: FieldJob) -> FieldResult:
    """Task: read, segment and crop one field (see the module docstring); a DataError
    skips the field (the result says why)."""
    from datasets.fields.cropping import centre_pixels, crop_at, object_masks

    spec, size = job.spec, job.crop_size
    result = FieldResult(job.number, spec.key)
    try:
        image = read_field(spec, result.non_finite)
        refuse_a_label_image(spec, image)
        image = image.astype(np.dtype(job.dtype), copy=False)
        if image.shape[0] != job.n_channels:
            raise DataError(f"{spec.channel_files[0]}: {image.shape[0]} channels, expected "
                            f"{job.n_channels}")  # fmt: skip
        objects, labels = find_objects(spec, image, job.segmenter, result.notes)
        counts = getattr(job.segmenter, "dropped", None)  # a ClassicalSegmenter's, this field's
        if counts is not None and spec.mask_file is None and spec.objects is None:
            result.dropped = (counts.small, counts.large)
    except DataError as err:
        result.skipped = str(err)
        return result
    kept = objects if job.keep_border else objects[~objects["touches_border"]]
    kept = kept.reset_index(drop=True)
    centres = centre_pixels(kept, image.shape[1:])
    crops = np.empty((len(kept), image.shape[0], size, size), dtype=image.dtype)
    masks = np.zeros((len(kept), size, size), dtype=np.uint8)
    for start in range(0, len(kept), _CHUNK):
        at = centres[start : start + _CHUNK]
        crops[start : start + len(at)] = crop_at(image, at, size)
        if labels is not None:
            values = kept["object"].to_numpy()[start : start + _CHUNK]
            masks[start : start + len(at)] = object_masks(labels, at, values, size)
    result.n_objects, result.kept = len(objects), kept
    result.height, result.width = int(image.shape[1]), int(image.shape[2])
    if job.out_dir is None:
        result.crops, result.masks, result.labels, result.image = crops, masks, labels, image
    else:
        stem = f"field-{job.number:06d}"
        result.crops = _save(job.out_dir, f"{stem}.crops.npy", crops)
        result.masks = _save(job.out_dir, f"{stem}.masks.npy", masks)
        if labels is not None:
            result.labels = _save(job.out_dir, f"{stem}.labels.npy", labels)
        result.image = _save(job.out_dir, f"{stem}.image.npy", image)
    return result

"""Choices a fields ingest makes before it reads every field: the crop size, from the sizes of
the objects on a few fields (:func:`chosen_crop_size`), and the hint when one-channel files look
like one file per channel of fewer fields (:func:`hint_one_file_per_channel`)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from datasets.crops.report import IngestReport
from datasets.errors import DataError
from datasets.fields.spec import FieldSpec
from datasets.fields.tasks import Segmenter

logger = logging.getLogger(__name__)


def hint_one_file_per_channel(
    planned: list[FieldSpec], n_channels: int, report: IngestReport
) -> None:
    """Say so (a note and a warning) when one-channel fields look like one file per channel of
    fewer fields (:func:`datasets.fields.files.looks_per_channel`): each would be segmented
    alone, the cytoplasm's file as if it were nuclei."""
    from datasets.fields.files import looks_per_channel

    if n_channels != 1 or any(len(spec.channel_files) != 1 for spec in planned):
        return
    found = looks_per_channel([Path(spec.channel_files[0]) for spec in planned], "name")
    if found is not None:
        note = found.note(len(planned), "field") + (
            " (or name its parts, e.g. '{plate}_{well}_s{site}_w{channel}.tif')"
        )
        report.notes.append(note)
        logger.warning("%s", note)


#: Fields whose objects are measured to choose the crop size (evenly spread over the screen).
SIZE_SAMPLE_FIELDS = 6


def chosen_crop_size(planned: list[FieldSpec], segmenter: Segmenter, report: IngestReport) -> int:
    """One crop size for the screen from its objects' larger sides
    (:func:`datasets.crops.resize.choose_crop_size`) on a few fields: their masks, their
    segmentation, or CellProfiler's AreaShape measurements (major axis, else the equivalent
    diameter of the area); the default when no size is known. Said in the report."""
    from datasets.crops.resize import DEFAULT_CROP_SIZE, FIT_QUANTILE, choose_crop_size
    from datasets.fields.files import read_field
    from datasets.fields.tasks import find_objects, refuse_a_label_image

    step = max(1, len(planned) // SIZE_SAMPLE_FIELDS)
    sides = []
    for spec in planned[::step][:SIZE_SAMPLE_FIELDS]:
        if spec.objects is not None:
            sides.append(given_sides(spec.objects))
            continue
        try:
            image = read_field(spec, [])
            refuse_a_label_image(spec, image)
            objects, _ = find_objects(spec, image, segmenter, [])
        except DataError:
            continue  # the main pass skips it and says why
        objects = objects[~objects["touches_border"].astype(bool)]
        height = objects["bbox_max_row"].to_numpy(float) - objects["bbox_min_row"].to_numpy(float)
        width = objects["bbox_max_col"].to_numpy(float) - objects["bbox_min_col"].to_numpy(float)
        sides.append(np.maximum(height, width))
    side = np.concatenate(sides) if sides else np.zeros(0)
    side = side[np.isfinite(side) & (side > 0)]
    size = choose_crop_size(side)
    if side.size == 0:
        report.notes.append(
            f"Crop size {size} px (the default: no object size known; --crop-size overrides)"
        )
    else:
        typical = float(np.quantile(side, FIT_QUANTILE))
        more = "" if size > DEFAULT_CROP_SIZE else f" (the default {DEFAULT_CROP_SIZE} fits)"
        report.notes.append(
            f"Crop size {size} px chosen for the screen from {side.size} objects' sizes: "
            f"{int(FIT_QUANTILE * 100)}% have a larger side of up to {typical:.0f} px{more}; "
            "stored in project.toml, --crop-size overrides"
        )
    return size


def given_sides(objects: pd.DataFrame) -> npt.NDArray[np.float64]:
    """Objects' larger sides from CellProfiler measurements (NaN when none is exported)."""
    for suffix, to_side in (
        ("AreaShape_MajorAxisLength", lambda v: v),
        ("AreaShape_Area", lambda v: 2.0 * np.sqrt(np.maximum(v, 0.0) / np.pi)),
    ):
        cols = [c for c in objects.columns if str(c).endswith(suffix)]
        if cols:
            return to_side(pd.to_numeric(objects[cols[0]], errors="coerce").to_numpy(float))
    return np.full(len(objects), np.nan)

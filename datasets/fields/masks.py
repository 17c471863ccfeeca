"""Label masks of whole fields: reading and checking them, and matching them to fields by name.

For a field of key ``K`` the masks folder is searched for ``K``, the last part of ``K``, or the
first channel file's stem, each followed by nothing, ``_mask``, ``_masks`` or ``_cp_masks`` (as
cellpose writes) and ``.tif``, ``.tiff`` or ``.png``; case is ignored
(:mod:`datasets.fields.files` finds the fields).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import numpy.typing as npt

from datasets.crops.readers import read_header, read_image_file, scan_folder
from datasets.errors import DataError
from datasets.fields.files import FIELD_SUFFIXES, Skipped, rel_path, strip_suffix
from datasets.fields.spec import FieldSpec

logger = logging.getLogger(__name__)

#: Name endings of a mask file after the field's name.
MASK_ENDINGS = ("", "_mask", "_masks", "_cp_masks")
#: A file name (without suffix) that ends like a mask's.
MASK_STEM = re.compile(r"_(cp_masks|masks|mask)$", re.IGNORECASE)


def mask_problem(channels: int, size: tuple[int, ...], dtype: np.dtype, field_size) -> str | None:
    """Why a mask of this header cannot label a field of ``field_size`` (H, W); None if it can."""
    if channels != 1:
        return f"{channels} channels; a mask is one integer label image (0 = background)"
    if np.dtype(dtype).kind not in "iub":
        return (
            f"dtype {np.dtype(dtype)} is not an integer label image; save masks as uint16 or "
            "int32 labels (0 = background)"
        )
    if tuple(size) != tuple(field_size):
        return (
            f"{size[0]}x{size[1]} pixels but the field is {field_size[0]}x{field_size[1]}; "
            "a mask must have its field's size"
        )
    return None


def read_mask(path: Path, field_size: tuple[int, int]) -> npt.NDArray:
    """An integer label image of a field.

    Returns:
        (H, W) integer labels, 0 = background (bool masks as uint8).

    Raises:
        DataError: unreadable, several channels, not integer, wrong size or negative labels.
    """
    pixels, _ = read_image_file(Path(path))
    problem = mask_problem(pixels.shape[1], pixels.shape[2:], pixels.dtype, field_size)
    if problem:
        raise DataError(f"{path}: mask {problem}")
    mask = pixels[0, 0]
    if mask.dtype == np.bool_:
        return mask.astype(np.uint8)
    if mask.dtype.kind == "i" and mask.min() < 0:
        raise DataError(f"{path}: mask has negative labels; labels are 0 (background) or above")
    _refuse_scattered_labels(path, mask)
    return mask


def _refuse_scattered_labels(path: Path, mask: npt.NDArray) -> None:
    """Refuse an image whose values lie in far more separate pieces than it has values: a label
    image holds one piece per object (a few more where an object is cut), an intensity image
    (a field given as its own mask) scatters each grey level over the field.

    Raises:
        DataError: more than 3 pieces per label (at most its largest label: no sort of the
            field's pixels) and at least 30 pieces. A mask of one value (binary) is left to
            :func:`datasets.fields.tasks` to split.
    """
    from skimage.measure import label

    top = int(mask.max())
    if top == 0 or not (mask[mask != 0] != top).any():
        return
    n_pieces = int(label(mask, background=0, connectivity=2).max())
    if n_pieces >= 30 and n_pieces > 3 * top:
        raise DataError(
            f"{path}: not a label image: its values (up to {top}) lie in {n_pieces} separate "
            "pieces (a label image holds one piece per object); is it an intensity image? "
            "Give the objects' label image, or leave --masks out to segment"
        )


def mask_index(mask_root: Path) -> dict[str, Path]:
    """Lower-cased path stems (relative to the masks folder) of every mask file -> file."""
    images, _ = scan_folder(mask_root)
    return {
        strip_suffix(rel_path(p, mask_root)).lower(): p
        for p in images
        if p.suffix.lower() in FIELD_SUFFIXES
    }


def mask_candidates(spec: FieldSpec, root: Path) -> list[str]:
    first = strip_suffix(rel_path(spec.channel_files[0], root))
    bases = dict.fromkeys([spec.key, spec.key.rsplit("/", 1)[-1], first, first.rsplit("/", 1)[-1]])
    return [f"{b}{end}".lower() for b in bases for end in MASK_ENDINGS]


def attach_masks(
    fields: list[FieldSpec],
    shapes: dict[str, tuple[int, int]],
    mask_root: Path,
    root: Path,
    skipped: Skipped,
) -> list[FieldSpec]:
    """Fields with their ``mask_file`` set; fields whose mask is unusable go to ``skipped``."""
    index = mask_index(mask_root)
    field_files = {p for spec in fields for p in spec.channel_files}
    used: set[Path] = set()
    out = []
    for spec in fields:
        found = (index[c] for c in mask_candidates(spec, root) if c in index)
        mask = next((m for m in found if m not in field_files), None)
        if mask is None:
            out.append(spec)
            continue
        used.add(mask)
        try:
            header = read_header(mask)
            problem = mask_problem(
                header.channels, (header.height, header.width), header.dtype, shapes[spec.key]
            )
        except DataError as err:
            problem = str(err).removeprefix(f"{mask}: ")
        if problem:
            skipped.append((rel_path(mask, mask_root), f"mask of field {spec.key}: {problem}"))
            continue
        out.append(FieldSpec(spec.key, spec.channel_files, spec.metadata, mask, spec.objects))
    if fields and not used:  # --masks given and no mask named for any field: a mistake
        looks = mask_candidates(fields[0], root)[0]
        raise DataError(
            f"{mask_root}: no mask matches a field ({len(index)} image files there; field "
            f"{fields[0].key} looks for {looks}.tif); name each mask after its field, or leave "
            "--masks out to segment"
        )
    if len(used) < len(fields):
        logger.warning(
            "masks for %d of %d fields; the other %d are segmented",
            len(used), len(fields), len(fields) - len(used),
        )  # fmt: skip
    skipped_fields = {name.lower() for name, _ in skipped}
    for path in sorted(set(index.values()) - used - field_files):
        base = MASK_STEM.sub("", strip_suffix(rel_path(path, mask_root))).lower()
        if base in skipped_fields:
            continue  # the mask of a field skipped above: its reason is listed already
        if mask_root != root or MASK_STEM.search(strip_suffix(path.name)):
            skipped.append(
                (rel_path(path, mask_root), "mask matches no field; name it <field key>.tif")
            )
    return out

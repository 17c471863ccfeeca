"""Whole fields as OME-Zarr (OME-NGFF 0.5 on zarr 3) inside the project, so napari opens them.

The field ingest writes each field's pixels ``(C, H, W)`` in the source dtype and its label
image: one resolution level, chunked per channel plane, Blosc-zstd compressed, channel names
and display windows in the ``omero`` metadata. The NGFF metadata (multiscales, labels, plate,
well) is written by the ``ome-zarr`` package's writer, the arrays by zarr::

    PROJECT/fields/ome/PLATE.ome.zarr                    an HCS plate (plate metadata)
    PROJECT/fields/ome/PLATE.ome.zarr/B/2/0              field 0 of well B02 (well metadata)
    PROJECT/fields/ome/PLATE.ome.zarr/B/2/0/labels/objects   its label image
    PROJECT/fields/ome/fields.ome.zarr/NNNNN             a field without plate/well metadata

Fields whose metadata has a ``well`` such as ``B02`` go into their ``plate``'s HCS plate
(``napari --plugin napari-ome-zarr PROJECT/fields/ome/P1.ome.zarr`` opens it); the others
are a plain collection of images, one per field index. fields.parquet names each field's
image group (column ``ome_zarr``) and label group (column ``mask``) relative to the project,
so the project shows its fields after the source files moved or were deleted.
"""

from __future__ import annotations

import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from datasets.errors import ProjectDamagedError

OME_DIR = "fields/ome"
COLLECTION = "fields"  # the store of fields without plate/well metadata
LABELS_NAME = "objects"
OME_COLUMN = "ome_zarr"  # fields.parquet: the field's image group, relative to the project
_CHUNK = 1024  # chunk side in pixels: a field of up to 1024 x 1024 is one chunk per channel
_PALETTE = ("0000FF", "00FF00", "FF0000", "FF00FF", "00FFFF", "FFFF00", "FFFFFF")
_WELL = re.compile(r"^\s*([A-Za-z]{1,2})[\s_-]?0*(\d{1,3})\s*$")
_FIX = "re-create the project from its fields (phenoscout init --fields)"


def well_position(metadata: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """``(plate, row, column)`` of a field from its metadata (``well`` such as ``B02`` or
    ``AA7``, ``plate`` or "plate"), names safe as folder names; None without a well."""
    hit = _WELL.match(str(metadata.get("well", "")))
    if hit is None:
        return None
    plate = re.sub(r"[^A-Za-z0-9._-]+", "_", str(metadata.get("plate", "") or "plate"))
    return plate.strip("._") or "plate", hit.group(1).upper(), str(int(hit.group(2)))


@dataclass
class FieldImages:
    """Writes fields into the project's OME-Zarr stores, one :meth:`add` per field.

    A field's place in its well continues the numbering of the fields already in the table
    ``known`` (their ``ome_zarr`` paths), so a field written by an ingest that then failed is
    overwritten by the next one. Well and plate metadata are rewritten after each field.
    """

    project: Path
    channel_names: Sequence[str]
    known: Sequence[str] = ()  # ome_zarr paths of the fields already in the project
    _wells: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _plates: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    _groups: dict[str, Any] = field(default_factory=dict)
    _written: dict[str, Any] = field(default_factory=dict)  # plate metadata last written

    def __post_init__(self) -> None:
        for rel in self.known:
            parts = str(rel).split("/")
            if len(parts) == 6 and "/".join(parts[:2]) == OME_DIR:
                plate, row, col, n = parts[2].removesuffix(".ome.zarr"), *parts[3:]
                well = (plate, row, col)
                self._wells[well] = max(self._wells.get(well, 0), int(n) + 1)
                self._plates.setdefault(plate, set()).add((row, col))

    def add(
        self,
        index: int,
        key: str,
        metadata: Mapping[str, Any],
        image: npt.NDArray,
        labels: npt.NDArray | None,
    ) -> tuple[str, str]:
        """Write field ``index`` (``image`` (C, H, W), ``labels`` (H, W) or None); its image
        group and label group ("" without labels), relative to the project."""
        place = well_position(metadata)
        if place is None:
            store, inner = f"{OME_DIR}/{COLLECTION}.ome.zarr", f"{index:05d}"
        else:
            plate, row, col = place
            store, inner = f"{OME_DIR}/{plate}.ome.zarr", f"{row}/{col}/{self._wells.get(place, 0)}"
        root = self._root(store)
        shutil.rmtree(self.project / store / inner, ignore_errors=True)  # a failed ingest's
        group = root.require_group(inner)
        _write_multiscale(
            group, image, ("c", "y", "x"), key, omero={"channels": self._channels(image)}
        )
        if labels is not None:
            dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
            holder = group.require_group("labels")
            _write_multiscale(holder.require_group(LABELS_NAME), labels.astype(dtype, copy=False),
                              ("y", "x"), LABELS_NAME)  # fmt: skip
            _writer().write_label_metadata(holder, LABELS_NAME, source={"image": "../../"})
        if place is not None:
            self._register(root, place)
        rel = f"{store}/{inner}"
        return rel, (f"{rel}/labels/{LABELS_NAME}" if labels is not None else "")

    def _root(self, store: str) -> Any:
        """The OME-Zarr store's root group (zarr 3), opened once per ingest."""
        import zarr

        if store not in self._groups:
            self._groups[store] = zarr.open_group(self.project / store, mode="a", zarr_format=3)
        return self._groups[store]

    def _channels(self, image: npt.NDArray) -> list[dict[str, Any]]:
        """omero channel entries: name, colour and a display window (0.1-99.9 percentiles)."""
        sample = image[:, ::4, ::4].reshape(image.shape[0], -1).astype(np.float64)
        low, high = np.percentile(sample, [0.1, 99.9], axis=1)
        if image.dtype.kind in "iu":
            info = np.iinfo(image.dtype)
            lo, hi = np.full(len(low), info.min), np.full(len(low), info.max)
        else:
            lo, hi = sample.min(axis=1), sample.max(axis=1)
        return [
            {"label": str(name), "color": _PALETTE[i % len(_PALETTE)] if len(low) > 1 else "FFFFFF",
             "window": {"min": float(lo[i]), "max": float(hi[i]), "start": float(low[i]),
                        "end": float(max(high[i], low[i] + 1))}, "active": True}
            for i, name in enumerate(self.channel_names)
        ]  # fmt: skip

    def _register(self, root: Any, place: tuple[str, str, str]) -> None:
        """Count the field in its well; rewrite the well's and the plate's metadata."""
        write_plate_metadata, write_well_metadata = (
            _writer().write_plate_metadata,
            _writer().write_well_metadata,
        )

        plate, row, col = place
        self._wells[place] = self._wells.get(place, 0) + 1
        wells = self._plates.setdefault(plate, set())
        wells.add((row, col))
        write_well_metadata(root[f"{row}/{col}"],
                            [{"path": str(n)} for n in range(self._wells[place])])  # fmt: skip
        rows = sorted({r for r, _ in wells}, key=lambda r: (len(r), r))
        cols = sorted({c for _, c in wells}, key=int)
        paths = [f"{r}/{c}" for r, c in sorted(wells, key=lambda w: (len(w[0]), w[0], int(w[1])))]
        count = max(n for (p, *_), n in self._wells.items() if p == plate)
        if self._written.get(plate) != (paths, count):  # unchanged for a further field
            write_plate_metadata(root, rows, cols, paths, name=plate, field_count=count)
            self._written[plate] = (paths, count)


def _writer() -> Any:
    """``ome_zarr.writer``, imported quietly (its Scaler default warns at import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import ome_zarr.writer

    return ome_zarr.writer


def _write_multiscale(
    group: Any, data: npt.NDArray, axes: tuple[str, ...], name: str, **metadata: Any
) -> None:
    """One resolution level ``s0`` of ``data`` in ``group`` (chunked per channel plane, up to
    1024 x 1024, Blosc-zstd with bit shuffle; every chunk written, also empty ones) and its
    multiscales metadata written by ``ome_zarr.writer``. The array is written with zarr
    directly: ome-zarr's write_image goes through a Dask graph per field, 4x the time."""
    from zarr.codecs import BloscCodec

    plane = tuple(min(n, _CHUNK) for n in data.shape[-2:])
    chunks = (1,) * (data.ndim - 2) + plane
    group.create_array("s0", data=data, chunks=chunks, dimension_names=axes,
                       compressors=BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"),
                       config={"write_empty_chunks": True})  # fmt: skip
    scale = [{"type": "scale", "scale": [1.0] * data.ndim}]
    _writer().write_multiscales_metadata(
        group, [{"path": "s0", "coordinateTransformations": scale}], axes=list(axes),
        name=name, metadata=metadata)  # fmt: skip


def read_image(project: Path, rel: str) -> npt.NDArray:
    """The full-resolution array of the OME-Zarr image group ``rel`` in ``project``.

    Raises:
        ProjectDamagedError: the group or a chunk of it is missing or unreadable (the message
            names the file).
    """
    import zarr

    path = Path(project) / rel
    try:
        meta: Any = zarr.open_group(path, mode="r").attrs.asdict()
        dataset = str(meta["ome"]["multiscales"][0]["datasets"][0]["path"])
        array = zarr.open_array(path / dataset, mode="r")
    except Exception as err:  # zarr's errors for missing or garbled metadata vary
        missing = not (path / "zarr.json").is_file()
        where = path if missing else path / "zarr.json"
        cause = "no such OME-Zarr image" if missing else err
        raise ProjectDamagedError(where, cause, _FIX) from err
    _check_chunks(array, path / dataset)
    try:
        return np.asarray(array[...])
    except Exception as err:  # a garbled chunk: the codec's own error
        chunk = _bad_chunk(array, path / dataset)
        raise ProjectDamagedError(chunk, err, _FIX) from err


def _chunk_file(array: Any, folder: Path, coords: tuple[int, ...]) -> Path:
    return folder / array.metadata.encode_chunk_key(coords)


def _check_chunks(array: Any, folder: Path) -> None:
    """Every chunk was written (write_empty_chunks): a missing file is a damaged image."""
    for coords in np.ndindex(*array.cdata_shape):
        chunk = _chunk_file(array, folder, coords)
        if not chunk.is_file():
            raise ProjectDamagedError(chunk, "chunk file missing", _FIX)


def _bad_chunk(array: Any, folder: Path) -> Path:
    """The first chunk of ``array`` that cannot be decoded (the array's folder when none)."""
    for coords in np.ndindex(*array.cdata_shape):
        try:
            array.blocks[coords]
        except Exception:  # the codec's own error, whichever it is
            return _chunk_file(array, folder, coords)
    return folder

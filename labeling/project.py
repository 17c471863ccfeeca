"""A project folder: config, cell table, pixels, features and the label store, opened as one.

```
PROJECT/
  project.toml     ProjectConfig (schema version, channels, ingest, loop, seed)
  cells.parquet    one row per cell (datasets.cells)
  pixels/          crops (and object masks) per ingest part, sharded Zarr (datasets.pixels.arrays)
  features/        morphology features per part (datasets.features)
  fields.parquet   projects made from whole fields: one row per field (datasets.fields.store)
  fields/ome/      each field's pixels and label image, OME-Zarr (datasets.fields.ome)
  labels.db        the label store (labeling.store.labels)
  exports/         what the user exported
```
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from datasets.config import CropSource, IngestConfig, default_channels, rgb_channels
from datasets.errors import DataError
from datasets.fields.spec import SEGMENT_METHODS, FieldSpec
from datasets.progress import Progress
from labeling.config import ProjectConfig, load_config, save_config
from labeling.errors import ConfigError, ProjectError
from labeling.store.labels import LabelStore

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd

    from datasets.crops.ingest import IngestReport
    from datasets.parallel import Runner
    from datasets.pixels.store import PixelStore
    from datasets.segmentation.classical import SegmentConfig

logger = logging.getLogger(__name__)

CONFIG_FILE = "project.toml"
DB_FILE = "labels.db"

__all__ = [
    "CONFIG_FILE",
    "DB_FILE",
    "CropSource",
    "FieldSource",
    "IngestRun",
    "Project",
    "add_crops",
    "add_fields",
    "create_project",
    "create_project_from_fields",
    "open_project",
]


@dataclass(frozen=True)
class FieldSource:
    """Whole fields of view to ingest, and how their objects are found and kept."""

    fields: list[FieldSpec]  # from datasets.fields.files.find_fields or a CellProfiler export
    #: for fields without a mask or objects: "classical" (datasets.segmentation), "unet"
    #: (models.segmentation.segmentation, trained on the fields that have masks, else on
    #: generated demo fields) or "given" (such fields are skipped)
    segment: str = "classical"
    segment_config: SegmentConfig | None = None  # classical settings; "unet" uses its channel
    keep_border: bool = False  # keep objects touching a field's border
    #: ground truth ``field,object,label`` (datasets.fields.store.read_truth_csv)
    truth_csv: Path | None = None

    @classmethod
    def of(cls, fields: list[FieldSpec] | FieldSource) -> FieldSource:
        """``fields`` as a source: a bare list is segmented as the defaults say."""
        return fields if isinstance(fields, FieldSource) else cls(list(fields))


@dataclass(frozen=True)
class IngestRun:
    """Where an ingest's work runs and what it reports while it runs (all optional)."""

    progress: Progress | None = None  # progress(done, total) over the ingest: cells or fields
    feature_progress: Progress | None = None  # the same over the features, in cells
    train_progress: Progress | None = None  # the same over U-Net training, in steps
    #: where reading, segmenting, cropping and features run (datasets.parallel: this process,
    #: a local Dask cluster or an existing one); this process when None
    runner: Runner | None = None


class Project:
    """An open project folder. Cheap to construct; heavy parts load on first use."""

    def __init__(self, path: Path, config: ProjectConfig) -> None:
        self.path = Path(path)
        self.config = config

    @cached_property
    def store(self) -> LabelStore:
        """The project's label store (labels.db)."""
        return LabelStore(self.path / DB_FILE)

    @cached_property
    def pixels(self) -> PixelStore:
        """Read-only access to the stored crops."""
        from datasets.pixels.store import PixelStore

        return PixelStore(self.path)

    def cells(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The cell table (one row per cell; see ``datasets.cells``)."""
        from datasets.cells import read_cells

        return read_cells(self.path, columns=columns)

    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.config.channels]

    @property
    def channel_colours(self) -> list[str]:
        return [c.colour for c in self.config.channels]

    def close(self) -> None:
        """Close the label store if it was opened."""
        if "store" in self.__dict__:
            self.store.close()
            del self.__dict__["store"]


def open_project(path: Path) -> Project:
    """Open an existing project folder.

    Raises:
        ProjectError: when ``path`` is not a complete PhenoScout project.
        ConfigError: when its project.toml is invalid or of a newer schema.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ProjectError(f"{path}: is a file, not a project folder")
    if not path.is_dir():
        raise ProjectError(f"{path}: no such project folder; create one with `phenoscout init`")
    for required in (CONFIG_FILE, "cells.parquet", DB_FILE):
        if not (path / required).exists():
            raise ProjectError(
                f"{path}: not a complete PhenoScout project ({required} is missing); "
                "re-create it with `phenoscout init`"
            )
    project = Project(path, load_config(path / CONFIG_FILE))
    _ = project.store  # open labels.db now: a damaged or newer store is reported here
    from datasets.pixels.npy_migration import migrate_pixels, stored_per_part

    migrate_pixels(path)  # .npy pixel parts of earlier versions become Zarr, once, with backup
    if stored_per_part(path):  # then one array per plate instead of one per part, once
        from datasets.pixels.plate_migration import migrate_to_plates

        migrate_to_plates(path)
    return project


def create_project(
    path: Path,
    crops: Path | CropSource,
    ingest: IngestConfig | None = None,
    *,
    seed: int = 0,
    run: IngestRun | None = None,
    then: Callable[[Project], object] | None = None,
) -> tuple[Project, IngestReport]:
    """Create a project from a folder of single-cell crops.

    Ingests the crops (cell table + pixels), writes project.toml, creates the label store with
    every cell, and computes morphology features. Nothing is left behind when it fails.

    Args:
        path: the new project folder (must not exist, or be empty).
        crops: folder of crops (TIFF, PNG, JPEG, npz), read recursively, or a
            :class:`CropSource` with its ground truth and metadata CSVs.
        ingest: crop size, scale, normalisation; defaults when None.
        seed: the project's seed.
        run: progress over the ingest (in cells) and the features, and where reading and
            features run (:class:`IngestRun`); in this process, silently, when None.
        then: a last step on the new project (e.g. importing labels); when it fails, the
            project is removed like any other failed create.

    Raises:
        ProjectError: when ``path`` exists and is not empty.
        DataError: when no crop can be read, or a CSV is bad.
    """
    from datasets.crops.ingest import ingest_crops

    source = CropSource.of(crops)
    ingest = ingest or IngestConfig()
    run = run or IngestRun()

    def ingest_into(folder: Path) -> IngestReport:
        return ingest_crops(
            source, folder, ingest, progress=run.progress, seed=seed, runner=run.runner
        )

    return _create(Path(path), ingest, seed, ingest_into, run, then)


def create_project_from_fields(
    path: Path,
    fields: list[FieldSpec] | FieldSource,
    ingest: IngestConfig | None = None,
    *,
    seed: int = 0,
    run: IngestRun | None = None,
    then: Callable[[Project], object] | None = None,
) -> tuple[Project, IngestReport]:
    """Create a project from whole fields of view: each object of each field becomes a cell.

    Fields with a mask file or given object centres use them; the others are segmented by
    ``fields.segment``. Then as :func:`create_project`: project.toml, label store, features,
    and nothing left behind on failure.

    Args:
        path: the new project folder (must not exist, or be empty).
        fields: the fields (:func:`datasets.fields.files.find_fields` or a CellProfiler
            export), or a :class:`FieldSource`: the fields, the segmentation of those without
            a mask or objects (a U-Net is never applied to a field it was trained on, as those
            keep their masks), border objects kept or not, and a ground truth CSV.
        ingest: crop size, normalisation, channel names; defaults when None.
        seed: the project's seed (also seeds U-Net training).
        run: progress over the ingest (in fields), the features (in cells) and U-Net training
            (in steps), and where fields are read, segmented and cropped and the features
            computed, as for :func:`create_project`.
        then: a last step on the new project, as for :func:`create_project`.

    Raises:
        ProjectError: when ``path`` exists and is not empty.
        ConfigError: for an unknown ``segment``.
        DataError: no field readable, no object found, or a bad truth CSV.
    """
    source = FieldSource.of(fields)
    _check_segment(source.segment)
    path = Path(path)
    _check_new(path)
    ingest = ingest or IngestConfig()
    run = run or IngestRun()
    ingest_part = field_ingest(source, ingest, seed, run)

    def ingest_into(folder: Path) -> IngestReport:
        report = ingest_part(folder)
        report.labels_csv = str(source.truth_csv) if source.truth_csv is not None else None
        return report

    return _create(path, ingest, seed, ingest_into, run, then)


def _check_segment(segment: str) -> None:
    if segment not in SEGMENT_METHODS:
        raise ConfigError(f"segment {segment!r}: allowed {SEGMENT_METHODS}")


def field_ingest(
    source: FieldSource, ingest: IngestConfig, seed: int, run: IngestRun
) -> Callable[[Path], IngestReport]:
    """``folder -> report``: ingest ``source`` into a project folder (the truth CSV is read and
    a U-Net, if any, trained now, before the ingest)."""
    from datasets.fields.ingest import FieldInput, ingest_fields
    from datasets.fields.store import read_truth_csv

    truth_csv = source.truth_csv
    truth = read_truth_csv(Path(truth_csv)) if truth_csv is not None else None
    segmenter = _segmenter(source, seed, run.train_progress)

    def ingest_into(folder: Path) -> IngestReport:
        objects = FieldInput(source.fields, segmenter, source.keep_border, truth)
        return ingest_fields(
            objects, folder, ingest, progress=run.progress, seed=seed, runner=run.runner
        )

    return ingest_into


def _segmenter(
    source: FieldSource, seed: int, train_progress: Progress | None
) -> Callable[[npt.NDArray], npt.NDArray]:
    """The ``(C, H, W) -> (H, W) labels`` function for fields without masks or objects."""
    fields, segment, config = source.fields, source.segment, source.segment_config
    needs = [f for f in fields if f.mask_file is None and f.objects is None]
    if segment == "given" or not needs:
        return _no_segmentation
    if segment == "classical":
        from datasets.segmentation.classical import ClassicalSegmenter

        return ClassicalSegmenter(config)
    from models.segmentation.segmentation import make_unet_segmenter

    pairs = _train_pairs([f for f in fields if f.mask_file is not None])
    channel = config.channel if config is not None else 0
    from labeling.simulate.split import default_cache_dir

    return make_unet_segmenter(
        pairs or None,
        channel=channel,
        seed=seed,
        progress=train_progress,
        cache=default_cache_dir() / "segmenters",  # one per masks and settings: trained once
    )


def _no_segmentation(image: npt.NDArray) -> npt.NDArray:
    raise DataError(
        "no mask or object list for this field and segmentation is 'given'; add its mask to "
        "the masks folder or segment it (classical or unet)"
    )


def _train_pairs(fields: list[FieldSpec]) -> list[tuple[npt.NDArray, npt.NDArray]]:
    """(field (C, H, W), labels (H, W)) of every field with a readable mask."""
    from datasets.fields.files import read_field
    from datasets.fields.masks import read_mask

    pairs = []
    for spec in fields:
        if spec.mask_file is None:
            continue
        try:
            image = read_field(spec)
            pairs.append((image, read_mask(spec.mask_file, image.shape[1:])))
        except DataError as err:  # the field is skipped with this reason by the ingest
            logger.warning("not training on field %s: %s", spec.key, err)
    return pairs


def _check_new(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ProjectError(f"{path}: is a file; choose a new folder for the project")
    if path.exists() and any(path.iterdir()):
        raise ProjectError(
            f"{path}: already exists and is not empty; choose a new folder, "
            "or add images to it with `phenoscout add`"
        )


def _create(
    path: Path,
    ingest: IngestConfig,
    seed: int,
    run_ingest: Callable[[Path], IngestReport],
    run: IngestRun,
    then: Callable[[Project], object] | None = None,
) -> tuple[Project, IngestReport]:
    """The steps every new project shares: ingest, project.toml, label store, features, and
    ``then``; all or nothing: on any failure what was created is removed again."""
    from datasets.features import compute_morphology

    _check_new(path)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    project: Project | None = None
    try:
        report = run_ingest(path)
        channels = default_channels(len(report.channel_names), tuple(report.channel_names))
        config = ProjectConfig(
            name=path.name,
            channels=channels,
            # the numbers ingest used, never "chosen"
            ingest=dataclasses.replace(ingest, scale=report.scale, crop_size=report.crop_size),
            dropped_channels=tuple(str(c) for c in report.dropped_channels),
            seed=seed,
        )
        save_config(config, path / CONFIG_FILE)
        project = Project(path, config)
        with LabelStore(path / DB_FILE, create=True) as store:
            store.add_cells(project.cells(columns=["cell_id"])["cell_id"].tolist())
        compute_morphology(
            path, progress=run.feature_progress, modality=ingest.modality, runner=run.runner
        )
        report.modality, report.modality_detected = ingest.modality, ingest.modality == "auto"
        if ingest.modality == "auto":  # store what was detected, never "auto"
            from datasets.features import saved_modality

            report.modality = saved_modality(path)
            detected = dataclasses.replace(config.ingest, modality=report.modality)
            config = dataclasses.replace(config, ingest=detected)
        if report.modality == "stained_rgb" and len(channels) == 3:
            given = tuple(report.channel_names) if ingest.channel_names else ()
            config = dataclasses.replace(config, channels=rgb_channels(given))
            report.channel_names = tuple(c.name for c in config.channels)
        if config is not project.config:
            save_config(config, path / CONFIG_FILE)
            project = Project(path, config)
        if then is not None:
            then(project)
    except BaseException:
        if project is not None:
            project.close()
        _remove_partial(path, created)
        raise
    logger.info("created project %s with %d cells", path, report.n_cells)
    return project, report


def _remove_partial(path: Path, created: bool) -> None:
    """Remove what a failed create wrote, keeping a folder the user made."""
    if created:
        shutil.rmtree(path, ignore_errors=True)
        return
    for child in path.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def add_crops(
    project: Project, crops: Path | CropSource, *, run: IngestRun | None = None
) -> IngestReport:
    """Add a folder of crops (a new plate) to an existing project; arguments as
    :func:`create_project`.

    The crops must have the project's channel count; they get their own normalisation group
    when the metadata has a plate column, else the project's intensity scale (see
    :func:`_keep_scale`). Labels already given are untouched.
    """
    from datasets.crops.ingest import ingest_crops

    source = CropSource.of(crops)
    run = run or IngestRun()
    ingest = dataclasses.replace(project.config.ingest, channel_names=tuple(project.channel_names))
    report = ingest_crops(
        source, project.path, ingest, progress=run.progress, seed=project.config.seed,
        runner=run.runner,
    )  # fmt: skip
    _note_other_kind(project, report)
    _note_shared_plates(project, report)
    _keep_scale(project, report)
    _register_new_cells(project, run)
    return report


def _note_shared_plates(project: Project, report: IngestReport) -> None:
    """A note when the part just added names plates the project holds already: their cells
    join those plates (per-well counts and per-plate normalisation pool them), which is right
    for more sites of the same plate and wrong for a new plate that reuses the names."""
    from datasets.cells import read_cells

    if report.part == 0:
        return
    try:
        cells = read_cells(project.path, ["part", "plate"])
    except DataError:  # no plate column: nothing to share
        return
    new = cells["part"] == report.part
    shared = sorted(set(cells.loc[new, "plate"].dropna()) & set(cells.loc[~new, "plate"].dropna()))
    if shared:
        report.notes.append(
            f"Plate name(s) {', '.join(map(str, shared[:5]))} are the project's already: these "
            "cells join those plates (per-well counts add up); if this is a new plate, give it "
            + ("a name of its own in the file names ({plate} in --pattern)"
               if report.layout == "whole fields" else "a name of its own in metadata.csv")
        )  # fmt: skip


def other_kind(project: Project, report: IngestReport) -> list[str]:
    """How the images ``report`` ingested differ from the project's first part in bit depth or
    in being colour (RGB) images (``["bit depth uint8 (the project's: uint16)"]``); empty when
    they are alike or either is unknown. Another kind is on another intensity scale, which the
    features would read as a phenotype. How files are laid out (npz stacks, one file per
    channel, channels first or last) does not count: it changes no intensity."""
    from datasets.cells import read_parts

    parts = read_parts(project.path)
    first = parts[0] if parts else {}
    out = []
    if first.get("dtype") and report.dtype and first["dtype"] != report.dtype:
        out.append(f"bit depth {report.dtype} (the project's: {first['dtype']})")
    if first.get("layout") and report.layout:
        new, old = _colour(report.layout), _colour(first["layout"])
        if new != old:
            out.append(f"{new} images (the project's: {old})")
    return out


def _colour(layout: str) -> str:
    """``"colour (RGB)"`` for a layout note of RGB, palette or colour files, else ``"grey or
    multichannel"`` (a mixed folder's note counts as colour when any of its files are)."""
    colour = "RGB" in layout or "colour" in layout
    return "colour (RGB)" if colour else "grey or multichannel"


def _note_other_kind(project: Project, report: IngestReport) -> None:
    """A note when the crops just added (``report``'s part) are of another kind than the
    project's first part (:func:`other_kind`): an 8-bit RGB folder added to a 16-bit
    fluorescence screen is on another intensity scale."""
    other = other_kind(project, report)
    if other and report.part > 0:
        report.notes.append(
            "These crops differ from the project's: " + "; ".join(other) + ". Their intensities "
            "are on another scale; the model will read that as a difference of phenotype."
        )


def add_fields(
    project: Project, fields: list[FieldSpec] | FieldSource, *, run: IngestRun | None = None
) -> IngestReport:
    """Add whole fields of view (a new plate) to an existing project; arguments as
    :func:`create_project_from_fields`. The fields must have the project's channel count and
    keys not used by the project yet. Labels already given are untouched.
    """
    source = FieldSource.of(fields)
    _check_segment(source.segment)
    ingest = dataclasses.replace(project.config.ingest, channel_names=tuple(project.channel_names))
    run = run or IngestRun()
    ingest_into = field_ingest(source, ingest, project.config.seed, run)
    report = ingest_into(project.path)
    _note_shared_plates(project, report)
    _keep_scale(project, report)
    _register_new_cells(project, run)
    return report


def _keep_scale(project: Project, report: IngestReport) -> None:
    """A new part (``report``'s, just added) normalised over the dataset takes the project's
    ranges (:func:`datasets.pixels.ranges.dataset_ranges`: the first part's, when no part is
    normalised per plate), so its cells are scaled as the project's are: scaled to its own
    range, a folder of one phenotype (G2 cells, twice the DNA) was stretched to look like the
    screen. A part with a plate column (normalised per plate) keeps ranges of its own, and so
    does a part without one added to a project normalised per plate (a plate of its own; the
    report says so)."""
    from datasets.pixels.ranges import adopt_ranges, dataset_ranges

    if report.normalise_by != "dataset":
        return
    ranges = dataset_ranges(project.path)  # the new part is "dataset" too: the old parts decide
    if ranges is None:  # the project normalises per plate: the new part is a plate of its own
        report.new_group = report.part > 0
        return
    adopt_ranges(project.path, ranges, part=report.part)
    report.ranges_from = 0


def _register_new_cells(project: Project, run: IngestRun) -> None:
    """After an ingest added a part: the store learns the new cells, features are computed."""
    from datasets.features import compute_morphology

    project.__dict__.pop("pixels", None)
    project.store.add_cells(project.cells(columns=["cell_id"])["cell_id"].tolist())
    compute_morphology(project.path, progress=run.feature_progress, runner=run.runner)

"""A project folder: config, cell table, pixels, features and the label store, opened as one.

```
PROJECT/
  project.toml     ProjectConfig (schema version, channels, ingest, loop, seed)
  cells.parquet    one row per cell (datasets.cells)
  pixels/          memory-mapped crops per ingest part (datasets.pixels)
  features/        morphology features per part (datasets.features)
  labels.db        the label store (labeling.store)
  exports/         what the user exported
```
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from datasets.config import IngestConfig, default_channels
from labeling.config import ProjectConfig, load_config, save_config
from labeling.errors import ProjectError
from labeling.store import LabelStore

if TYPE_CHECKING:
    import pandas as pd

    from datasets.ingest import IngestReport
    from datasets.pixels import PixelStore

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
CONFIG_FILE = "project.toml"
DB_FILE = "labels.db"


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
        from datasets.pixels import PixelStore

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
    return project


def create_project(
    path: Path,
    crops: Path,
    ingest: IngestConfig | None = None,
    *,
    labels_csv: Path | None = None,
    metadata_csv: Path | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    feature_progress: Progress | None = None,
) -> tuple[Project, IngestReport]:
    """Create a project from a folder of single-cell crops.

    Ingests the crops (cell table + pixels), writes project.toml, creates the label store with
    every cell, and computes morphology features. Nothing is left behind when it fails.

    Args:
        path: the new project folder (must not exist, or be empty).
        crops: folder of crops (TIFF, PNG, JPEG, npz), read recursively.
        ingest: crop size, scale, normalisation; defaults when None.
        labels_csv: ground truth ``path,label`` (simulation and evaluation only).
        metadata_csv: ``path`` + metadata columns carried to every export.
        seed: the project's seed.
        progress: ``progress(done, total)`` over the ingest, in cells.
        feature_progress: the same over the feature computation.

    Raises:
        ProjectError: when ``path`` exists and is not empty.
        DataError: when no crop can be read, or a CSV is bad.
    """
    from datasets.features import compute_morphology
    from datasets.ingest import ingest_crops

    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ProjectError(
            f"{path}: already exists and is not empty; choose a new folder, "
            "or add images to it with `phenoscout add`"
        )
    ingest = ingest or IngestConfig()
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        report = ingest_crops(
            Path(crops), path, ingest,
            labels_csv=labels_csv, metadata_csv=metadata_csv, progress=progress, seed=seed,
        )
        channels = default_channels(len(report.channel_names), tuple(report.channel_names))
        config = ProjectConfig(
            name=path.name,
            channels=channels,
            ingest=ingest,
            dropped_channels=tuple(str(c) for c in report.dropped_channels),
            seed=seed,
        )
        save_config(config, path / CONFIG_FILE)
        project = Project(path, config)
        with LabelStore(path / DB_FILE, create=True) as store:
            store.add_cells(project.cells(columns=["cell_id"])["cell_id"].tolist())
        compute_morphology(path, progress=feature_progress)
    except BaseException:
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
    project: Project,
    crops: Path,
    *,
    labels_csv: Path | None = None,
    metadata_csv: Path | None = None,
    progress: Progress | None = None,
    feature_progress: Progress | None = None,
) -> IngestReport:
    """Add a folder of crops (a new plate) to an existing project.

    The crops must have the project's channel count; they get their own normalisation group
    when the metadata has a plate column. Labels already given are untouched.
    """
    from datasets.features import compute_morphology
    from datasets.ingest import ingest_crops

    ingest = dataclasses.replace(
        project.config.ingest, channel_names=tuple(project.channel_names)
    )
    report = ingest_crops(
        Path(crops), project.path, ingest,
        labels_csv=labels_csv, metadata_csv=metadata_csv, progress=progress,
        seed=project.config.seed,
    )
    project.__dict__.pop("pixels", None)
    project.store.add_cells(project.cells(columns=["cell_id"])["cell_id"].tolist())
    compute_morphology(project.path, progress=feature_progress)
    return report

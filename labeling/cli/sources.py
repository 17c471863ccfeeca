"""How each source becomes cells of a project for ``init`` and ``add``: a folder of crops, a
folder of whole fields (segmented or with masks), or a CellProfiler export (objects given).
Each function reads its flags, shows progress, and calls :mod:`labeling.project`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from labeling.cli.ingest_options import ingest_config, segment_config
from labeling.cli.progress import ingest_runner, tqdm_progress

__all__ = [
    "add_crops_to",
    "add_fields_to",
    "crop_source",
    "field_source",
    "init_crops",
    "init_fields",
]


def crop_source(args: argparse.Namespace):  # -> CropSource
    from datasets.config import CropSource

    return CropSource(Path(args.crops), args.labels_csv, args.metadata_csv, args.pattern)


def init_crops(args: argparse.Namespace, then=None):  # -> (Project, IngestReport)
    from labeling.project import IngestRun, create_project

    with (
        ingest_runner(args) as runner,
        tqdm_progress("ingest") as progress,
        tqdm_progress("features") as fprogress,
    ):
        run = IngestRun(progress=progress, feature_progress=fprogress, runner=runner)
        return create_project(
            Path(args.project), crop_source(args), ingest_config(args), seed=args.seed, run=run,
            then=then,
        )  # fmt: skip


def init_fields(args: argparse.Namespace, then=None):  # -> (Project, IngestReport)
    from labeling.project import FieldSource, IngestRun, create_project_from_fields

    if args.fields:
        from datasets.fields.files import find_fields

        masks = Path(args.masks) if args.masks else None
        fields, skipped = find_fields(Path(args.fields), args.pattern, masks)
        segment = args.segment or "classical"
    else:
        from datasets.cellprofiler.reader import cellprofiler_channels, read_cellprofiler

        objects = Path(args.cellprofiler)
        images_csv = Path(args.images_csv) if args.images_csv else None
        root = Path(args.image_root) if args.image_root else None
        fields, skipped = read_cellprofiler(
            objects, images_csv, object_name=args.object_name, image_root=root
        )
        segment = "given"
    ingest = ingest_config(args)
    if args.cellprofiler and not ingest.channel_names:  # CellProfiler's own channel names
        names = cellprofiler_channels(objects, images_csv, object_name=args.object_name)
        ingest = dataclasses.replace(ingest, channel_names=tuple(names))
    _say_unet(segment)
    with (
        ingest_runner(args) as runner,
        tqdm_progress("train segmenter", unit="step") as train,
        tqdm_progress("fields", unit="field") as progress,
        tqdm_progress("features") as fp,
    ):
        source = FieldSource(fields, segment, segment_config(args), args.keep_border, args.truth)
        run = IngestRun(progress, fp, train, runner)
        project, report = create_project_from_fields(
            Path(args.project), source, ingest, seed=args.seed, run=run, then=then
        )
    report.skipped[:0] = skipped
    return project, report


def add_crops_to(args: argparse.Namespace, project):  # -> IngestReport
    from labeling.project import IngestRun, add_crops

    with (
        ingest_runner(args) as runner,
        tqdm_progress("ingest") as progress,
        tqdm_progress("features") as fprogress,
    ):
        run = IngestRun(progress=progress, feature_progress=fprogress, runner=runner)
        return add_crops(project, crop_source(args), run=run)


def field_source(args: argparse.Namespace):  # -> (FieldSource, skipped files)
    """The fields of ``--fields`` (grouped by ``--pattern``, with ``--masks``), how their objects
    are found (``--segment``, default classical), and the files left out with their reasons."""
    from datasets.fields.files import find_fields
    from labeling.project import FieldSource

    masks = Path(args.masks) if args.masks else None
    fields, skipped = find_fields(Path(args.fields), args.pattern, masks)
    segment = args.segment or "classical"
    truth = getattr(args, "truth", None)
    return FieldSource(fields, segment, segment_config(args), args.keep_border, truth), skipped


def add_fields_to(args: argparse.Namespace, project):  # -> IngestReport
    from labeling.project import IngestRun, add_fields

    source, skipped = field_source(args)
    _say_unet(source.segment)
    with (
        ingest_runner(args) as runner,
        tqdm_progress("train segmenter", unit="step") as train,
        tqdm_progress("fields", unit="field") as progress,
        tqdm_progress("features") as fp,
    ):
        report = add_fields(project, source, run=IngestRun(progress, fp, train, runner))
    report.skipped[:0] = skipped
    return report


def _say_unet(segment: str) -> None:
    """One line before minutes of silence (a progress bar shows only on a terminal)."""
    if segment == "unet":
        print(
            "segment unet: training the U-Net segmenter first (minutes on a CPU; kept in the "
            "cache, so the same masks train once)",
            file=sys.stderr,
            flush=True,
        )

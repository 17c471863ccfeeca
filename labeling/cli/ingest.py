"""The ``phenoscout`` subcommands that bring images in: ``demo``, ``init`` and ``add``.

``init`` takes exactly one source: a folder of single-cell crops (``--crops``), a folder of
whole fields of view (``--fields``, optionally grouped by ``--pattern`` and with ``--masks``),
or a CellProfiler export (``--cellprofiler``). Like the rest of the command line, each command
imports what it needs when it runs. The parts: :mod:`~labeling.cli.demo` (``demo``),
:mod:`~labeling.cli.ingest_options` (the options and their checks),
:mod:`~labeling.cli.sources` (crops, fields, CellProfiler into a project) and
:mod:`~labeling.cli.progress` (progress bars, the Dask runner).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from datasets.words import count
from labeling.cli.demo import add_demo_parser
from labeling.cli.ingest_options import (
    add_auto_choice,
    add_field_args,
    add_ingest_args,
    check_add_options,
    check_init_options,
)
from labeling.cli.sources import add_crops_to, add_fields_to, init_crops, init_fields

__all__ = ["add_ingest_parsers"]


def _cmd_init(args: argparse.Namespace) -> int:
    from labeling.io.imports import import_labels
    from labeling.store.names import class_list

    check_init_options(args)
    classes = class_list(args.classes or "")  # a bad name stops here, before any ingest
    imported: list[int] = []

    def then(project) -> None:  # inside the create: a failed import leaves no project behind
        for name in classes:
            project.store.add_class(name)
        if args.import_labels:
            imported.append(import_labels(project, Path(args.import_labels)))

    if args.crops:
        project, report = init_crops(args, then)
    else:
        project, report = init_fields(args, then)
    print(report.summary())
    if classes:
        keys = {c.name: c.key for c in project.store.classes(include_pseudo=False)}
        print("classes: " + ", ".join(f"{n} [{keys.get(n) or '-'}]" for n in classes))
    if imported:
        print(f"imported {count(imported[0], 'label')} from {args.import_labels}")
    print(f"project ready: {project.path}  (next: phenoscout app {shlex.quote(str(project.path))})")
    return 0


def _cmd_add(args: argparse.Namespace) -> int:
    from datasets.errors import DataError
    from labeling.io.imports import check_label_csv, import_labels
    from labeling.project import open_project

    check_add_options(args)
    project = open_project(Path(args.project))
    if args.import_labels:  # a bad file stops before any cell is added
        check_label_csv(project, Path(args.import_labels))
    report = add_crops_to(args, project) if args.crops else add_fields_to(args, project)
    print(report.summary())
    if args.import_labels:
        try:
            n = import_labels(project, Path(args.import_labels), part=report.part)
        except DataError as e:
            raise DataError(
                f"{e}. The {report.n_cells} cells were added; import the labels once fixed "
                f"with: phenoscout import-labels {args.project} {args.import_labels}"
            ) from e
        print(f"imported {count(n, 'label')} from {args.import_labels}")
    return 0


def _add_init_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="create a project from cell crops, whole fields or a CellProfiler export",
        description="Create a project folder: ingest crops (TIFF, PNG, JPEG, npz), or segment "
        "whole fields into cells, or crop a CellProfiler export's objects; normalise, compute "
        "features, create the label store.",
    )
    p.add_argument("project", help="new project folder")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--crops", help="folder of single-cell images (searched recursively)")
    source.add_argument("--fields", help="folder of whole fields of view (TIFF/OME-TIFF/PNG)")
    source.add_argument(
        "--cellprofiler", help="CellProfiler per-object CSV (e.g. Nuclei.csv) or SQLite .db"
    )
    add_ingest_args(p)
    add_field_args(p)
    p.add_argument("--images-csv", help="CellProfiler per-image CSV (default: Image.csv beside)")
    p.add_argument(
        "--image-root", help="folder to look for CellProfiler's images in when its paths are stale"
    )
    p.add_argument("--object-name", help="CellProfiler object to use (default: Nuclei, else Cells)")
    p.add_argument(
        "--crop-size",
        type=int,
        default=None,
        help="crops are padded or centre-cropped to this size (default: 64 for crops; for "
        "fields and CellProfiler objects one size for the screen so 90%% of the objects fit, "
        "at least 64; the number is stored in project.toml)",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=None,
        help="dataset-wide rescale factor (default: 1, or when crops are larger than the crop "
        "size one factor so 90%% of them fit; the number is stored in project.toml)",
    )
    p.add_argument("--channels", help="comma-separated channel names, e.g. DNA,Tubulin")
    p.add_argument(
        "--keep-empty-channels",
        action="store_true",
        help="keep channels that are all zero in every image",
    )
    add_auto_choice(
        p,
        "--normalise-by",
        ["dataset", "plate"],
        "intensity ranges per dataset or per plate "
        "(auto: per plate when metadata has a plate column)",
    )
    add_auto_choice(
        p,
        "--modality",
        ["fluorescence", "stained_rgb"],
        "fluorescence, or stained brightfield RGB (adds stain colour and texture "
        "features); default auto: detected on a sample, stored in project.toml",
    )
    p.add_argument(
        "--classes",
        metavar="A,B,C",
        help="phenotype classes, comma-separated, e.g. interphase,mitotic,apoptotic: each gets "
        "a key (1-9, 0, then letters) so labeling by key works from the first batch",
    )
    p.add_argument("--seed", type=int, default=0, help="project seed")
    p.set_defaults(func=_cmd_init)


def add_ingest_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo``, ``init`` and ``add`` subcommands to ``sub``."""
    add_demo_parser(sub)
    _add_init_parser(sub)
    p = sub.add_parser(
        "add",
        help="add crops or whole fields (a new plate) to a project",
        description="Ingest another folder of crops or fields of view (a new plate) into an "
        "existing project with its settings (channels, crop size, scale; without a plate "
        "column in the metadata, the project's intensity ranges too), and compute features.",
    )
    p.add_argument("project", help="existing project folder")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--crops", help="folder of single-cell images")
    source.add_argument("--fields", help="folder of whole fields of view (TIFF/OME-TIFF/PNG)")
    add_ingest_args(p)
    add_field_args(p)
    p.set_defaults(func=_cmd_add)

"""The ``phenoscout`` subcommands that bring images in: ``demo``, ``init`` and ``add``.

``init`` takes exactly one source: a folder of single-cell crops (``--crops``), a folder of
whole fields of view (``--fields``, optionally grouped by ``--pattern`` and with ``--masks``),
or a CellProfiler export (``--cellprofiler``). Like the rest of the command line, each command
imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from labeling.errors import PhenoScoutError

if TYPE_CHECKING:
    from datasets.parallel import Runner

_FIELD_HINT = "{plate}_{well}_s{site}_w{channel}.tif"
_CROPS_ONLY = (("labels_csv", "--labels-csv"), ("metadata_csv", "--metadata-csv"))
_FIELDS_ONLY = (
    ("pattern", "--pattern"),
    ("masks", "--masks"),
    ("keep_border", "--keep-border"),
    ("nuclei_channel", "--nuclei-channel"),
    ("cell_channel", "--cell-channel"),
)
_CELLPROFILER_ONLY = (
    ("images_csv", "--images-csv"),
    ("image_root", "--image-root"),
    ("object_name", "--object-name"),
)


def _given(args: argparse.Namespace, name: str) -> bool:
    """Whether the user gave option ``name`` (0 counts; None and an unset flag do not)."""
    value = getattr(args, name)
    return value is not None and value is not False


@contextmanager
def tqdm_progress(desc: str, unit: str = "cell") -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr, only when stderr is a
    terminal: in a log file (``trainer.log``, CI) a bar is hundreds of updates on one line, so
    there the bar is off and the callers' log lines tell what happens."""
    from tqdm import tqdm

    bar = None
    on_terminal = sys.stderr.isatty()

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                file=sys.stderr,
                dynamic_ncols=True,
                disable=not on_terminal,
            )
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


@contextmanager
def _runner(args: argparse.Namespace) -> Iterator[Runner]:
    """Where the ingest's work runs (``--workers``, ``--scheduler``, $PHENOSCOUT_SCHEDULER)."""
    from datasets.parallel import ParallelConfig, Runner

    config = ParallelConfig.from_env(
        getattr(args, "workers", None), getattr(args, "scheduler", None)
    )
    with Runner(config) as runner:
        yield runner


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.fields is not None:
        return _demo_fields(args)
    from datasets.crops.demo import generate_demo

    with _runner(args) as runner, tqdm_progress("demo cells") as progress:
        summary = generate_demo(
            Path(args.out), n_cells=args.cells, seed=args.seed, progress=progress, runner=runner
        )
    print(f"wrote {summary.n_cells} cells in {summary.n_files} files to {summary.out_dir}")
    for name, count in sorted(summary.class_counts.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<24} {count:>7}  {100 * count / summary.n_cells:5.2f}%")
    return 0


def _demo_fields(args: argparse.Namespace) -> int:
    from datasets.fields.demo import generate_demo_fields

    with tqdm_progress("demo fields", unit="field") as progress:
        summary = generate_demo_fields(
            Path(args.out), n_fields=args.fields, size=args.size, seed=args.seed,
            layout=args.layout, progress=progress,
        )  # fmt: skip
    out = summary.out_dir
    print(f"wrote {summary.n_fields} {args.size}x{args.size} fields ({args.layout}) with "
          f"{summary.n_objects} objects to {out}")  # fmt: skip
    for name, count in sorted(summary.class_counts.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<24} {count:>7}")
    pattern = f" --pattern '{_FIELD_HINT}'" if args.layout == "per-channel" else ""
    print(
        f"next: phenoscout init PROJECT --fields {out}{pattern} --masks {summary.mask_dir} "
        f"--truth {out / 'objects.csv'}"
    )
    return 0


def ingest_config(args: argparse.Namespace):  # -> IngestConfig
    from datasets.config import IngestConfig

    names = tuple(n.strip() for n in args.channels.split(",")) if args.channels else ()
    return IngestConfig(
        crop_size=args.crop_size,
        scale=args.scale,
        keep_empty_channels=args.keep_empty_channels,
        normalise_by=args.normalise_by,
        channel_names=names,
        modality=getattr(args, "modality", "auto"),
    )


def _check_source_options(args: argparse.Namespace) -> None:
    """Options that belong to another source than the one given are an error, not ignored."""
    source = "--crops" if args.crops else "--fields" if args.fields else "--cellprofiler"
    wrong = [flag for name, flag in _CROPS_ONLY if _given(args, name) and not args.crops]
    wrong += [flag for name, flag in _FIELDS_ONLY if _given(args, name) and not args.fields]
    if args.segment and not args.fields:
        wrong.append("--segment")
    wrong += [
        flag for name, flag in _CELLPROFILER_ONLY if _given(args, name) and not args.cellprofiler
    ]
    if args.truth and args.crops:
        wrong.append("--truth (use --labels-csv with --crops)")
    if args.scale is not None and not args.crops:
        wrong.append("--scale")
    if wrong:
        raise PhenoScoutError(f"{', '.join(wrong)} cannot be used with {source}")
    if args.segment == "given" and not args.masks:
        raise PhenoScoutError("--segment given needs --masks DIR (the fields' label masks)")


def _cmd_init(args: argparse.Namespace) -> int:
    from labeling.io.imports import import_labels
    from labeling.store.names import class_list

    _check_source_options(args)
    classes = class_list(args.classes or "")  # a bad name stops here, before any ingest
    imported: list[int] = []

    def then(project) -> None:  # inside the create: a failed import leaves no project behind
        for name in classes:
            project.store.add_class(name)
        if args.import_labels:
            imported.append(import_labels(project, Path(args.import_labels)))

    if args.crops:
        project, report = _init_crops(args, then)
    else:
        project, report = _init_fields(args, then)
    print(report.summary())
    if classes:
        keys = {c.name: c.key for c in project.store.classes(include_pseudo=False)}
        print("classes: " + ", ".join(f"{n} [{keys.get(n) or '-'}]" for n in classes))
    if imported:
        print(f"imported {imported[0]} labels from {args.import_labels}")
    print(f"project ready: {project.path}  (next: phenoscout app {project.path})")
    return 0


def _init_crops(args: argparse.Namespace, then=None):  # -> (Project, IngestReport)
    from labeling.project import IngestRun, create_project

    with (
        _runner(args) as runner,
        tqdm_progress("ingest") as progress,
        tqdm_progress("features") as fprogress,
    ):
        run = IngestRun(progress=progress, feature_progress=fprogress, runner=runner)
        return create_project(
            Path(args.project), _crop_source(args), ingest_config(args), seed=args.seed, run=run,
            then=then,
        )  # fmt: skip


def _crop_source(args: argparse.Namespace):  # -> CropSource
    from datasets.config import CropSource

    return CropSource(Path(args.crops), args.labels_csv, args.metadata_csv)


def _init_fields(args: argparse.Namespace, then=None):  # -> (Project, IngestReport)
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
    with (
        _runner(args) as runner,
        tqdm_progress("train segmenter", unit="step") as train,
        tqdm_progress("fields", unit="field") as progress,
        tqdm_progress("features") as fp,
    ):
        source = FieldSource(fields, segment, _segment_config(args), args.keep_border, args.truth)
        run = IngestRun(progress, fp, train, runner)
        project, report = create_project_from_fields(
            Path(args.project), source, ingest, seed=args.seed, run=run, then=then
        )
    report.skipped[:0] = skipped
    return project, report


def _cmd_add(args: argparse.Namespace) -> int:
    from labeling.io.imports import import_labels
    from labeling.project import open_project

    wrong = [flag for name, flag in _CROPS_ONLY if _given(args, name) and not args.crops]
    wrong += [flag for name, flag in _FIELDS_ONLY if _given(args, name) and not args.fields]
    wrong += ["--segment"] if args.segment and not args.fields else []
    wrong += ["--truth"] if args.truth and not args.fields else []
    if wrong:
        source = "--crops" if args.crops else "--fields"
        raise PhenoScoutError(f"{', '.join(wrong)} cannot be used with {source}")
    project = open_project(Path(args.project))
    report = _add_crops(args, project) if args.crops else _add_fields(args, project)
    print(report.summary())
    if args.import_labels:
        n = import_labels(project, Path(args.import_labels))
        print(f"imported {n} labels from {args.import_labels}")
    return 0


def _add_crops(args: argparse.Namespace, project):  # -> IngestReport
    from labeling.project import IngestRun, add_crops

    with (
        _runner(args) as runner,
        tqdm_progress("ingest") as progress,
        tqdm_progress("features") as fprogress,
    ):
        run = IngestRun(progress=progress, feature_progress=fprogress, runner=runner)
        return add_crops(project, _crop_source(args), run=run)


def _segment_config(args: argparse.Namespace):  # -> SegmentConfig | None
    """The segmentation settings the flags ask for (None: the defaults)."""
    if args.nuclei_channel is None and args.cell_channel is None:
        return None
    from datasets.segmentation.classical import SegmentConfig

    return SegmentConfig(channel=args.nuclei_channel or 0, cell_channel=args.cell_channel)


def _add_fields(args: argparse.Namespace, project):  # -> IngestReport
    from datasets.fields.files import find_fields
    from labeling.project import FieldSource, IngestRun, add_fields

    masks = Path(args.masks) if args.masks else None
    fields, skipped = find_fields(Path(args.fields), args.pattern, masks)
    with (
        _runner(args) as runner,
        tqdm_progress("train segmenter", unit="step") as train,
        tqdm_progress("fields", unit="field") as progress,
        tqdm_progress("features") as fp,
    ):
        segment = args.segment or "classical"
        source = FieldSource(fields, segment, _segment_config(args), args.keep_border, args.truth)
        report = add_fields(project, source, run=IngestRun(progress, fp, train, runner))
    report.skipped[:0] = skipped
    return report


def add_auto_choice(p: argparse.ArgumentParser, flag: str, choices: list[str], help: str) -> None:  # noqa: A002
    """An option whose choices are ``auto`` (the default) and ``choices``."""
    p.add_argument(flag, choices=["auto", *choices], default="auto", help=help)


def _add_ingest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=int,
        help="Dask worker processes for reading and features (default: one per core; "
        "inputs under 20,000 cells run in this process unless given; 1: in this process)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the work on an existing Dask cluster (tcp://host:8786) whose workers see the "
        "project folder; default $PHENOSCOUT_SCHEDULER",
    )
    p.add_argument(
        "--labels-csv", type=Path, help="ground truth path,label (simulation/evaluation only)"
    )
    p.add_argument(
        "--metadata-csv", type=Path, help="path + metadata columns (plate, well, site, control)"
    )
    p.add_argument(
        "--import-labels",
        type=Path,
        help="existing labels path,label, stored as real labels (annotator 'import')",
    )


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="write the built-in synthetic demo screen (crops, or whole fields with --fields)",
        description="Write a synthetic 2-channel (nucleus, cytoplasm) screen of single-cell "
        "crops with plate/well/site metadata and a labels.csv of 7 phenotypes, 3 of them rare; "
        "with --fields N, whole fields of view with their true masks (OUT/masks) and each "
        "object's phenotype (OUT/objects.csv).",
    )
    p.add_argument("--out", required=True, help="output folder")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--cells", type=int, default=20000, help="number of cells (default 20000)")
    what.add_argument("--fields", type=int, help="write N whole fields of view instead of crops")
    p.add_argument("--size", type=int, default=512, help="field side in pixels (default 512)")
    p.add_argument(
        "--layout",
        choices=["per-channel", "multichannel"],
        default="per-channel",
        help="fields as one file per channel ({plate}_{well}_s{site}_w{channel}.tif, default) "
        "or one multi-channel TIFF per field",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    p.add_argument(
        "--workers",
        type=int,
        help="crops: Dask worker processes rendering the sites (default: one per core from "
        "20,000 cells; 1: in this process); the bytes are the same either way",
    )
    p.add_argument("--scheduler", metavar="ADDRESS", help="crops: an existing Dask cluster")
    p.set_defaults(func=_cmd_demo)


def _add_field_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pattern",
        help=f"group one file per channel into fields, e.g. '{_FIELD_HINT}' ({{channel}} "
        "required; other names become metadata); default: one multi-channel file per field",
    )
    p.add_argument(
        "--masks", help="folder of integer label masks named like the fields (used as given)"
    )
    p.add_argument(
        "--segment",
        choices=["classical", "unet", "given"],
        help="segmentation of fields without a mask (default classical; given: only masks)",
    )
    p.add_argument(
        "--keep-border", action="store_true", help="keep objects touching a field's border"
    )
    p.add_argument(
        "--nuclei-channel",
        type=int,
        default=None,
        help="channel (0-based) the nuclei are segmented in (default 0)",
    )
    p.add_argument(
        "--cell-channel",
        type=int,
        default=None,
        help="classical only: grow nuclei into this channel's foreground to segment whole cells",
    )
    p.add_argument("--truth", type=Path, help="ground truth field,object,label of fields' objects")


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
    _add_ingest_args(p)
    _add_field_args(p)
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
    _add_demo_parser(sub)
    _add_init_parser(sub)
    p = sub.add_parser(
        "add",
        help="add crops or whole fields (a new plate) to a project",
        description="Ingest another folder of crops or fields of view (a new plate) into an "
        "existing project with its settings (channels, crop size, scale), and compute features.",
    )
    p.add_argument("project", help="existing project folder")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--crops", help="folder of single-cell images")
    source.add_argument("--fields", help="folder of whole fields of view (TIFF/OME-TIFF/PNG)")
    _add_ingest_args(p)
    _add_field_args(p)
    p.set_defaults(func=_cmd_add)

"""The ingest options of ``phenoscout init``, ``add`` and ``simulate``: adding them to a parser,
checking that each goes with the source given (crops, fields or a CellProfiler export), and
reading them into configs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from labeling.errors import PhenoScoutError

__all__ = [
    "CELLPROFILER_ONLY",
    "CROPS_ONLY",
    "FIELDS_ONLY",
    "FIELD_HINT",
    "add_auto_choice",
    "add_field_args",
    "add_ingest_args",
    "check_add_options",
    "check_init_options",
    "given",
    "ingest_config",
    "segment_config",
]

FIELD_HINT = "{plate}_{well}_s{site}_w{channel}.tif"  # the demo's per-channel file names
# (attribute, flag) of the options that belong to one source only
CROPS_ONLY = (("labels_csv", "--labels-csv"), ("metadata_csv", "--metadata-csv"))
FIELDS_ONLY = (
    ("masks", "--masks"),
    ("keep_border", "--keep-border"),
    ("nuclei_channel", "--nuclei-channel"),
    ("cell_channel", "--cell-channel"),
)
CELLPROFILER_ONLY = (
    ("images_csv", "--images-csv"),
    ("image_root", "--image-root"),
    ("object_name", "--object-name"),
)


def given(args: argparse.Namespace, name: str) -> bool:
    """Whether the user gave option ``name`` (0 counts; None and an unset flag do not)."""
    value = getattr(args, name)
    return value is not None and value is not False


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


def segment_config(args: argparse.Namespace):  # -> SegmentConfig | None
    """The segmentation settings the flags ask for (None: the defaults)."""
    if args.nuclei_channel is None and args.cell_channel is None:
        return None
    from datasets.segmentation.classical import SegmentConfig

    return SegmentConfig(channel=args.nuclei_channel or 0, cell_channel=args.cell_channel)


def check_init_options(args: argparse.Namespace) -> None:
    """Options that belong to another source than the one given are an error, not ignored."""
    source = "--crops" if args.crops else "--fields" if args.fields else "--cellprofiler"
    wrong = [flag for name, flag in CROPS_ONLY if given(args, name) and not args.crops]
    wrong += [flag for name, flag in FIELDS_ONLY if given(args, name) and not args.fields]
    if args.segment and not args.fields:
        wrong.append("--segment")
    wrong += [
        flag for name, flag in CELLPROFILER_ONLY if given(args, name) and not args.cellprofiler
    ]
    if args.truth and args.crops:
        wrong.append("--truth (use --labels-csv with --crops)")
    if args.scale is not None and not args.crops:
        wrong.append("--scale")
    if args.pattern and args.cellprofiler:
        wrong.append("--pattern")
    if wrong:
        raise PhenoScoutError(f"{', '.join(wrong)} cannot be used with {source}")
    if args.segment == "given" and not args.masks:
        raise PhenoScoutError("--segment given needs --masks DIR (the fields' label masks)")


def check_add_options(args: argparse.Namespace) -> None:
    """``add``: options of the other source (crops or fields) are an error, not ignored."""
    wrong = [flag for name, flag in CROPS_ONLY if given(args, name) and not args.crops]
    wrong += [flag for name, flag in FIELDS_ONLY if given(args, name) and not args.fields]
    wrong += ["--segment"] if args.segment and not args.fields else []
    wrong += ["--truth"] if args.truth and not args.fields else []
    if wrong:
        source = "--crops" if args.crops else "--fields"
        raise PhenoScoutError(f"{', '.join(wrong)} cannot be used with {source}")


def check_predict_options(args: argparse.Namespace) -> None:
    """``predict``: options of the other source (crops or fields) are an error, not ignored."""
    wrong = [flag for name, flag in FIELDS_ONLY if given(args, name) and not args.fields]
    wrong += ["--segment"] if args.segment and not args.fields else []
    wrong += ["--metadata-csv"] if args.metadata_csv and not args.crops else []
    if wrong:
        source = "--crops" if args.crops else "--fields"
        raise PhenoScoutError(f"{', '.join(wrong)} cannot be used with {source}")


def add_auto_choice(p: argparse.ArgumentParser, flag: str, choices: list[str], help: str) -> None:  # noqa: A002
    """An option whose choices are ``auto`` (the default) and ``choices``."""
    p.add_argument(flag, choices=["auto", *choices], default="auto", help=help)


def add_ingest_args(p: argparse.ArgumentParser) -> None:
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
        "--labels-csv",
        type=Path,
        help="ground truth path,label (simulation/evaluation only); paths relative to the "
        "CSV's folder or to the crops folder",
    )
    p.add_argument(
        "--metadata-csv",
        type=Path,
        help="path + metadata columns (plate, well, site, control); paths relative to the "
        "CSV's folder or to the crops folder",
    )
    p.add_argument(
        "--import-labels",
        type=Path,
        help="existing labels path,label, stored as real labels (annotator 'import')",
    )


def add_field_args(p: argparse.ArgumentParser, truth: bool = True) -> None:
    """--pattern (fields or crops), the masks and segmentation of fields, and (``truth``)
    --truth."""
    p.add_argument(
        "--pattern",
        help=f"group one file per channel into fields, e.g. '{FIELD_HINT}', or into crops, "
        "e.g. '{cell}_w{channel}.tif' (other names become metadata; for fields a pattern "
        "without {channel}, e.g. '{plate}_{well}_s{site}.tif', names the metadata of one "
        "multi-channel file per field); default: one multi-channel file per field or crop",
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
    if truth:
        p.add_argument(
            "--truth", type=Path, help="ground truth field,object,label of fields' objects"
        )

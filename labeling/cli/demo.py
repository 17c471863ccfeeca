"""``phenoscout demo``: write the built-in synthetic screen, as crops or as whole fields."""

from __future__ import annotations

import argparse
from pathlib import Path

from labeling.cli.ingest_options import FIELD_HINT
from labeling.cli.progress import ingest_runner, tqdm_progress

__all__ = ["add_demo_parser"]


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.fields is not None:
        return _demo_fields(args)
    given = [f"--{n}" for n in ("size", "layout") if getattr(args, n) is not None]
    if given:
        from labeling.errors import PhenoScoutError

        raise PhenoScoutError(f"{' and '.join(given)} shape demo fields; add --fields N")
    from datasets.crops.demo import generate_demo

    with ingest_runner(args) as runner, tqdm_progress("demo cells") as progress:
        summary = generate_demo(
            Path(args.out), n_cells=args.cells, seed=args.seed, progress=progress, runner=runner
        )
    print(f"wrote {summary.n_cells} cells in {summary.n_files} files to {summary.out_dir}")
    for name, count in sorted(summary.class_counts.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<24} {count:>7}  {100 * count / summary.n_cells:5.2f}%")
    return 0


def _demo_fields(args: argparse.Namespace) -> int:
    from datasets.fields.demo import generate_demo_fields

    args.size = 512 if args.size is None else args.size
    args.layout = args.layout or "per-channel"
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
    one_file = "{plate}_{well}_s{site}.tif"  # a multi-channel file per field: metadata only
    pattern = f" --pattern '{FIELD_HINT if args.layout == 'per-channel' else one_file}'"
    print(
        f"next: phenoscout init PROJECT --fields {out}{pattern} --masks {summary.mask_dir} "
        f"--truth {out / 'objects.csv'}"
    )
    return 0


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--size", type=int, help="fields: side in pixels (default 512)")
    p.add_argument(
        "--layout",
        choices=["per-channel", "multichannel"],
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

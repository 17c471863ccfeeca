"""``phenoscout`` subcommands that write results: ``export``, ``predict``, ``evaluate`` and
``report``."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from labeling.cli.ingest_options import add_field_args
from labeling.cli.parsing import Parents, Sub, add_parser, out_folder
from labeling.errors import PhenoScoutError


def _cmd_export(args: argparse.Namespace) -> int:
    from labeling.io.export import export_table
    from labeling.project import open_project

    if args.features is not None and args.what != "anndata":
        raise PhenoScoutError(f"--features is for --what anndata, not --what {args.what}")
    if args.what == "model" and Path(args.out).suffix.lower() not in (".pt", ".pth"):
        raise PhenoScoutError(
            f"{args.out}: the model is a PyTorch checkpoint; name it e.g. model.pt"
        )
    project = open_project(Path(args.project))
    if args.what == "anndata":
        from labeling.io.anndata_export import export_anndata

        features = args.features or "morphology"
        n = export_anndata(project, Path(args.out), features=features)
        print(f"wrote {n} cells ({features}) to {args.out}")
        return 0
    if args.what in ("crops", "model"):
        from labeling.io.bundles import crops_zip, model_checkpoint, write_bytes_atomic

        if args.what == "crops":
            from labeling.io.export import check_export_target

            check_export_target(Path(args.out))  # a project's own file: that, first
            if Path(args.out).suffix.lower() != ".zip":
                raise PhenoScoutError(
                    f"{args.out}: the labeled crops are a .zip file; name it e.g. crops.zip"
                )
            write_bytes_atomic(crops_zip(project), Path(args.out))
            n = len(project.store.current_labels(include_pseudo=True))
            print(f"wrote {n} labeled crops to {args.out}")
        else:
            version, data = model_checkpoint(project)
            write_bytes_atomic(data, Path(args.out))
            print(f"wrote model v{version:04d} checkpoint to {args.out}")
        return 0
    table = export_table(project, Path(args.out), what=args.what)
    print(f"wrote {len(table)} rows to {args.out}")
    if args.what == "wells":
        from labeling.predictions import control_note

        notes = [control_note(project)]
        no_well = int(table.attrs.get("n_without_well", 0))
        if no_well:
            notes.append(f"{no_well} cells have no well and are left out")
        for note in filter(None, notes):
            print(f"note: {note}", file=sys.stderr)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from datasets.config import CropSource
    from datasets.parallel import ParallelConfig, Runner
    from labeling.cli.ingest_options import check_predict_options
    from labeling.cli.sources import field_source
    from labeling.io.bundles import predict_screen
    from labeling.io.export import write_table
    from labeling.project import open_project

    check_predict_options(args)
    project = open_project(Path(args.project))
    if args.fields:
        screen = field_source(args)[0]
    else:
        screen = CropSource(Path(args.crops), metadata_csv=args.metadata_csv, pattern=args.pattern)
    with Runner(ParallelConfig.from_env(args.workers, args.scheduler)) as runner:
        table = predict_screen(project, screen, runner, allow_other_kind=args.allow_other_kind)
    write_table(table, Path(args.out))
    print(f"wrote {len(table)} predictions to {args.out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from labeling.cli.progress import tqdm_progress
    from labeling.evaluate import FinetuneEval, evaluate_project, format_table

    out = out_folder(args.out) if args.out else None
    with tqdm_progress("fine-tunes", unit="fine-tune") as progress:
        finetune = (
            FinetuneEval(args.device, args.finetune_repeats, progress) if args.finetune else None
        )
        table, truth = evaluate_project(
            Path(args.project),
            group=args.group,
            repeats=args.repeats,
            seed=args.seed,
            out_dir=out,
            finetune=finetune,
        )
    print(format_table(table, truth))
    if out is not None:
        print(f"wrote {out / 'quality.csv'}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from labeling.project import open_project
    from labeling.reports.report import write_report
    from labeling.reports.summary import summary_text

    project = open_project(Path(args.project))
    with tempfile.TemporaryDirectory(prefix="phenoscout-report-") as tmp:  # without --out
        out = out_folder(args.out) if args.out else Path(tmp)
        paths = write_report(project, out)
        print(summary_text(out))
    if args.out:
        print(f"wrote {len(paths)} files to {out}: " + ", ".join(p.name for p in paths))
    return 0


def _add_export(sub: Sub, parents: Parents) -> None:
    p = add_parser(
        sub,
        "export",
        parents=[parents["project"]],
        help="export labels, cells, predictions, per-well counts, labeled crops or the model",
        description="Write one export: a table (labels, cells, predictions, wells) as CSV or "
        "Parquet, the labeled crops as a ZIP, the model checkpoint, or the screen as .h5ad.",
    )
    p.add_argument(
        "--out", required=True, help="output file: .csv or .parquet; .zip for crops; .h5ad"
    )
    p.add_argument(
        "--what",
        default="labels",
        choices=["labels", "cells", "predictions", "wells", "crops", "model", "anndata"],
        help="labels: one row per labeled cell with metadata; cells: one row per cell; "
        "predictions: every cell with its predicted class, confidence and class probabilities; "
        "wells: predicted class counts and fractions per plate and well (z against negative "
        "controls); crops: a ZIP of the labeled crops, one folder per class, a TIFF per cell in "
        "the source bit depth (8-bit stays 8-bit, 16-bit 16-bit) with channel names; "
        "model: the newest trained model's checkpoint.pt; anndata: every cell as an .h5ad "
        "(X features, obs cells with labels and predictions, obsm embedding)",
    )
    p.add_argument(
        "--features",
        help="anndata only: the features in X: morphology (default), embedding, cellprofiler, "
        "or two joined by '+'",
    )
    p.set_defaults(func=_cmd_export)


def _add_predict(sub: Sub, parents: Parents) -> None:
    p = add_parser(
        sub,
        "predict",
        parents=[parents["out_file"]],
        help="apply the current model to a new screen (crops or whole fields)",
        description="Ingest a new screen with the project's settings, measure it as the "
        "project was measured, score it with the head fit on the project's labels, write "
        "cell_id, path, metadata, predicted, confidence and p_<class> (.csv or .parquet).",
    )
    p.add_argument("project", help="project folder (with labels of at least 2 classes)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--crops", help="folder of the new screen's crops")
    source.add_argument("--fields", help="folder of the new screen's whole fields of view")
    p.add_argument(
        "--workers", type=int, help="Dask worker processes (default: one per core, 20,000+ cells)"
    )
    p.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask cluster")
    p.add_argument("--metadata-csv", type=Path, help="path + metadata (default CROPS/metadata.csv)")
    p.add_argument(
        "--allow-other-kind",
        action="store_true",
        help="score images of another bit depth or layout than the project's (refused by "
        "default: their intensities are on another scale)",
    )
    add_field_args(p, truth=False)
    p.set_defaults(func=_cmd_predict)


def _add_evaluate(sub: Sub, parents: Parents) -> None:
    p = add_parser(
        sub,
        "evaluate",
        parents=[parents["project"]],
        help="quality table: linear-probe CV of each feature set against the truth or labels",
        description="Linear probe (balanced logistic regression) in stratified 5-fold CV, all "
        "labels and 10 per class, median of repeats, for morphology, the backbone embedding, "
        "both, and CellProfiler features (with --finetune also morphology + an embedding "
        "fine-tuned per fold); scored against the cell table's truth column, else the "
        "project's labels.",
    )
    p.add_argument("--out", help="folder to write quality.csv into")
    p.add_argument("--group", help="cell-table column whose groups never split across folds")
    p.add_argument("--repeats", type=int, default=5, help="reshuffled repeats (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first repeat (default 0)")
    p.add_argument(
        "--finetune",
        action="store_true",
        help="also morphology + a fine-tuned embedding: the pretrained backbone fine-tuned in "
        "each fold on its training labels only (10 fine-tunes per repeat; about a minute each "
        "on a CPU at 3,000 labels, seconds on a GPU)",
    )
    p.add_argument(
        "--finetune-repeats", type=int, default=1, help="repeats of the fine-tuned row (default 1)"
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda", "mps"],
        help="where --finetune trains (auto: CUDA when torch sees it)",
    )
    p.set_defaults(func=_cmd_evaluate)


def _add_report(sub: Sub, parents: Parents) -> None:
    p = add_parser(
        sub,
        "report",
        parents=[parents["project"]],
        help="discovery curves, prevalence, stopping signal, "
        "cross-validated confusion matrix (printed; CSV and PNG with --out)",
        description="Print the Discover page's numbers (labels and first find per class, the "
        "chance of a class not seen yet, cross-validated F1) and, with --out, write them all "
        "to OUT: discovery curves, prevalence from the random slice, the stopping signal, "
        "labels per round and the cross-validated confusion matrix, as CSV, JSON and PNG.",
    )
    p.add_argument("--out", help="output folder for the CSV, JSON and PNG files")
    p.set_defaults(func=_cmd_report)

"""The ``phenoscout`` command line. Each subcommand imports what it needs when it runs, so
``phenoscout label`` never loads torch and ``phenoscout --help`` is instant."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from labeling.cli.ingest import add_ingest_parsers, tqdm_progress
from labeling.errors import PhenoScoutError

EPILOG = """examples:
  phenoscout demo --out demo_data --cells 20000 --seed 0
  phenoscout init my_project --crops demo_data --classes interphase,mitotic,apoptotic
  phenoscout init my_project --fields plate1/ --pattern '{plate}_{well}_s{site}_w{channel}.tif'
  phenoscout app my_project
  phenoscout export my_project --out labels.csv
  phenoscout export my_project --what crops --out crops.zip   (labeled crops, source bit depth)
  phenoscout export my_project --what model --out model.pt    (the newest model's checkpoint)
"""


def _cmd_export(args: argparse.Namespace) -> int:
    from labeling.io.export import export_table
    from labeling.project import open_project

    project = open_project(Path(args.project))
    if args.what == "anndata":
        from labeling.io.anndata_export import export_anndata

        n = export_anndata(project, Path(args.out), features=args.features)
        print(f"wrote {n} cells ({args.features}) to {args.out}")
        return 0
    if args.what in ("crops", "model"):
        from labeling.io.bundles import crops_zip, model_checkpoint, write_bytes_atomic

        if args.what == "crops":
            write_bytes_atomic(crops_zip(project), Path(args.out))
            n = len(project.store.current_labels(include_pseudo=True))
            print(f"wrote {n} labeled crops to {args.out}")
        else:
            version, data = model_checkpoint(project)
            write_bytes_atomic(data, Path(args.out))
            print(f"wrote model v{version:04d} checkpoint to {args.out}")
        return 0
    n = export_table(project, Path(args.out), what=args.what)
    print(f"wrote {n} rows to {args.out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from datasets.parallel import ParallelConfig, Runner
    from labeling.io.bundles import predict_screen
    from labeling.io.export import write_table
    from labeling.project import open_project

    project = open_project(Path(args.project))
    with Runner(ParallelConfig.from_env(args.workers, args.scheduler)) as runner:
        table = predict_screen(
            project, Path(args.crops), metadata_csv=args.metadata_csv, runner=runner
        )
    write_table(table, Path(args.out))
    print(f"wrote {len(table)} predictions to {args.out}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from labeling.project import open_project

    project = open_project(Path(args.project))
    store = project.store
    print(f"project   {project.path}")
    print(f"cells     {store.n_cells()}")
    chans = ", ".join(f"{c.name} ({c.colour})" for c in project.config.channels)
    print(f"channels  {chans}")
    if project.config.dropped_channels:
        print(f"dropped   {', '.join(project.config.dropped_channels)} (all zero at ingest)")
    # as the app counts them: every label given (relabels too) and the cells carrying one
    cells = store.current_labels(include_pseudo=True)
    pseudo = len(cells) - len(store.current_labels())
    print(f"labels    {store.n_labels_given()} labels on {len(cells)} cells"
          + (f" ({pseudo} unsure or bad segmentation)" if pseudo else ""))  # fmt: skip
    for info in store.classes():
        key = f"[{info.key}]" if info.key else "   "
        print(f"  {key:<4} {info.name:<28} {info.n_labeled:>6}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from labeling.evaluate import evaluate_project, format_table

    out = Path(args.out) if args.out else None
    table, truth = evaluate_project(
        Path(args.project), group=args.group, repeats=args.repeats, seed=args.seed, out_dir=out
    )
    print(format_table(table, truth))
    if out is not None:
        print(f"wrote {out / 'quality.csv'}")
    return 0


def _cmd_classes(args: argparse.Namespace) -> int:
    from labeling.project import open_project

    store = open_project(Path(args.project)).store
    if args.add:
        info = store.add_class(args.add)
        print(f"added {info.name!r} (key {info.key or '-'})")
    if args.rename:
        store.rename_class(*args.rename)
        print(f"renamed {args.rename[0]!r} to {args.rename[1]!r}")
    if args.merge:
        n = store.merge_classes(*args.merge)
        print(f"merged {args.merge[0]!r} into {args.merge[1]!r} ({n} cells)")
    for info in store.classes():
        key = f"[{info.key}]" if info.key else "   "
        kind = " (pseudo)" if info.pseudo else ""
        print(f"  {key:<4} {info.name:<28} {info.n_labeled:>6}{kind}")
    return 0


def _cmd_next(args: argparse.Namespace) -> int:
    import json

    from labeling.loop import next_batch
    from labeling.project import open_project

    project = open_project(Path(args.project))
    batch = next_batch(
        project, args.n, annotator=args.annotator, strategy=args.strategy, resume=False
    )
    for item in batch:
        print(json.dumps(item, ensure_ascii=False))
    return 0


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["CELL_ID=CLASS", ...]`` -> {cell_id: class}, split at the first ``=``.

    Raises:
        PhenoScoutError: for an item without ``=`` or with an empty side.
    """
    out: dict[str, str] = {}
    for item in items:
        cell_id, sep, label = item.partition("=")
        if not sep or not cell_id.strip() or not label.strip():
            raise PhenoScoutError(
                f"{item!r} is not CELL_ID=CLASS (e.g. plate1.A01_s1.npz:3=mitotic)"
            )
        out[cell_id.strip()] = label
    return out


def _cmd_label(args: argparse.Namespace) -> int:
    from labeling.project import open_project

    labels = parse_assignments(args.assignments)
    project = open_project(Path(args.project))
    n = project.store.submit(labels, annotator=args.annotator, source="cli")
    print(f"committed {n}", flush=True)
    if not args.no_refit:
        from labeling.loop import fit_head

        head = fit_head(project)
        if head.version:
            print(
                f"head refit: {head.version} ({len(head.classes)} classes, "
                f"{head.fit_seconds:.2f} s)"
            )
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from labeling.cli.ingest import ingest_config
    from labeling.simulate import SimConfig, simulate

    cfg = SimConfig(
        strategies=tuple(s.strip() for s in args.strategy.split(",") if s.strip()),
        budget=args.budget,
        batch_size=args.batch_size,
        seeds=args.seeds,
        finetune=args.finetune,
        finetune_every=args.finetune_every,
        holdout=args.holdout,
        group_pattern=args.group_pattern,
    )
    with tqdm_progress("runs") as progress:
        summary = simulate(
            Path(args.data_dir), cfg, Path(args.out), progress=progress,
            ingest=ingest_config(args),
        )  # fmt: skip
    print(summary.attrs["text"])
    print(f"wrote {args.out}/peers.txt, peers.csv, curves.csv, summary.csv, discovery.png")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from labeling.project import open_project
    from labeling.reports.report import write_report

    project = open_project(Path(args.project))
    paths = write_report(project, Path(args.out))
    for path in paths:
        print(path)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from labeling.project import open_project
    from labeling.training.run import run_trainer
    from models.trainer import TrainerExit, exit_on_sigterm

    project = open_project(Path(args.project))
    exit_on_sigterm()
    for name in ("models.trainer", "labeling.training"):  # readable events in trainer.log
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        with tqdm_progress("train") as progress, _train_runner(args) as runner:
            version = run_trainer(project.path, device=args.device, watch=args.watch,
                                  poll_s=args.poll, progress=progress, exit_with=args.exit_with,
                                  runner=runner, config=_train_config(args))  # fmt: skip
    except TrainerExit as exc:
        print(f"trainer stopped: {exc}")
        return 0
    print(f"newest model version: v{version:04d}" if version else "no model version published")
    return 0


def _train_config(args: argparse.Namespace):  # -> TrainerConfig | None
    """The shipped configuration, with non-deterministic kernels when asked for."""
    if not args.nondeterministic:
        return None
    from models.device import resolve_device
    from models.trainer import TrainerConfig

    return TrainerConfig.for_device(resolve_device(args.device), deterministic=False)


@contextlib.contextmanager
def _train_runner(args: argparse.Namespace):  # -> Iterator[Runner | None]
    """The trainer embeds on Dask only when asked (--workers, --scheduler or the variable)."""
    from datasets.parallel import ParallelConfig, Runner

    config = ParallelConfig.from_env(args.workers, args.scheduler)
    if config.workers is None and config.scheduler is None:
        yield None
        return
    with Runner(config) as runner:
        yield runner


def _cmd_app(args: argparse.Namespace) -> int:
    import os

    # app_server.py serves app.py behind a Host check (DNS rebinding), without /_stcore/metrics
    app_file = Path(__file__).resolve().parents[2] / "app_server.py"
    if not app_file.exists():
        raise PhenoScoutError(f"{app_file}: the app file is missing; reinstall PhenoScout")
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_file),
        "--server.headless",
        "true",
        "--server.address",
        args.host,
        "--server.port",
        str(args.port),
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",  # a user's app does not reload on source edits
        "none",
        "--client.toolbarMode",  # no "Deploy" or developer options: this is a local tool
        "viewer",
    ]
    if args.root:
        root = Path(args.root).expanduser().resolve()
        if not root.is_dir():
            raise PhenoScoutError(f"--root {args.root}: no such folder")
        os.environ["PHENOSCOUT_ROOT"] = str(root)
    if args.project:
        from labeling.project import open_project

        open_project(Path(args.project))  # a clear error now rather than in the browser
        cmd += ["--", "--project", str(Path(args.project).resolve())]
    print(f"PhenoScout on http://{args.host}:{args.port}  (Ctrl+C stops it)", flush=True)
    # Become the Streamlit server, so that signals (Ctrl+C, SIGTERM) reach it directly.
    os.execv(sys.executable, cmd)
    return 0  # not reached


def _parents() -> dict[str, argparse.ArgumentParser]:
    """Options shared by several subcommands, as argparse parent parsers."""
    project = argparse.ArgumentParser(add_help=False)
    project.add_argument("project", help="project folder")
    out_file = argparse.ArgumentParser(add_help=False)
    out_file.add_argument("--out", required=True, help="output file, .csv or .parquet")
    out_dir = argparse.ArgumentParser(add_help=False)
    out_dir.add_argument("--out", required=True, help="output folder")
    annotator = argparse.ArgumentParser(add_help=False)
    annotator.add_argument("--annotator", default="cli", help="who labels (default cli)")
    return {"project": project, "out_file": out_file, "out_dir": out_dir, "annotator": annotator}


Parents = dict[str, argparse.ArgumentParser]
Sub = argparse._SubParsersAction


def _add_export(sub: Sub, parents: Parents) -> None:
    p = sub.add_parser(
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
        default="morphology",
        help="anndata only: the features in X: morphology (default), embedding, cellprofiler, "
        "or two joined by '+'",
    )
    p.set_defaults(func=_cmd_export)


def _add_predict(sub: Sub, parents: Parents) -> None:
    p = sub.add_parser(
        "predict",
        parents=[parents["out_file"]],
        help="apply the current model to a new folder of crops",
        description="Ingest a new screen with the project's settings, score it with the head "
        "fit on the project's labels, write cell_id, path, metadata, predicted, confidence "
        "and p_<class> (.csv or .parquet).",
    )
    p.add_argument("project", help="project folder (with labels of at least 2 classes)")
    p.add_argument("--crops", required=True, help="folder of the new screen's crops")
    p.add_argument(
        "--workers", type=int, help="Dask worker processes (default: one per core, 20,000+ cells)"
    )
    p.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask cluster")
    p.add_argument("--metadata-csv", type=Path, help="path + metadata (default CROPS/metadata.csv)")
    p.set_defaults(func=_cmd_predict)


def _add_evaluate(sub: Sub, parents: Parents) -> None:
    p = sub.add_parser(
        "evaluate",
        parents=[parents["project"]],
        help="quality table: linear-probe CV of each feature set against the truth or labels",
        description="Linear probe (balanced logistic regression) in stratified 5-fold CV, all "
        "labels and 10 per class, median of repeats, for morphology, the backbone embedding, "
        "both, and CellProfiler features; scored against the cell table's truth column, else "
        "the project's labels.",
    )
    p.add_argument("--out", help="folder to write quality.csv into")
    p.add_argument("--group", help="cell-table column whose groups never split across folds")
    p.add_argument("--repeats", type=int, default=5, help="reshuffled repeats (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first repeat (default 0)")
    p.set_defaults(func=_cmd_evaluate)


def _add_info(sub: Sub, parents: Parents) -> None:
    p = sub.add_parser(
        "info",
        parents=[parents["project"]],
        help="summarise a project: cells, channels, classes, labels",
        description="Print the project's folder, cell count, channels, the labels given and on "
        "how many cells (as the app counts them), and each class with its key and cells.",
    )
    p.set_defaults(func=_cmd_info)


def _add_next(sub: Sub, parents: Parents) -> None:
    p = sub.add_parser(
        "next",
        parents=[parents["project"], parents["annotator"]],
        help="choose the next batch, lease it, print one JSON line per cell",
        description="Refit the head on the labels, choose the next batch with the project's "
        "strategy, lease its cells to the annotator and print one JSON line per cell.",
    )
    p.add_argument("--n", type=int, default=24, help="batch size (default 24)")
    p.add_argument(
        "--strategy",
        help="query strategy (default: the project's, discover); "
        "one of random, least_confidence, margin, entropy, diversity, novelty, "
        "cluster_coverage, predicted_rare, discover",
    )
    p.set_defaults(func=_cmd_next)


def _add_label(sub: Sub, parents: Parents) -> None:
    p = sub.add_parser(
        "label",
        parents=[parents["project"], parents["annotator"]],
        help="commit labels CELL_ID=CLASS ... in one transaction",
        description="Commit labels in one transaction (a new class is created "
        "as needed), print 'committed N', then refit the head.",
    )
    p.add_argument(
        "assignments",
        nargs="+",
        metavar="CELL_ID=CLASS",
        help="split at the first '=' (class names may contain '=' and spaces)",
    )
    p.add_argument("--no-refit", action="store_true", help="commit only; do not refit the head")
    p.set_defaults(func=_cmd_label)


def _add_simulate(sub: Sub, parents: Parents) -> None:
    p = sub.add_parser(
        "simulate",
        parents=[parents["out_dir"]],
        help="benchmark strategies on a crops folder with labels.csv",
        description="Simulated labeling: labels.csv is the oracle, revealed only "
        "for the cells a strategy picks. Writes OUT/curves.csv, summary.csv, "
        "discovery.png.",
    )
    p.add_argument("data_dir", help="crops folder with labels.csv (path,label)")
    p.add_argument(
        "--strategy",
        default="discover,random,margin,entropy",
        help="comma-separated strategies, the first compared with the others "
        "(default discover,random,margin,entropy)",
    )
    p.add_argument("--budget", type=int, default=300, help="labels per run (default 300)")
    p.add_argument("--batch-size", type=int, default=10, help="labels per round (default 10)")
    p.add_argument("--seeds", type=int, default=10, help="runs per strategy (default 10)")
    p.add_argument(
        "--holdout",
        type=float,
        default=0.25,
        help="share of each class held out of the pool to score every strategy (default 0.25)",
    )
    p.add_argument(
        "--group-pattern",
        metavar="REGEX",
        help="hold out whole groups: group 1 of REGEX in each crop's path (e.g. the movie)",
    )
    p.add_argument("--crop-size", type=int, default=64, help="as for init (default 64)")
    p.add_argument("--scale", type=float, default=None, help="as for init (default: chosen)")
    p.add_argument("--channels", help="as for init: comma-separated channel names")
    p.add_argument("--keep-empty-channels", action="store_true", help="as for init")
    p.add_argument(
        "--normalise-by", choices=["auto", "dataset", "plate"], default="auto", help="as for init"
    )
    p.add_argument(
        "--modality",
        choices=["auto", "fluorescence", "stained_rgb"],
        default="auto",
        help="as for init",
    )
    p.add_argument(
        "--finetune",
        action="store_true",
        help="also fine-tune the U-Net between rounds; the head's features are chosen as "
        "loop.features = auto chooses them (pretrains once per dataset; slow on a CPU)",
    )
    p.add_argument(
        "--finetune-every",
        type=int,
        default=1,
        metavar="K",
        help="with --finetune: fine-tune every K rounds, as a CPU trainer keeps pace (default 1)",
    )
    p.set_defaults(func=_cmd_simulate)


def _add_report(sub: Sub, parents: Parents) -> None:
    p = sub.add_parser(
        "report",
        parents=[parents["project"], parents["out_dir"]],
        help="discovery curves, prevalence, stopping signal, "
        "cross-validated confusion matrix (CSV and PNG)",
        description="Write the Discover page's numbers to OUT: discovery curves, prevalence "
        "from the random slice, the stopping signal (chance of a class not seen yet), labels "
        "per round and the cross-validated confusion matrix, as CSV, JSON and PNG.",
    )
    p.set_defaults(func=_cmd_report)


def _add_classes(sub: Sub, parents: Parents) -> None:
    p = sub.add_parser(
        "classes",
        parents=[parents["project"]],
        help="list, add, rename or merge classes",
        description="List the classes with their keys and cells; --add, --rename or --merge "
        "change them (labels follow; history is kept). Keys: 1-9, 0, then letters.",
    )
    p.add_argument("--add", metavar="NAME", help="add a class (free text)")
    p.add_argument("--rename", nargs=2, metavar=("OLD", "NEW"), help="rename a class")
    p.add_argument(
        "--merge",
        nargs=2,
        metavar=("SOURCE", "TARGET"),
        help="relabel every cell of SOURCE as TARGET (history kept)",
    )
    p.set_defaults(func=_cmd_classes)


def _add_train(sub: Sub, parents: Parents) -> None:
    p = sub.add_parser(
        "train",
        parents=[parents["project"]],
        help="pretrain / fine-tune the U-Net backbone and publish a model version",
        description="One trainer per project: pretrains when the project has no model "
        "version, then (with --watch) fine-tunes and publishes after every new round.",
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="keep running: fine-tune and publish after every new round of labels",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda", "mps"],
        help="auto: CUDA, else MPS, else CPU (one thread, low priority)",
    )
    p.add_argument("--poll", type=float, default=5.0, help="seconds between label checks")
    p.add_argument(
        "--nondeterministic",
        action="store_true",
        help="cudnn.benchmark and non-deterministic kernels: faster on a GPU, runs with one "
        "seed may differ slightly (default: deterministic kernels)",
    )
    p.add_argument(
        "--exit-with",
        type=int,
        metavar="PID",
        default=None,
        help="end soon after process PID ends (the app passes its own pid)",
    )
    p.add_argument("--workers", type=int, help="embed every cell on N local Dask workers")
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="embed on an existing Dask cluster (GPU nodes: dask-cuda); default "
        "$PHENOSCOUT_SCHEDULER",
    )
    p.set_defaults(func=_cmd_train)


def _add_app(sub: Sub, parents: Parents) -> None:
    p = sub.add_parser(
        "app",
        help="start the browser app",
        description="Start the Streamlit app, bound to 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("project", nargs="?", help="project to open first")
    p.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; 0.0.0.0 exposes the app and its "
        "data to the network)",
    )
    p.add_argument(
        "--root",
        help="folders typed in the app must lie under this one (default: the current folder)",
    )
    p.set_defaults(func=_cmd_app)


_SUBCOMMANDS = (
    _add_export, _add_predict, _add_evaluate, _add_info, _add_next, _add_label, _add_simulate,
    _add_report, _add_classes, _add_train, _add_app,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (``demo``, ``init``, ``add`` come from
    :mod:`labeling.cli.ingest`; the rest are added here, one function each)."""
    parser = argparse.ArgumentParser(
        prog="phenoscout",
        description="PhenoScout: active-learning labeling of microscopy screens that surfaces rare "
        "phenotypes early.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_ingest_parsers(sub)
    parents = _parents()
    for add in _SUBCOMMANDS:
        add(sub, parents)
    return parser


def _stdout_gone() -> int:
    """After a BrokenPipeError on stdout: point stdout at /dev/null, so that Python's final
    flush at exit writes nowhere instead of raising again; 141 (128 + SIGPIPE), as a command
    stopped by a closed pipe ends."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``phenoscout`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so that a closed pipe is caught below, not at exit
        return code
    except BrokenPipeError:  # the reader left (``phenoscout info P | head -1``): stop quietly
        return _stdout_gone()
    except PhenoScoutError as exc:
        print(f"phenoscout {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

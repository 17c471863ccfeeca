"""``phenoscout`` subcommands that run long: ``simulate``, ``train`` and ``app``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from labeling.cli.ingest_options import add_auto_choice
from labeling.cli.parsing import Parents, Sub, add_parser, out_folder
from labeling.cli.progress import tqdm_progress
from labeling.errors import PhenoScoutError


def _cmd_simulate(args: argparse.Namespace) -> int:
    from labeling.cli.ingest_options import ingest_config
    from labeling.simulate import SimConfig, simulate

    cfg = SimConfig(
        strategies=tuple(dict.fromkeys(s.strip() for s in args.strategy.split(",") if s.strip())),
        budget=args.budget,
        batch_size=args.batch_size,
        seeds=args.seeds,
        finetune=args.finetune,
        finetune_every=args.finetune_every,
        holdout=args.holdout,
        group_pattern=args.group_pattern,
        ingest=ingest_config(args),
    )
    with tqdm_progress("runs") as progress:
        summary = simulate(Path(args.data_dir), cfg, out_folder(args.out), progress=progress)
    print(summary.attrs["text"])
    print(f"wrote {args.out}/peers.txt, peers.csv, curves.csv, summary.csv, found.csv, "
          "discovery.png")  # fmt: skip
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from labeling.project import open_project
    from labeling.training.run import run_trainer
    from models.trainer.trainer import ServeConfig, TrainerExit, exit_on_sigterm

    project = open_project(Path(args.project))
    exit_on_sigterm()
    for name in ("models.trainer.trainer", "labeling.training"):  # readable events in trainer.log
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        with tqdm_progress("train") as progress, _train_runner(args) as runner:
            serve = ServeConfig(watch=args.watch, poll_s=args.poll, runner=runner)
            version = run_trainer(project.path, device=args.device, config=_train_config(args),
                                  serve=serve, exit_with=args.exit_with,
                                  progress=progress)  # fmt: skip
    except TrainerExit as exc:
        print(f"trainer stopped: {exc}")
        return 0
    print(f"newest model version: v{version:04d}" if version else "no model version published")
    return 0


def _train_config(args: argparse.Namespace):  # -> TrainerConfig | None
    """The shipped configuration, with non-deterministic kernels and more embedding views
    when asked for."""
    if not args.nondeterministic and args.embed_views == 1:
        return None
    from models.device import resolve_device
    from models.trainer.trainer import TrainerConfig

    return TrainerConfig.for_device(
        resolve_device(args.device),
        deterministic=not args.nondeterministic,
        embed_views=args.embed_views,
    )


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


def _add_simulate(sub: Sub, parents: Parents) -> None:
    p = add_parser(
        sub,
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
    add_auto_choice(p, "--normalise-by", ["dataset", "plate"], "as for init")
    add_auto_choice(p, "--modality", ["fluorescence", "stained_rgb"], "as for init")
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


def _add_train(sub: Sub, parents: Parents) -> None:
    p = add_parser(
        sub,
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
        "--embed-views",
        type=int,
        choices=[1, 2, 4, 8],
        default=1,
        help="average each cell's embedding over this many of its 8 rotations and flips: the "
        "same embedding whichever way a cell lies, at that many times the embedding time "
        "(default 1)",
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
    p = add_parser(
        sub,
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

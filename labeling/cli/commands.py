"""The ``phenoscout`` command line. Each subcommand imports what it needs when it runs, so
``phenoscout label`` never loads torch and ``phenoscout --help`` is instant.

The subcommands live by concept: :mod:`labeling.cli.ingest` (demo, init, add; helped by
:mod:`~labeling.cli.demo`, :mod:`~labeling.cli.sources`, :mod:`~labeling.cli.ingest_options`
and :mod:`~labeling.cli.progress`), :mod:`labeling.cli.labeling` (info, next, label, classes,
review),
:mod:`labeling.cli.outputs` (export, predict, evaluate, report) and
:mod:`labeling.cli.training` (simulate, train, app)."""

from __future__ import annotations

import argparse
import logging
import sys

from labeling.cli import labeling as _labeling
from labeling.cli import outputs as _outputs
from labeling.cli import training as _training
from labeling.cli.ingest import add_ingest_parsers
from labeling.cli.parsing import shared_parents
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


_SUBCOMMANDS = (  # in the order ``phenoscout --help`` lists them
    _outputs._add_export, _outputs._add_predict, _outputs._add_evaluate, _labeling._add_info,
    _labeling._add_next, _labeling._add_label, _training._add_simulate, _outputs._add_report,
    _labeling._add_classes, _labeling._add_review, _training._add_train, _training._add_app,
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
    parents = shared_parents()
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
        seed = getattr(args, "seed", None)
        if isinstance(seed, int) and seed < 0:  # numpy refuses a negative seed deep inside
            raise PhenoScoutError(f"--seed {seed}: use 0 or more")
        n = getattr(args, "n", None)
        if isinstance(n, int) and n < 1:
            raise PhenoScoutError(f"--n {n}: use 1 or more")
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so that a closed pipe is caught below, not at exit
        return code
    except BrokenPipeError:  # the reader left (``phenoscout info P | head -1``): stop quietly
        return _stdout_gone()
    except PhenoScoutError as exc:
        print(f"phenoscout {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder that cannot be made, a file where a folder must be, ...
        if args.verbose:
            raise
        what = exc.strerror or str(exc)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"phenoscout {args.command}: error: {what}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

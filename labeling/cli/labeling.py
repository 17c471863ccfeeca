"""``phenoscout`` subcommands that label: ``info``, ``classes``, ``next``, ``label`` and
``review`` (the Review page's views)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from datasets.words import count
from labeling.cli.parsing import Parents, Sub, add_parser
from labeling.errors import PhenoScoutError

if TYPE_CHECKING:
    from labeling.project import Project

#: ``--strategy`` choices for the help (the registry imports scikit-learn: too slow for --help;
#: tests/unit/labeling/test_strategies.py keeps the two in step)
STRATEGY_NAMES = (
    "discover",
    "random",
    "least_confidence",
    "margin",
    "entropy",
    "diversity",
    "novelty",
    "cluster_coverage",
    "typical",
    "balanced_margin",
    "predicted_rare",
)


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


def _cmd_classes(args: argparse.Namespace) -> int:
    from labeling.project import open_project

    store = open_project(Path(args.project)).store
    if args.add is not None:
        info = store.add_class(args.add)
        print(f"added {info.name!r} (key {info.key or '-'})")
    if args.rename:
        from labeling.store.names import normalise_class_name

        store.rename_class(*args.rename)
        old, new = (normalise_class_name(n) for n in args.rename)
        print(f"renamed {old!r} to {new!r}")
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
    if len(batch) < args.n:  # on stderr: stdout stays one JSON line per cell
        store = project.store
        busy = set(store.current_labels(include_pseudo=True)) | store.leased_ids()
        n_free = store.n_cells() - len(busy)
        later = (
            "near-copies of these come in a later batch"
            if n_free > 0
            else "no other cell is unlabeled and free"
        )
        print(
            f"{len(batch)} cells of the {args.n} asked for: a batch holds no labeled or leased "
            f"cell and no near-copies of one another ({later})",
            file=sys.stderr,
        )
    return 0


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["CELL_ID=CLASS", ...]`` -> {cell_id: class}, split at the first ``=``.

    Raises:
        PhenoScoutError: for an item without ``=`` or with an empty side, or a cell given two
            different classes (the same class twice is one label).
    """
    out: dict[str, str] = {}
    for item in items:
        cell_id, sep, label = item.partition("=")
        if not sep or not cell_id.strip() or not label.strip():
            raise PhenoScoutError(
                f"{item!r} is not CELL_ID=CLASS (e.g. plate1.A01_s1.npz:3=mitotic)"
            )
        cell_id = cell_id.strip()
        if out.get(cell_id, label) != label:
            raise PhenoScoutError(
                f"cell {cell_id} is given two classes ({out[cell_id]!r} and {label!r}); "
                "nothing committed"
            )
        out[cell_id] = label
    return out


def _cmd_label(args: argparse.Namespace) -> int:
    from labeling.project import open_project

    labels = parse_assignments(args.assignments)
    project = open_project(Path(args.project))
    n = project.store.submit(labels, annotator=args.annotator, source="cli")
    same = len(labels) - n  # the label each cell already carries (or skips): stored before
    print(f"committed {n}" + (f" ({same} unchanged: already so)" if same else ""), flush=True)
    merged = project.store.merge_targets()
    for name in sorted({lab.strip() for lab in labels.values()} & set(merged)):
        print(f"note: class {name!r} was merged into {merged[name]!r}: stored as "
              f"{merged[name]!r}")  # fmt: skip
    _refit(project, args.no_refit or n == 0)  # nothing new: the head is as it was
    return 0


def _cmd_import_labels(args: argparse.Namespace) -> int:
    from labeling.io.imports import import_labels
    from labeling.project import open_project

    project = open_project(Path(args.project))
    n = import_labels(project, Path(args.csv), annotator=args.annotator, relabel=args.relabel)
    print(f"imported {count(n, 'label')} from {args.csv}", flush=True)
    _refit(project, args.no_refit or n == 0)
    return 0


def _refit(project: Project, skip: bool) -> None:
    """Refit the head after labels were committed, unless ``skip``, and say so."""
    if not skip:
        from labeling.loop import fit_head

        head = fit_head(project)
        if head.version:
            print(
                f"head refit: {head.version} ({len(head.classes)} classes, "
                f"{head.fit_seconds:.2f} s)"
            )


#: ``phenoscout review`` views, as on the Review page
REVIEW_VIEWS = ("disagreements", "inconsistent", "class", "confident", "similar")


def _cmd_review(args: argparse.Namespace) -> int:
    import pandas as pd

    from labeling import review
    from labeling.project import open_project

    project = open_project(Path(args.project))
    needs = {"class": "--class", "confident": "--class", "similar": "--cell"}
    if args.view in needs and not (args.cls if needs[args.view] == "--class" else args.cell):
        raise PhenoScoutError(f"review {args.view} needs {needs[args.view]}")
    if args.view == "disagreements":
        frame = review.disagreements(project)
    elif args.view == "inconsistent":
        frame = review.inconsistent_labels(project)
    elif args.view == "class":
        known = [c.name for c in project.store.classes(include_pseudo=True)]
        if args.cls not in known:
            raise PhenoScoutError(f"no class {args.cls!r}; the classes: {', '.join(known)}")
        frame = pd.DataFrame({"cell_id": review.cells_of_class(project, args.cls)})
    elif args.view == "confident":
        frame = review.confident_unlabeled(project, args.cls, args.n)
    else:
        frame = pd.DataFrame({"cell_id": review.similar_cells(project, args.cell, args.n)})
    if args.view in ("disagreements", "inconsistent", "class"):
        frame = frame.head(args.n)
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise PhenoScoutError(f"{out}: is a folder; give a file name ending .csv")
        out.parent.mkdir(parents=True, exist_ok=True)  # as export does
        frame.to_csv(out, index=False)
        print(f"wrote {len(frame)} rows to {out}")
    elif frame.empty:
        print(f"no cells: {_EMPTY[args.view]}")
    else:
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


_EMPTY = {
    "disagreements": "trained without each labeled cell, the model predicts its label for every "
    "one (or too few labels to check: two classes need two labels each)",
    "inconsistent": "no labeled cell is contradicted by both its cross-validated prediction and "
    "its nearest labeled neighbours (or too few labels to tell)",
    "class": "no cell carries this class",
    "confident": "no unlabeled cell is left",
    "similar": "no unlabeled cell is left",
}


def _add_review(sub: Sub, parents: Parents) -> None:
    p = add_parser(
        sub,
        "review",
        parents=[parents["project"]],
        help="the Review page's views: disagreements, inconsistent labels, a class's cells, ...",
        description="Print (or write with --out) one of the Review page's lists of cells: "
        "disagreements (labels the model, trained without the cell, predicts otherwise; most "
        "confident first), inconsistent (contradicted by both that model and the nearest labeled "
        "neighbours), class (the cells of --class, in labeling order), confident (the unlabeled "
        "cells most likely of --class) or similar (the unlabeled cells nearest to --cell). "
        "Relabel with `phenoscout label`.",
    )
    p.add_argument("view", choices=REVIEW_VIEWS, help="which list")
    p.add_argument("--class", dest="cls", metavar="NAME", help="the class (class, confident)")
    p.add_argument("--cell", metavar="CELL_ID", help="the query cell (similar)")
    p.add_argument("--n", type=int, default=50, help="at most this many cells (default 50)")
    p.add_argument("--out", help="write the list to this CSV instead of printing it")
    p.set_defaults(func=_cmd_review)


def _add_info(sub: Sub, parents: Parents) -> None:
    p = add_parser(
        sub,
        "info",
        parents=[parents["project"]],
        help="summarise a project: cells, channels, classes, labels",
        description="Print the project's folder, cell count, channels, the labels given and on "
        "how many cells (as the app counts them), and each class with its key and cells.",
    )
    p.set_defaults(func=_cmd_info)


def _add_next(sub: Sub, parents: Parents) -> None:
    p = add_parser(
        sub,
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
        "one of " + ", ".join(STRATEGY_NAMES),
    )
    p.set_defaults(func=_cmd_next)


def _add_label(sub: Sub, parents: Parents) -> None:
    """``label`` and ``import-labels``: both commit in one transaction, then refit the head."""
    commit = argparse.ArgumentParser(add_help=False)
    commit.add_argument(
        "--no-refit", action="store_true", help="commit only; do not refit the head"
    )
    p = add_parser(
        sub,
        "label",
        parents=[parents["project"], parents["annotator"], commit],
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
    p.set_defaults(func=_cmd_label)
    p = add_parser(
        sub,
        "import-labels",
        parents=[parents["project"], parents["annotator"], commit],
        help="commit the labels of a path,label CSV (existing labels, another tool's)",
        description="Commit a path,label CSV's labels in one transaction, all or nothing: "
        "paths as for init --import-labels (cell ids, absolute paths, or paths relative to "
        "the CSV's folder or to the crops folder); a cell labeled otherwise already stops it "
        "unless --relabel.",
    )
    p.add_argument("csv", help="the path,label CSV")
    p.add_argument(
        "--relabel",
        action="store_true",
        help="let the file change labels cells already carry (the history keeps the old ones); "
        "without it such a file imports nothing",
    )
    p.set_defaults(func=_cmd_import_labels)


def _add_classes(sub: Sub, parents: Parents) -> None:
    p = add_parser(
        sub,
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

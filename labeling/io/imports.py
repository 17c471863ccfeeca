"""Import existing labels (from an earlier project or another tool) as real labels."""

from __future__ import annotations

import logging
from pathlib import Path

from datasets.errors import DataError
from labeling.project import Project

logger = logging.getLogger(__name__)

IMPORT_ANNOTATOR = "import"


def _read_label_csv(path: Path):  # -> pd.DataFrame
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such labels file") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse as CSV ({str(exc).strip()})") from exc
    missing = {"path", "label"} - set(df.columns)
    if missing:
        raise DataError(
            f"{path}: missing column(s) {sorted(missing)}; expected a header 'path,label' "
            f"(found {list(df.columns)})"
        )
    from labeling.io.export import unquote_formula

    for column in ("path", "label"):  # an exported CSV's '= ... cells come back as written
        df[column] = df[column].map(unquote_formula)
    from datasets.names import class_name_problem

    clean = []
    for line, label in enumerate(df["label"], start=2):  # the rule labels.csv follows too
        name, problem = class_name_problem(label)
        if problem:
            raise DataError(f"{path}: line {line}: {problem}")
        clean.append(name)
    df["label"] = clean
    return df


def _path_index(project: Project) -> dict[str, str]:
    """Every way a label file may name a cell -> its cell_id: the cell id itself, the source path
    relative to its crops folder, and the absolute source path."""
    from datasets.cells import read_parts

    cells = project.cells(columns=["cell_id", "source", "part"])
    roots = {int(p["part"]): Path(p["root"]) for p in read_parts(project.path)}
    index: dict[str, str] = {}
    for cell_id, source, part in cells.itertuples(index=False):
        index[cell_id] = cell_id
        index.setdefault(source, cell_id)
        index[str(roots[int(part)] / source)] = cell_id
    return index


def import_labels(project: Project, csv_path: Path, annotator: str = IMPORT_ANNOTATOR) -> int:
    """Commit the labels of a ``path,label`` CSV to the store, in one transaction.

    A path may be a cell id, a path relative to the CSV's folder or to the crops folder, or an
    absolute path (``file.npz#i`` for an image inside an npz).

    Returns:
        The number of labels committed.

    Raises:
        DataError: on a bad CSV or paths that match no cell (nothing is committed then).
    """
    csv_path = Path(csv_path)
    df = _read_label_csv(csv_path)
    index = _path_index(project)
    labels: dict[str, str] = {}
    unknown: list[str] = []
    where: dict[str, int] = {}  # cell_id -> the line that labeled it
    for line, (raw, label) in enumerate(zip(df["path"], df["label"]), start=2):
        candidates = (raw, str((csv_path.parent / raw).resolve()), str(Path(raw).resolve()))
        cell_id = next((index[c] for c in candidates if c in index), None)
        if cell_id is None:
            unknown.append(raw)
        elif labels.get(cell_id, label) != label:
            raise DataError(
                f"{csv_path}: line {line}: {raw!r} is {label!r} but line {where[cell_id]} made "
                f"the same cell {labels[cell_id]!r}; one class per cell, nothing was imported"
            )
        else:
            labels[cell_id] = label
            where.setdefault(cell_id, line)
    if unknown:
        raise DataError(
            f"{csv_path}: {len(unknown)} path(s) match no cell of the project, e.g. "
            f"{unknown[:3]}; nothing was imported"
        )
    n = project.store.submit(labels, annotator=annotator, source="import")
    logger.info("imported %d labels from %s", n, csv_path)
    return n

"""Import existing labels (from an earlier project or another tool) as real labels."""

from __future__ import annotations

import logging
from pathlib import Path

from datasets.errors import DataError
from datasets.words import count
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
    plain = [str(c).strip().lower() for c in df.columns]  # "Path", " label": the same columns
    if len(set(plain)) == len(plain):
        df.columns = plain
    missing = {"path", "label"} - set(df.columns)
    if missing:
        found = list(df.columns)
        sep = next((s for s in (";", "\t", "|") if len(found) == 1 and s in str(found[0])), None)
        hint = f"; it looks separated by {sep!r}: save it comma-separated" if sep else ""
        raise DataError(
            f"{path}: missing column(s) {sorted(missing)}; expected a header 'path,label' "
            f"(found {found}){hint}"
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


def _check_case(path: Path, names: list[str], existing: tuple[str, ...] = ()) -> None:
    """A DataError naming the line of the first class that differs from an earlier one of the
    file, or from a class of the project (``existing``), only by case."""
    seen: dict[str, tuple[str, int | None]] = {n.casefold(): (n, None) for n in existing}
    for line, name in enumerate(names, start=2):
        other, at = seen.setdefault(name.casefold(), (name, line))
        if other != name:
            where = f"line {at}'s {other!r}" if at else f"the project's class {other!r}"
            raise DataError(
                f"{path}: line {line}: class {name!r} differs from {where} only by case; "
                "use one spelling, nothing was imported"
            )


def check_label_csv(project: Project, csv_path: Path) -> None:
    """Everything :func:`import_labels` checks before it looks for the cells: the columns, the
    class names (also against the project's classes, by case). ``add`` runs it before it
    ingests, so that a bad file stops before any cell is added.

    Raises:
        DataError: naming the file (and the line) and the cause.
    """
    _checked_label_csv(project, Path(csv_path))


def _checked_label_csv(project: Project, path: Path):  # -> pd.DataFrame
    """The CSV read (:func:`_read_label_csv`) and its class names checked for case clashes,
    among themselves and with the project's classes."""
    df = _read_label_csv(path)
    existing = tuple(c.name for c in project.store.classes(include_pseudo=True))
    _check_case(path, df["label"].tolist(), existing)
    return df


class _PathIndex:
    """Every way a label file may name a cell: its cell id, its absolute source path, or its
    source path relative to its crops folder, which two parts (plates added from folders laid
    out alike) may share: then the part ``part`` (the crops just added) decides, else it is
    ambiguous."""

    def __init__(self, project: Project, part: int | None) -> None:
        from datasets.cells import read_parts

        cells = project.cells(columns=["cell_id", "source", "part"])
        roots = {int(p["part"]): Path(p["root"]) for p in read_parts(project.path)}
        self.exact: dict[str, str] = {}
        self.relative: dict[str, dict[int, str]] = {}
        for cell_id, source, at in cells.itertuples(index=False):
            self.exact[cell_id] = cell_id
            self.exact[str(roots[int(at)] / source)] = cell_id
            self.relative.setdefault(source, {})[int(at)] = cell_id
        self.part, self.roots = part, roots

    def find(self, raw: str, csv_folder: Path) -> str | None:
        """The cell ``raw`` names; None when none. DataError when it names several."""
        import os

        for candidate in (raw, str((csv_folder / raw).resolve()), str(Path(raw).resolve())):
            if candidate in self.exact:
                return self.exact[candidate]
        owners = self.relative.get(os.path.normpath(raw) if raw else raw, {})
        if len(owners) > 1 and self.part in owners:
            return owners[self.part]
        if len(owners) > 1:
            folders = ", ".join(str(self.roots[p]) for p in sorted(owners))
            raise DataError(
                f"{raw!r} names a cell in each of {len(owners)} crops folders ({folders}); "
                "give the path relative to the CSV's folder (put the CSV in the crops folder), "
                "an absolute path or the cell id; nothing was imported"
            )
        return next(iter(owners.values()), None)


def import_labels(
    project: Project,
    csv_path: Path,
    annotator: str = IMPORT_ANNOTATOR,
    part: int | None = None,
    relabel: bool = False,
) -> int:
    """Commit the labels of a ``path,label`` CSV to the store, in one transaction.

    A path may be a cell id, a path relative to the CSV's folder or to the crops folder, or an
    absolute path (``file.npz#i`` for an image inside an npz). A path relative to the crops
    folder that two parts share names the cell of part ``part`` (the crops just added); without
    ``part`` it is an error. A cell that already carries another label keeps it: such a file
    stops with nothing imported, unless ``relabel`` (a curated file meant to change labels;
    the history keeps the old ones).

    Returns:
        The number of labels committed.

    Raises:
        DataError: on a bad CSV, paths that match no cell, or cells labeled otherwise already
            (nothing is committed then).
    """
    csv_path = Path(csv_path)
    df = _checked_label_csv(project, csv_path)
    index = _PathIndex(project, part)
    labels: dict[str, str] = {}
    unknown: list[str] = []
    where: dict[str, int] = {}  # cell_id -> the line that labeled it
    for line, (raw, label) in enumerate(zip(df["path"], df["label"]), start=2):
        try:
            cell_id = index.find(raw, csv_path.parent)
        except DataError as e:
            raise DataError(f"{csv_path}: line {line}: {e}") from None
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
    current = project.store.current_labels(include_pseudo=True)
    other = [c for c, lab in labels.items() if current.get(c, lab) != lab]
    if other and not relabel:
        c = other[0]
        raise DataError(
            f"{csv_path}: line {where[c]}: {count(len(other), 'cell')} already with another label, "
            f"e.g. {c} is {current[c]!r}, the file says {labels[c]!r}; nothing was imported "
            "(to change them on purpose: import-labels --relabel)"
        )
    n = project.store.submit(labels, annotator=annotator, source="import")
    logger.info("imported %d labels from %s", n, csv_path)
    return n

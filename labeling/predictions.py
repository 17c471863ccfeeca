"""What the current head predicts over the whole screen: per cell, per class and per well.

The head is the loop's (:func:`labeling.loop.fit_head`, cached on disk for the current labels),
so these tables cost one argmax over the cached probabilities. ``labeling.reports.report`` and
``labeling.io.export`` re-export them; the app's Discover and Export pages and ``phenoscout export
--what predictions|wells`` call them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from labeling.errors import DataError, NotTrainedError

if TYPE_CHECKING:
    from labeling.loop import HeadState
    from labeling.project import Project

logger = logging.getLogger(__name__)


def is_negative(control: pd.Series) -> pd.Series:
    """Which values of a ``control`` column mark negative controls: any spelling that starts
    with "neg", in any case (``negative``, ``Negative``, ``neg``, ``NEG_CTRL``)."""
    return control.astype(str).str.strip().str.lower().str.startswith("neg")


def control_note(project: Project) -> str | None:
    """A line for the user when the cell table has a ``control`` column but no value of it marks
    negative controls (:func:`is_negative`), so no well gets a z; else None."""
    if "control" not in project.cells(columns=None).columns:
        return None
    control = project.cells(columns=["control"])["control"].dropna()
    if is_negative(control).any():
        return None
    seen = ", ".join(repr(v) for v in control.astype(str).value_counts().index[:5]) or "none"
    return (
        f"{project.path.name}: the control column names no negative controls (values: {seen}); "
        "mark them 'negative' in metadata.csv for a z-score per well"
    )


def _head(project: Project) -> tuple[list[str], HeadState]:
    """Cell ids in pool order and the fitted head; NotTrainedError before two classes."""
    from labeling.loop import fit_head, pool_data

    pool = pool_data(project)
    head = fit_head(project, pool)
    if head.proba is None:
        found = ", ".join(head.classes) or "none"
        raise NotTrainedError(
            f"{project.path.name}: predictions need labels of at least 2 classes (labeled so "
            f"far: {found}); label a few cells of a second class first"
        )
    return [str(c) for c in pool.cell_ids], head


def predicted_labels(project: Project) -> pd.DataFrame:
    """``cell_id, predicted, confidence`` for every cell with features (pool order).

    Raises:
        NotTrainedError: fewer than 2 classes have labels.
    """
    return _predicted(*_head(project))


def _predicted(ids: list[str], head: HeadState) -> pd.DataFrame:
    proba = np.asarray(head.proba)
    names = np.asarray(head.classes, dtype=object)
    return pd.DataFrame(
        {"cell_id": ids, "predicted": names[proba.argmax(axis=1)], "confidence": proba.max(axis=1)}
    )


def predictions_table(project: Project) -> pd.DataFrame:
    """One row per cell: ``cell_id, path``, the metadata columns, ``predicted``, ``confidence``
    and ``p_<class>`` (the head's probability of each class, float32, rows sum to 1).

    Raises:
        NotTrainedError: fewer than 2 classes have labels.
    """
    ids, head = _head(project)
    frame = _predicted(ids, head)
    probs = pd.DataFrame(np.asarray(head.proba), columns=[f"p_{c}" for c in head.classes])
    from labeling.io.export import cell_paths

    left = cell_paths(project, project.cells())
    return left.merge(pd.concat([frame, probs], axis=1), on="cell_id", how="inner")


def predicted_distribution(project: Project) -> pd.DataFrame:
    """How the head splits the whole screen: ``label, n_cells, fraction`` for every class the
    head knows (0 for a class it never predicts), most common first.

    Raises:
        NotTrainedError: fewer than 2 classes have labels.
    """
    ids, head = _head(project)
    counts = _predicted(ids, head)["predicted"].value_counts()
    frame = pd.DataFrame({"label": list(head.classes)})
    frame["n_cells"] = [int(counts.get(c, 0)) for c in head.classes]
    frame["fraction"] = frame["n_cells"] / max(int(frame["n_cells"].sum()), 1)
    return frame.sort_values(["n_cells", "label"], ascending=[False, True], ignore_index=True)


def well_fractions(project: Project) -> pd.DataFrame:
    """Predicted class fractions per well, for a plate heatmap.

    One row per (plate, well, class): ``plate, well, label, n_cells`` (cells of the well
    predicted as the class), ``n_well`` (cells of the well), ``fraction``. When the cell table
    has a ``control`` column with negative-control wells (:func:`is_negative`), also ``z``:
    (fraction - mean) / sd over the negative-control wells of the same plate (of all plates when
    the plate has fewer than 2), sd floored at one cell's share of a median control well so that
    a class the controls never show gets a finite z; NaN with fewer than 2 control wells; and
    ``n_controls``, the control wells the z rests on.

    Raises:
        DataError: the cell table has no ``plate`` and ``well`` columns.
        NotTrainedError: fewer than 2 classes have labels.
    """
    cols = project.cells(columns=None).columns
    if not {"plate", "well"} <= set(cols):
        lack = " and ".join(c for c in ("plate", "well") if c not in cols)
        raise DataError(
            f"{project.path.name}/cells.parquet has no {lack} column; give plate and well when "
            "creating the project: for crops a metadata.csv with plate,well columns, for fields "
            "a --pattern with {plate} and {well} (e.g. {plate}_{well}_s{site}_w{channel}.tif, or "
            "{plate}_{well}_s{site}.tif for one multi-channel file per field)"
        )
    ids, head = _head(project)
    extra = ["control"] if "control" in cols else []
    extra += ["part"] if "part" in cols else []
    cells = project.cells(columns=["cell_id", "plate", "well", *extra])
    cells = _plate_of_every_part(project, cells)
    pred = cells.merge(_predicted(ids, head), on="cell_id", how="inner")
    n_without_well = int(pred["well"].isna().sum())
    pred["plate"], pred["well"] = pred["plate"].astype(str), pred["well"].astype(str)
    counts = pd.crosstab([pred["plate"], pred["well"]], pred["predicted"])
    counts = counts.reindex(columns=list(head.classes), fill_value=0)
    n_well = counts.sum(axis=1)
    frac = counts.div(n_well, axis=0)
    out = counts.stack().rename("n_cells").reset_index()
    out.columns = ["plate", "well", "label", "n_cells"]
    out["n_well"] = n_well.reindex(pd.MultiIndex.from_frame(out[["plate", "well"]])).to_numpy()
    out["fraction"] = out["n_cells"] / out["n_well"]
    if "control" in cols:
        negative = pred.loc[is_negative(pred["control"]), ["plate", "well"]]
        controls = set(map(tuple, negative.drop_duplicates().to_numpy()))
        out["z"] = _z_scores(frac, n_well, controls).stack().to_numpy()
        per_plate = pd.Series([p for p, _ in controls], dtype=object).value_counts()
        n_ctrl = out["plate"].map(per_plate).fillna(0).astype(np.int64)
        out["n_controls"] = n_ctrl.where(n_ctrl >= 2, len(controls))  # fewer: all plates'
    out["n_cells"] = out["n_cells"].astype(np.int64)
    out.attrs["n_without_well"] = n_without_well
    return out


def _plate_of_every_part(project: Project, cells: pd.DataFrame) -> pd.DataFrame:
    """``cells`` with a plate for the cells of a part added without one (a plate of its own, as
    its normalisation is): its folder's name, or ``part N`` when that is a plate already."""
    missing = cells["plate"].isna() | (cells["plate"].astype(str).str.strip() == "")
    if not missing.any() or "part" not in cells:
        return cells
    from datasets.cells import read_parts

    roots = {int(p["part"]): Path(str(p.get("root", ""))).name for p in read_parts(project.path)}
    taken = set(cells.loc[~missing, "plate"].astype(str))
    names = {}
    for part in cells.loc[missing, "part"].unique():
        name = roots.get(int(part)) or f"part {int(part)}"
        names[part] = name if name not in taken else f"{name} (part {int(part)})"
    cells = cells.copy()
    cells.loc[missing, "plate"] = cells.loc[missing, "part"].map(names)
    return cells


def _z_scores(
    frac: pd.DataFrame, n_well: pd.Series, controls: set[tuple[str, str]]
) -> pd.DataFrame:
    """z of every well's class fractions against the negative-control wells (see
    :func:`well_fractions`); ``frac`` is indexed by (plate, well), one column per class."""
    z = pd.DataFrame(np.nan, index=frac.index, columns=frac.columns)
    is_ctrl = np.array([key in controls for key in frac.index])
    if is_ctrl.sum() < 2:
        return z
    plates = frac.index.get_level_values(0)
    for plate in plates.unique():
        ref = is_ctrl & (plates == plate)
        ref = ref if ref.sum() >= 2 else is_ctrl
        floor = 1.0 / max(float(np.median(n_well[ref])), 1.0)
        mean = frac[ref].mean(axis=0)
        sd = np.maximum(frac[ref].std(axis=0, ddof=1).fillna(0.0), floor)
        rows = plates == plate
        z.loc[rows] = ((frac[rows] - mean) / sd).to_numpy()
    return z

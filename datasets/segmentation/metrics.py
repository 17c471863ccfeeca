"""Object-level scoring of an instance segmentation against true labels.

Intersections of every overlapping (true, predicted) label pair come from one sparse
contingency table (the distinct pairs among foreground pixels, counted), so scoring a field
with thousands of objects costs a few passes over its pixels, never a loop over object pairs.

Border rule (``exclude_border=True``): objects cut by the image edge have unknowable true
extent, so

* true objects touching the border are removed;
* a predicted object whose largest-IoU true partner is a border object is removed (it is
  an attempt at an excluded object: neither a true nor a false positive);
* a predicted object touching the border is removed unless it matched an interior true
  object (a correct match near the edge still counts).

Matching: a pair matches when its IoU >= ``iou_threshold``. Above 0.5 at most one partner per
object can pass, so matches are unique; otherwise an optimal one-to-one assignment (Hungarian,
maximising total IoU) is solved over the candidate pairs only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from datasets.errors import DataError
from datasets.segmentation.classical import touches_border


@dataclass(frozen=True)
class SegScore:
    """Object-level agreement of a predicted segmentation with the truth."""

    n_true: int  # true objects scored (interior ones when excluding the border)
    n_pred: int  # predicted objects scored (after the border rule)
    tp: int  # matched pairs
    precision: float  # tp / n_pred (1.0 when n_pred == 0)
    recall: float  # tp / n_true (1.0 when n_true == 0)
    f1: float  # 2 tp / (n_true + n_pred) (1.0 when both are 0)
    mean_iou: float  # mean IoU of the matched pairs (0.0 without matches)


def score_segmentation(
    truth: npt.NDArray,
    pred: npt.NDArray,
    iou_threshold: float = 0.5,
    exclude_border: bool = True,
) -> SegScore:
    """Match predicted objects to true objects by IoU and count hits (see the module docstring).

    Args:
        truth: (H, W) integer labels, 0 = background; ids need not be consecutive.
        pred: (H, W) integer labels of the same shape.
        iou_threshold: IoU a pair needs to match, in (0, 1].
        exclude_border: apply the border rule of the module docstring.

    Returns:
        Counts, precision, recall, F1 and mean matched IoU.

    Raises:
        DataError: on shapes that differ or are not 2-D, non-integer or negative labels,
            or a threshold outside (0, 1].
    """
    truth, pred = _check(truth, pred, iou_threshold)
    pairs = _pair_iou(truth, pred)
    t_ids, p_ids = _ids(truth), _ids(pred)
    t_border = np.zeros(len(t_ids), dtype=bool)
    p_border = np.zeros(len(p_ids), dtype=bool)
    if exclude_border:
        t_border = np.isin(t_ids, list(touches_border(truth)))
        p_border = np.isin(p_ids, list(touches_border(pred)))
    t_row = np.searchsorted(t_ids, pairs[0]).astype(np.int64)
    p_row = np.searchsorted(p_ids, pairs[1]).astype(np.int64)
    p_drop = _best_partner_on_border(p_row, t_row, pairs[2], t_border, len(p_ids))
    ok = ~t_border[t_row] & ~p_drop[p_row] & (pairs[2] >= iou_threshold)
    t_hit, p_hit, pair_iou = _match(t_row[ok], p_row[ok], pairs[2][ok])
    p_drop |= p_border  # ... unless matched to an interior true object
    p_drop[p_hit] = False
    n_true, n_pred, tp = int((~t_border).sum()), int((~p_drop).sum()), len(pair_iou)
    return SegScore(
        n_true=n_true,
        n_pred=n_pred,
        tp=tp,
        precision=tp / n_pred if n_pred else 1.0,
        recall=tp / n_true if n_true else 1.0,
        f1=2 * tp / (n_true + n_pred) if n_true + n_pred else 1.0,
        mean_iou=float(pair_iou.mean()) if tp else 0.0,
    )


def _check(truth: npt.NDArray, pred: npt.NDArray, iou_threshold: float) -> tuple:
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.ndim != 2 or truth.shape != pred.shape:
        raise DataError(
            f"truth {truth.shape} and prediction {pred.shape}: expected two (H, W) label "
            "images of the same shape"
        )
    for name, labels in (("truth", truth), ("prediction", pred)):
        if labels.dtype.kind not in "iub" or (labels.size and labels.min() < 0):
            raise DataError(
                f"{name} labels of dtype {labels.dtype}: expected non-negative integer labels "
                "(0 = background)"
            )
    if not 0.0 < iou_threshold <= 1.0:
        raise DataError(f"iou_threshold={iou_threshold} is outside (0, 1]; use e.g. 0.5")
    return truth.astype(np.int64, copy=False), pred.astype(np.int64, copy=False)


def _ids(labels: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Sorted ids of the objects present (without 0)."""
    ids = np.flatnonzero(np.bincount(labels.ravel()))
    return ids[ids != 0]


def _pair_iou(truth: npt.NDArray[np.int64], pred: npt.NDArray[np.int64]) -> npt.NDArray:
    """(3, k) float64: true id, predicted id and IoU of every overlapping pair of objects."""
    area_t = np.bincount(truth.ravel())
    area_p = np.bincount(pred.ravel())
    both = (truth != 0) & (pred != 0)
    code = truth[both] * len(area_p) + pred[both]
    codes, inter = np.unique(code, return_counts=True)
    t, p = np.divmod(codes, len(area_p))
    iou = inter / (area_t[t] + area_p[p] - inter)
    return np.stack([t, p, iou]).astype(np.float64)


def _best_partner_on_border(
    p_row: npt.NDArray, t_row: npt.NDArray, iou: npt.NDArray, t_border: npt.NDArray, n_pred: int
) -> npt.NDArray[np.bool_]:
    """(n_pred,) bool: predicted objects whose largest-IoU true partner touches the border."""
    order = np.lexsort((-iou, p_row))  # by predicted object, best IoU first
    first = order[np.r_[True, p_row[order][1:] != p_row[order][:-1]]] if len(order) else order
    drop = np.zeros(n_pred, dtype=bool)
    drop[p_row[first]] = t_border[t_row[first]]
    return drop


def _match(
    t_row: npt.NDArray, p_row: npt.NDArray, iou: npt.NDArray
) -> tuple[npt.NDArray, npt.NDArray, npt.NDArray]:
    """One-to-one matches among candidate pairs (all above the threshold): (true rows,
    predicted rows, IoU). Unique already above IoU 0.5; else a Hungarian assignment per
    connected group of candidates (groups are small: objects overlap only neighbours)."""
    if len(np.unique(t_row)) == len(t_row) and len(np.unique(p_row)) == len(p_row):
        return t_row, p_row, iou
    t_ids, t_loc = np.unique(t_row, return_inverse=True)
    p_ids, p_loc = np.unique(p_row, return_inverse=True)
    n_t = len(t_ids)
    graph = coo_matrix((np.ones(len(iou)), (t_loc, n_t + p_loc)), shape=(n_t + len(p_ids),) * 2)
    _, group = connected_components(graph, directed=False)
    order = np.argsort(group[t_loc], kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group[t_loc][order]) != 0])
    hits: list[tuple[int, int, float]] = []
    for sel in np.split(order, starts[1:]):
        rows, r_inv = np.unique(t_loc[sel], return_inverse=True)
        cols, c_inv = np.unique(p_loc[sel], return_inverse=True)
        gain = np.zeros((len(rows), len(cols)))
        gain[r_inv, c_inv] = iou[sel]
        for r, c in zip(*linear_sum_assignment(gain, maximize=True), strict=True):
            if gain[r, c] > 0:
                hits.append((t_ids[rows[r]], p_ids[cols[c]], gain[r, c]))
    out = np.array(hits, dtype=np.float64).reshape(-1, 3)
    return out[:, 0].astype(np.int64), out[:, 1].astype(np.int64), out[:, 2]

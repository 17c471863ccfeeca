"""Instance labels from a segmentation network's probability maps, and the per-pixel
classes it trains on: seeded watershed post-processing with scipy and scikit-image (no torch).

``models.segmentation.segmentation`` runs the network and hands its (H, W) probability maps here.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import find_boundaries, relabel_sequential, watershed

__all__ = ["WatershedParams", "labels_from_probs", "targets_from_labels"]


class WatershedParams(Protocol):
    """The post-processing knobs (``models.segmentation.seg_train.SegmenterConfig`` has them)."""

    @property
    def fg_threshold(self) -> float: ...  # P(foreground) above this is an object pixel
    @property
    def interior_threshold(self) -> float: ...  # P(interior) above this is an object's inside
    @property
    def seed_sigma(self) -> float: ...  # smoothing of the distance map before seeding
    @property
    def seed_h(self) -> float: ...  # h of the h-maxima seeds
    @property
    def min_size(self) -> int: ...  # smaller objects are dropped, pixels


def targets_from_labels(labels: npt.NDArray) -> npt.NDArray[np.int64]:
    """Per-pixel classes of an instance label image.

    Args:
        labels: (H, W) integer labels, 0 background.

    Returns:
        (H, W) int64: 0 background, 1 interior, 2 boundary (an object's pixels that touch the
        background or another object).
    """
    boundary = find_boundaries(labels, mode="inner") & (labels > 0)
    return np.where(boundary, 2, (labels > 0).astype(np.int64))


def labels_from_probs(
    foreground: npt.NDArray, interior: npt.NDArray, config: WatershedParams
) -> npt.NDArray[np.int32]:
    """Instance labels from probability maps.

    The interior mask (high P(interior)) has a neck wherever the network sees a boundary
    between touching nuclei; one seed per h-maximum of its smoothed distance transform splits
    it there (a shape prior that also splits touching nuclei whose boundary the network
    missed). A watershed on that distance map grows the seeds over the foreground, then small
    objects are dropped.

    Args:
        foreground: (H, W) float P(foreground).
        interior: (H, W) float P(interior).
        config: thresholds, seeding and minimum size
            (``models.segmentation.seg_train.SegmenterConfig``).

    Returns:
        (H, W) int32 labels, 0 background, objects 1..n.
    """
    mask = foreground > config.fg_threshold
    inner = (interior > config.interior_threshold) & mask
    dist = ndi.distance_transform_edt(inner).astype(np.float32)
    if config.seed_sigma > 0:
        dist = ndi.gaussian_filter(dist, config.seed_sigma)
    labels = watershed(-dist, markers=_seeds(dist, inner, config.seed_h), mask=mask)
    labels = _drop_small(labels, config.min_size)
    return relabel_sequential(labels)[0].astype(np.int32)


def _seeds(
    dist: npt.NDArray[np.float32], inner: npt.NDArray[np.bool_], h: float
) -> npt.NDArray[np.int32]:
    """(H, W) int32 markers: the h-maxima of ``dist`` inside ``inner``. A component of
    ``inner`` with one local maximum is its own seed; only the others pay for a morphological
    reconstruction, on their bounding box (h-maxima of a whole 2048x2048 field take seconds)."""
    components, n = ndi.label(inner)
    peaks = (dist >= ndi.maximum_filter(dist, size=3)) & inner
    peak_ids, _ = ndi.label(peaks)  # 4-connected like the components: never spans two
    first_peak = np.zeros(peak_ids.max() + 1, np.int64)
    first_peak[peak_ids[peaks]] = components[peaks]
    n_peaks = np.bincount(first_peak[1:], minlength=n + 1)
    seeds = np.where(n_peaks[components] == 1, components, 0).astype(np.int32)
    next_id, boxes = n + 1, ndi.find_objects(components)
    for comp in np.flatnonzero(n_peaks >= 2):
        box = boxes[comp - 1]
        inside = components[box] == comp
        local, k = ndi.label(h_maxima(np.where(inside, dist[box], 0), h) & inside)
        seeds[box][local > 0] = local[local > 0] + next_id - 1
        next_id += k
    return seeds


def _drop_small(labels: npt.NDArray, min_size: int) -> npt.NDArray:
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    if small.any():
        labels = np.where(small[labels], 0, labels)
    return labels

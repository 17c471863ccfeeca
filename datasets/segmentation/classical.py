"""Classical segmentation of whole fields of view into nuclei (and optionally cells).

The pipeline, per field, with every size derived from the field itself (nothing is tuned to
one image):

1. Smooth the nuclear channel (Gaussian, ``sigma``) and flatten its background: a smooth
   polynomial surface fitted robustly to the medians of tiles is subtracted (uneven
   illumination, strongest in brightfield).
2. Make objects bright: fluorescence nuclei are brighter than the background, stained
   brightfield nuclei darker (``polarity="auto"`` decides per field from which intensity
   tail of the flattened field is longer).
3. A global floor: halfway between the background level and Otsu's threshold, but never
   less than 4 noise standard deviations above the background (so an empty or flat field
   gives no objects instead of thresholded noise).
4. The typical nuclear radius of the field: the median, over the floor's connected
   components, of their largest distance to the background (clumps of touching nuclei have
   about the width of one nucleus, so clumps barely bias it).
5. ``threshold="local"`` (default) keeps only pixels above their Gaussian-weighted
   neighbourhood mean (width 0.5 typical radius): this cuts the dim valleys between touching
   nuclei and the blur halo of bright nuclei, which one global threshold cannot.
   ``threshold="otsu"`` keeps the floor alone.
6. Holes filled, one-pixel bridges opened, then touching nuclei split (``split``): a
   watershed on the smoothed distance transform, seeded by its local maxima within one
   typical radius, after which neighbours whose shared boundary dips less than h = 0.1
   typical radius (at least 0.5 px) below the lower peak merge again (the h-maxima
   criterion, without the cost of a morphological reconstruction).
7. Objects outside ``[min_area, max_area]`` dropped, labels renumbered 1..n. By default both
   follow the typical radius r, so a field at 60x segments like one at 20x: smaller than a
   disc of r/4 (at least 30 px) is a speck, larger than 25 typical discs (a disc of 5 r) an
   unsplit clump or debris.

Optional cell regions: nuclei grown by up to ``expand_px`` pixels into the foreground of
``cell_channel`` (each pixel to its nearest nucleus).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage import filters, measure, morphology, segmentation

from datasets.errors import DataError

logger = logging.getLogger(__name__)

THRESHOLDS = ("otsu", "local")
POLARITIES = ("auto", "bright", "dark")
_FLOOR_SHARE = 0.5  # global floor: this share of the way from the background to Otsu
_NOISE_FLOOR = 4.0  # ... and at least this many noise standard deviations above background
_LOCAL_WIDTH = 0.5  # local-mean Gaussian width, in typical radii
_SEED_WINDOW = 1.0  # watershed seeds: distance-map maxima within this many typical radii
_H_SHARE, _H_MIN = 0.1, 0.5  # merge neighbours whose saddle is < h (typical radii) deep
_TRUNCATE = 2.5  # local-mean kernel cut at this many widths (a mean, not a precise blur)
_DIST_SIGMA = 1.0  # smoothing of the distance map before seeding (px)
_STAT_STEP = 2  # image statistics (percentiles, Otsu, noise) on every 2nd row and column
_CROSS = ndi.generate_binary_structure(2, 1)
SPECK_AREA = 30  # px: smaller components are noise whatever the magnification
_TILE_AREA = 5000  # px: background tiles are as wide as a disc of this area (or max_area)


@dataclass(frozen=True)
class SegmentConfig:
    """How :func:`segment_nuclei` and :func:`segment_field` find objects.

    The object size range follows the field's typical nuclear radius r unless given
    (:meth:`size_range`): objects smaller than a disc of r/4 are specks of noise or debris
    (never less than ``SPECK_AREA`` 30 px, a disc of about 6 px diameter), while apoptotic
    fragments and condensed mitotic plates are larger; objects larger than 25 typical discs
    (a disc of 5 r) are unsplit clumps or debris. On the DSB 2018 field rescaled 0.6x-4x
    (nuclei of 7-90 px diameter, a 10x to a 60x objective) this keeps the object F1 at
    0.92-0.97, where fixed limits of 30 and 5,000 px gave 0.01 at 3x (``benchmarks/
    bench_segment.py``).
    """

    channel: int = 0  # nuclear channel of a (C, H, W) field
    sigma: float = 1.0  # Gaussian smoothing before thresholding (px); 0 = none
    threshold: str = "local"  # "local": floor AND above the local mean; "otsu": floor alone
    polarity: str = "auto"  # "bright" (fluorescence), "dark" (brightfield stains), "auto"
    min_area: int | None = None  # smallest object kept (px); None: from the typical radius
    max_area: int | None = None  # largest object kept (px); None: from the typical radius
    split: bool = True  # split touching nuclei (distance-transform watershed)
    cell_channel: int | None = None  # grow nuclei into this channel's foreground -> cells
    expand_px: int = 15  # how far cells reach beyond their nucleus (px)

    @property
    def speck_area(self) -> int:
        """Components smaller than this (px) are noise before the size range is known."""
        return self.min_area if self.min_area is not None else SPECK_AREA

    def size_range(self, radius: float) -> tuple[float, float]:
        """Smallest and largest object area kept (px) on a field of typical nuclear radius
        ``radius`` (px): ``min_area`` and ``max_area`` where given."""
        smallest = max(SPECK_AREA, np.pi * (radius / 4.0) ** 2)
        largest = 25.0 * np.pi * radius**2
        return (
            float(self.min_area) if self.min_area is not None else smallest,
            float(self.max_area) if self.max_area is not None else max(largest, smallest),
        )

    def __post_init__(self) -> None:
        checks = (
            ("channel", self.channel, self.channel >= 0, "an index >= 0"),
            ("sigma", self.sigma, 0.0 <= self.sigma <= 20.0, "0-20 px"),
            ("threshold", self.threshold, self.threshold in THRESHOLDS, str(THRESHOLDS)),
            ("polarity", self.polarity, self.polarity in POLARITIES, str(POLARITIES)),
            ("min_area", self.min_area, self.min_area is None or self.min_area >= 1,
             "None or at least 1 px"),
            ("max_area", self.max_area,
             self.max_area is None or self.max_area >= (self.min_area or 1),
             "None or at least min_area"),
            ("cell_channel", self.cell_channel,
             self.cell_channel is None or self.cell_channel >= 0, "None or an index >= 0"),
            ("expand_px", self.expand_px, self.expand_px >= 0, "0 or more px"),
        )  # fmt: skip
        for name, value, ok, allowed in checks:
            if not ok:
                raise DataError(f"SegmentConfig.{name}={value!r} is invalid; use {allowed}")


def segment_field(
    field: npt.NDArray, cfg: SegmentConfig | None = None, counts: Dropped | None = None
) -> npt.NDArray[np.int32]:
    """Segment one field of view: nuclei from ``cfg.channel``, or cells around them when
    ``cfg.cell_channel`` is set.

    Args:
        field: (C, H, W) channel-first, or (H, W) for one channel; any real dtype.
        cfg: segmentation settings; the defaults when None.
        counts: when given, the objects left out for their size are added to it.

    Returns:
        (H, W) int32 labels, 0 = background, objects 1..n.

    Raises:
        DataError: when ``field`` is not 2-D or 3-D or a channel index is out of range.
    """
    cfg = cfg or SegmentConfig()
    field = np.asarray(field)
    if field.ndim == 2:
        field = field[None]
    if field.ndim != 3:
        raise DataError(
            f"field of shape {field.shape}: expected (C, H, W) or (H, W); "
            "pass one field of view with the channel axis first"
        )
    for name, idx in (("channel", cfg.channel), ("cell_channel", cfg.cell_channel)):
        if idx is not None and idx >= field.shape[0]:
            raise DataError(
                f"SegmentConfig.{name}={idx} but the field has {field.shape[0]} channel(s) "
                f"(0-{field.shape[0] - 1}); pick one of those"
            )
    nuclei = segment_nuclei(field[cfg.channel], cfg, counts)
    if cfg.cell_channel is None:
        return nuclei
    return _grow_cells(nuclei, field[cfg.cell_channel], cfg)


def segment_nuclei(
    image: npt.NDArray, cfg: SegmentConfig | None = None, counts: Dropped | None = None
) -> npt.NDArray[np.int32]:
    """Segment nuclei in one channel (see the module docstring for the method).

    Args:
        image: (H, W) any real dtype (8/16-bit, float); bright or dark nuclei.
        cfg: segmentation settings (``channel`` and ``cell_channel`` are not used here).
        counts: when given, the objects left out for their size are added to it.

    Returns:
        (H, W) int32 labels, 0 = background, nuclei 1..n; all zero for an empty or flat field.

    Raises:
        DataError: when ``image`` is not 2-D, not real-valued, or holds NaN/inf.
    """
    cfg = cfg or SegmentConfig()
    signal, noise, _ = _signal(image, cfg)
    floor = _floor(signal, noise)
    rough = signal > floor
    if not rough.any():
        logger.debug("no pixel above the floor %.4g (noise %.3g): no objects", floor, noise)
        return np.zeros(signal.shape, dtype=np.int32)
    radius = _typical_radius(rough, cfg.speck_area)
    if cfg.threshold == "local":
        rough &= signal > ndi.gaussian_filter(signal, _LOCAL_WIDTH * radius, truncate=_TRUNCATE)
    del signal
    mask = ndi.binary_opening(_fill_holes(rough), _CROSS)
    mask = morphology.remove_small_objects(mask, max_size=cfg.speck_area - 1)
    labels = _split(mask, radius) if cfg.split else ndi.label(mask)[0]
    smallest, largest = cfg.size_range(radius)
    labels, dropped = _filter_sizes(labels.astype(np.int32, copy=False), smallest, largest)
    logger.debug("%d nuclei (typical radius %.1f px, floor %.4g)", labels.max(), radius, floor)
    if counts is not None:
        counts.small += dropped[0]
        counts.large += dropped[1]
    return labels


def field_polarity(image: npt.NDArray, cfg: SegmentConfig | None = None) -> str:
    """Whether the objects of a field are brighter ("bright") or darker ("dark") than its
    background, judged after smoothing and flattening the background as ``cfg`` says: the
    longer intensity tail away from the median wins (objects cover less than half of a
    typical field); ties, such as a flat or pure-noise field, go to "bright".

    Args:
        image: (H, W) any real dtype.
        cfg: the smoothing and tile size used (the defaults when None).

    Returns:
        "bright" or "dark".
    """
    return _signal(image, replace(cfg or SegmentConfig(), polarity="auto"))[2]


def _tail_polarity(flat: npt.NDArray[np.float32]) -> str:
    low, mid, high = np.percentile(flat[::_STAT_STEP, ::_STAT_STEP], (0.5, 50.0, 99.5))
    return "dark" if mid - low > high - mid else "bright"


def touches_border(labels: npt.NDArray) -> set[int]:
    """The labels of objects with at least one pixel on the image border.

    Args:
        labels: (H, W) integer labels, 0 = background.

    Returns:
        Set of label ids (without 0).
    """
    labels = np.asarray(labels)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return {int(v) for v in np.unique(edge) if v != 0}


def object_table(labels: npt.NDArray) -> pd.DataFrame:
    """One row per object of a label image.

    Args:
        labels: (H, W) integer labels, 0 = background.

    Returns:
        Columns label, centroid_y, centroid_x, min_row, min_col, max_row, max_col (bbox,
        max exclusive), area (px), touches_border (bool); sorted by label.
    """
    labels = np.asarray(labels)
    props = measure.regionprops_table(labels, properties=("label", "centroid", "bbox", "area"))
    names = {"centroid-0": "centroid_y", "centroid-1": "centroid_x", "bbox-0": "min_row",
             "bbox-1": "min_col", "bbox-2": "max_row", "bbox-3": "max_col"}  # fmt: skip
    table = pd.DataFrame(props).rename(columns=names)
    table = table.astype({"label": np.int64, "min_row": np.int64, "min_col": np.int64,
                          "max_row": np.int64, "max_col": np.int64, "area": np.int64})  # fmt: skip
    table["touches_border"] = table["label"].isin(touches_border(labels))
    return table.sort_values("label", ignore_index=True)


# -- steps -------------------------------------------------------------------------------------


def _as_float(image: npt.NDArray) -> npt.NDArray[np.float32]:
    """(H, W) float32 copy of ``image``; DataError on a wrong shape, dtype or NaN/inf."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise DataError(
            f"image of shape {image.shape}: expected one (H, W) channel; "
            "use segment_field for a (C, H, W) field"
        )
    if min(image.shape) < 3:
        raise DataError(f"image of shape {image.shape} is too small; expected at least 3 x 3")
    if image.dtype.kind not in "biuf":
        raise DataError(f"image of dtype {image.dtype}: expected integer or float pixels")
    x = image.astype(np.float32)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise DataError(f"image has {bad} NaN/inf pixel(s); replace them before segmenting")
    return x


def _signal(image: npt.NDArray, cfg: SegmentConfig) -> tuple[npt.NDArray[np.float32], float, str]:
    """Smoothed, background-flattened float32 copy of ``image`` with objects bright, the
    standard deviation of its noise, and the polarity.

    The noise is that of the raw pixels (from neighbour differences, blind to smooth
    structure) times the smoothing kernel's noise gain, and at least the rounding noise of
    integer pixels (smoothing does not average away the steps of a smooth gradient, which
    are not independent) and 1e-4 of the image's range.
    """
    x = _as_float(image)
    diff = np.diff(x[::_STAT_STEP], axis=1)
    noise = 1.4826 * float(np.median(np.abs(diff - np.median(diff)))) / np.sqrt(2.0)
    if cfg.sigma > 0:
        ndi.gaussian_filter(x, cfg.sigma, output=x)
        delta = np.zeros((65, 65), dtype=np.float64)
        delta[32, 32] = 1.0
        noise *= float(np.linalg.norm(ndi.gaussian_filter(delta, cfg.sigma)))
    rounding = 1.0 / np.sqrt(12.0) if np.asarray(image).dtype.kind in "biu" else 0.0
    noise = max(noise, rounding, 1e-4 * float(x.max() - x.min()))
    _flatten(x, _background_tile(cfg.max_area or _TILE_AREA))
    polarity = _tail_polarity(x) if cfg.polarity == "auto" else cfg.polarity
    if polarity == "dark":
        np.negative(x, out=x)
    return x, noise, polarity


def _background_tile(max_area: int) -> int:
    """Side of the tiles the background is sampled in: the diameter of the largest object."""
    return max(16, round(2.0 * np.sqrt(max_area / np.pi)))


def _flatten(signal: npt.NDArray[np.float32], tile: int) -> None:
    """Subtract (in place) a smooth background: a polynomial surface (degree up to 3) fitted
    to the median of each tile, robustly (tiles crowded with objects, whose median sits far
    off, are dropped and the surface refitted). Removes uneven illumination, which matters
    most when objects are dark on a bright background; bright and dark objects alike."""
    h, w = signal.shape
    rows = np.linspace(0, h, max(1, round(h / tile)) + 1).astype(int)
    cols = np.linspace(0, w, max(1, round(w / tile)) + 1).astype(int)
    level = np.array([np.median(signal[r0:r1:_STAT_STEP, c0:c1:_STAT_STEP])
                      for r0, r1 in zip(rows[:-1], rows[1:])
                      for c0, c1 in zip(cols[:-1], cols[1:])])  # fmt: skip
    degree = min(3, len(rows) - 2, len(cols) - 2)
    if degree < 1:
        signal -= np.float32(np.median(level))
        return
    y = ((rows[:-1] + rows[1:]) / h - 1.0).repeat(len(cols) - 1)  # tile centres in [-1, 1]
    x = np.tile((cols[:-1] + cols[1:]) / w - 1.0, len(rows) - 1)
    terms = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]
    design = np.stack([y**i * x**j for i, j in terms], axis=1)
    keep = np.ones(len(level), dtype=bool)
    for _ in range(2):
        coef = np.linalg.lstsq(design[keep], level[keep], rcond=None)[0]
        resid = level - design @ coef
        keep = np.abs(resid) <= 2.5 * 1.4826 * np.median(np.abs(resid[keep])) + 1e-9
    powers = np.arange(degree + 1)
    yy = (np.linspace(-1.0, 1.0, h) * (h - 1) / h)[:, None] ** powers  # (h, degree + 1)
    xx = (np.linspace(-1.0, 1.0, w) * (w - 1) / w)[:, None] ** powers  # (w, degree + 1)
    table = np.zeros((degree + 1, degree + 1))
    table[tuple(np.array(terms).T)] = coef
    signal -= (yy @ table @ xx.T).astype(np.float32)  # the surface at every pixel centre


def _floor(signal: npt.NDArray[np.float32], noise: float) -> float:
    """The global floor: halfway from the background to Otsu's threshold, and at least
    ``_NOISE_FLOOR`` noise standard deviations above the background."""
    sample = signal[::_STAT_STEP, ::_STAT_STEP]
    if sample.max() <= sample.min():
        return float(sample.max())  # flat: nothing is above the floor
    otsu = float(filters.threshold_otsu(sample))
    background = float(np.median(sample[sample <= otsu]))
    return max(background + _FLOOR_SHARE * (otsu - background),
               background + _NOISE_FLOOR * noise)  # fmt: skip


def _distance(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
    """(H, W) float32 distance of each ``mask`` pixel to the background: the mean of the
    chessboard and city-block distances (octagonal, within 8% of Euclidean and ten times
    faster than the exact transform)."""
    depth = ndi.distance_transform_cdt(mask, metric="chessboard").astype(np.float32)
    depth += ndi.distance_transform_cdt(mask, metric="taxicab")
    depth *= np.float32(0.5)
    return depth


def _fill_holes(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """``mask`` with every background region that does not reach the image edge filled."""
    background, _ = ndi.label(~mask)
    edge = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    outside = np.zeros(background.max(initial=0) + 1, dtype=bool)
    outside[edge] = True
    outside[0] = False
    return ~outside[background]


def _typical_radius(mask: npt.NDArray[np.bool_], speck_area: int) -> float:
    """Median over connected components of their largest distance to the background (px),
    over the components at least a third as deep as the component a typical foreground pixel
    lies in (the area-weighted median): specks of noise along the ragged rims of large
    nuclei (hundreds of them on a field at 40-60x) and components thinner than 2 px say
    nothing about nuclear size, and clumps (about one nucleus wide) barely bias it."""
    components, n = ndi.label(mask)
    depth = _distance(mask)
    peaks = np.zeros(n + 1, dtype=np.float32)
    np.maximum.at(peaks, components[mask], depth[mask])
    areas = np.bincount(components.ravel(), minlength=n + 1)
    keep = (peaks >= 2.0) & (areas >= speck_area)
    keep[0] = False
    if not keep.any():
        return 2.0
    order = np.argsort(peaks[keep], kind="stable")
    weight = np.cumsum(areas[keep][order])
    typical = peaks[keep][order][np.searchsorted(weight, 0.5 * weight[-1])]
    return float(np.median(peaks[keep & (peaks >= typical / 3.0)]))


def _split(mask: npt.NDArray[np.bool_], radius: float) -> npt.NDArray[np.int32]:
    """Labels of ``mask`` with touching nuclei split: a watershed on the smoothed distance
    transform from its local maxima (window of one typical radius), after which neighbours
    whose shared boundary dips less than h below the lower peak are merged again (so a
    ridge of maxima in one elongated nucleus stays one object; h scales with the radius)."""
    depth = _distance(mask)
    ndi.gaussian_filter(depth, _DIST_SIGMA, output=depth)
    window = 2 * max(1, round(_SEED_WINDOW * radius)) + 1
    seeds = (depth >= ndi.maximum_filter(depth, size=window)) & mask
    markers, n = ndi.label(seeds, structure=np.ones((3, 3), dtype=bool))
    peaks = np.zeros(n + 1, dtype=np.float32)
    np.maximum.at(peaks, markers[seeds], depth[seeds])
    labels = _watershed_clumps(mask, depth, markers, seeds)
    peaks = np.pad(peaks, (0, labels.max(initial=0) + 1 - len(peaks)))  # seedless: isolated
    return _merge_shallow(labels, depth, peaks, max(_H_MIN, _H_SHARE * radius))


def _watershed_clumps(
    mask: npt.NDArray[np.bool_], depth: npt.NDArray[np.float32], markers: npt.NDArray[np.int32],
    seeds: npt.NDArray[np.bool_],
) -> npt.NDArray[np.int32]:  # fmt: skip
    """Labels of ``mask``: a component with one seed takes its marker's id, one with several
    is flooded from them (watershed on ``-depth``, run on that component's box only), one
    without a seed gets a new id."""
    components, n = ndi.label(mask)
    owner = np.zeros(markers.max(initial=0) + 1, dtype=np.int64)
    owner[markers[seeds]] = components[seeds]
    n_seeds = np.bincount(owner[1:], minlength=n + 1)
    comp_label = np.zeros(n + 1, dtype=np.int32)
    comp_label[owner[1:]] = np.arange(1, len(owner), dtype=np.int32)
    no_seed = np.flatnonzero(n_seeds == 0)[1:]
    comp_label[no_seed] = len(owner) + np.arange(len(no_seed), dtype=np.int32)
    labels = comp_label[components]
    boxes = ndi.find_objects(components)
    for comp in np.flatnonzero(n_seeds >= 2):
        box = boxes[comp - 1]
        inside = components[box] == comp
        flooded = segmentation.watershed(-depth[box], markers[box] * inside, mask=inside)
        labels[box][inside] = flooded[inside]
    return labels


def _merge_shallow(
    labels: npt.NDArray[np.int32], depth: npt.NDArray[np.float32], peaks: npt.NDArray, h: float
) -> npt.NDArray[np.int32]:
    """Merge adjacent regions whose saddle (highest boundary point between them) lies less
    than ``h`` below the lower of their two peaks ``peaks`` (n + 1,)."""
    lo, hi, saddle = [], [], []
    for a, b, da, db in ((labels[:-1], labels[1:], depth[:-1], depth[1:]),
                         (labels[:, :-1], labels[:, 1:], depth[:, :-1], depth[:, 1:])):  # fmt: skip
        edge = (a != b) & (a > 0) & (b > 0)
        la, lb = a[edge], b[edge]
        lo.append(np.minimum(la, lb))
        hi.append(np.maximum(la, lb))
        saddle.append(np.minimum(da[edge], db[edge]))
    lo_a, hi_a, sad = np.concatenate(lo), np.concatenate(hi), np.concatenate(saddle)
    n = len(peaks)
    code = lo_a.astype(np.int64) * n + hi_a
    order = np.lexsort((-sad, code))
    first = order[np.r_[True, code[order][1:] != code[order][:-1]]] if len(order) else order
    pair_lo, pair_hi, pair_saddle = lo_a[first], hi_a[first], sad[first]
    shallow = np.minimum(peaks[pair_lo], peaks[pair_hi]) - pair_saddle < h
    if not shallow.any():
        return labels
    graph = coo_matrix(
        (np.ones(int(shallow.sum())), (pair_lo[shallow], pair_hi[shallow])), shape=(n, n)
    )
    _, group = connected_components(graph, directed=False)
    group = group.astype(np.int32) + 1
    group[0] = 0
    return group[labels]


def _filter_sizes(
    labels: npt.NDArray[np.int32], min_area: float, max_area: float
) -> tuple[npt.NDArray[np.int32], tuple[int, int]]:
    """``labels`` without objects outside [min_area, max_area], renumbered 1..n, and how many
    were too small and too large."""
    areas = np.bincount(labels.ravel())
    present = areas > 0
    present[0] = False
    small, large = present & (areas < min_area), present & (areas > max_area)
    keep = present & ~small & ~large
    new_ids = np.zeros(len(areas), dtype=np.int32)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new_ids[labels], (int(small.sum()), int(large.sum()))


@dataclass
class Dropped:
    """Objects segmentation left out for their size (see :meth:`SegmentConfig.size_range`)."""

    small: int = 0  # specks smaller than the smallest object kept
    large: int = 0  # clumps or debris larger than the largest

    def note(self) -> str | None:
        """One line for an ingest report; None when nothing was left out."""
        if not (self.small or self.large):
            return None
        return (
            f"Segmentation left out {self.small} specks (smaller than a disc of a quarter of "
            f"the field's typical nuclear radius) and {self.large} clumps (larger than 25 "
            "typical nuclei); from Python, SegmentConfig's min_area and max_area set others"
        )


class ClassicalSegmenter:
    """:func:`segment_field` with ``cfg`` as a picklable segmenter (fields ingest runs it in
    worker processes); each call's size-filtered objects are in :attr:`dropped`."""

    def __init__(self, cfg: SegmentConfig | None = None) -> None:
        self.cfg = cfg or SegmentConfig()
        self.dropped = Dropped()

    def __call__(self, field: npt.NDArray) -> npt.NDArray[np.int32]:
        self.dropped = Dropped()
        return segment_field(field, self.cfg, self.dropped)


def _grow_cells(
    nuclei: npt.NDArray[np.int32], cell_image: npt.NDArray, cfg: SegmentConfig
) -> npt.NDArray[np.int32]:
    """Cells: each nucleus grown by up to ``expand_px`` into the cell channel's foreground
    (floor of :func:`_floor` on that channel), each pixel going to its nearest nucleus."""
    if cfg.expand_px == 0 or nuclei.max() == 0:
        return nuclei
    signal, noise, _ = _signal(cell_image, cfg)
    floor = _floor(signal, noise)
    grown = segmentation.expand_labels(nuclei, cfg.expand_px)
    grown[(signal <= floor) & (nuclei == 0)] = 0
    return grown.astype(np.int32, copy=False)

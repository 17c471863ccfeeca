"""The built-in demo screen: a synthetic two-channel fluorescence screen of single-cell crops.

Layout written by :func:`generate_demo`::

    OUT/plate{p}/{well}_s{site}.npz   "images": (n, 2, 64, 64) uint16, channel 0 nucleus (DNA),
                                      channel 1 cytoplasm; one file per imaged site
    OUT/labels.csv                    path,label   (path like "plate1/B03_s2.npz#17", 0-based)
    OUT/metadata.csv                  path,plate,well,site,control
    OUT/README.txt                    what this is

Seven phenotypes, three of them rare, overlap honestly (size, shape and DNA content are
continuous; out-of-focus cells hide detail), with screen-like nuisances: Poisson-like noise on
a camera offset, per-cell blur, plate and site intensity shifts, neighbours cut at the crop
edge. A few "hit" wells per plate are enriched in one phenotype. A seed gives the same bytes.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from datasets.crops.demo_render import CHANNELS as CHANNELS  # re-exported: the demo's names
from datasets.crops.demo_render import CROP_SIZE as CROP_SIZE
from datasets.crops.demo_render import PHENOTYPES, PREVALENCE, render_cells
from datasets.crops.demo_render import RARE_PHENOTYPES as RARE_PHENOTYPES
from datasets.errors import DataError
from datasets.progress import Progress

if TYPE_CHECKING:
    from datasets.parallel import Runner

logger = logging.getLogger(__name__)

MIN_CELLS = 100
_N_PLATES, _SITES_PER_WELL, _CELLS_PER_SITE = 2, 3, 100  # more cells per site past 396k
_ROWS = "BCDEFGHIJKLMNOPQ"  # plate rows used, at most 16
_HIT_BOOST = {"binucleated": 3.0, "mitotic": 6.0, "apoptotic": 6.0, "micronucleated": 6.0}
_PLATE_GAIN = ((1.0, 1.0), (0.8, 1.2))  # per plate, per channel
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps: same seed, same bytes
_README_MARK = "PhenoScout demo screen"


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`generate_demo` wrote."""

    out_dir: Path  # the demo folder
    n_cells: int  # cells written
    class_counts: dict[str, int]  # cells per phenotype
    n_files: int  # .npz site files written


@dataclass(frozen=True)
class _Site:
    plate: int  # 1-based
    well: str  # e.g. "B03"
    site: int  # 1-based
    control: str  # "negative" or "none"
    well_idx: int  # position in the layout's well list

    @property
    def path(self) -> str:
        return f"plate{self.plate}/{self.well}_s{self.site}.npz"


def generate_demo(
    out_dir: Path,
    n_cells: int = 20000,
    seed: int = 0,
    progress: Progress | None = None,
    runner: Runner | None = None,
) -> DemoSummary:
    """Write the synthetic demo screen (see the module docstring for the layout).

    Args:
        out_dir: folder to write; created, or an earlier demo there is replaced.
        n_cells: number of cells, at least 100.
        seed: seed of the plan's random generator and of each site's own generator (drawn
            from the seed and the site's number); same seed, same bytes, wherever the sites
            are rendered.
        progress: called as ``progress(done_cells, n_cells)`` as site files are written.
        runner: where the sites are rendered (:mod:`datasets.parallel`); in this process when
            None (then ``progress`` follows every file).

    Returns:
        What was written.

    Raises:
        DataError: on ``n_cells`` < 100, or when ``out_dir`` holds something else.
    """
    from datasets.parallel import Runner

    if n_cells < MIN_CELLS:
        raise DataError(f"n_cells={n_cells} is too small for a screen; use at least {MIN_CELLS}")
    out_dir = Path(out_dir)
    prepare_demo_folder(out_dir, _README_MARK, "demo screen", ("plate*/*.npz",))
    rng = np.random.default_rng(seed)
    sites, site_of_cell, labels = _plan(n_cells, rng)
    first = np.searchsorted(site_of_cell, np.arange(len(sites) + 1))
    jobs = [(i, site.path, site.plate, labels[first[i] : first[i + 1]])
            for i, site in enumerate(sites)]  # fmt: skip
    own = runner is None
    runner = runner or Runner()
    per_task = 1 if runner.config.in_process(n_cells) else _SITES_PER_TASK
    tasks = [_SiteJob(str(out_dir), seed, tuple(jobs[k : k + per_task]))
             for k in range(0, len(jobs), per_task)]  # fmt: skip
    try:
        runner.map(render_sites, tasks, progress=progress, n_cells=n_cells,
                   weights=[sum(len(j[3]) for j in t.sites) for t in tasks])  # fmt: skip
    finally:
        if own:
            runner.close()
    _write_tables(out_dir, sites, site_of_cell, labels)
    counts = {name: int((labels == k).sum()) for k, name in enumerate(PHENOTYPES)}
    logger.info("demo: %d cells in %d files under %s", n_cells, len(sites), out_dir)
    return DemoSummary(out_dir, n_cells, counts, len(sites))


_SITES_PER_TASK = 8  # site files one task renders on a cluster


@dataclass(frozen=True)
class _SiteJob:
    """One rendering task: ``(site number, file path, plate, phenotypes (m,))`` per site."""

    out_dir: str
    seed: int
    sites: tuple[tuple[int, str, int, npt.NDArray[np.int64]], ...]


def render_sites(job: _SiteJob) -> int:
    """Task: render and write the site files of ``job``; returns the cells written. Each site
    draws from its own generator, seeded by the demo's seed and the site's number."""
    n = 0
    for site_idx, path, plate, labels in job.sites:
        rng = np.random.default_rng([job.seed, site_idx])
        _write_npz(Path(job.out_dir) / path, render_cells(labels, _PLATE_GAIN[plate - 1], rng))
        n += len(labels)
    return n


def plan_phenotypes(n_cells: int, seed: int = 0) -> npt.NDArray[np.int64]:
    """The phenotype index (into PHENOTYPES) of every cell that ``generate_demo`` would write,
    in labels.csv order, without rendering anything (cheap; for tests and reports).

    Returns:
        (n_cells,) int64.
    """
    return _plan(n_cells, np.random.default_rng(seed))[2]


# -- plan: wells, sites, phenotypes ------------------------------------------------------------


def _plan(n_cells: int, rng: np.random.Generator) -> tuple[list[_Site], npt.NDArray, npt.NDArray]:
    """Sites in file order, each cell's site index (n,) and phenotype index (n,)."""
    sites, weights = _layout(n_cells, rng)
    share = rng.gamma(3.0, size=len(sites))  # uneven cell density; every site gets a cell
    counts = 1 + rng.multinomial(n_cells - len(sites), share / share.sum())
    site_of_cell = np.repeat(np.arange(len(sites)), counts)
    well_weights = weights[[s.well_idx for s in sites]][site_of_cell]
    return sites, site_of_cell, _assign_phenotypes(well_weights, rng)


def _layout(n_cells: int, rng: np.random.Generator) -> tuple[list[_Site], npt.NDArray]:
    """Sites in file order, and per-well phenotype weights (n_wells, n_phenotypes).

    Column 2 of every plate holds negative controls; a few other wells per plate are hits,
    enriched in one phenotype each; every well varies mildly.
    """
    n_wells = math.ceil(n_cells / (_N_PLATES * _SITES_PER_WELL * _CELLS_PER_SITE))
    n_rows = min(len(_ROWS), max(1, round(math.sqrt(n_wells / 1.5))))
    n_cols = min(22, max(2, math.ceil(n_wells / n_rows)))  # columns 02-23 of a 384-well plate
    wells = [f"{_ROWS[r]}{c:02d}" for c in range(2, 2 + n_cols) for r in range(n_rows)]
    sites: list[_Site] = []
    weights: list[npt.NDArray] = []
    for plate in range(1, _N_PLATES + 1):
        w = rng.lognormal(0.0, 0.15, size=(len(wells), len(PHENOTYPES)))
        candidates = rng.permutation(np.arange(n_rows, len(wells)))  # all but column 2
        n_hits = max(1, round(0.06 * len(candidates)))
        for k, name in enumerate(_HIT_BOOST):
            hits = candidates[(k * n_hits) % len(candidates) :][:n_hits]
            w[hits, PHENOTYPES.index(name)] *= _HIT_BOOST[name]
        for i, well in enumerate(wells):
            control = "negative" if i < n_rows else "none"
            for s in range(1, _SITES_PER_WELL + 1):
                sites.append(_Site(plate, well, s, control, len(weights) + i))
        weights.extend(w)
    return sites, np.asarray(weights)


def _assign_phenotypes(weights: npt.NDArray, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """Phenotype of each cell (n,) with exact screen-wide counts (``PREVALENCE`` x n), placed
    with probability proportional to each cell's well weight (n, n_phenotypes)."""
    n = len(weights)
    counts = [round(p * n) for p in PREVALENCE[1:]]
    labels = np.zeros(n, dtype=np.int64)
    free = np.arange(n)
    for k in range(len(PHENOTYPES) - 1, 0, -1):  # rarest first
        keys = rng.exponential(size=len(free)) / weights[free, k]
        chosen = np.argsort(keys, kind="stable")[: counts[k - 1]]
        labels[free[chosen]] = k
        free = np.delete(free, chosen)
    return labels


# -- rendering ---------------------------------------------------------------------------------


def prepare_demo_folder(out_dir: Path, mark: str, what: str, old_files: tuple[str, ...]) -> None:
    """Create ``out_dir``, or clear the files an earlier demo wrote there; refuse anything else.

    Args:
        out_dir: the demo's folder.
        mark: how the README.txt of an earlier demo of this kind begins.
        what: the demo's name in messages, e.g. "demo screen".
        old_files: glob patterns of the earlier demo's files, removed before writing again.

    Raises:
        DataError: ``out_dir`` is a file, or a non-empty folder no demo of this kind wrote.
    """
    readme = out_dir / "README.txt"
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: is a file; give a folder for the {what}")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (readme.is_file() and readme.read_text().startswith(mark)):
            raise DataError(
                f"{out_dir}: folder is not empty and holds no earlier {what}; "
                "choose a new folder or empty this one"
            )
        for old in sorted(f for pattern in old_files for f in out_dir.glob(pattern)):
            old.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _write_npz(path: Path, images: npt.NDArray[np.uint16]) -> None:
    """Write ``images`` as an .npz readable by ``np.load``, byte-identical for equal arrays
    (``np.savez`` stamps the current time into the zip)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    info = zipfile.ZipInfo("images.npy", date_time=_ZIP_TIME)
    info.compress_type, info.external_attr = zipfile.ZIP_STORED, 0o644 << 16
    with zipfile.ZipFile(tmp, "w") as zf, zf.open(info, "w", force_zip64=True) as f:
        np.lib.format.write_array(f, np.ascontiguousarray(images), allow_pickle=False)
    os.replace(tmp, path)


def _write_tables(
    out_dir: Path, sites: list[_Site], site_of_cell: npt.NDArray, labels: npt.NDArray
) -> None:
    """Write labels.csv, metadata.csv and README.txt."""
    first = np.searchsorted(site_of_cell, np.arange(len(sites)))
    with open(out_dir / "labels.csv", "w", newline="") as lf, \
            open(out_dir / "metadata.csv", "w", newline="") as mf:  # fmt: skip
        lw, mw = csv.writer(lf, lineterminator="\n"), csv.writer(mf, lineterminator="\n")
        lw.writerow(["path", "label"])
        mw.writerow(["path", "plate", "well", "site", "control"])
        for cell, (site_idx, label) in enumerate(zip(site_of_cell, labels, strict=True)):
            site = sites[site_idx]
            path = f"{site.path}#{cell - first[site_idx]}"
            lw.writerow([path, PHENOTYPES[label]])
            mw.writerow([path, f"plate{site.plate}", site.well, site.site, site.control])
    (out_dir / "README.txt").write_text(_README)


_README = f"""{_README_MARK} (synthetic; written by datasets.crops.demo.generate_demo)

Single-cell crops of a simulated two-channel fluorescence screen: 64x64 uint16 pixels,
channel 0 = nucleus (DNA stain), channel 1 = cytoplasm stain, raw camera values (offset ~100).
plate<p>/<well>_s<site>.npz   array "images" (n_cells, 2, 64, 64) for one imaged site
labels.csv                    path,label   true phenotype; path = file#index (0-based)
metadata.csv                  path,plate,well,site,control   column 02 = negative controls

Phenotypes (screen-wide share): {", ".join(f"{n} {p:.1%}" for n, p in zip(PHENOTYPES, PREVALENCE))}.
A few wells per plate are "hits" enriched in binucleated, mitotic, apoptotic or micronucleated
cells. Plate 2 is dimmer in DNA and brighter in cytoplasm than plate 1; about 7% of the cells
are out of focus. Nothing here is real data.
"""

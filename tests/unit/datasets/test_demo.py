"""Tests for datasets.crops.demo: layout, determinism, class mix and honest difficulty."""

from __future__ import annotations

import csv
import hashlib
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from datasets.crops.demo import (
    PHENOTYPES,
    PREVALENCE,
    RARE_PHENOTYPES,
    DemoSummary,
    generate_demo,
    plan_phenotypes,
)
from datasets.errors import DataError

PATH_RE = re.compile(r"^plate[12]/[B-Q]\d{2}_s\d\.npz#\d+$")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def labels_to_see_all(codes: np.ndarray, n_orderings: int, rng: np.random.Generator) -> np.ndarray:
    """Per random ordering of ``codes`` (n,), the 1-based position of the first cell of the
    last class to appear."""
    order = np.argsort(codes, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(codes[order])) + 1]
    out = []
    for chunk in np.array_split(np.arange(n_orderings), max(1, n_orderings // 250)):
        keys = rng.random((len(chunk), len(codes)))
        last = np.minimum.reduceat(keys[:, order], starts, axis=1).max(axis=1)
        out.append((keys <= last[:, None]).sum(axis=1))
    return np.concatenate(out)


@pytest.fixture(scope="module")
def demo300(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoSummary]:
    out = tmp_path_factory.mktemp("demo") / "demo"
    return out, generate_demo(out, n_cells=300, seed=0)


def test_layout_shapes_dtypes_and_tables(demo300: tuple[Path, DemoSummary]) -> None:
    out, summary = demo300
    labels = read_csv(out / "labels.csv")
    meta = read_csv(out / "metadata.csv")
    assert list(labels[0]) == ["path", "label"]
    assert list(meta[0]) == ["path", "plate", "well", "site", "control"]
    assert [r["path"] for r in labels] == [r["path"] for r in meta]
    assert len(labels) == summary.n_cells == 300
    assert all(PATH_RE.match(r["path"]) for r in labels)
    assert {r["label"] for r in labels} <= set(PHENOTYPES)
    assert {r["control"] for r in meta} == {"negative", "none"}
    files = sorted(out.glob("plate*/*.npz"))
    assert len(files) == summary.n_files
    for f in files:
        with np.load(f) as npz:
            assert npz.files == ["images"]  # labels live only in labels.csv
            images = npz["images"]
        assert images.dtype == np.uint16 and images.shape[1:] == (2, 64, 64)
        rel = f.relative_to(out).as_posix()
        idx = [int(r["path"].split("#")[1]) for r in labels if r["path"].startswith(rel + "#")]
        assert idx == list(range(len(images)))
    assert sum(summary.class_counts.values()) == 300
    assert (out / "README.txt").read_text().startswith("PhenoScout demo screen")


def test_pixels_look_like_a_fluorescence_screen(demo300: tuple[Path, DemoSummary]) -> None:
    out, _ = demo300
    plates = {p: np.concatenate([np.load(f)["images"] for f in sorted(out.glob(f"{p}/*.npz"))])
              for p in ("plate1", "plate2")}  # fmt: skip
    images = np.concatenate(list(plates.values()))
    assert 60 < np.percentile(images, 1) < 140  # camera offset, not zero
    centre = images[:, 0, 28:36, 28:36].mean(axis=(1, 2))
    corner = np.median(images[:, 0, :8, :8], axis=(1, 2))
    assert (centre > corner + 100).mean() > 0.9  # a nucleus at the centre of nearly every crop
    dna = {p: np.percentile(x[:, 0, 24:40, 24:40], 90) for p, x in plates.items()}
    assert dna["plate2"] < dna["plate1"]  # plate-to-plate intensity shift


def test_same_seed_same_bytes_and_other_seed_differs(
    tmp_path: Path, demo300: tuple[Path, DemoSummary]
) -> None:
    out, _ = demo300
    again = tmp_path / "again"
    generate_demo(again, n_cells=300, seed=0)
    assert file_hashes(again) == file_hashes(out)
    with zipfile.ZipFile(next(again.glob("plate1/*.npz"))) as zf:
        assert zf.infolist()[0].date_time == (1980, 1, 1, 0, 0, 0)
    other = tmp_path / "other"
    generate_demo(other, n_cells=300, seed=1)
    npz = [name for name in file_hashes(out) if name.endswith(".npz")]
    assert all(file_hashes(other).get(name) != file_hashes(out)[name] for name in npz)


def test_plan_matches_what_is_written(demo300: tuple[Path, DemoSummary]) -> None:
    out, summary = demo300
    written = [PHENOTYPES.index(r["label"]) for r in read_csv(out / "labels.csv")]
    np.testing.assert_array_equal(plan_phenotypes(300, seed=0), written)
    assert summary.class_counts == {n: written.count(k) for k, n in enumerate(PHENOTYPES)}


@pytest.mark.parametrize("n_cells", [4000, 20000])
def test_class_proportions(n_cells: int) -> None:
    codes = plan_phenotypes(n_cells, seed=0)
    share = np.bincount(codes, minlength=len(PHENOTYPES)) / n_cells
    np.testing.assert_allclose(share, PREVALENCE, atol=0.5 / n_cells)
    assert len(PHENOTYPES) >= 7 and len(RARE_PHENOTYPES) == 3
    for name in RARE_PHENOTYPES:
        assert 0.003 <= share[PHENOTYPES.index(name)] <= 0.02
    assert share[0] == share.max()


@pytest.mark.parametrize("n_cells", [4000, 20000])
def test_random_sampling_needs_many_labels_to_see_every_class(n_cells: int) -> None:
    codes = plan_phenotypes(n_cells, seed=0)
    positions = labels_to_see_all(codes, 2000, np.random.default_rng(0))
    assert np.median(positions) >= 150


def test_labels_to_see_all_helper_on_a_known_case() -> None:
    codes = np.array([0, 0, 0, 1])  # the single "1" is at a uniform position 1..4
    positions = labels_to_see_all(codes, 4000, np.random.default_rng(0))
    assert set(positions) == {2, 3, 4}  # class 0 always appears by position 2
    assert np.mean(positions) == pytest.approx(2.75, abs=0.05)  # (2 + 2 + 3 + 4) / 4


def test_progress_reports_every_file(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    summary = generate_demo(
        tmp_path / "d", n_cells=150, seed=3, progress=lambda d, t: calls.append((d, t))
    )
    assert len(calls) == summary.n_files
    assert calls[-1] == (150, 150) and all(t == 150 for _, t in calls)
    assert all(b[0] > a[0] for a, b in zip(calls, calls[1:], strict=False))


def test_bad_requests_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="n_cells=50"):
        generate_demo(tmp_path / "tiny", n_cells=50)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.docx").write_text("precious")
    with pytest.raises(DataError, match="not empty"):
        generate_demo(tmp_path / "busy", n_cells=100)
    assert (tmp_path / "busy" / "thesis.docx").read_text() == "precious"


def test_rerun_replaces_an_earlier_demo(tmp_path: Path) -> None:
    out = tmp_path / "d"
    generate_demo(out, n_cells=150, seed=0)
    stale = out / "plate1" / "Z99_s1.npz"  # as if left by a bigger earlier demo
    stale.write_bytes(b"old")
    summary = generate_demo(out, n_cells=120, seed=1)
    assert not stale.exists()
    assert len(list(out.glob("plate*/*.npz"))) == summary.n_files
    assert len(read_csv(out / "labels.csv")) == 120


@pytest.mark.slow
def test_difficulty_is_honest(tmp_path: Path) -> None:
    """Normalised demo -> morphology features -> balanced logistic regression, 5-fold CV."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from datasets.morphology import morphology_features
    from datasets.normalise import apply_ranges, compute_ranges

    out = tmp_path / "demo"
    generate_demo(out, n_cells=4000, seed=0)
    rows = read_csv(out / "labels.csv")
    files = dict.fromkeys(r["path"].split("#")[0] for r in rows)
    raw = np.concatenate([np.load(out / f)["images"] for f in files])
    feats, _ = morphology_features(apply_ranges(raw, compute_ranges(raw)))
    y = np.array([r["label"] for r in rows])
    assert min(np.unique(y, return_counts=True)[1]) >= 5 and len(set(y)) == len(PHENOTYPES)
    model = make_pipeline(
        StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000)
    )
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    with threadpool_limits(limits=1):  # BLAS threads thrash on a busy 2-core machine
        pred = cross_val_predict(model, feats, y, cv=folds)
    macro_f1 = f1_score(y, pred, average="macro")
    assert 0.70 <= macro_f1 <= 0.95, f"macro-F1 {macro_f1:.3f}"
    codes = np.unique(y, return_inverse=True)[1]
    assert np.median(labels_to_see_all(codes, 2000, np.random.default_rng(0))) >= 150
    wells = [r["path"].split("/")[0] + r["path"].split("/")[1][:3] for r in rows]
    mitotic = {w: [] for w in wells}
    for w, label in zip(wells, y, strict=True):
        mitotic[w].append(label == "mitotic")
    top = max(np.mean(v) for v in mitotic.values())
    assert top > 2.5 * np.mean(y == "mitotic")  # a hit well enriched in mitotic cells

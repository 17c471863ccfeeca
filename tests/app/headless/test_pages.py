"""The Discover, Review and Export pages driven headless with AppTest."""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit")

from tests.app.headless.apptest import (  # noqa: E402
    _app,
    _download,
    _page,
    _sess,
    _store,
)


def test_discover_page_on_a_labeled_project(labeled):
    with _store(labeled) as store:  # a class added by hand, no cell given it
        store.add_class("unseen so far")
        ids = [r[0] for r in store.read("SELECT cell_id FROM cells")]
        free = next(c for c in ids if c not in store.current_labels())
        store.submit({free: "single"}, "ann", "cli")  # one label: left out of the CV
    at = _page(_app(labeled), "discover")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Labels"] == "61"
    assert int(metrics["Classes found"]) >= 3
    assert not at.error
    assert not any("Cross-validation is not possible" in i.value for i in at.info)
    table = next(d.value for d in at.dataframe if "first_found_by" in d.value.columns)
    from app_pages.widgets.reasons import REASONS

    plain = {r.short for r in REASONS.values()}
    assert table.set_index("label").loc["unseen so far", "first_found_at"] == "-"
    assert not table.isna().any().any(), table  # no bare None shown
    scores = next(d.value for d in at.dataframe if "recall" in d.value.columns)
    assert not scores.isna().any().any(), scores  # a class left out of the CV reads "-"
    found = table.set_index("label")["first_found_by"]
    assert found.pop("unseen so far") == "not found yet"
    assert found.pop("single") == "cli"  # labeled outside a batch
    assert any(c.value.startswith("Not found yet (no panel): ") and "unseen so far" in c.value
               for c in at.caption)  # no flat curve for it  # fmt: skip
    found = found[found != "not found yet"]  # and the pseudo-classes no one used
    assert len(found) >= 3 and all(f.split(" (")[0] in plain for f in found), found
    assert at.selectbox(key="heat-class").options  # the plate heatmap is there
    at.radio(key="heat-value").set_value("z").run()
    assert not at.exception, at.exception
    at.selectbox(key="heat-class").set_value(at.selectbox(key="heat-class").options[-1]).run()
    assert not at.exception, at.exception


def test_discover_class_table_with_prevalence_shows_no_bare_none(labeled):
    from labeling.loop import next_batch, submit_labels
    from labeling.project import open_project

    proj = open_project(labeled)
    truth = proj.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    for _ in range(2):  # 48 random cells: prevalence is shown
        batch = next_batch(proj, 24, annotator="ann", strategy="random", resume=False)
        submit_labels(proj, {b["cell_id"]: truth[b["cell_id"]] for b in batch}, "ann")
    proj.close()
    at = _page(_app(labeled), "discover")
    table = next(d.value for d in at.dataframe if "first_found_by" in d.value.columns)
    assert {"estimate", "low", "high"} <= set(table.columns)
    assert not table.isna().any().any(), table
    shown = table.set_index("label")
    assert shown.loc["unsure", "estimate"] == "-"  # a pseudo-class has no prevalence
    real = shown.loc[~shown["pseudo"].astype(bool), "estimate"]
    assert real.str.endswith("%").any()


def test_discover_page_says_what_is_missing(project):
    at = _page(_app(project), "discover")
    assert "No labels yet" in at.info[0].value
    _store(project).submit({_sess(at).items[0]["cell_id"]: "round"}, "ann", "cli")
    at.run()  # one class only: no predictions, no cross-validation, and the page says why
    assert not at.exception, at.exception
    infos = " ".join(i.value for i in at.info)
    assert "at least 2 classes" in infos and "Cross-validation is not possible yet" in infos


def test_annotator_is_kept_across_pages(labeled):
    at = _app(labeled)
    at.text_input(key="annotator").input("zed").run()
    _page(at, "export")
    _page(at, "label")
    assert at.text_input(key="annotator").value == "zed"
    assert _sess(at).owner[1] == "zed"


def test_export_downloads_have_the_right_rows(labeled, media):
    import io

    import pandas as pd

    at = _page(_app(labeled), "export")
    labels = pd.read_csv(io.BytesIO(_download(at, media, "dl-labels")))
    assert len(labels) == 60 and {
        "cell_id",
        "label",
        "annotator",
        "labeled_at",
        "label_source",
        "plate",
        "well",
    } <= set(labels.columns)
    assert dict(zip(labels["cell_id"], labels["label"])) == _store(labeled).current_labels()
    cells = pd.read_csv(io.BytesIO(_download(at, media, "dl-cells")))
    assert len(cells) == 600
    pred = pd.read_csv(io.BytesIO(_download(at, media, "dl-predictions")))
    p_cols = [c for c in pred.columns if c.startswith("p_")]
    assert len(pred) == 600 and len(p_cols) >= 3
    assert abs(pred[p_cols].sum(axis=1) - 1).max() < 1e-4
    wells = pd.read_csv(io.BytesIO(_download(at, media, "dl-wells")))
    assert (
        len(wells) == 4 * len(p_cols)
        and wells.groupby(["plate", "well"])["n_cells"].sum().sum() == 600
    )
    at.radio(key="export-format").set_value("Parquet").run()
    assert not at.exception, at.exception
    table = pd.read_parquet(io.BytesIO(_download(at, media, "dl-predictions")))
    assert len(table) == 600 and list(table.columns) == list(pred.columns)


# ---------------------------------------------------------------- Review page
def test_review_page_relabels_in_place_and_finds_more_like_this(labeled):
    at = _page(_app(labeled), "review")
    assert not at.error
    cls = at.selectbox(key="review-class").value
    store = _store(labeled)
    ids = [c for c, lab in store.current_labels().items() if lab == cls]
    assert len(at.pills) == min(len(ids), 48)
    target = sorted(store.current_labels(include_pseudo=True).values())
    other = next(c for c in target if c != cls)
    at.pills(key=f"rv-pick-{ids[0]}-{cls}").set_value(other).run()
    assert not at.exception, at.exception
    assert _store(labeled).current_labels()[ids[0]] == other
    assert _store(labeled).history(ids[0])[-1].source == "review"
    # relabeled in place: the tile stays where it was, with its new label
    assert [p.key for p in at.pills][0] == f"rv-pick-{ids[0]}-{other}"
    assert len(at.pills) == min(len(ids), 48)
    assert any("1 relabeled here stay in view" in c.value for c in at.caption)
    # disagreements: the relabeled cell is flagged when the model disagrees with it
    at.radio(key="review-mode").set_value("Disagreements").run()
    assert not at.exception, at.exception
    at.radio(key="review-mode").set_value("Inconsistent labels").run()
    assert not at.exception, at.exception
    assert at.info or any("worth a second look" in c.value for c in at.caption)
    # more like this: the nearest neighbours of a clicked cell, labeled from the same grid
    at.radio(key="review-mode").set_value("By class").run()
    at.selectbox(key="review-class").set_value(cls).run()
    query = next(c for c, lab in _store(labeled).current_labels().items() if lab == cls)
    at.button(key=f"similar-{query}").click().run()
    assert not at.exception, at.exception
    assert at.radio(key="review-mode").value == "More like this"
    from labeling.project import open_project
    from labeling.review import similar_cells

    near = similar_cells(open_project(labeled), query, 12)
    picks = [p for p in at.pills if p.key.startswith("mlt-pick-")]
    assert [p.key.split("-pick-")[1].rsplit("-", 1)[0] for p in picks] == near
    at.pills(key=f"mlt-pick-{near[0]}-none").set_value(cls).run()
    assert not at.exception, at.exception
    rec = _store(labeled).history(near[0])[-1]
    assert (rec.label, rec.source) == (cls, "more_like_this")
    at.radio(key="mlt-source").set_value("Most confident of a class").run()
    assert not at.exception, at.exception
    assert [p for p in at.pills if p.key.startswith("mlt-pick-")]


def test_review_montage_runs_from_the_most_to_the_least_confident(labeled):
    from labeling.predictions import predicted_labels
    from labeling.project import open_project

    at = _page(_app(labeled), "review")
    at.radio(key="review-mode").set_value("Most to least confident").run()
    assert not at.exception, at.exception
    cls = at.selectbox(key="montage-class").value
    table = predicted_labels(open_project(labeled))
    mine = table[table["predicted"] == cls].sort_values("confidence", ascending=False)
    shown = [p.key.split("-pick-")[1].rsplit("-", 1)[0] for p in at.pills]
    assert len(shown) == min(24, len(mine)) and shown[0] == mine["cell_id"].iloc[0]
    assert shown[-1] == mine["cell_id"].iloc[-1]  # the least confident last
    conf = mine.set_index("cell_id")["confidence"]
    assert list(conf[shown]) == sorted(conf[shown], reverse=True)
    # a relabel changes its tile, not the montage; "Recompute" refits on the new labels
    other = next(c for c in at.selectbox(key="montage-class").options if c != cls)
    at.pills[0].set_value(other).run()
    assert not at.exception, at.exception
    assert _store(labeled).current_labels()[shown[0]] == other
    again = [p.key.split("-pick-")[1].rsplit("-", 1)[0] for p in at.pills]
    assert again == shown and at.pills[0].value == other
    at.button(key="montage-refresh").click().run()
    assert not at.exception, at.exception
    assert not [b for b in at.button if b.key == "montage-refresh"]


def test_export_page_offers_crops_zip_and_says_when_there_is_no_model(labeled, media):
    import io
    import zipfile

    at = _page(_app(labeled), "export")
    with zipfile.ZipFile(io.BytesIO(_download(at, media, "dl-crops"))) as zf:
        files = [n for n in zf.namelist() if n != "index.csv"]
        assert len(files) == 60 and "index.csv" in zf.namelist()
        assert {n.split("/")[0] for n in files} == set(_store(labeled).current_labels().values())
    assert any("no trained model yet" in i.value for i in at.info)


def test_export_page_writes_the_screen_as_anndata_and_offers_it(labeled, media):
    import anndata as ad

    from labeling.project import open_project

    at = _page(_app(labeled), "export")
    assert not [b for b in at.get("download_button") if b.proto.id.endswith("-dl-anndata")]
    at.button(key="anndata-write").click().run()
    assert not at.exception, at.exception
    out = labeled / "exports" / f"{open_project(labeled).config.name}-morphology.h5ad"
    assert _download(at, media, "dl-anndata") == out.read_bytes()
    adata = ad.read_h5ad(out)
    assert adata.n_obs == _store(labeled).n_cells() and adata.uns["features"] == "morphology"
    got = adata.obs["label"].astype(object).dropna().to_dict()
    assert got == _store(labeled).current_labels()
    # only the sets the project has: no model version yet, no CellProfiler columns
    assert at.selectbox(key="anndata-features").options == ["morphology"]

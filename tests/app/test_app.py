"""The Label page driven headless with Streamlit's AppTest, each test on a fresh project copy.

Widgets are found by key: ``start-path``/``open-project`` (start screen), ``new-class`` with
``add-class``/``add-label-class``, ``cls-<key>`` (give a class to the focused tile; the
keyboard shortcut does the same), ``skip``, ``undo``, ``next-batch``, ``focus-<i>`` and the
tiles' class buttons ``pick-<cell_id>-<shown label>``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")

from streamlit.testing.v1 import AppTest  # noqa: E402

from app_pages.pages.label import pick_key  # noqa: E402
from labeling.store.labels import SKIP, LabelStore  # noqa: E402

APP = "../../app.py"  # relative to this file, as AppTest.from_file wants


@pytest.fixture(autouse=True)
def _allowed_root(monkeypatch, tmp_path_factory):
    """Folders typed in the app must lie under PHENOSCOUT_ROOT: here, all of pytest's tmp."""
    monkeypatch.setenv("PHENOSCOUT_ROOT", str(tmp_path_factory.getbasetemp()))


@pytest.fixture
def project(tmp_path, small_project) -> Path:
    """A writable copy of the session's small demo project."""
    return Path(shutil.copytree(small_project, tmp_path / "proj"))


def _app(project: Path | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    if project is not None:
        at.session_state["project_path"] = str(project)
    at.run()
    assert not at.exception, at.exception
    return at


def _sess(at: AppTest):
    return at.session_state["label_session"]


def _add_classes(at: AppTest, *names: str) -> None:
    for name in names:
        at.text_input(key="new-class").input(name)
        at.button(key="add-class").click().run()
        assert not at.exception, at.exception


def _store(project: Path) -> LabelStore:
    return LabelStore(project / "labels.db")


def _captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def test_start_screen_opens_a_project_and_shows_the_batch(project, tmp_path):
    at = _app()
    assert at.text_input(key="start-path") is not None
    at.text_input(key="start-path").input(str(tmp_path / "nowhere"))
    at.button(key="open-project").click().run()
    assert not at.exception
    assert "no such project folder" in at.error[0].value
    at.text_input(key="start-path").input(str(project))
    at.button(key="open-project").click().run()
    assert not at.exception, at.exception
    assert not at.error
    items = _sess(at).items
    assert len(items) == 24 == len(at.pills) == len(at.image) - 2  # + the zoom's two images
    assert len({it["cell_id"] for it in items}) == 24
    assert _sess(at).focus == 0
    assert "**0** labels on **0** cells" in at.markdown[0].value


def test_clicking_a_tile_button_commits_the_label(project):
    at = _app(project)
    _add_classes(at, "round")
    first = _sess(at).items[0]["cell_id"]
    at.pills(key=pick_key(first, None)).set_value("round").run()
    assert not at.exception, at.exception
    assert _store(project).current_labels() == {first: "round"}
    assert _sess(at).focus == 1
    assert at.pills(key=pick_key(first, "round")).value == "round"  # drawn from the store
    assert any(c.endswith("\n✔ **round**") for c in _captions(at))


def test_class_key_labels_the_focused_tile_and_moves_the_focus(project):
    at = _app(project)
    _add_classes(at, "a", "b")
    ids = [it["cell_id"] for it in _sess(at).items]
    at.button(key="cls-1").click().run()
    at.button(key="cls-2").click().run()
    assert _store(project).current_labels() == {ids[0]: "a", ids[1]: "b"}
    assert _sess(at).focus == 2
    at.button(key="focus-5").click().run()  # focus a tile by its number
    at.button(key="cls-u").click().run()  # the pseudo-class "unsure"
    assert _store(project).current_labels(include_pseudo=True)[ids[5]] == "unsure"
    assert _sess(at).focus == 6
    at.button(key="focus-0").click().run()  # relabel a labeled tile: focus goes to the next open
    at.button(key="cls-2").click().run()
    assert _store(project).current_labels()[ids[0]] == "b"
    assert _sess(at).focus == 2
    assert not at.exception


def test_skip_and_undo(project):
    at = _app(project)
    _add_classes(at, "a")
    store = _store(project)
    ids = [it["cell_id"] for it in _sess(at).items]
    at.button(key="skip").click().run()
    assert _sess(at).skipped == {ids[0]} and _sess(at).focus == 1
    assert store.current_labels(include_pseudo=True) == {}
    assert ids[0] not in {lease["cell_id"] for lease in store.open_lease("browser")}
    assert at.pills(key=pick_key(ids[0], SKIP)).value == SKIP
    at.button(key="cls-1").click().run()  # labels ids[1]
    assert store.current_labels() == {ids[1]: "a"}
    at.button(key="undo").click().run()  # undoes the label, focus back on its tile
    assert store.current_labels() == {} and _sess(at).focus == 1
    assert ids[1] in {lease["cell_id"] for lease in store.open_lease("browser")}
    at.button(key="undo").click().run()  # undoes the skip
    assert _sess(at).skipped == set() and _sess(at).focus == 0
    assert ids[0] in {lease["cell_id"] for lease in store.open_lease("browser")}
    at.button(key="undo").click().run()
    assert not at.exception
    assert store.n_labels_given() == 0


def test_add_class_inline_and_label_the_focused_tile(project):
    at = _app(project)
    first = _sess(at).items[0]["cell_id"]
    at.text_input(key="new-class").input("weird blob")
    at.button(key="add-label-class").click().run()
    assert not at.exception, at.exception
    assert _store(project).current_labels() == {first: "weird blob"}
    assert at.button(key="cls-1").label == "1 · weird blob"
    _add_classes(at, "Weird blob")  # differs only by case: refused with a message
    assert not at.exception
    assert "only by case" in at.error[0].value
    assert [c.name for c in _store(project).classes(include_pseudo=False)] == ["weird blob"]


def test_next_batch_gives_new_cells_and_a_model(project):
    at = _app(project)
    _add_classes(at, "a", "b")
    old = [it["cell_id"] for it in _sess(at).items]
    for key in ("cls-1", "cls-2", "cls-1", "cls-2"):
        at.button(key=key).click().run()
    assert not at.success
    _store(project).submit({c: "a" for c in old[4:]}, annotator="cli", source="cli")
    at.run()  # labels given elsewhere show up too; the batch is done
    assert "Batch done" in at.success[0].value
    n_rounds = len(_store(project).rounds())
    at.button(key="next-batch").click().run()
    assert not at.exception, at.exception
    new = [it["cell_id"] for it in _sess(at).items]
    assert len(new) == 24 and not set(new) & set(old)
    assert new != old
    assert len(_store(project).rounds()) == n_rounds + 1
    assert _sess(at).focus == 0
    version = _store(project).rounds()[-1]["model_version"]
    assert version and version not in at.markdown[0].value  # one model name: the trainer's
    reasons = {"unlike anything labeled", "model unsure", "looks like a rare class",
               "random check"}  # fmt: skip
    tiles = [c for c in _captions(at) if c.endswith(("not labeled", "**")) and "  \n" in c]
    assert len(tiles) == 24
    assert all(c.split("  \n")[0] in reasons for c in tiles)
    assert any(c.split("  \n")[1].startswith("guess ") for c in tiles)
    at.toggle(key="hide-guesses").set_value(True).run()
    tiles = [c for c in _captions(at) if c.endswith(("not labeled", "**")) and "  \n" in c]
    assert len(tiles) == 24 and all(c.startswith("reason hidden  \nguess hidden") for c in tiles)
    assert not any(r in c for c in _captions(at) for r in reasons)


def test_a_new_session_resumes_the_batch_with_its_labels(project):
    at = _app(project)
    _add_classes(at, "a")
    ids = [it["cell_id"] for it in _sess(at).items]
    at.button(key="focus-3").click().run()
    at.button(key="cls-1").click().run()
    again = _app(project)  # a reload: a new session on the same server
    items = _sess(again).items
    assert items[0]["cell_id"] == ids[3]  # labeled cells first, then the open ones in order
    assert [it["cell_id"] for it in items[1:]] == ids[:3] + ids[4:]
    assert again.pills(key=pick_key(ids[3], "a")).value == "a"
    assert _sess(again).focus == 1
    other = _app(project)
    other.text_input(key="annotator").input("someone else").run()  # gets cells of their own
    assert not {it["cell_id"] for it in _sess(other).items} & set(ids)


def test_channel_controls_and_side_by_side(project):
    at = _app(project)
    tiles = at.session_state["_tile_cache"]["tiles"]
    assert tiles[0].shape == (128, 128, 3)
    at.toggle(key="show-0").set_value(False).run()
    dimmed = at.session_state["_tile_cache"]["tiles"][0]
    assert dimmed[..., 2].max() < tiles[0][..., 2].max()  # the blue DNA channel is off
    at.toggle(key="side-by-side").set_value(True).run()
    wide = at.session_state["_tile_cache"]["tiles"][0]
    assert wide.shape[0] == 128 and wide.shape[1] > 3 * 128  # composite + 2 channels
    at.slider(key="range-1").set_value((0.0, 0.3)).run()  # max down: the channel brighter
    assert not at.exception, at.exception
    at.toggle(key="side-by-side").set_value(False).run()
    bright = at.session_state["_tile_cache"]["tiles"][0]
    assert bright[..., 1].mean() > dimmed[..., 1].mean()
    at.color_picker(key="colour-1").set_value("#ff0000").run()  # the cytoplasm now red
    red = at.session_state["_tile_cache"]["tiles"][0]
    assert red[..., 0].mean() > bright[..., 0].mean()
    at.button(key="reset-display").click().run()  # everything as the project has it
    assert at.toggle(key="show-0").value is True and at.slider(key="range-1").value == (0.0, 1.0)
    assert at.color_picker(key="colour-1").value == project_colour(project, 1)
    assert (at.session_state["_tile_cache"]["tiles"][0] == tiles[0]).all()


def project_colour(path: Path, i: int) -> str:
    from labeling.project import open_project

    return open_project(path).channel_colours[i]


def test_the_confusion_strip_shows_the_cross_validated_matrix_on_request(labeled):
    from labeling.project import open_project
    from labeling.reports import cross_validated

    at = _app(labeled)
    assert not at.dataframe  # off by default: nothing computed per label
    at.toggle(key="cv-strip").set_value(True).run()
    assert not at.exception, at.exception
    confusion, _ = cross_validated(open_project(labeled))
    assert at.dataframe[0].value.equals(confusion)


def test_the_cell_to_label_is_marked_unless_switched_off(project):
    at = _app(project)
    marked = at.session_state["_tile_cache"]["tiles"][0]
    at.toggle(key="show-mark").set_value(False).run()
    plain = at.session_state["_tile_cache"]["tiles"][0]
    differ = (marked != plain).any(axis=2)
    assert 0 < differ.sum() < 0.05 * differ.size  # a discreet centre mark (crops: no mask)
    assert not differ[60:68, 60:68].any()  # the cell's centre itself stays visible


def test_display_settings_survive_other_pages(project):
    at = _app(project)
    at.toggle(key="show-0").set_value(False).run()
    at.toggle(key="side-by-side").set_value(True).run()
    at.toggle(key="hide-guesses").set_value(True).run()
    at.slider(key="range-1").set_value((0.1, 0.6)).run()
    at.toggle(key="show-mark").set_value(False).run()
    shown = at.session_state["_tile_cache"]["tiles"][0]
    _page(at, "discover")  # a page without the controls: Streamlit drops their widget state
    _page(at, "export")
    _page(at, "label")
    assert at.toggle(key="show-0").value is False and at.toggle(key="show-1").value is True
    assert at.toggle(key="side-by-side").value is True
    assert at.toggle(key="hide-guesses").value is True
    assert at.slider(key="range-1").value == (0.1, 0.6)
    assert at.toggle(key="show-mark").value is False
    assert (at.session_state["_tile_cache"]["tiles"][0] == shown).all()
    _page(at, "review")  # the Review page draws the same controls, with the same values
    assert at.toggle(key="side-by-side").value is True
    at.toggle(key="side-by-side").set_value(False).run()
    _page(at, "label")
    assert at.toggle(key="side-by-side").value is False


# ---------------------------------------------------------------- Discover and Export pages
@pytest.fixture
def labeled(project) -> Path:
    """The project copy with 60 cells labeled from the ``truth`` column (3 rounds of 20)."""
    from labeling.loop import next_batch, submit_labels
    from labeling.project import open_project

    proj = open_project(project)
    truth = proj.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    for _ in range(3):
        batch = next_batch(proj, 20, annotator="ann")
        submit_labels(proj, {b["cell_id"]: truth[b["cell_id"]] for b in batch}, annotator="ann")
    proj.close()
    return project


@pytest.fixture
def media(monkeypatch) -> list:
    """The in-memory media stores of AppTest runs (download buttons' files land there)."""
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    stores: list = []

    class Recording(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stores.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Recording)
    return stores


def _page(at: AppTest, name: str) -> AppTest:
    at.switch_page(f"app_pages/pages/{name}.py").run()
    assert not at.exception, at.exception
    return at


def _download(at: AppTest, media: list, key: str) -> bytes:
    button = next(b for b in at.get("download_button") if b.proto.id.endswith(f"-{key}"))
    return media[-1].get_file(button.proto.url.rsplit("/", 1)[1]).content


def test_discover_page_on_a_labeled_project(labeled):
    at = _page(_app(labeled), "discover")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Labels"] == "60"
    assert int(metrics["Classes found"]) >= 3
    assert not at.error
    assert not any("Cross-validation is not possible" in i.value for i in at.info)
    table = next(d.value for d in at.dataframe if "first_found_by" in d.value.columns)
    from app_pages.widgets.reasons import REASONS

    plain = {r.short for r in REASONS.values()}
    found = table["first_found_by"].dropna()
    assert len(found) >= 3 and all(f.split(" (")[0] in plain for f in found), found
    assert at.selectbox(key="heat-class").options  # the plate heatmap is there
    at.radio(key="heat-value").set_value("z").run()
    assert not at.exception, at.exception
    at.selectbox(key="heat-class").set_value(at.selectbox(key="heat-class").options[-1]).run()
    assert not at.exception, at.exception


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


def test_export_page_offers_crops_zip_and_says_when_there_is_no_model(labeled, media):
    import io
    import zipfile

    at = _page(_app(labeled), "export")
    with zipfile.ZipFile(io.BytesIO(_download(at, media, "dl-crops"))) as zf:
        files = [n for n in zf.namelist() if n != "index.csv"]
        assert len(files) == 60 and "index.csv" in zf.namelist()
        assert {n.split("/")[0] for n in files} == set(_store(labeled).current_labels().values())
    assert any("no trained model yet" in i.value for i in at.info)


# ---------------------------------------------------------------- Project page
def _wait_job(at: AppTest, timeout_s: float = 60):
    """Wait for the session's latest background job to end; its status (the page redrawn)."""
    from labeling.jobs import get_job

    status = get_job(at.session_state["proj_jobs"][-1].job_id).wait(timeout_s)
    assert status.state != "running", "the job did not finish in time"
    at.run()
    assert not at.exception, at.exception
    return status


def test_project_page_creates_a_project_in_the_background(small_demo, tmp_path):
    from labeling.config import load_config

    at = _app()  # no project open: the start screen with the Project page's create section
    at.text_input(key="proj-crops").input(str(small_demo.parent)).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="proj-subfolder").options == ["(the whole folder)", small_demo.name]
    at.selectbox(key="proj-subfolder").set_value(small_demo.name).run()
    new = tmp_path / "created"
    at.text_input(key="proj-new-path").input(str(new))
    at.text_input(key="proj-channels").input("DNA, Cyto").run()
    at.color_picker(key="proj-colour-1").pick("#ff00ff").run()
    at.text_input(key="proj-create-classes").input("interphase, mitotic").run()
    at.button(key="proj-create").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("progress")) == 1  # the page returned at once, with the job's progress
    status = _wait_job(at)
    assert status.state == "done", status.error
    assert "600 cells" in at.success[0].value
    at.button(key=f"job-open-{status.job_id}").click().run()
    assert not at.exception, at.exception
    assert at.session_state["project_path"] == str(new.resolve())
    config = load_config(new / "project.toml")
    assert [(c.name, c.colour) for c in config.channels] == [
        ("DNA", "#3b82f6"),
        ("Cyto", "#ff00ff"),
    ]
    assert LabelStore(new / "labels.db").n_cells() == 600
    classes = LabelStore(new / "labels.db").classes(include_pseudo=False)
    assert [(c.name, c.key) for c in classes] == [("interphase", "1"), ("mitotic", "2")]
    assert len(_sess(at).items) == 24  # the Label page opens on the new project
    assert not at.session_state["proj_jobs"]  # the job's ticket is done with


def test_project_page_job_errors_are_one_line(small_demo, tmp_path):
    at = _app()
    at.text_input(key="proj-crops").input(str(small_demo)).run()
    at.text_input(key="proj-new-path").input(str(tmp_path / "new"))
    at.text_input(key="proj-channels").input("A, B, C").run()  # the crops have 2 channels
    at.button(key="proj-create").click().run()
    status = _wait_job(at)
    assert status.state == "failed" and not status.unexpected
    assert len(at.error) == 1 and "\n" not in at.error[0].value
    assert at.error[0].value.startswith("Creating project new failed: ")
    at.button(key=f"job-dismiss-{status.job_id}").click().run()
    assert not at.error and not at.session_state["proj_jobs"]


def test_project_page_adds_classes_to_the_open_project(project):
    at = _page(_app(project), "project")
    at.text_input(key="proj-classes").input("mitotic, Mitotic")
    at.button(key="proj-classes-add").click().run()
    assert not at.exception, at.exception
    assert any("given twice" in e.value for e in at.error)
    at.text_input(key="proj-classes").input("mitotic, apoptotic")
    at.button(key="proj-classes-add").click().run()
    assert not at.exception and not at.error, at.exception
    classes = _store(project).classes(include_pseudo=False)
    assert [(c.name, c.key) for c in classes] == [("mitotic", "1"), ("apoptotic", "2")]


def test_project_page_bad_paths_are_errors(project, tmp_path):
    at = _app()
    at.text_input(key="proj-crops").input(str(tmp_path / "nowhere")).run()
    assert not at.exception, at.exception
    assert "no such folder" in at.error[0].value
    at = _page(_app(project), "project")
    at.text_input(key="proj-open-path").input(str(tmp_path / "nowhere"))
    at.button(key="proj-open").click().run()
    assert not at.exception, at.exception
    assert "no such project folder" in at.error[0].value
    at.text_input(key="proj-crops").input(str(project.parent)).run()
    at.selectbox(key="proj-subfolder").set_value("proj").run()
    at.text_input(key="proj-new-path").input(str(project)).run()  # exists, not empty
    at.button(key="proj-create").click().run()
    assert not at.exception, at.exception
    assert any("already exists and is not empty" in e.value for e in at.error)


@pytest.mark.parametrize("key", ["proj-crops", "proj-open-path", "proj-add-crops"])
def test_project_page_paths_outside_the_root_are_refused(project, tmp_path, monkeypatch, key):
    monkeypatch.setenv("PHENOSCOUT_ROOT", str(tmp_path / "root"))
    (tmp_path / "root").mkdir()
    at = _page(_app(project), "project")
    at.text_input(key=key).input(str(project)).run()  # an existing folder, outside the root
    for button in ("proj-open", "proj-add"):
        if key.startswith(button):
            at.button(key=button).click().run()
    assert not at.exception, at.exception
    assert len(at.error) == 1 and str(tmp_path / "root") in at.error[0].value
    assert "proj_jobs" not in at.session_state  # no job started
    assert _store(project).n_cells() == 600


def test_project_page_opens_the_demo_with_one_click(small_project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PHENOSCOUT_ROOT")  # the root is the working directory
    demo = tmp_path / "phenoscout_demo" / "project"
    shutil.copytree(small_project, demo)  # already made: the click opens it
    at = _app()
    at.button(key="proj-demo").click().run()
    assert not at.exception, at.exception
    assert at.session_state["project_path"] == str(demo)
    assert len(_sess(at).items) == 24


def test_project_page_adds_a_plate_in_the_background(project, tmp_path):
    from datasets.crops.demo import generate_demo

    plate = tmp_path / "plate2"
    generate_demo(plate, n_cells=200, seed=5)
    at = _page(_app(project), "project")
    at.text_input(key="proj-add-crops").input(str(plate))
    at.button(key="proj-add").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert _wait_job(at).state == "done"
    assert "Added 200 cells" in at.success[0].value
    assert not [b for b in at.button if b.key.startswith("job-open-")]  # nothing to open
    assert _store(project).n_cells() == 800


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
    at.selectbox(key="anndata-features").set_value("embedding").run()  # no model version yet
    at.button(key="anndata-write").click().run()
    assert not at.exception and any("needs a published model version" in i.value for i in at.info)

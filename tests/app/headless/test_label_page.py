"""The Label page driven headless with AppTest, each test on a fresh project copy."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")

from app_pages.pages.label import pick_key  # noqa: E402
from labeling.store.labels import SKIP  # noqa: E402
from tests.app.headless.apptest import (  # noqa: E402
    _add_classes,
    _app,
    _captions,
    _page,
    _sess,
    _store,
)


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


def test_undo_after_the_next_batch_leaves_the_earlier_batch_alone(project):
    at = _app(project)
    _add_classes(at, "a")
    first = _sess(at).items[0]["cell_id"]
    at.button(key="cls-1").click().run()
    at.button(key="next-batch").click().run()
    at.button(key="next-batch").click().run()  # the first one asks: 23 cells are open
    assert first not in {it["cell_id"] for it in _sess(at).items}
    at.button(key="undo").click().run()  # would bring back a cell that is not on the page
    assert not at.exception, at.exception
    assert _store(project).current_labels() == {first: "a"}
    assert any("Nothing to undo in this batch" in t.value for t in at.toast), at.toast


def test_next_batch_with_open_tiles_asks_before_leaving_them(project):
    at = _app(project)
    _add_classes(at, "a")
    old = [it["cell_id"] for it in _sess(at).items]
    n_rounds = len(_store(project).rounds())
    at.button(key="next-batch").click().run()
    assert [it["cell_id"] for it in _sess(at).items] == old  # asked, did not move on
    assert "24 cells of this batch have no label yet" in at.warning[0].value
    at.button(key="cls-1").click().run()  # an answer: labeling goes on, the question goes
    assert not at.warning
    at.button(key="next-batch").click().run()
    assert "23 cells of this batch" in at.warning[0].value
    assert len(_store(project).rounds()) == n_rounds
    at.button(key="next-batch").click().run()  # asked twice in a row: leave them
    assert not at.exception, at.exception
    new = [it["cell_id"] for it in _sess(at).items]
    assert not at.warning and len(_store(project).rounds()) == n_rounds + 1
    assert old[0] not in new and len(new) == 24  # (open cells may be chosen again)
    assert _store(project).current_labels() == {old[0]: "a"}
    leased = {lease["cell_id"] for lease in _store(project).open_lease("browser")}
    assert leased == set(new)  # the 23 left open went back to the pool


def test_add_class_inline_and_label_the_focused_tile(project):
    at = _app(project)
    first = _sess(at).items[0]["cell_id"]
    at.text_input(key="new-class").input("weird blob")
    at.button(key="add-label-class").click().run()
    assert not at.exception, at.exception
    assert _store(project).current_labels() == {first: "weird blob"}
    assert at.button(key="cls-1").label == "1 · weird blob"
    assert at.text_input(key="new-class").value == ""  # added: the box is emptied
    _add_classes(at, "Weird blob")  # differs only by case: refused with a message
    assert not at.exception
    assert "only by case" in at.error[0].value
    assert at.text_input(key="new-class").value == "Weird blob"  # kept, to be corrected
    assert [c.name for c in _store(project).classes(include_pseudo=False)] == ["weird blob"]


def test_a_key_the_server_holds_comes_before_a_click_in_the_same_run(project):
    at = _app(project)
    _add_classes(at, "a")
    ids = [it["cell_id"] for it in _sess(at).items]
    # the browser's key queue holds "a" for tile 1 (typed just before the click); Streamlit may
    # call the click's callback first: the key still comes first, the click is for tile 2
    at.session_state["label-keys"] = {
        "events": {"token": "t1", "events": [[1, "label", "a", ids[0]]]}
    }
    at.text_input(key="new-class").input("late")
    at.button(key="add-label-class").click().run()
    assert not at.exception, at.exception
    assert _store(project).current_labels() == {ids[0]: "a", ids[1]: "late"}
    assert _sess(at).ack == ("t1", 1)


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
    states = ("not labeled", "skipped")
    tiles = [c for c in _captions(at) if c in states or c.startswith("✔ **")]
    assert len(tiles) == 24  # each tile says its state alone
    assert not any(r in c for c in _captions(at) for r in reasons)


def test_a_new_session_resumes_the_batch_with_its_labels(project):
    at = _app(project)
    _add_classes(at, "a")
    ids = [it["cell_id"] for it in _sess(at).items]
    at.button(key="focus-3").click().run()
    at.button(key="cls-1").click().run()
    at.button(key="focus-5").click().run()
    at.button(key="skip").click().run()
    again = _app(project)  # a reload: a new session on the same server
    items = _sess(again).items
    assert [it["cell_id"] for it in items] == ids  # the tiles in their places
    assert again.pills(key=pick_key(ids[3], "a")).value == "a"
    assert _sess(again).focus == 0  # the first open tile
    assert _sess(again).skipped == {ids[5]}  # still skipped
    said = [{k: it[k] for k in ("strategy", "guess", "confidence")} for it in _sess(at).items]
    shown = [{k: it[k] for k in ("strategy", "guess", "confidence")} for it in items]
    assert shown == said  # labeled and skipped tiles too: why chosen, the guess, its confidence
    other = _app(project)
    other.text_input(key="annotator").input("someone else").run()  # gets cells of their own
    mine = set(ids) - {ids[5]}  # the skipped cell went back to the pool
    assert not {it["cell_id"] for it in _sess(other).items} & mine


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


def test_a_tile_labeled_meanwhile_elsewhere_keeps_that_label_until_chosen_again(project):
    at = _app(project)
    _add_classes(at, "a", "b")
    first = _sess(at).items[0]["cell_id"]
    assert _sess(at).focus == 0
    # another tab of the same annotator labels tile 1 after this page drew it open
    _store(project).submit({first: "b"}, annotator="browser", source="batch")
    at.button(key="cls-1").click().run()  # this page's key for tile 1: class a
    assert not at.exception, at.exception
    assert _store(project).current_labels()[first] == "b"  # kept
    assert any("Tile 1 was labeled 'b' meanwhile" in w.value for w in at.warning)
    _sess(at).focus = 0
    at.button(key="cls-1").click().run()  # chosen again, on a page that shows it: relabeled
    assert _store(project).current_labels()[first] == "a"
    assert not any("meanwhile" in w.value for w in at.warning)

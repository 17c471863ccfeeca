"""The trainer's status line on the Label page (AppTest; PHENOSCOUT_TRAINER=off, so no trainer
starts) and its text for the states the trainer reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")

from streamlit.testing.v1 import AppTest  # noqa: E402

from app_pages.server.status import features_detail, status_text  # noqa: E402
from labeling.training.process import TrainerStatus  # noqa: E402

APP = "../../app.py"


def _version(project: Path, number: int, n_labels: int = 0, predictions: bool = False) -> None:
    folder = project / "models" / f"v{number:04d}"
    folder.mkdir(parents=True)
    np.save(folder / "cell_ids.npy", np.array(["a", "b"]))
    np.save(folder / "embeddings.npy", np.zeros((2, 4), np.float32))
    if predictions:
        np.save(folder / "predictions.npy", np.full((2, 2), 0.5, np.float32))
    meta = {"n_labels": n_labels, "timings": {"finetune_s": 30.2, "embed_s": 4.9}}
    (folder / "meta.json").write_text(json.dumps(meta))


def _status(state: str, alive: bool = True, progress=(0, 0), message: str = "") -> TrainerStatus:
    return TrainerStatus(state, progress, message, None, "cpu", 7, alive, 0.5, True)


def test_status_text_names_version_trainer_and_features(tmp_path):
    assert status_text(tmp_path, _status("pretraining", progress=(120, 300))) == (
        "model: none yet | trainer: **pretraining 120/300** on cpu"
    )
    head_only = {"model_version": "head-9-ab", "timings": {"features": "morphology"}}
    assert status_text(tmp_path, _status("idle"), head_only).startswith(
        "model: fitted on the labels, no trained network yet | "
    )  # the tiles' guesses come from somewhere: never "none yet" then
    _version(tmp_path, 3, n_labels=120, predictions=True)
    last = {"timings": {"features": "morphology+embedding@3", "features_why": "auto: better"}}
    text = status_text(tmp_path, _status("idle"), last)
    assert text == (
        "model **v0003** (fine-tuned on 120 labels, built in 35 s) | trainer: "
        "**idle** on cpu | features: **auto**"
    )  # the setting: it never flips
    assert features_detail(last) == "The latest batch used morphology+embedding: auto: better"
    fixed = status_text(tmp_path, _status("idle"), last, setting="morphology")
    assert fixed.endswith("features: **morphology**")
    chosen = {"timings": {**last["timings"], "chosen_by": "the classifier on morphology + the "
                          "embedding of v0003 (fine-tuned on 120 labels)"}}  # fmt: skip
    assert status_text(tmp_path, _status("idle"), chosen).endswith(
        "| this batch chosen by the classifier on morphology + the embedding of v0003 "
        "(fine-tuned on 120 labels)"
    )
    failed = status_text(tmp_path, _status("failed", alive=False, message="CUDA absent"))
    assert "trainer: **failed: CUDA absent**" in failed


@pytest.mark.slow  # a whole app run: about 5-10 s on the shared 2-core machine
def test_label_page_shows_the_trainer_line(tmp_path, small_project, monkeypatch):
    monkeypatch.setenv("PHENOSCOUT_ROOT", str(tmp_path))
    project = Path(shutil.copytree(small_project, tmp_path / "proj"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["project_path"] = str(project)
    at.run()
    assert not at.exception, at.exception
    captions = [c.value for c in at.caption]
    line = next(c for c in captions if "trainer:" in c)
    assert "model: none yet" in line and "not running (PHENOSCOUT_TRAINER=off)" in line
    assert "features: **auto**" in line
    assert not (project / "models" / "trainer.log").exists()  # nothing was started


@pytest.mark.slow  # two app runs
def test_annotator_and_project_come_back_from_the_address(tmp_path, small_project, monkeypatch):
    # a reload keeps the page's address: the annotator and the project opened live there
    monkeypatch.setenv("PHENOSCOUT_ROOT", str(tmp_path))
    monkeypatch.setenv("PHENOSCOUT_TRAINER", "off")
    shutil.copytree(small_project, tmp_path / "other")
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["annotator"] = "hana"
    at.query_params["project"] = "other"
    at.run()
    assert not at.exception, at.exception
    assert at.sidebar.text_input(key="annotator").value == "hana"
    assert str(tmp_path / "other") in [c.value for c in at.sidebar.caption]
    at.sidebar.text_input(key="annotator").set_value("ines").run()
    assert at.query_params["annotator"] == "ines"
    outside = AppTest.from_file(APP, default_timeout=60)
    outside.query_params["project"] = "/etc"  # out of the root: ignored, the start screen shows
    outside.run()
    assert not outside.exception and "/etc" not in str(outside.session_state)

"""The background trainer in the app: started once per session and project, and its status line
(model version, what the trainer does, the features of the latest round). While a trainer runs
the line refreshes itself every few seconds (a Streamlit fragment), nothing else reruns."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app_pages.text import md
from labeling.errors import PhenoScoutError
from labeling.project import Project
from labeling.training import latest_version, version_name
from labeling.training.process import TrainerStatus, ensure_trainer, trainer_status

_STARTED = "trainer-started"  # session key: the project folders whose trainer was ensured
REFRESH_S = 5  # seconds between refreshes of the line while a trainer runs


def start_trainer_once(project: Project) -> None:
    """Start the project's background trainer unless this session already did (or one runs);
    ``PHENOSCOUT_TRAINER=off`` starts none. A failure is a warning: labeling goes on."""
    started = st.session_state.setdefault(_STARTED, set())
    if str(project.path) in started:
        return
    started.add(str(project.path))
    try:
        ensure_trainer(project.path)
    except PhenoScoutError as exc:
        st.warning(md(exc))


def status_text(path: Path, status: TrainerStatus, last_round: dict | None = None) -> str:
    """The line: ``model v0003 (fine-tuned on 120 labels in 35 s) | trainer: pretraining
    120/300 | features: morphology (why)``; pure, for tests."""
    info = latest_version(path)
    if info is None:
        model = "model: none yet"
    else:
        timings = info.meta.get("timings") or {}
        took = sum(float(v) for v in timings.values() if isinstance(v, int | float))
        what = (
            f"fine-tuned on {info.n_labels} labels" if info.has_predictions else "self-supervised"
        )
        model = f"model **{version_name(info.version)}** ({what}, built in {took:.0f} s)"
    trainer = f"trainer: **{status.describe()}**"
    if status.alive and status.device:
        trainer += f" on {status.device}"
    timings = (last_round or {}).get("timings") or {}
    features = timings.get("features")
    why = timings.get("features_why")
    parts = [model, trainer]
    if features:
        parts.append(f"features: **{str(features).split('@')[0]}**" + (f" ({why})" if why else ""))
    return " | ".join(parts)


def _line(path: str, last_round: dict | None) -> None:
    st.caption(status_text(Path(path), trainer_status(Path(path)), last_round))


@st.fragment(run_every=REFRESH_S)
def _live_line(path: str, last_round: dict | None) -> None:
    _line(path, last_round)


def status_line(project: Project) -> None:
    """Draw the trainer's status line for ``project`` (refreshing itself while it runs)."""
    rounds = project.store.rounds()
    last = rounds[-1] if rounds else None
    if trainer_status(project.path).alive:
        _live_line(str(project.path), last)
    else:
        _line(str(project.path), last)

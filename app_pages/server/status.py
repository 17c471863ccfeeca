"""The background trainer in the app: started once per session and project, and its status line
(model version, what the trainer does, the features of the latest round). While a trainer runs
the line refreshes itself every few seconds (a Streamlit fragment), nothing else reruns."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app_pages.widgets.text import md
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


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago" if seconds < 5400 else f"{seconds / 3600:.1f} h ago"


def status_text(
    path: Path, status: TrainerStatus, last_round: dict | None = None, setting: str = "auto"
) -> str:
    """The line: ``model v0003 (fine-tuned on 120 labels, built in 35 s) | trainer: pretraining
    120/300 | features: auto``; pure, for tests. The model is named once, by its version; the
    features are the project's setting ``setting`` (``loop.features``): ``auto`` keeps its name
    while its choice changes from batch to batch; the choice and why are in
    :func:`features_detail`)."""
    info = latest_version(path)
    if info is None:
        guessing = bool(((last_round or {}).get("timings") or {}).get("features"))
        model = (  # the guesses come from the head on the features until a network is trained
            "model: fitted on the labels, no trained network yet"
            if guessing and (last_round or {}).get("model_version")
            else "model: none yet"
        )
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
    parts = [model, trainer]
    if ((last_round or {}).get("timings") or {}).get("features"):
        parts.append(f"features: **{md(setting)}**")  # the setting (loop.features): it holds
    chosen_by = ((last_round or {}).get("timings") or {}).get("chosen_by")
    if chosen_by:  # which version chose the batch, in plain words (labeling.loop records it)
        parts.append(f"this batch chosen by {md(chosen_by)}")
    return " | ".join(parts)


def _set(features: object) -> str:
    return str(features).split("@")[0]


def features_detail(last_round: dict | None) -> str | None:
    """The tooltip: the set the latest batch used and why (``morphology+embedding``: CV ...)."""
    timings = (last_round or {}).get("timings") or {}
    features = timings.get("features")
    if not features:
        return None
    why = timings.get("features_why")
    return f"The latest batch used {_set(features)}" + (f": {why}" if why else ".")


def _line(path: str, last_round: dict | None, setting: str) -> None:
    detail = features_detail(last_round)
    st.caption(
        status_text(Path(path), trainer_status(Path(path)), last_round, setting),
        help=md(detail) if detail else None,
    )


@st.fragment(run_every=REFRESH_S)
def _live_line(path: str, last_round: dict | None, setting: str) -> None:
    _line(path, last_round, setting)


def status_line(project: Project) -> None:
    """Draw the trainer's status line for ``project`` (refreshing itself while it runs)."""
    rounds = project.store.rounds()
    last = rounds[-1] if rounds else None
    setting = project.config.loop.features
    if trainer_status(project.path).alive:
        _live_line(str(project.path), last, setting)
    else:
        _line(str(project.path), last, setting)

"""Simulated labeling: the product's own benchmark (see :mod:`labeling.simulate.run`).

* :mod:`~labeling.simulate.split`: the data, its cache and the held-out split per seed;
* :mod:`~labeling.simulate.run`: one run per strategy and seed, and :func:`simulate`;
* :mod:`~labeling.simulate.finetune`: ``--finetune`` (the trainer's versions, ``auto``);
* :mod:`~labeling.simulate.summary`: the peer table and the verdict.
"""

from __future__ import annotations

from labeling.simulate.finetune import _DeepTracker
from labeling.simulate.run import _guesses, _predict, _refit, run_one, simulate
from labeling.simulate.split import (
    F1_TOLERANCE,
    N_ORDERINGS,
    PEERS,
    SimConfig,
    SimData,
    Split,
    _cache_key,
    _groups,
    default_cache_dir,
    holdout_split,
    load_sim_data,
    make_split,
    random_labels_to_all,
    round_up,
    standardise,
)
from labeling.simulate.summary import _t_interval, format_summary, summarise

__all__ = [
    "F1_TOLERANCE",
    "N_ORDERINGS",
    "PEERS",
    "SimConfig",
    "SimData",
    "Split",
    "_DeepTracker",
    "_cache_key",
    "_groups",
    "_guesses",
    "_predict",
    "_refit",
    "_t_interval",
    "default_cache_dir",
    "format_summary",
    "holdout_split",
    "load_sim_data",
    "make_split",
    "random_labels_to_all",
    "round_up",
    "run_one",
    "simulate",
    "standardise",
    "summarise",
]

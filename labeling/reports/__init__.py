"""Reports on a project: class panels, discovery curves, predicted class fractions per well.

Public names load lazily on first use (like ``labeling`` itself), so importing the package is
cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "class_counts": "labeling.reports.report",
    "cross_validated": "labeling.reports.report",
    "discovery_curves": "labeling.reports.report",
    "expected_random_curve": "labeling.reports.report",
    "labels_per_round": "labeling.reports.report",
    "plot_discovery": "labeling.reports.plots",
    "predicted_distribution": "labeling.reports.report",
    "prevalence": "labeling.reports.report",
    "random_slice": "labeling.reports.report",
    "stopping_signal": "labeling.reports.report",
    "well_fractions": "labeling.reports.report",
    "wilson_interval": "labeling.reports.report",
    "write_report": "labeling.reports.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'labeling.reports' has no attribute {name!r}")

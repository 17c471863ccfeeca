"""The whole screen as one AnnData file (``.h5ad``) for scanpy, squidpy and friends.

``X`` holds the chosen features of every cell (raw values, not standardised), ``var`` their
names, ``obs`` the cell table with each cell's current label, annotator and the head's
prediction, ``obsm`` the backbone embedding when a model version has published one (and the
head's class probabilities), ``uns`` the class list and the model version.

h5ad stores a text column only as categories or as plain strings, and pandas 3's Arrow-backed
strings are neither; every text column is therefore written as a categorical with ``object``
categories, and the index as ``object`` strings.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from labeling.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from labeling.project import Project

logger = logging.getLogger(__name__)

__all__ = ["FEATURE_PARTS", "anndata_for", "export_anndata"]

#: What ``--features`` may name, alone or joined by ``+`` (``morphology+embedding``).
FEATURE_PARTS = ("morphology", "embedding", "cellprofiler")
SUFFIX = ".h5ad"


def _channel_of(names: list[str], channels: list[str]) -> list[str]:
    """The channel name of each feature named ``ch<i>_...`` (morphology, per channel); "" for
    the others (whole-cell shape, stains, embedding, CellProfiler)."""
    out = []
    for name in names:
        found = re.match(r"^(?:\w+:)?ch(\d+)_", name)
        i = int(found.group(1)) if found else -1
        out.append(channels[i] if 0 <= i < len(channels) else "")
    return out


def _feature_block(
    project: Project, part: str, ids: np.ndarray
) -> tuple[npt.NDArray[np.float32], list[str]]:
    """Raw ``part`` features in the order of ``ids``; rows without a value are NaN."""
    if part == "morphology":
        from datasets.features import read_features

        have, values, names = read_features(project.path)
    elif part == "embedding":
        from models.folder import latest_backbone_embeddings

        found = latest_backbone_embeddings(project.path)
        if found is None:
            raise ConfigError(
                f"{project.path}: --features embedding needs a published model version with "
                "backbone embeddings and there is none yet; run `phenoscout train` first or "
                "export --features morphology"
            )
        _, have, values = found
        names = [f"emb_{j:03d}" for j in range(values.shape[1])]
    elif part == "cellprofiler":
        from labeling.feature_sets import cellprofiler_columns

        names = cellprofiler_columns(project)
        table = project.cells(columns=["cell_id", *names])
        have, values = table["cell_id"].to_numpy(str), table[names].to_numpy(np.float32)
    else:
        raise ConfigError(
            f"--features {part!r}: unknown; use {', '.join(FEATURE_PARTS)} or two of them "
            "joined by '+'"
        )
    return _aligned(np.asarray(have, dtype=str), np.asarray(values), ids), list(names)


def _aligned(have: np.ndarray, values: np.ndarray, ids: np.ndarray) -> npt.NDArray[np.float32]:
    import pandas as pd

    rows = pd.Index(have).get_indexer(ids)
    out = np.full((len(ids), values.shape[1]), np.nan, dtype=np.float32)
    found = rows >= 0
    out[found] = np.asarray(values, dtype=np.float32)[rows[found]]
    return out


def _text(values: pd.Series) -> pd.Categorical:
    """A text column as h5ad takes it: categorical with ``object`` categories, NaN kept."""
    import pandas as pd

    as_str = values.map(str, na_action="ignore")
    cats = sorted(set(as_str.dropna().tolist()))
    return pd.Categorical(as_str.astype(object), categories=pd.Index(cats, dtype=object))


def _writable(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every column in a dtype h5ad writes: numbers, bools and nullable
    integers stay; datetimes and text become categorical text (see module docstring)."""
    import pandas as pd

    out = {}
    for col in frame.columns:
        values = frame[col]
        numeric = pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
        if numeric and not isinstance(values.dtype, pd.CategoricalDtype):
            out[str(col)] = values.to_numpy() if values.dtype.kind in "biuf" else values.array
        else:
            out[str(col)] = _text(values)
    return pd.DataFrame(out, index=pd.Index(frame.index.astype(str), dtype=object))


def _obs(project: Project) -> tuple[pd.DataFrame, Any]:
    """The cell table with labels and predictions (index cell_id), and the fitted head or None."""
    import pandas as pd

    from labeling.io.export import cells_table
    from labeling.loop import fit_head, pool_data

    cells = cells_table(project).set_index("cell_id", drop=True)
    labels = project.store.current_labels_frame(include_pseudo=True).set_index("cell_id")
    labels = labels.rename(columns={"source": "label_source"})
    labels["labeled_at"] = labels["labeled_at"].map(str, na_action="ignore")
    obs = cells.join(labels, how="left")
    obs["labeled"] = obs["label"].notna().to_numpy()
    obs["pseudo"] = obs["pseudo"].fillna(False).astype(bool).to_numpy()
    pool = pool_data(project)
    head = fit_head(project, pool)
    if head.proba is not None:
        proba = np.asarray(head.proba)
        names = np.asarray(head.classes, dtype=object)
        pred = pd.DataFrame(
            {
                "predicted": names[proba.argmax(axis=1)],
                "confidence": proba.max(axis=1).astype(np.float32),
            },
            index=pd.Index(pool.cell_ids.astype(str)),
        )
        obs = obs.join(pred, how="left")
    return obs, (head, pool) if head.proba is not None else None


def anndata_for(project: Project, features: str = "morphology") -> Any:
    """The project as an ``anndata.AnnData`` (see the module docstring).

    Args:
        project: the open project.
        features: the feature set in ``X``: ``morphology`` (measured at ingest), ``embedding``
            (the newest backbone embedding), ``cellprofiler`` (the ``cp_*`` columns), or two
            joined by ``+``.

    Raises:
        ConfigError: an unknown feature set, or one the project does not have yet.
    """
    import anndata as ad
    import pandas as pd

    from labeling.config import config_to_dict
    from models.folder import latest_backbone_embeddings, latest_version

    obs, fitted = _obs(project)
    ids = obs.index.to_numpy(dtype=str)
    blocks, names = [], []
    parts = [p.strip() for p in features.split("+")]
    if len(set(parts)) < len(parts):
        raise ConfigError(f"features {features!r}: a feature set named twice; name each once")
    for part in features.split("+"):
        block, cols = _feature_block(project, part.strip(), ids)
        blocks.append(block)
        names += [f"{part.strip()}:{c}" if "+" in features else c for c in cols]
    x = blocks[0] if len(blocks) == 1 else np.hstack(blocks)
    var = pd.DataFrame(
        {"channel": _channel_of(names, list(project.channel_names))},
        index=pd.Index(names, dtype=object),
    )
    adata = ad.AnnData(X=x, obs=_writable(obs), var=_writable(var))
    found = latest_backbone_embeddings(project.path)
    if found is not None:
        adata.obsm["X_embedding"] = _aligned(np.asarray(found[1], dtype=str), found[2], ids)
    classes = [c.name for c in project.store.classes(include_pseudo=False)]
    latest = latest_version(project.path)
    adata.uns["classes"] = np.array(classes, dtype=object)
    adata.uns["features"] = features
    adata.uns["model_version"] = int(latest.version) if latest is not None else -1
    adata.uns["embedding_version"] = int(found[0].version) if found is not None else -1
    adata.uns["channels"] = np.array(project.channel_names, dtype=object)
    adata.uns["phenoscout_config"] = json.dumps(config_to_dict(project.config))
    if fitted is not None:
        head, pool = fitted
        adata.obsm["p_classes"] = _aligned(pool.cell_ids.astype(str), np.asarray(head.proba), ids)
        adata.uns["head_classes"] = np.array(head.classes, dtype=object)
        adata.uns["head_version"] = str(head.version)
        adata.uns["head_features"] = str(head.features)
    return adata


def export_anndata(project: Project, out: Path, features: str = "morphology") -> int:
    """Write :func:`anndata_for` to ``out`` (``.h5ad``) through a temporary file and a rename.

    Returns:
        The number of cells written.

    Raises:
        ConfigError: ``out`` is not ``.h5ad`` or is a project's own file; an unknown or
            missing feature set.
        PhenoScoutError: the file cannot be written (read-only folder, full disk).
    """
    from labeling.io.export import check_export_target, write_file_atomic

    out = Path(out)
    if out.suffix.lower() != SUFFIX:
        raise ConfigError(f"{out}: an AnnData export is a {SUFFIX} file; name it e.g. screen.h5ad")
    check_export_target(out)  # before the work, not after it
    adata = anndata_for(project, features)
    write_file_atomic(out, lambda tmp: adata.write_h5ad(tmp))
    logger.info("exported %d cells x %d features to %s", adata.n_obs, adata.n_vars, out)
    return int(adata.n_obs)

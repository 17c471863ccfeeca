"""Setting projects up from the app: folders to pick crops from, channel colours and the demo.

The app's Project page calls these; each works headless too. No streamlit here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from datasets.config import ChannelSpec
from datasets.progress import Progress
from labeling.config import save_config
from labeling.errors import ConfigError, DataError, ProjectError
from labeling.project import CONFIG_FILE, IngestRun, Project, create_project, open_project

logger = logging.getLogger(__name__)

DEMO_DIR = "phenoscout_demo"  # made in the working directory by :func:`demo_project`
DEMO_CELLS = 5000  # a demo this size is generated, ingested and featurised in well under 60 s


def subfolders(path: Path) -> list[str]:
    """Names of the visible folders directly under ``path``, sorted.

    Raises:
        DataError: ``path`` is not a folder.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: no such folder; type the folder that holds your cell crops")
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def set_channels(
    project: Project, names: Sequence[str] = (), colours: Sequence[str] = ()
) -> Project:
    """Rename and recolour the project's channels (empty entries keep the current value) and
    save project.toml.

    Raises:
        ConfigError: more names or colours than channels.
        DataError: a colour not of the form ``#rrggbb``.
    """
    old = project.config.channels
    if len(names) > len(old) or len(colours) > len(old):
        raise ConfigError(
            f"{len(names)} names and {len(colours)} colours for {len(old)} channels; give at "
            "most one per channel"
        )
    channels = tuple(
        ChannelSpec(
            (names[i].strip() if i < len(names) and names[i].strip() else c.name),
            (colours[i].strip() if i < len(colours) and colours[i].strip() else c.colour),
        )
        for i, c in enumerate(old)
    )
    config = dataclasses.replace(project.config, channels=channels)
    save_config(config, project.path / CONFIG_FILE)
    project.config = config
    return project


def demo_project(
    root: Path | None = None,
    n_cells: int = DEMO_CELLS,
    progress: Progress | None = None,
    seed: int = 0,
) -> Project:
    """The demo project under ``root/phenoscout_demo`` (``root``: the working directory when
    None): opened when it exists, else the demo screen is generated (when missing) and its
    project created.

    Args:
        root: the folder that holds ``phenoscout_demo/``.
        n_cells: cells of a new demo screen.
        progress: ``progress(done, total)`` over generation, then ingest, then features.
        seed: seed of the screen and of the project.

    Raises:
        ProjectError: ``phenoscout_demo/project`` exists but is not a project.
    """
    from datasets.crops.demo import generate_demo

    base = (Path.cwd() if root is None else Path(root)) / DEMO_DIR
    screen, path = base / "screen", base / "project"
    if path.exists():
        return open_project(path)
    if not (screen / "labels.csv").exists():
        generate_demo(screen, n_cells=n_cells, seed=seed, progress=progress)
    run = IngestRun(progress=progress, feature_progress=progress)
    project, _ = create_project(path, screen, seed=seed, run=run)
    logger.info("demo project ready at %s", path)
    return project


#: Folder names that say what a folder holds, not which screen: a project is named after the
#: folder above them (``screen7/images`` -> ``screen7_project``).
GENERIC_FOLDERS = frozenset({"images", "image", "imgs", "crops", "cells", "data", "tiles",
                             "fields", "raw", "tif", "tiff", "png", "jpg", "input"})  # fmt: skip


def suggested_project_folder(root: Path, source: Path) -> Path:
    """``root / NAME_project`` for a project made from ``source`` (a folder of crops or
    fields), NAME the folder's name, or its parent's when the name is generic."""
    source = Path(source)
    name = source.name
    if name.lower() in GENERIC_FOLDERS and source.parent.name:
        name = source.parent.name
    return Path(root) / f"{name or 'screen'}_project"


def check_new_project_folder(path: Path) -> Path:
    """``path`` resolved, when a new project can be created there.

    Raises:
        ProjectError: it is empty text, or an existing non-empty folder or a file.
    """
    if not str(path).strip():
        raise ProjectError("type a folder for the new project first")
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ProjectError(f"{path}: is a file; choose a new folder for the project")
    if path.exists() and any(path.iterdir()):
        raise ProjectError(f"{path}: already exists and is not empty; choose a new folder")
    return path


def resolve_user_path(typed: str, root: Path) -> Path:
    """The path a user typed, made absolute and kept inside ``root``.

    ``~`` is expanded, a relative path is taken under ``root``, and symlinks (of the parts
    that exist) and ``..`` are resolved before the check, so neither ``../..`` nor a link
    that points elsewhere can leave ``root``.

    Args:
        typed: what the user typed (surrounding blanks are ignored).
        root: the folder the path must stay in (itself allowed).

    Returns:
        The resolved absolute path; it need not exist.

    Raises:
        ConfigError: empty text, a control character, or a path outside ``root``.
    """
    text = typed.strip() if isinstance(typed, str) else ""
    if not text:
        raise ConfigError(f"no path typed; type a folder inside {root}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ConfigError(f"path {typed!r} contains a control character; type it again")
    base = Path(root).expanduser().resolve()
    path = Path(text).expanduser()
    resolved = (path if path.is_absolute() else base / path).resolve()
    if resolved != base and base not in resolved.parents:
        raise ConfigError(
            f"path {typed!r} leads to {resolved}, outside {base}; choose a path inside {base}"
        )
    return resolved

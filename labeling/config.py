"""Project configuration: one frozen dataclass per concern, one path from TOML to dataclasses.

``project.toml`` in a project folder is written by :func:`save_config` and read by
:func:`load_config`; an unknown key is an error with a "did you mean" suggestion.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from datasets.config import ChannelSpec, IngestConfig
from datasets.errors import DataError
from datasets.files import replace_file
from labeling.errors import ConfigError

logger = logging.getLogger(__name__)

#: Version of the project folder layout; bumped on incompatible changes (labeling.store.migrations
#: upgrades older project.toml files on load and lists what each version changed).
SCHEMA_VERSION = 2
#: Feature sets of the loop's head (see labeling.feature_sets); "auto" decides by CV.
FEATURE_SETS = (
    "auto",
    "morphology",
    "embedding",
    "morphology+embedding",
    "cellprofiler",
    "morphology+cellprofiler",
)


@dataclass(frozen=True)
class LoopConfig:
    """How the active-learning loop picks and sizes batches."""

    strategy: str = "discover"  # default query strategy (see `phenoscout next --help`)
    batch_size: int = 24  # cells shown per batch
    features: str = "auto"  # feature set the head is trained on (FEATURE_SETS)
    lease_minutes: float = 60.0  # a batch handed to one annotator is held for others this long

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 1000:
            raise ConfigError(f"loop.batch_size {self.batch_size} is out of range; use 1-1000")
        if self.features not in FEATURE_SETS:
            raise ConfigError(f"loop.features {self.features!r}: allowed {FEATURE_SETS}")
        if self.lease_minutes <= 0:
            raise ConfigError(f"loop.lease_minutes {self.lease_minutes} must be > 0")


@dataclass(frozen=True)
class ProjectConfig:
    """Everything that defines a project; saved as project.toml and into every export."""

    name: str  # shown in the app
    channels: tuple[ChannelSpec, ...]  # the stored channels, in pixel order
    ingest: IngestConfig = field(default_factory=IngestConfig)  # how crops were made
    loop: LoopConfig = field(default_factory=LoopConfig)  # how batches are chosen
    dropped_channels: tuple[str, ...] = ()  # source channels dropped at ingest (all zero)
    seed: int = 0  # seeds every random choice of the project
    schema_version: int = SCHEMA_VERSION  # project folder layout version

    def __post_init__(self) -> None:
        if not 1 <= len(self.channels) <= 5:
            raise ConfigError(f"{len(self.channels)} channels; PhenoScout supports 1-5")
        if self.schema_version > SCHEMA_VERSION:
            raise ConfigError(
                f"project schema version {self.schema_version} is newer than this PhenoScout "
                f"supports ({SCHEMA_VERSION}); upgrade PhenoScout to open it"
            )


def _check_keys(section: str, given: dict[str, Any], cls: type) -> None:
    allowed = [f.name for f in dataclasses.fields(cls)]
    for key in given:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            did_you_mean = f"; did you mean {hint[0]!r}?" if hint else f"; allowed: {allowed}"
            raise ConfigError(f"unknown key {section}{key!r}{did_you_mean}")


def config_from_dict(data: dict[str, Any]) -> ProjectConfig:
    """Build a :class:`ProjectConfig` from plain TOML data, validating every key.

    Raises:
        ConfigError: on an unknown key, a wrong type or an invalid value.
    """
    _check_keys("", data, ProjectConfig)
    try:
        channels = tuple(ChannelSpec(**c) for c in data.get("channels", ()))
        ingest_data = dict(data.get("ingest", {}))
        _check_keys("ingest.", ingest_data, IngestConfig)
        for key in ("percentiles", "channel_names"):
            if key in ingest_data:
                ingest_data[key] = tuple(ingest_data[key])
        loop_data = dict(data.get("loop", {}))
        _check_keys("loop.", loop_data, LoopConfig)
        return ProjectConfig(
            name=str(data.get("name", "project")),
            channels=channels,
            ingest=IngestConfig(**ingest_data),
            loop=LoopConfig(**loop_data),
            dropped_channels=tuple(data.get("dropped_channels", ())),
            seed=int(data.get("seed", 0)),
            schema_version=int(data.get("schema_version", SCHEMA_VERSION)),
        )
    except (TypeError, ValueError, DataError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc


def config_to_dict(cfg: ProjectConfig) -> dict[str, Any]:
    """Plain, TOML-serialisable form of ``cfg`` (also written into exports and checkpoints)."""
    data = dataclasses.asdict(cfg)
    data["channels"] = [dataclasses.asdict(c) for c in cfg.channels]
    data["ingest"]["percentiles"] = list(cfg.ingest.percentiles)
    data["ingest"]["channel_names"] = list(cfg.ingest.channel_names)
    for name in ("scale", "crop_size"):  # not chosen yet (a project stores ingest's numbers)
        if data["ingest"][name] is None:
            del data["ingest"][name]
    data["dropped_channels"] = list(cfg.dropped_channels)
    return data


def load_config(path: Path) -> ProjectConfig:
    """Read ``project.toml``.

    Raises:
        ConfigError: when the file is missing, is not valid TOML, or holds an invalid value.
    """
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no project config here; is this a PhenoScout project?") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: damaged, not valid TOML ({exc}); restore it from a backup or fix the line"
        ) from exc
    except OSError as exc:  # a folder, unreadable
        raise ConfigError(f"{path}: cannot read the project config ({exc})") from exc
    old = data.get("schema_version", SCHEMA_VERSION)
    try:
        if old != SCHEMA_VERSION:
            from labeling.store.migrations import migrate_config_data

            data = migrate_config_data(data, SCHEMA_VERSION)
        cfg = config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if cfg.schema_version != old:
        _save_migrated(cfg, Path(path), old)
    return cfg


def _save_migrated(cfg: ProjectConfig, path: Path, old: int) -> None:
    """Rewrite an upgraded project.toml, its old text kept as ``project.toml.v<old>.bak``; a
    read-only project keeps its file and is upgraded in memory on every load."""
    from labeling.store.migrations import backup_path

    try:
        backup = backup_path(path, old)
        backup.write_bytes(path.read_bytes())
        save_config(cfg, path)
    except OSError as exc:
        logger.warning("%s: upgraded in memory only, cannot rewrite it (%s)", path, exc)
        return
    logger.warning("%s: upgraded from schema %d to %d (old file: %s)", path, old,
                   cfg.schema_version, backup)  # fmt: skip


def save_config(cfg: ProjectConfig, path: Path) -> None:
    """Write ``cfg`` as TOML atomically (temporary file, then rename)."""
    text = tomli_w.dumps(config_to_dict(cfg)).encode("utf-8")
    replace_file(path, lambda fh: fh.write(text))

import pytest

from datasets.config import ChannelSpec, IngestConfig, default_channels
from labeling.config import (
    SCHEMA_VERSION,
    LoopConfig,
    ProjectConfig,
    config_from_dict,
    load_config,
    save_config,
)
from labeling.errors import ConfigError


def _cfg(**kw):
    return ProjectConfig(name="p", channels=default_channels(2, ("DNA", "Actin")), **kw)


def test_round_trip(tmp_path):
    cfg = _cfg(
        ingest=IngestConfig(crop_size=48, percentiles=(0.5, 99.5)),
        seed=7,
        dropped_channels=("ch2",),
    )
    save_config(cfg, tmp_path / "project.toml")
    assert load_config(tmp_path / "project.toml") == cfg


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(
        ConfigError, match=r"unknown key ingest\.'crop_sise'; did you mean 'crop_size'"
    ):
        config_from_dict({"name": "p", "channels": [{"name": "DNA"}], "ingest": {"crop_sise": 3}})
    with pytest.raises(ConfigError, match="did you mean 'seed'"):
        config_from_dict({"name": "p", "channels": [{"name": "DNA"}], "sed": 1})


@pytest.mark.parametrize(
    "data, match",
    [
        ({"ingest": {"crop_size": 4}}, "crop_size 4 is out of range"),
        ({"loop": {"batch_size": 0}}, "batch_size 0 is out of range"),
        ({"loop": {"features": "pixels"}}, "loop.features 'pixels'"),
        ({"channels": [{"name": "DNA", "colour": "blue"}]}, "colour 'blue' is not of the form"),
        ({"schema_version": SCHEMA_VERSION + 1}, "newer than this PhenoScout supports"),
    ],
)
def test_invalid_values_are_clear(data, match):
    base = {"name": "p", "channels": [{"name": "DNA"}]}
    with pytest.raises(ConfigError, match=match):
        config_from_dict({**base, **data})


def test_too_many_channels():
    with pytest.raises(ConfigError, match="6 channels; PhenoScout supports 1-5"):
        ProjectConfig(name="p", channels=tuple(ChannelSpec(f"c{i}") for i in range(6)))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ConfigError, match="no project config here"):
        load_config(tmp_path / "project.toml")
    (tmp_path / "project.toml").write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "project.toml")


def test_loop_defaults():
    assert LoopConfig().strategy == "discover" and LoopConfig().batch_size == 24

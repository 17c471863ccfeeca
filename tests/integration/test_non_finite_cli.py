"""NaN pixels in two channels: init names the file and ``next`` still returns a batch (11.2)."""

from __future__ import annotations

import json

import numpy as np
import tifffile

from labeling.cli.commands import main
from tests.unit.datasets.test_non_finite import _folder


def test_next_returns_a_batch_with_nan_in_two_channels(tmp_path, capsys):
    src = _folder(tmp_path / "crops", n=30)
    for name, channel in (("c04.tif", 0), ("c09.tif", 1)):
        image = tifffile.imread(src / name)
        image[channel, 10:12, 10:12] = np.nan
        tifffile.imwrite(src / name, image)
    project = tmp_path / "p"
    assert main(["init", str(project), "--crops", str(src), "--crop-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "c04.tif" in out and "c09.tif" in out
    assert main(["next", str(project), "--n", "4"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 4

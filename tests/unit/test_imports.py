"""`import labeling` and `import datasets` must not load torch or streamlit."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "streamlit")


@pytest.mark.parametrize(
    "modules",
    [
        "labeling, datasets",
        "labeling.cli.commands, labeling.project, labeling.store.labels, labeling.io.export, labeling.loop",
        "datasets.crops.ingest, datasets.pixels.arrays, datasets.features, datasets.crops.demo",
    ],
)
def test_core_imports_stay_light(modules):
    code = (
        f"import sys; import {modules}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{modules} pulled in {out.stdout.strip()}"


def test_cli_help_stays_light():
    code = (
        "import sys\nfrom labeling.cli.commands import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "LOADED=\n" in out.stdout + "\n" and "usage: phenoscout" in out.stdout

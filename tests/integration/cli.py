"""Running the `phenoscout` command line inside a test (exit code, stdout, stderr)."""

from __future__ import annotations

from labeling.cli.commands import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err

"""Parser helpers shared by the ``phenoscout`` subcommand modules."""

from __future__ import annotations

import argparse
from pathlib import Path

Parents = dict[str, argparse.ArgumentParser]
Sub = argparse._SubParsersAction


def shared_parents() -> Parents:
    """Options shared by several subcommands, as argparse parent parsers."""
    project = argparse.ArgumentParser(add_help=False)
    project.add_argument("project", help="project folder")
    out_file = argparse.ArgumentParser(add_help=False)
    out_file.add_argument("--out", required=True, help="output file, .csv or .parquet")
    out_dir = argparse.ArgumentParser(add_help=False)
    out_dir.add_argument("--out", required=True, help="output folder")
    annotator = argparse.ArgumentParser(add_help=False)
    annotator.add_argument("--annotator", default="cli", help="who labels (default cli)")
    return {"project": project, "out_file": out_file, "out_dir": out_dir, "annotator": annotator}


def add_parser(
    sub: Sub,
    name: str,
    help: str,  # noqa: A002 - argparse's own name
    description: str,
    parents: list[argparse.ArgumentParser] | None = None,
) -> argparse.ArgumentParser:
    """``sub.add_parser`` with the help line, description and parent parsers every subcommand
    passes."""
    return sub.add_parser(name, parents=parents or [], help=help, description=description)


def out_folder(value: str) -> Path:
    """``--out`` of a command that writes several files: a folder (made when missing), never
    an existing file.

    Raises:
        PhenoScoutError: when ``value`` is an existing file.
    """
    from labeling.errors import PhenoScoutError

    path = Path(value)
    if path.exists() and not path.is_dir():
        raise PhenoScoutError(f"--out {path}: is a file; give a folder for the output files")
    return path

"""A full disk or a read-only project while labeling: one clear line, nothing committed lost.

No root, mounts or real full disk needed: the labeling runs in a child process whose file-size
limit (``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored) is dropped to 0 mid-session, so every write
fails with EFBIG as on a full disk; "read-only" is a chmod, and as root the child first drops
``CAP_DAC_OVERRIDE`` (the capability that lets root write through a chmod), so it runs as root
too.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from labeling.store.labels import LabelStore

REPO = Path(__file__).resolve().parents[2]

_PRELUDE = textwrap.dedent("""
    import ctypes, json, os, resource, signal, sys
    from pathlib import Path
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG

    def drop_root_write_override():
        # as root, give up CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so chmod binds root too
        if os.geteuid() != 0:
            return
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]
        libc = ctypes.CDLL(None, use_errno=True)
        header, data = Header(0x20080522, 0), (Data * 2)()
        if libc.capget(ctypes.byref(header), data) != 0:
            sys.exit("capget failed")
        keep = ~((1 << 1) | (1 << 2)) & 0xFFFFFFFF
        data[0].effective &= keep
        data[0].permitted &= keep
        data[0].inheritable &= keep
        if libc.capset(ctypes.byref(header), data) != 0:
            sys.exit("capset failed")

    def limit_file_size(n_bytes):
        resource.setrlimit(resource.RLIMIT_FSIZE,
                           (n_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    from labeling.errors import PhenoScoutError
    from labeling.loop import next_batch, submit_labels
    from labeling.project import open_project

    def attempt(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs), None
        except PhenoScoutError as err:
            return None, [type(err).__name__, str(err)]
""")

_LABEL_UNTIL_FULL = _PRELUDE + textwrap.dedent("""
    project = open_project(Path(sys.argv[1]))
    ids = [b["cell_id"] for b in next_batch(project, 12, annotator="ann")]
    acked, errors = {}, []
    for cid in ids[:4]:
        submit_labels(project, {cid: "round"}, "ann")
        acked[cid] = "round"
    limit_file_size(0)  # the disk is full from here on
    for cid in ids[4:8]:
        done, err = attempt(submit_labels, project, {cid: "flat"}, "ann")
        if err:
            errors.append(err)
        else:
            acked[cid] = "flat"
    _, err = attempt(next_batch, project, 12, annotator="bob", resume=False)
    errors.append(err)
    limit_file_size(resource.RLIM_INFINITY)  # space freed: the same session carries on
    submit_labels(project, {ids[8]: "flat"}, "ann")
    acked[ids[8]] = "flat"
    print(json.dumps({"acked": acked, "refused": ids[4:8], "errors": errors}))
""")

_EXPORT_UNTIL_FULL = _PRELUDE + textwrap.dedent("""
    from labeling.io.bundles import crops_zip
    from labeling.io.export import export_table, write_bytes_atomic
    project = open_project(Path(sys.argv[1]))
    out = Path(sys.argv[2])
    crops = crops_zip(project)
    limit_file_size(int(sys.argv[3]))
    errors = [attempt(export_table, project, out / "cells.csv", what="cells")[1],
              attempt(export_table, project, out / "cells.parquet", what="cells")[1],
              attempt(write_bytes_atomic, crops, out / "crops.zip")[1]]
    print(json.dumps({"errors": errors}))
""")

_LABEL_READ_ONLY = _PRELUDE + textwrap.dedent("""
    drop_root_write_override()
    writable = os.access(sys.argv[3], os.W_OK)  # the file or folder made read-only
    project, err = attempt(open_project, Path(sys.argv[1]))
    errors, labels = [err], None
    if project is not None:
        labels = project.store.current_labels()
        errors.append(attempt(submit_labels, project, {sys.argv[2]: "flat"}, "ann")[1])
        errors.append(attempt(next_batch, project, 12, annotator="bob", resume=False)[1])
    print(json.dumps({"writable": writable, "labels": labels, "errors": errors}))
""")


def _run(code: str, *args: object) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]  # a crash would show a traceback here
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check_store(db: Path, expected: dict[str, str]) -> None:
    """Every label in ``expected`` is the cell's label in force, and SQLite finds no damage."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    with LabelStore(db) as store:
        assert store.current_labels() == expected


@pytest.fixture
def project(tmp_path, small_project) -> Path:
    path = tmp_path / "project"
    shutil.copytree(small_project, path)
    return path


@pytest.mark.slow
def test_a_full_disk_while_labeling_is_one_clear_line_and_loses_nothing(project):
    result = _run(_LABEL_UNTIL_FULL, project)
    errors = result["errors"]
    assert len(errors) == 5, "every write on the full disk must fail, and fail cleanly"
    for kind, message in errors:
        assert kind == "StoreError" and "\n" not in message
        assert message.startswith(f"{project / 'labels.db'}: cannot save (")
        assert "disk full" in message and "labels committed before are safe" in message
    assert not set(result["refused"]) & set(result["acked"])
    _check_store(project / "labels.db", result["acked"])  # all 5 acknowledged, none refused
    from labeling.project import open_project

    open_project(project).close()


def test_a_full_disk_while_exporting_leaves_no_partial_file(project, tmp_path):
    with LabelStore(project / "labels.db") as store:
        cells = [r[0] for r in store._read("SELECT cell_id FROM cells LIMIT 30")]
        store.submit({c: f"class{i % 3}" for i, c in enumerate(cells)}, "ann", "cli")
    out = tmp_path / "exports"
    out.mkdir()
    (out / "cells.csv").write_text("an earlier export\n")
    result = _run(_EXPORT_UNTIL_FULL, project, out, 2048)
    for kind, message in result["errors"]:
        assert kind == "PhenoScoutError" and "\n" not in message
        assert "cannot write (File too large); disk full" in message
        assert "nothing was written, a file already there is unchanged" in message
    assert sorted(p.name for p in out.iterdir()) == ["cells.csv"]  # no .tmp, no partial file
    assert (out / "cells.csv").read_text() == "an earlier export\n"
    _check_store(project / "labels.db", {c: f"class{i % 3}" for i, c in enumerate(cells)})


def _read_only(path: Path) -> int:
    old = path.stat().st_mode
    path.chmod(old & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return old


@pytest.mark.parametrize("what", ["labels.db", "project folder"])
def test_a_read_only_project_is_one_clear_line_and_keeps_its_labels(project, what):
    with LabelStore(project / "labels.db") as store:
        first, second = (r[0] for r in store._read("SELECT cell_id FROM cells LIMIT 2"))
        store.submit({first: "round"}, "ann", "batch")
    target = project / "labels.db" if what == "labels.db" else project
    old = _read_only(target)
    try:
        result = _run(_LABEL_READ_ONLY, project, second, target)
    finally:
        target.chmod(old)
    assert result["writable"] is False, "the child could still write: the test proves nothing"
    errors = [e for e in result["errors"] if e is not None]
    assert errors, "writing to a read-only project raised nothing"
    for kind, message in errors:
        assert kind == "StoreError" and "\n" not in message and "read-only" in message
        assert message.startswith(str(project / "labels.db"))
    if result["labels"] is not None:  # opened for reading: the labels were all there
        assert result["labels"] == {first: "round"}
    _check_store(project / "labels.db", {first: "round"})
    assert os.access(project / "labels.db", os.W_OK)

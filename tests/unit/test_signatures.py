"""No function of the product takes more than 6 parameters (STYLE.md): past that, a config
dataclass groups the knobs (``IngestRun``, ``FieldSource``, ``EmbedConfig``, ...)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app.py", "app_pages", "labeling", "models", "datasets")
MAX_PARAMETERS = 6
#: "path:function" -> why it may take more, for now. Keep it empty but for a real reason.
ALLOWED: dict[str, int] = {}


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """The parameters a caller passes: positional, keyword-only, ``*args`` and ``**kwargs``;
    a method's ``self`` or ``cls`` does not count."""
    args = node.args
    names = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return names


def too_long() -> dict[str, int]:
    """``{"path:function": parameters}`` of every function (public or private, methods and
    nested functions too) with more than MAX_PARAMETERS."""
    files: list[Path] = []
    for name in PACKAGES:
        path = ROOT / name
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    found = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = len(parameters(node))
                if n > MAX_PARAMETERS:
                    found[f"{path.relative_to(ROOT).as_posix()}:{node.name}"] = n
    return found


def test_no_function_takes_more_than_six_parameters():
    over = {k: v for k, v in too_long().items() if ALLOWED.get(k) != v}
    assert over == {}, f"more than {MAX_PARAMETERS} parameters: group the knobs in a dataclass"


def test_the_allowlist_has_no_stale_entries():
    assert set(ALLOWED) <= set(too_long()), "remove the entries that now take 6 or fewer"


def test_the_count_sees_keyword_only_and_star_parameters():
    source = "def f(a, b, /, c, *args, d, e=1, **kw): ...\nclass K:\n    def m(self, a): ..."
    funcs = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)]
    assert [parameters(f) for f in funcs] == [["a", "b", "c", "d", "e", "args", "kw"], ["a"]]

"""benchmarks/README.md indexes every script of benchmarks/ and names only result files that exist; the scripts
share code through benchmarks/_common.py, not by importing each other (issue 18)."""
from __future__ import annotations

import re
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_every_script_indexed():
    text = (BENCH / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in sorted(BENCH.glob("*.py")) if f"`{p.name}`" not in text]
    assert not missing, missing


def test_named_results_exist():
    text = (BENCH / "README.md").read_text(encoding="utf-8")
    names = set(re.findall(r"`([\w.-]+\.(?:json|txt))`", text)) - {"out.json"}
    for name in re.findall(r"`([\w-]+)\.\{([\w,]+)\}`", text):
        names |= {f"{name[0]}.{ext}" for ext in name[1].split(",")}
    missing = [n for n in sorted(names) if not (BENCH / "results" / n).exists()]
    assert names and not missing, missing


def test_scripts_import_no_other_script():
    """A script imports the shared helper module ``_common`` only, never another script, and does not
    edit sys.path (issue 18)."""
    import ast

    scripts = {p.stem for p in BENCH.glob("*.py")}
    bad = []
    for p in sorted(BENCH.glob("*.py")):
        tree = ast.parse(p.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            bad += [f"{p.name} imports {n}" for n in names if n.split(".")[0] in scripts - {"_common"}]
            if (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                    and node.value.id == "sys"):
                bad.append(f"{p.name} uses sys.path (line {node.lineno})")
    assert not bad, bad

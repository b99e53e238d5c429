"""benchmarks/README.md indexes every script of benchmarks/ and names only result files that exist (issue 18)."""
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

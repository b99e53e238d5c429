"""README.md's tour runs (issue 18).

The ```python blocks of the tour — from "## A five-minute tour" to the next "## " heading, its ###
subsections included — run in order, in one namespace (as a reader pastes them one after the other), in a
temporary working folder. A block preceded by ``<!-- tour-test: needs FOLDER ... -->`` gets the files of
``../shared/FOLDER`` copied into the working folder and is skipped where ../shared lacks that folder; a block
that stops on an optional dependency that is not installed (torch, lightweaver, dask, mpi4py) is skipped
with that reason. Any other exception fails the block's test; the blocks after a failed one are skipped.
"""
from __future__ import annotations

import os
import re
import shutil
import traceback
from dataclasses import dataclass

import pytest

from helpers import ROOT, SHARED, require_engine

require_engine()

README = ROOT / "README.md"
OPTIONAL = ("torch", "lightweaver", "dask", "distributed", "mpi4py")
_BLOCK = re.compile(r"(?:<!-- tour-test: needs (?P<needs>\S+)[^\n]*-->\n)?```python\n(?P<code>.*?)^```", re.S | re.M)


@dataclass
class Block:
    line: int          # README.md line of the block's first code line
    code: str
    needs: str | None  # a folder of ../shared whose files the block reads


def tour_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## A five-minute tour\n")
    end = text.find("\n## ", start + 1)
    end = len(text) if end < 0 else end
    blocks = []
    for m in _BLOCK.finditer(text, start, end):
        blocks.append(Block(text.count("\n", 0, m.start("code")) + 1, m.group("code"), m.group("needs")))
    return blocks


BLOCKS = tour_blocks()


@pytest.fixture(scope="module")
def tour(tmp_path_factory) -> dict[int, tuple[str, str]]:
    """Runs every block; per block: ("ok" | "skip" | "fail", detail)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    work = tmp_path_factory.mktemp("readme-tour")
    ns: dict = {"__name__": "__readme_tour__"}
    outcome: dict[int, tuple[str, str]] = {}
    failed = None
    here = os.getcwd()
    os.chdir(work)
    try:
        for b in BLOCKS:
            if failed is not None:
                outcome[b.line] = ("skip", f"the block at README.md:{failed} failed first")
                continue
            if b.needs:
                src = SHARED / b.needs
                if not src.is_dir():
                    outcome[b.line] = ("skip", f"needs ../shared/{b.needs}, which is not present")
                    continue
                for f in src.iterdir():
                    if f.is_file():
                        shutil.copy(f, work / f.name)
            try:
                exec(compile(b.code, f"README.md:{b.line}", "exec"), ns)
            except ModuleNotFoundError as exc:
                if (exc.name or "").split(".")[0] not in OPTIONAL:
                    raise
                outcome[b.line] = ("skip", f"needs {exc.name} (optional dependency, not installed)")
                continue
            except Exception:
                outcome[b.line] = ("fail", traceback.format_exc())
                failed = b.line
                continue
            finally:
                plt.close("all")
            outcome[b.line] = ("ok", "")
    finally:
        os.chdir(here)
    return outcome


def test_tour_has_blocks():
    assert len(BLOCKS) >= 3, [b.line for b in BLOCKS]
    assert any(b.needs is None for b in BLOCKS)


@pytest.mark.parametrize("line", [b.line for b in BLOCKS], ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_tour_block_runs(tour, line):
    status, detail = tour[line]
    if status == "skip":
        pytest.skip(detail)
    assert status == "ok", f"the README block at line {line} raised:\n{detail}"

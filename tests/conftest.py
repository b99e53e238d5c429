"""Shared fixtures: the ../shared folder beside the repository (skipped where absent), the engine, shared
problems. Plain helper functions and constants are in helpers.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import DATA, REFERENCE, SHARED, engine_missing, six_pixel_map


def _present(folder: Path) -> Path:
    if not folder.is_dir():
        pytest.skip(f"../{folder.relative_to(SHARED.parent)} is not present")
    return folder


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _present(SHARED)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _present(REFERENCE)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _present(DATA)


@pytest.fixture(scope="session")
def engine():
    """The compiled engine, or a skip where it is not built."""
    why = engine_missing()
    if why is not None:
        pytest.skip(f"engine not built ({why})")


@pytest.fixture(scope="module")
def six_pixels(engine):
    """helpers.six_pixel_map(): lines, grid, a one-cycle configuration and a 2×3 cube (test_scheduler.py,
    test_robustness.py)."""
    return six_pixel_map()


@pytest.fixture(scope="module")
def hinode(reference_dir):
    """The invert_hinode.npz problem: the file (``d``), line list, grid, abundances, SIR's configuration and
    the guess it started from (tests/test_inversion.py, tests/test_fidelity.py)."""
    import json

    import numpy as np

    from pyinv.atmosphere import Atmosphere
    from pyinv.config import InversionConfig
    from pyinv.io.sir import read_abundances
    from pyinv.lines import LineList, WavelengthGrid

    d = np.load(reference_dir / "invert_hinode.npz")
    lines = LineList.read_sir(reference_dir / "LINES_REF")
    grid = WavelengthGrid.from_regions([tuple(r) for r in json.loads(str(d["regions"]))], lines)
    ab = read_abundances(reference_dir / "THEVENIN")
    cfg = InversionConfig.from_sir_text(str(d["sir_trol"]))
    guess = Atmosphere.from_array(d["guess_model"], macro=float(d["guess_macro"]))
    return {"d": d, "lines": lines, "grid": grid, "ab": ab, "cfg": cfg, "guess": guess}

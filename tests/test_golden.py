"""The engine restructure of issue 9 changes no result beyond rounding: profiles, response functions and
inversions recomputed now match the golden outputs written by the commit before it
(tests/data/golden_engine_v1.npz, see tests/golden_cases.py).

Step 1 of the issue (the restructure alone, commit 2d50671) reproduced every golden array to 1e-12
relative. Step 2 (speed) changes the arithmetic: unpivoted elimination in the wavelength-blocked formal
solver, fused multiply-adds in the AVX2/AVX-512 builds. Now every build this machine runs (portable
baseline and vectorised, PYINV_ENGINE_ISA) holds profiles and response functions to 1e-9 of each
array's maximum (the SIR criteria are 1e-4 and above) and the
inversions (iterative: the path may differ by rounding) to 1e-3.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from golden_cases import compute
from pyinv.atmosphere import QUANTITY_ALIASES

GOLDEN = Path(__file__).parent / "data" / "golden_engine_v1.npz"


def _golden() -> dict:
    """The golden arrays by today's names: the file was written before issue 18, with the response functions
    under their old keys (``rf/inclination``, ``rf/azimuth``, ``rf/vmac``), which the one table of old
    spellings (pyinv.atmosphere.QUANTITY_ALIASES) translates."""
    out = {}
    with np.load(GOLDEN) as f:
        for key in f.files:
            kind, _, name = key.partition("/")
            new, places = QUANTITY_ALIASES.get(name, (name, ()))
            out[f"rf/{new}" if kind == "rf" and "rf" in places else key] = f[key]
    return out


def _check(new: dict, old: dict) -> None:
    assert sorted(old) == sorted(new), "the set of golden cases changed"
    for key in old:
        if key.endswith("/iterations"):
            continue  # the iteration path may differ by a step
        o, n = old[key], new[key]
        scale = float(np.max(np.abs(o))) or 1.0
        tol = 1e-3 if key.startswith("invert/") else 1e-9
        assert np.abs(n - o).max() <= tol * scale, f"{key}: {np.abs(n - o).max() / scale:.2e} of max"


def test_golden_baseline_engine(reference_dir):
    """The portable build, in a subprocess (PYINV_ENGINE_ISA=baseline)."""
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); from golden_cases import compute; "
            "np.savez(sys.argv[3], **compute(sys.argv[2]))")
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"golden-baseline-{os.getpid()}.npz"
    env = dict(os.environ, PYINV_ENGINE_ISA="baseline")
    p = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(reference_dir), str(out)],
                       env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    try:
        new = dict(np.load(out))
    finally:
        out.unlink(missing_ok=True)
    _check(new, _golden())


def test_golden_default_engine(reference_dir):
    """The build pyinv loads on this machine."""
    _check(compute(reference_dir), _golden())

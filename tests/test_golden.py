"""The engine restructure of issue 9 (step 1) changes no result: profiles, response functions and
inversions recomputed now match the golden outputs written by the commit before it
(tests/data/golden_engine_v1.npz, see tests/golden_cases.py) to 1e-12 relative wherever |value| exceeds
1e-10 of the array's largest magnitude, and to 1e-12 of that maximum (absolute) below.

Step 2 of the issue (speed) is allowed to change results within the accuracy criteria of the other
tests; from then on this comparison holds at the tolerance of ``RTOL_AFTER_STEP2`` (the engine built
for AVX2/FMA rounds differently and the inversions may take other iterations), and the step-1 commit
itself passed it at 1e-12.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from golden_cases import compute

GOLDEN = Path(__file__).parent / "data" / "golden_engine_v1.npz"


@pytest.fixture(scope="module")
def recomputed(reference_dir):
    return compute(reference_dir)


def _compare(key: str, new: np.ndarray, old: np.ndarray, rtol: float) -> None:
    assert new.shape == old.shape, f"{key}: shape {new.shape} != {old.shape}"
    scale = float(np.max(np.abs(old))) if old.size else 0.0
    big = np.abs(old) > 1e-10 * scale
    err_rel = np.abs(new[big] - old[big]) / np.abs(old[big])
    err_abs = np.abs(new[~big] - old[~big])
    assert err_rel.size == 0 or err_rel.max() <= rtol, f"{key}: max relative difference {err_rel.max():.3e}"
    assert err_abs.size == 0 or err_abs.max() <= rtol * scale, f"{key}: max absolute difference {err_abs.max():.3e}"


def test_golden_outputs(recomputed):
    old = np.load(GOLDEN)
    assert sorted(old.files) == sorted(recomputed), "the set of golden cases changed"
    for key in old.files:
        _compare(key, recomputed[key], old[key], rtol=1e-12)

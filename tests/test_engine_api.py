"""The f2py boundary: every wrapped array is float64 (or an integer array), never float32."""
from __future__ import annotations

import re

import pyinv


def _routines():
    api = pyinv.engine.api()
    names = [n for n in dir(api) if not n.startswith("_")]
    return api, names


def test_every_wrapped_array_is_float64():
    api, names = _routines()
    assert "voigt_hf" in names and "planck_bt" in names
    checked = 0
    for name in names:
        doc = getattr(api, name).__doc__ or ""
        kinds = re.findall(r"array\('(\w)'\)", doc)
        for kind in kinds:
            assert kind in ("d", "i"), f"{name}: wrapped array of type '{kind}' (expected 'd' = float64)"
            checked += 1
    assert checked >= 6


def test_error_codes_have_messages():
    assert pyinv.engine.error_message(0) == "success"
    assert "decreasing" in pyinv.engine.error_message(4)
    assert pyinv.engine.error_message(9999) == "unknown error code"


# ------------------------------------------------------------------ instruction-set variants (issue 9)
def test_isa_variants_agree():
    """Every engine build this machine runs (baseline, x86-64-v3, x86-64-v4; PYINV_ENGINE_ISA) gives the
    same synthesis to rounding; an unknown variant is refused at import."""
    import os
    import subprocess
    import sys

    import numpy as np

    from pyinv import engine

    code = ("import numpy as np, pyinv; from pyinv import engine; lines = pyinv.default_lines(); "
            "s = pyinv.synthesize(pyinv.models.default_guess(), lines, pyinv.models.hinode_grid(lines)); "
            "print(engine.isa()); print(repr(s.ravel().tolist()))")
    out = {}
    for isa in engine.ISA_VARIANTS:
        env = dict(os.environ, PYINV_ENGINE_ISA=isa)
        p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if p.returncode != 0 and ("No module named" in p.stderr or "lacks the instructions" in p.stderr):
            continue  # that variant was not built (e.g. -Disa_variants=false), or this CPU cannot run it
        assert p.returncode == 0, p.stderr
        name, data = p.stdout.strip().splitlines()
        assert name == isa
        out[isa] = np.array(eval(data))
    assert "baseline" in out
    for isa, s in out.items():
        assert np.abs(s - out["baseline"]).max() <= 1e-10, isa
    env = dict(os.environ, PYINV_ENGINE_ISA="v9")
    p = subprocess.run([sys.executable, "-c", "from pyinv import engine; engine.api()"], env=env,
                       capture_output=True, text=True)
    assert p.returncode != 0 and "PYINV_ENGINE_ISA" in p.stderr

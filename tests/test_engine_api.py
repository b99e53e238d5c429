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

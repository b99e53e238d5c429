"""Small helpers: Fortran-style number formatting and SIR's header detection (spec-forward §2.1)."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["fortran_e", "fortran_f", "list_directed_real", "find_header_end", "SEPARATOR_CHARS"]

#: Characters that may form SIR's header separator (columns 3–6, four identical characters).
SEPARATOR_CHARS = set('_-+=.,:;"*/$#!><')


def find_header_end(lines: list[str], max_lines: int = 20) -> int:
    """Index of the first data line: after a separator line within the first ``max_lines`` lines, else 0.

    A separator line has four identical characters from :data:`SEPARATOR_CHARS` in columns 3–6
    (1-based), spec-forward §2.1.
    """
    for i, line in enumerate(lines[:max_lines]):
        seg = line[2:6]
        if len(seg) == 4 and seg[0] in SEPARATOR_CHARS and seg == seg[0] * 4:
            return i + 1
    return 0


def fortran_e(x: float, w: int, d: int, scale: int = 0) -> str:
    """Format ``x`` like Fortran ``Ew.d`` (``scale=0``: mantissa 0.1–1) or ``1PEw.d`` (``scale=1``).

    The exponent has two digits (``E+dd``) when |exp| ≤ 99, otherwise three digits without the ``E``,
    as Fortran does. A field that does not fit is filled with ``*``.
    """
    x = float(x)
    if not math.isfinite(x):
        s = "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
        return s.rjust(w)[:w] if len(s) <= w else "*" * w
    ndig = d + (1 if scale == 1 else 0)  # significant digits
    if x == 0.0:
        mant = "0." + "0" * d if scale == 0 else "0." + "0" * d
        exp = 0
        sign = "-" if math.copysign(1.0, x) < 0 else ""
    else:
        s = f"{abs(x):.{ndig - 1}e}"
        m, e = s.split("e")
        exp = int(e)
        digits = m.replace(".", "")
        if scale == 1:
            mant = digits[0] + "." + digits[1:]
        else:
            mant = "0." + digits
            exp += 1
        sign = "-" if x < 0 else ""
    if abs(exp) <= 99:
        es = f"E{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    elif abs(exp) <= 999:
        es = f"{'+' if exp >= 0 else '-'}{abs(exp):03d}"
    else:
        return "*" * w
    out = sign + mant + es
    if len(out) > w and scale == 0 and len(out) == w + 1:
        out = sign + mant[1:] + es  # Fortran may drop the optional leading zero
    if len(out) > w:
        return "*" * w
    return out.rjust(w)


def fortran_f(x: float, w: int, d: int) -> str:
    """Format ``x`` like Fortran ``Fw.d`` (``*`` fill on overflow)."""
    s = f"{float(x):{w}.{d}f}"
    return "*" * w if len(s) > w else s


def list_directed_real(x: float) -> str:
    """One single-precision value as gfortran's list-directed output writes it (a 15-character field).

    0.1 ≤ |x| < 10⁷ → F form with 7 significant digits right-aligned in 11 characters plus 4 blanks;
    otherwise (and for zero) ``1PE15.7E2``.
    """
    v = float(np.float32(x))
    if v != 0.0 and math.isfinite(v):
        r = float(f"{abs(v):.6e}")
        if 0.1 <= r < 1e7:
            k = 0 if r < 1 else int(math.floor(math.log10(r))) + 1
            dec = 7 - k
            s = f"{v:.{dec}f}"
            return s.rjust(11) + "    "
    return fortran_e(v, 15, 7, scale=1)

"""Spectral lines (SIR LINES format, LS terms, Landé factors, Zeeman patterns).

* :class:`SpectralLine` — one transition; :class:`LineList` — an ordered sequence of lines, also
  addressable by SIR index (``lines.by_index(200)``; ``lines[i]`` is *positional*, like a list).
* :func:`zeeman_components` — Zeeman pattern (π, σ_r, σ_b) of a line, the reference for the engine.
"""
from __future__ import annotations

import logging
import math
import os
import re
import warnings
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence, overload

import numpy as np

from ..io._textfmt import find_header_end

__all__ = ["SpectralLine", "LineList", "ZeemanPattern", "zeeman_components", "lande_factor", "wigner3j",
           "effective_lande", "ELEMENTS", "element_number",
           "ENGINE_FIELDS", "SIR_GEFF_OVERRIDE"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: Element symbols, Z = 1 … 92 (index Z − 1).
ELEMENTS: tuple[str, ...] = (
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar",
    "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br",
    "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te",
    "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm",
    "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn",
    "Fr", "Ra", "Ac", "Th", "Pa", "U")
_Z_OF = {s.upper(): i + 1 for i, s in enumerate(ELEMENTS)}

#: SIR's wavelength window (Å, exclusive) for the forced g = 1.45 triplet (Fe I 15652.9; §7.7, §12 item 7).
SIR_GEFF_OVERRIDE: tuple[float, float, float] = (15652.7, 15652.9, 1.45)

_L_INTEGER = "SPDFGHIKLMNOQ"
_L_HALF = "p1f2h3k4m5o6r7t8u9v0w"


def element_number(symbol: str) -> int:
    """Atomic number of an element symbol (case-insensitive). Raises ValueError if unknown."""
    z = _Z_OF.get(symbol.strip().upper())
    if z is None:
        raise ValueError(f"unknown element symbol {symbol!r}")
    return z


def _orbital_L(letter: str) -> float | None:
    """L of an orbital letter: S P D … = 0 1 2 …; SIR's half-integer code p 1 f 2 … w = ½ 1 3/2 … 21/2."""
    if letter in _L_INTEGER:
        return float(_L_INTEGER.index(letter))
    if letter in _L_HALF:
        return (_L_HALF.index(letter) + 1) / 2.0
    return None


def lande_factor(L: float, S: float, J: float) -> float:
    """LS-coupling Landé factor g = 3/2 + [S(S+1) − L(L+1)] / [2J(J+1)]; 0 for J = 0."""
    if J == 0:
        return 0.0
    return 1.5 + (S * (S + 1) - L * (L + 1)) / (2.0 * J * (J + 1))


def effective_lande(g_l: float, g_u: float, J_l: float, J_u: float) -> float:
    """Effective Landé factor ½(g_u+g_l) + ¼(g_u−g_l)[J_u(J_u+1) − J_l(J_l+1)]."""
    return 0.5 * (g_u + g_l) + 0.25 * (g_u - g_l) * (J_u * (J_u + 1) - J_l * (J_l + 1))


Term = tuple[float, float, float]


@dataclass(frozen=True)
class SpectralLine:
    """One atomic transition.

    Attributes
    ----------
    index : int
        SIR line index.
    element : str
        Element symbol (``"Fe"``).
    ion : int
        Ionisation stage, 1 = neutral, 2 = singly ionised.
    wavelength : float
        Laboratory air wavelength λ₀ [Å].
    enhancement : float
        van der Waals enhancement factor E (used only with Unsöld damping).
    excitation : float
        Lower-level excitation energy [eV].
    loggf : float
        log₁₀ gf.
    term_lower, term_upper : (L, S, J) or None
        LS terms; ``None`` when the term letter is unknown or missing.
    alpha : float
        ABO velocity exponent α (0 = Unsöld damping).
    sigma : float
        ABO cross-section σ [cm²] (at 10⁴ m/s; 0 = Unsöld damping).
    geff_override : float or None
        Effective Landé factor forcing a normal triplet (π at 0, σ at ±g_eff Δλ_B); ``None`` = use the
        LS terms.
    """

    index: int
    element: str
    ion: int
    wavelength: float
    enhancement: float
    excitation: float
    loggf: float
    term_lower: Term | None
    term_upper: Term | None
    alpha: float = 0.0
    sigma: float = 0.0
    geff_override: float | None = None
    term_text: str = ""

    def __post_init__(self) -> None:
        element_number(self.element)
        if self.ion not in (1, 2):
            raise ValueError(f"line {self.index}: ionisation stage must be 1 or 2, got {self.ion}")
        for t in (self.term_lower, self.term_upper):
            if t is not None and (t[1] < 0 or t[2] < 0 or t[0] < 0):
                raise ValueError(f"line {self.index}: invalid term {t}")

    @property
    def z(self) -> int:
        """Atomic number."""
        return element_number(self.element)

    @property
    def has_terms(self) -> bool:
        """True when both LS terms are known."""
        return self.term_lower is not None and self.term_upper is not None

    @property
    def g_lower(self) -> float:
        """Landé factor of the lower level (LS coupling); NaN if the term is unknown."""
        return lande_factor(*self.term_lower) if self.term_lower is not None else math.nan

    @property
    def g_upper(self) -> float:
        """Landé factor of the upper level (LS coupling); NaN if the term is unknown."""
        return lande_factor(*self.term_upper) if self.term_upper is not None else math.nan

    @property
    def j_lower(self) -> float:
        return self.term_lower[2] if self.term_lower is not None else math.nan

    @property
    def j_upper(self) -> float:
        return self.term_upper[2] if self.term_upper is not None else math.nan

    @property
    def is_triplet(self) -> bool:
        """True when the line is synthesised as a normal Zeeman triplet (§7.7)."""
        if self.geff_override is not None:
            return True
        if not self.has_terms:
            return False
        return self.j_lower == 0 or self.j_upper == 0 or abs(self.g_upper - self.g_lower) <= 5e-6

    @property
    def g_eff(self) -> float:
        """Effective Landé factor: the override if set; SIR's triplet rules for J = 0 (§7.7); else
        ½(g_u+g_l) + ¼(g_u−g_l)[J_u(J_u+1) − J_l(J_l+1)]. NaN if the terms are unknown."""
        if self.geff_override is not None:
            return float(self.geff_override)
        if not self.has_terms:
            return math.nan
        assert self.term_lower is not None and self.term_upper is not None
        if self.j_lower == 0:
            return lande_factor(self.term_upper[0], self.term_upper[1], 1.0)
        if self.j_upper == 0:
            return lande_factor(self.term_lower[0], self.term_lower[1], 1.0)
        gl, gu = self.g_lower, self.g_upper
        if abs(gu - gl) <= 5e-6:
            return gu
        return effective_lande(gl, gu, self.j_lower, self.j_upper)

    def with_geff(self, geff: float | None) -> "SpectralLine":
        """Copy with another effective-Landé override."""
        return replace(self, geff_override=None if geff is None else float(geff))

    def to_sir(self) -> str:
        """The line as a row of a SIR LINES file."""
        el = self.element.upper()
        if len(el) == 1:
            el += " "
        terms = self.term_text or (_format_term(self.term_lower) + "-" + _format_term(self.term_upper)
                                   if self.has_terms else "")
        return (f"{self.index:5d}={el}{self.ion:2d} {format_decimal(self.wavelength):>11s}  {format_decimal(self.enhancement):>6s}  "
                f"{format_decimal(self.excitation):>7s}  {format_decimal(self.loggf):>8s}   {terms}  {format_decimal(self.alpha)}  "
                f"{format_decimal(self.sigma)}")


def _format_L(L: float) -> str:
    if float(L).is_integer() and 0 <= L < len(_L_INTEGER):
        return _L_INTEGER[int(L)]
    k = int(round(2 * L)) - 1
    if abs(2 * L - round(2 * L)) < 1e-9 and 0 <= k < len(_L_HALF):
        return _L_HALF[k]
    raise ValueError(f"cannot encode L = {L}")


def _format_term(t: Term | None) -> str:
    if t is None:
        raise ValueError("unknown term")
    L, S, J = t
    return f"{int(round(2 * S + 1)):2d}{_format_L(L)}{J:4.1f}"


class ZeemanPattern(NamedTuple):
    """Zeeman components of a line, per group (each group's strengths sum to 1).

    Shifts are s = g_l M_l − g_u M_u: a component's profile argument is u = v + s·v_B, so for B > 0 a
    normal triplet has σ_r (M_u = M_l + 1) at Δλ = +g Δλ_B (s = −g) and σ_b (M_u = M_l − 1) at −g Δλ_B.
    Components are ordered by increasing M_l.
    """

    pi_shift: np.ndarray
    pi_strength: np.ndarray
    red_shift: np.ndarray
    red_strength: np.ndarray
    blue_shift: np.ndarray
    blue_strength: np.ndarray


def _fact(n: int) -> int:
    if n < 0:
        raise ValueError
    return math.factorial(n)


def wigner3j(j1: float, j2: float, j3: float, m1: float, m2: float, m3: float) -> float:
    """Wigner 3j symbol (Racah formula), exact in rational arithmetic then converted to float."""
    tj = [int(round(2 * x)) for x in (j1, j2, j3, m1, m2, m3)]
    J1, J2, J3, M1, M2, M3 = tj
    if M1 + M2 + M3 != 0 or any(abs(m) > j for m, j in ((M1, J1), (M2, J2), (M3, J3))):
        return 0.0
    if (J1 + M1) % 2 or (J2 + M2) % 2 or (J3 + M3) % 2:
        return 0.0
    if J3 < abs(J1 - J2) or J3 > J1 + J2 or (J1 + J2 + J3) % 2:
        return 0.0
    h = lambda x: x // 2  # noqa: E731  (all sums below are even)
    tri = Fraction(_fact(h(J1 + J2 - J3)) * _fact(h(J1 - J2 + J3)) * _fact(h(-J1 + J2 + J3)),
                   _fact(h(J1 + J2 + J3) + 1))
    pre = tri * _fact(h(J1 + M1)) * _fact(h(J1 - M1)) * _fact(h(J2 + M2)) * _fact(h(J2 - M2)) \
        * _fact(h(J3 + M3)) * _fact(h(J3 - M3))
    s = Fraction(0)
    kmin = max(0, h(J2 - J3 - M1), h(J1 - J3 + M2))
    kmax = min(h(J1 + J2 - J3), h(J1 - M1), h(J2 + M2))
    for k in range(kmin, kmax + 1):
        den = (_fact(k) * _fact(h(J1 + J2 - J3) - k) * _fact(h(J1 - M1) - k) * _fact(h(J2 + M2) - k)
               * _fact(h(J3 - J2 + M1) + k) * _fact(h(J3 - J1 - M2) + k))
        s += Fraction((-1) ** k, den)
    sign = -1 if h(J1 - J2 - M3) % 2 else 1
    return sign * math.sqrt(float(pre)) * float(s)


def zeeman_components(line: SpectralLine) -> ZeemanPattern:
    """Zeeman pattern of a line (spec-forward §7.7).

    A line with an effective-Landé override, J_l = 0, J_u = 0 or |g_u − g_l| ≤ 5×10⁻⁶ is a normal
    triplet with unit strengths (shift 0, −g_eff, +g_eff for π, σ_r, σ_b). Otherwise components
    (M_l, M_u), M_u − M_l ∈ {0, ±1}, strengths ∝ (J_u J_l 1; −M_u M_l M_u−M_l)², each group normalised.

    Returns
    -------
    ZeemanPattern
        float64 arrays of shifts s = g_l M_l − g_u M_u (units of Δλ_B) and strengths per group.

    Raises
    ------
    ValueError
        If the terms are unknown (and no override), or a group would exceed 20 components (J > 9.5).
    """
    one = np.ones(1)
    if line.is_triplet:
        g = line.g_eff
        return ZeemanPattern(np.zeros(1), one.copy(), np.array([-g]), one.copy(), np.array([g]), one.copy())
    if not line.has_terms:
        raise ValueError(f"line {line.index} ({line.element} {line.ion} {line.wavelength} A): unknown LS terms "
                         f"({line.term_text!r}) and no effective-Lande override: no Zeeman pattern")
    jl, ju = line.j_lower, line.j_upper
    gl, gu = line.g_lower, line.g_upper
    if abs(jl - ju) > 1:
        raise ValueError(f"line {line.index}: |J_u - J_l| = {abs(ju - jl)} > 1 is not a dipole transition")
    groups = {0: ([], []), 1: ([], []), -1: ([], [])}
    nl = int(round(2 * jl)) + 1
    for i in range(nl):
        ml = -jl + i
        for q in (0, 1, -1):
            mu = ml + q
            if abs(mu) > ju + 1e-9:
                continue
            w = wigner3j(ju, jl, 1.0, -mu, ml, mu - ml) ** 2
            if w <= 0.0:
                continue
            groups[q][0].append(gl * ml - gu * mu)
            groups[q][1].append(w)
    out = []
    for q in (0, 1, -1):
        s, w = (np.array(x, dtype=np.float64) for x in groups[q])
        if s.size > 20:
            raise ValueError(f"line {line.index}: {s.size} Zeeman components in a group (maximum 20)")
        out += [s, w / w.sum()]
    return ZeemanPattern(*out)


# --------------------------------------------------------------------------------------------- LINES

_BRACKET = re.compile(r"\[")


def _real(tok: str, where: str, what: str) -> float:
    try:
        v = float(tok.replace("D", "E").replace("d", "e"))
    except ValueError:
        raise ValueError(f"{where}: malformed {what} {tok!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{where}: {what} must be finite, got {tok!r}")
    if "." not in tok:
        warnings.warn(f"{where}: {what} {tok!r} has no decimal point; pyinv reads it as {v:g} "
                      f"(SIR would scale it by 1e-5 for F13.5 fields / read J as tenths)", stacklevel=4)
    return v


def _parse_term(mult_txt: str, letter: str, j_txt: str, where: str, side: str) -> tuple[Term | None, bool]:
    """Return ((L, S, J) or None if the letter is unknown, known_letter)."""
    try:
        mult = int(mult_txt.strip())
    except ValueError:
        raise ValueError(f"{where}: malformed multiplicity {mult_txt!r} of the {side} term") from None
    if mult <= 0:
        raise ValueError(f"{where}: multiplicity of the {side} term must be > 0, got {mult}")
    jt = j_txt.strip()
    if not jt:
        raise ValueError(f"{where}: missing J of the {side} term")
    J = _real(jt, where, f"J of the {side} term")
    if J < 0 or abs(2 * J - round(2 * J)) > 1e-6:
        raise ValueError(f"{where}: J of the {side} term must be a non-negative integer or half-integer, got {jt!r}")
    L = _orbital_L(letter)
    if L is None:
        return None, False
    return (L, (mult - 1) / 2.0, J), True


def _parse_lines_row(text: str, where: str) -> SpectralLine:
    if "=" not in text:
        raise ValueError(f"{where}: malformed LINES row (no '=' after the line index): {text.strip()!r}")
    eq = text.index("=")
    try:
        index = int(text[:eq].strip())
    except ValueError:
        raise ValueError(f"{where}: malformed line index {text[:eq].strip()!r}") from None
    sym = text[eq + 1:eq + 3]
    code = sym.rstrip()
    if not code or " " in code or not code.isalpha():
        raise ValueError(f"{where}: malformed element code {sym!r} after '='")
    if code.upper() == "XX":
        warnings.warn(f"{where}: element code {code!r} means iron (Fe) as in SIR", stacklevel=3)
        element = "Fe"
    else:
        if code.upper() not in _Z_OF:
            raise ValueError(f"{where}: unknown element symbol {code!r}")
        element = ELEMENTS[_Z_OF[code.upper()] - 1]
    rest_off = eq + 3
    rest = text[rest_off:]
    toks = [(m.group(), m.start() + rest_off, m.end() + rest_off) for m in re.finditer(r"\S+", rest)]
    if len(toks) < 5:
        raise ValueError(f"{where}: malformed LINES row: expected the ionisation stage, wavelength, "
                         f"enhancement, excitation potential and log gf after the element: {text.strip()!r}")
    ion_t = toks[0][0]
    if not (len(ion_t) == 1 and ion_t.isdigit()):
        raise ValueError(f"{where}: malformed ionisation stage {ion_t!r} (one digit, 1 or 2)")
    ion = int(ion_t)
    if ion not in (1, 2):
        raise ValueError(f"{where}: ionisation stage must be 1 (neutral) or 2 (singly ionised), got {ion}")
    wl = _real(toks[1][0], where, "wavelength")
    enh = _real(toks[2][0], where, "enhancement factor")
    chi = _real(toks[3][0], where, "excitation potential")
    lgf = _real(toks[4][0], where, "log gf")
    if wl <= 0:
        raise ValueError(f"{where}: wavelength must be > 0, got {wl}")
    after = toks[4][2]
    if _BRACKET.search(text, after):
        raise ValueError(f"{where}: the bracket notation '[n/2]' for half-integer L is not supported; "
                         "write half-integer L with SIR's letter code (p 1 f 2 h 3 k ... w)")
    dash = text.find("-", after)
    term_lower = term_upper = None
    alpha = sigma = 0.0
    term_text = ""
    if dash < 0:
        tail = text[after:]
        if tail.strip():
            raise ValueError(f"{where}: cannot locate the term designation ('mL j.j- mL j.j') in {tail.strip()!r}")
    else:
        if dash - 7 < after:
            raise ValueError(f"{where}: malformed lower term before '-' in {text.strip()!r}")
        lo_m, lo_l, lo_j = text[dash - 7:dash - 5], text[dash - 5], text[dash - 4:dash]
        up_m, up_l, up_j = text[dash + 1:dash + 3], text[dash + 3:dash + 4], text[dash + 4:dash + 8]
        if not up_l:
            raise ValueError(f"{where}: malformed upper term after '-' in {text.strip()!r}")
        term_text = text[dash - 7:dash + 8]
        term_lower, ok_l = _parse_term(lo_m, lo_l, lo_j, where, "lower")
        term_upper, ok_u = _parse_term(up_m, up_l, up_j, where, "upper")
        if not (ok_l and ok_u):
            term_lower = term_upper = None
            log.info("%s: unknown term letter in %r: the line needs an effective-Lande override to be "
                     "synthesised with a magnetic field", where, term_text)
        tail = text[dash + 8:].split()
        if len(tail) >= 1:
            alpha = _real(tail[0], where, "ABO alpha")
        if len(tail) >= 2:
            sigma = _real(tail[1], where, "ABO sigma")
        if len(tail) > 2:
            warnings.warn(f"{where}: extra fields after sigma ignored: {' '.join(tail[2:])!r}", stacklevel=3)
    geff = None
    lo, hi, g = SIR_GEFF_OVERRIDE
    if lo < wl < hi:
        geff = g
        log.info("%s: line %d at %.4f A gets the effective Lande factor %.2f (SIR's rule for Fe I 15652.9)",
                 where, index, wl, g)
    return SpectralLine(index=index, element=element, ion=ion, wavelength=wl, enhancement=enh, excitation=chi,
                        loggf=lgf, term_lower=term_lower, term_upper=term_upper, alpha=alpha, sigma=sigma,
                        geff_override=geff, term_text=term_text)


#: Order of the rows of :meth:`LineList.engine_matrix` (and the keys of :meth:`LineList.engine_arrays`).
ENGINE_FIELDS: tuple[str, ...] = (
    "index", "z", "ion", "wavelength", "enhancement", "excitation", "loggf", "alpha", "sigma",
    "g_lower", "g_upper", "j_lower", "j_upper", "g_eff", "geff_override")


class LineList(Sequence[SpectralLine]):
    """An ordered list of :class:`SpectralLine`.

    ``lines[i]`` and iteration are positional (file order); ``lines.by_index(k)`` returns the line with
    SIR index ``k``; ``k in lines.indices``. SIR indices are unique (when reading a file the first line
    with an index wins, as in SIR).
    """

    def __init__(self, lines: Iterable[SpectralLine] = ()):
        self._lines: list[SpectralLine] = []
        self._by: dict[int, SpectralLine] = {}
        for ln in lines:
            if ln.index in self._by:
                raise ValueError(f"duplicate line index {ln.index}")
            self._lines.append(ln)
            self._by[ln.index] = ln

    @overload
    def __getitem__(self, i: int) -> SpectralLine: ...
    @overload
    def __getitem__(self, i: slice) -> "LineList": ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return LineList(self._lines[i])
        return self._lines[i]

    def __len__(self) -> int:
        return len(self._lines)

    def __iter__(self) -> Iterator[SpectralLine]:
        return iter(self._lines)

    def __repr__(self) -> str:
        body = ", ".join(f"{ln.index}:{ln.element}{'I' * ln.ion} {ln.wavelength:.3f}" for ln in self._lines)
        return f"LineList([{body}])"

    @property
    def indices(self) -> list[int]:
        """SIR indices in list order."""
        return [ln.index for ln in self._lines]

    def by_index(self, index: int) -> SpectralLine:
        """The line with SIR index ``index`` (KeyError if absent)."""
        try:
            return self._by[int(index)]
        except KeyError:
            raise KeyError(f"no line with SIR index {index}; available: {self.indices}") from None

    def has_index(self, index: int) -> bool:
        return int(index) in self._by

    def subset(self, indices: Iterable[int]) -> "LineList":
        """A new LineList with the lines of the given SIR indices, in that order."""
        return LineList(self.by_index(i) for i in indices)

    @classmethod
    def read_sir(cls, path: PathLike) -> "LineList":
        """Parse a SIR LINES file (spec-forward §2.5).

        Optional header (§2.1 separator rule); blank lines are skipped. Every number is read at face
        value (a warning is issued where SIR would rescale a token without a decimal point). Lines with
        15652.7 < λ₀ < 15652.9 Å get ``geff_override = 1.45`` as in SIR (logged at INFO level).

        Raises
        ------
        ValueError
            Malformed rows, unknown element symbols, ionisation stage not 1/2, bracket ``[n/2]``
            notation — the message gives ``file:line``.
        """
        text = Path(path).read_text().splitlines()
        start = find_header_end(text)
        out: list[SpectralLine] = []
        seen: set[int] = set()
        for i in range(start, len(text)):
            row = text[i]
            if not row.strip():
                continue
            where = f"{path}:{i + 1}"
            if len(row) > 100:
                warnings.warn(f"{where}: LINES row longer than 100 characters (SIR would truncate it)",
                              stacklevel=2)
            ln = _parse_lines_row(row, where)
            if ln.index in seen:
                warnings.warn(f"{where}: line index {ln.index} repeated; the first one is used (as SIR)",
                              stacklevel=2)
                continue
            seen.add(ln.index)
            out.append(ln)
        return cls(out)

    def write_sir(self, path: PathLike, header: str | None = None) -> None:
        """Write a SIR LINES file (optional header lines followed by a separator line)."""
        with open(path, "w") as fh:
            if header:
                for h in header.splitlines():
                    fh.write(h.rstrip() + "\n")
                fh.write("-" * 72 + "\n")
            for ln in self._lines:
                fh.write(ln.to_sir() + "\n")

    def engine_arrays(self) -> dict[str, np.ndarray]:
        """Flat float64 arrays of the line parameters (one value per line, list order).

        Keys: :data:`ENGINE_FIELDS` — ``index``, ``z``, ``ion``, ``wavelength`` [Å], ``enhancement``,
        ``excitation`` [eV], ``loggf``, ``alpha``, ``sigma`` [cm²], ``g_lower``, ``g_upper``, ``j_lower``,
        ``j_upper``, ``g_eff`` and ``geff_override`` (NaN when unset). Unknown terms give NaN g/J.
        """
        out = {k: np.empty(len(self), dtype=np.float64) for k in ENGINE_FIELDS}
        for i, ln in enumerate(self._lines):
            for k in ENGINE_FIELDS:
                v = getattr(ln, k)
                out[k][i] = math.nan if v is None else float(v)
        return out

    def engine_matrix(self) -> np.ndarray:
        """The :meth:`engine_arrays` stacked as a C-contiguous float64 array ``(nlines, len(ENGINE_FIELDS))``."""
        a = self.engine_arrays()
        return np.ascontiguousarray(np.stack([a[k] for k in ENGINE_FIELDS], axis=1))


# ----------------------------------------------------------------------------------- wavelength grid


def format_decimal(x: float) -> str:
    """Shortest round-tripping representation of ``x`` that always carries a decimal point (SIR's files)."""
    s = repr(float(x))
    if "." in s or "n" in s:
        return s
    if "e" in s:
        m, e = s.split("e")
        return f"{m}.0e{e}"
    return s + "."

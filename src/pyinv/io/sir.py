"""Readers and writers of SIR's text formats (spec-forward §2).

Models (``.mod``/``.err``), profiles (``.per``), abundance files, PSF files, ``.chi`` files and
response-function files (``.rt``, ``.rh``, ...). LINES and
wavelength-grid files are handled by :class:`pyinv.lines.LineList` and :class:`pyinv.lines.WavelengthGrid`;
control files by :class:`pyinv.config.InversionConfig`.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from ..atmosphere import Atmosphere, AtmosphereErrors
from ._textfmt import find_header_end, fortran_e, fortran_f, list_directed_real

__all__ = [
    "read_sir_model", "read_sir_errors", "write_sir_model", "read_two_component_models",
    "SirProfiles", "read_sir_profiles", "write_sir_profiles",
    "read_abundances", "write_abundances", "read_psf", "read_sir_chi", "write_sir_chi", "read_sir_rf", "write_sir_rf",
]

PathLike = str | os.PathLike


def _floats(text: str, path: PathLike, lineno: int, what: str) -> list[float]:
    try:
        return [float(t.replace("D", "E").replace("d", "e")) for t in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"{path}:{lineno}: malformed {what}: {text.strip()!r}") from None


def _read_model_table(path: PathLike) -> tuple[list[float], np.ndarray]:
    lines = Path(path).read_text().splitlines()
    k = 0
    while k < len(lines) and not lines[k].strip():
        k += 1
    if k >= len(lines):
        raise ValueError(f"{path}: empty model file")
    head = _floats(lines[k], path, k + 1, "header line (macroturbulence, filling factor, stray light)")
    if len(head) < 3:
        raise ValueError(f"{path}:{k + 1}: the header line must hold three numbers "
                         f"(macroturbulence [km/s], filling factor, stray light [%]), got {len(head)}")
    if len(head) > 3:
        raise ValueError(f"{path}:{k + 1}: the header line must hold three numbers, got {len(head)} "
                         "(is the header missing?)")
    rows: list[list[float]] = []
    ncol = None
    for i in range(k + 1, len(lines)):
        if not lines[i].strip():
            continue
        vals = _floats(lines[i], path, i + 1, "model row")
        if len(vals) not in (8, 11):
            raise ValueError(f"{path}:{i + 1}: a model row must have 8 or 11 columns, got {len(vals)}")
        if ncol is None:
            ncol = len(vals)
        elif len(vals) != ncol:
            raise ValueError(f"{path}:{i + 1}: row has {len(vals)} columns, previous rows have {ncol}")
        rows.append(vals)
    if not rows:
        raise ValueError(f"{path}: no depth points")
    return head[:3], np.array(rows, dtype=np.float64)


def read_sir_model(path: PathLike, errors: bool | None = None) -> Atmosphere | AtmosphereErrors:
    """Read a SIR model (``.mod``, 8 or 11 columns) or error file (``.err``).

    Parameters
    ----------
    path : str or path-like
        The file. Line 1: macroturbulence [km/s], filling factor, stray light [%]; then one row per depth.
    errors : bool, optional
        Return :class:`AtmosphereErrors` (no physical checks). Default: True when the file name
        ends with ``.err``.

    Returns
    -------
    Atmosphere or AtmosphereErrors
        Columns in SIR units; all-zero optional columns (z, Pg, rho) are ``None`` in an Atmosphere.

    Raises
    ------
    ValueError
        Malformed rows (with the line number) or invalid physical values (with column and depth).
    """
    head, arr = _read_model_table(path)
    if errors is None:
        errors = str(path).lower().endswith(".err")
    cls = AtmosphereErrors if errors else Atmosphere
    try:
        return cls.from_array(arr, macro=head[0], filling=head[1], stray=head[2])
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def read_sir_errors(path: PathLike) -> AtmosphereErrors:
    """Read a SIR ``.err`` file (same layout as a model) into :class:`AtmosphereErrors`."""
    return read_sir_model(path, errors=True)  # type: ignore[return-value]


def read_two_component_models(path1: PathLike, path2: PathLike) -> tuple[Atmosphere, Atmosphere]:
    """Read a two-component set with SIR's rules (spec-forward §2.3).

    The filling factor used is model 2's header value f₂ (model 1 gets 1 − f₂); the stray-light
    fraction is model 1's. Inconsistent headers give a warning saying which value is used.
    Both files must share the log τ grid.
    """
    m1 = read_sir_model(path1, errors=False)
    m2 = read_sir_model(path2, errors=False)
    assert isinstance(m1, Atmosphere) and isinstance(m2, Atmosphere)
    if m1.ndep != m2.ndep or not np.allclose(m1.log_tau, m2.log_tau, atol=1e-6, rtol=0):
        raise ValueError(f"{path1} and {path2} must have identical log tau grids")
    f2 = float(m2.filling)
    if abs(float(m1.filling) + f2 - 1.0) > 1e-6:
        warnings.warn(f"filling factors of {path1} ({m1.filling}) and {path2} ({f2}) do not add up to 1; "
                      f"using model 2's value f2 = {f2} and f1 = 1 - f2 = {1 - f2}", stacklevel=2)
    if float(m1.stray) != float(m2.stray):
        warnings.warn(f"stray-light fractions differ ({m1.stray} in {path1}, {m2.stray} in {path2}); "
                      "using model 1's value", stacklevel=2)
    stray = float(m1.stray)
    return m1.with_columns(filling=1.0 - f2, stray=stray), m2.with_columns(filling=f2, stray=stray)


def _model_row(r: np.ndarray) -> str:
    # (1x,f7.4,1x,f8.1,1x,1pe12.5,1x,e10.3,1x,7(e11.4,1x)): the 1P scale persists for the later E's.
    parts = [" ", fortran_f(r[0], 7, 4), " ", fortran_f(r[1], 8, 1), " ", fortran_e(r[2], 12, 5, 1), " ",
             fortran_e(r[3], 10, 3, 1), " "]
    for v in r[4:]:
        parts.append(fortran_e(v, 11, 4, 1))
        parts.append(" ")
    return "".join(parts)


def write_sir_model(path: PathLike, atmos: Atmosphere | AtmosphereErrors, ncol: int = 11) -> None:
    """Write a model (or errors) in SIR's layout.

    Header line list-directed (macroturbulence [km/s], filling factor, stray light [%]), rows with SIR's format
    ``(1x,f7.4,1x,f8.1,1x,1pe12.5,1x,e10.3,1x,7(e11.4,1x))`` (mantissa 1–10 throughout, as SIR writes).

    Parameters
    ----------
    path : str or path-like
    atmos : Atmosphere or AtmosphereErrors
        A single model (not a stack).
    ncol : {11, 8}
        Number of columns; absent optional columns are written as zeros.
    """
    if atmos.stacked:
        raise ValueError("write_sir_model writes a single model; select one with atmos[i]")
    if ncol not in (8, 11):
        raise ValueError(f"ncol must be 8 or 11, got {ncol}")
    arr = atmos.to_array()[:, :ncol]
    # gfortran's list-directed record: one 15-character field per value.
    head = "".join(list_directed_real(v) for v in (atmos.macro, atmos.filling, atmos.stray))
    with open(path, "w") as fh:
        fh.write(head + "\n")
        for r in arr:
            fh.write(_model_row(r).rstrip(" ") + "\n")


class SirProfiles(NamedTuple):
    """Contents of a SIR profile file.

    Attributes
    ----------
    line_index : ndarray of int, (nλ,)
        SIR line index per sample (the first index of a blended group).
    offset_mA : ndarray of float64, (nλ,)
        Δλ [mÅ] relative to that line's laboratory air wavelength.
    stokes : ndarray of float64, (4, nλ)
        I/I_c, Q/I_c, U/I_c, V/I_c.
    """

    line_index: np.ndarray
    offset_mA: np.ndarray
    stokes: np.ndarray


def read_sir_profiles(path: PathLike) -> SirProfiles:
    """Read a SIR ``.per`` file (six columns: index, Δλ [mÅ], I, Q, U, V; no header).

    Raises
    ------
    ValueError
        Malformed rows (with the line number), or the samples of a line not contiguous.
    """
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        vals = _floats(line, path, i, "profile row")
        if len(vals) != 6:
            raise ValueError(f"{path}:{i}: a profile row must have 6 columns (index, dlambda, I, Q, U, V), "
                             f"got {len(vals)}")
        rows.append(vals)
    if not rows:
        raise ValueError(f"{path}: no profile rows")
    a = np.array(rows, dtype=np.float64)
    idx = np.rint(a[:, 0]).astype(np.int64)
    seen: set[int] = set()
    prev = None
    for k, v in enumerate(idx):
        if v != prev:
            if v in seen:
                raise ValueError(f"{path}: the samples of line {v} are not contiguous (again at row {k + 1})")
            seen.add(int(v))
            prev = v
    return SirProfiles(idx, a[:, 1].copy(), np.ascontiguousarray(a[:, 2:6].T))


def write_sir_profiles(path: PathLike, line_index: Sequence[int] | np.ndarray, offset_mA: Sequence[float],
                       stokes: np.ndarray) -> None:
    """Write a SIR profile file with SIR's format ``(1x,i5,1x,f11.4,1x,4(e14.7,1x))``.

    Parameters
    ----------
    line_index : int or array of int, (nλ,)
        SIR line index per sample (a scalar is broadcast).
    offset_mA : array, (nλ,)
        Δλ [mÅ] relative to the line's λ₀.
    stokes : array, (4, nλ)
        I, Q, U, V normalised to I_c.
    """
    off = np.asarray(offset_mA, dtype=np.float64).ravel()
    idx = np.broadcast_to(np.asarray(line_index, dtype=np.int64), off.shape)
    st = np.asarray(stokes, dtype=np.float64)
    if st.shape != (4, off.size):
        raise ValueError(f"stokes must have shape (4, {off.size}), got {st.shape}")
    with open(path, "w") as fh:
        for k in range(off.size):
            fh.write(" " + f"{int(idx[k]):5d}" + " " + fortran_f(off[k], 11, 4) + " "
                     + " ".join(fortran_e(st[s, k], 14, 7) for s in range(4)) + "\n")


def read_abundances(path: PathLike) -> np.ndarray:
    """Read a SIR abundance file.

    Optional header (spec-forward §2.1 separator rule), then pairs ``Z  log ε`` (H = 12), read until
    end of file or the first non-numeric line. Elements not in the file get log ε = 0 (as SIR).

    Returns
    -------
    numpy.ndarray
        float64, shape (92,): log ε of element Z at index Z − 1.
    """
    lines = Path(path).read_text().splitlines()
    start = find_header_end(lines)
    out = np.zeros(92, dtype=np.float64)
    seen: set[int] = set()
    for i in range(start, len(lines)):
        toks = lines[i].replace(",", " ").split()
        if not toks:
            continue
        try:
            z_f = float(toks[0])
            val = float(toks[1].replace("D", "E").replace("d", "e")) if len(toks) > 1 else None
        except ValueError:
            break  # first non-numeric line ends the data
        if val is None:
            break
        z = int(round(z_f))
        if z != z_f or not 1 <= z <= 92:
            raise ValueError(f"{path}:{i + 1}: element number must be an integer 1..92, got {toks[0]!r}")
        if z in seen:
            warnings.warn(f"{path}:{i + 1}: element {z} given twice; the later value is used", stacklevel=2)
        seen.add(z)
        out[z - 1] = val
    if not seen:
        raise ValueError(f"{path}: no abundance pairs found")
    return out


def write_abundances(path: PathLike, abundances: Sequence[float] | np.ndarray, header: str | None = None) -> None:
    """Write a SIR abundance file: optional header lines + separator, then ``Z  log ε`` for Z = 1…92."""
    a = np.asarray(abundances, dtype=np.float64)
    if a.shape != (92,):
        raise ValueError(f"abundances must have shape (92,), got {a.shape}")
    with open(path, "w") as fh:
        if header:
            for h in header.splitlines():
                fh.write(h.rstrip() + "\n")
            fh.write("-" * 60 + "\n")
        for z in range(1, 93):
            fh.write(f"{z:3d}  {a[z - 1]:.4f}\n")


def read_psf(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a SIR PSF file: two columns, Δλ [mÅ] (ascending, 0 = peak) and the response.

    Blank lines are allowed; no header. SIR reads at most 401 rows: pyinv reads all and warns.

    Returns
    -------
    offset_mA, response : numpy.ndarray (float64)
    """
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        v = _floats(line, path, i, "PSF row")
        if len(v) < 2:
            raise ValueError(f"{path}:{i}: a PSF row needs two columns (offset mA, response)")
        rows.append(v[:2])
    if not rows:
        raise ValueError(f"{path}: empty PSF file")
    a = np.array(rows, dtype=np.float64)
    if len(rows) > 401:
        warnings.warn(f"{path}: {len(rows)} PSF rows; SIR would read only the first 401", stacklevel=2)
    if np.any(np.diff(a[:, 0]) <= 0):
        raise ValueError(f"{path}: PSF offsets must be strictly ascending")
    return a[:, 0].copy(), a[:, 1].copy()


def read_sir_chi(path: PathLike) -> np.ndarray:
    """Read SIR's ``.chi`` file: one row per cycle, ``equivalent S/N`` and ``χ²``.

    Returns
    -------
    numpy.ndarray
        float64, shape (ncycles, 2).
    """
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        v = _floats(line, path, i, ".chi row")
        if len(v) != 2:
            raise ValueError(f"{path}:{i}: a .chi row must have two numbers (S/N, chi2), got {len(v)}")
        rows.append(v)
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


def write_sir_chi(path: PathLike, chi: np.ndarray, append: bool = False) -> None:
    """Write (or append) ``.chi`` rows (S/N, χ²) list-directed as SIR does."""
    a = np.asarray(chi, dtype=np.float64).reshape(-1, 2)
    with open(path, "a" if append else "w") as fh:
        for r in a:
            fh.write("".join(list_directed_real(v) for v in r) + "\n")


def write_sir_rf(path: PathLike, rf: np.ndarray) -> None:
    """Write a SIR response-function file (spec-forward §2.10).

    Parameters
    ----------
    rf : array (n_depth, n_col)
        Depth-major (depth 1 = deepest), within a depth Stokes-major (all wavelengths of I, then Q, U, V;
        ``n_col`` = nλ for Stokes I only or 4 nλ).

    The first record is ``n_depth n_col``; the values follow list-directed, five per line.
    """
    a = np.asarray(rf, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"rf must be 2-D (n_depth, n_col), got shape {a.shape}")
    with open(path, "w") as fh:
        fh.write(f" {a.shape[0]:11d} {a.shape[1]:11d}\n")
        flat = a.ravel()
        for k in range(0, flat.size, 5):
            fh.write("".join(list_directed_real(v) for v in flat[k:k + 5]) + "\n")


def read_sir_rf(path: PathLike) -> np.ndarray:
    """Read a SIR response-function file: ``(n_depth, n_col)`` float64 (see :func:`write_sir_rf`)."""
    toks = Path(path).read_text().replace("D", "E").replace("d", "e").split()
    if len(toks) < 2:
        raise ValueError(f"{path}: an RF file starts with 'n_depth n_col'")
    try:
        nd, nc = int(float(toks[0])), int(float(toks[1]))
        vals = np.array([float(t) for t in toks[2:]], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path}: malformed numbers") from None
    if nd < 1 or nc < 1 or vals.size != nd * nc:
        raise ValueError(f"{path}: header says {nd} x {nc} values, the file holds {vals.size}")
    return vals.reshape(nd, nc)

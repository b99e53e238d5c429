"""Readers of RH 2 outputs and writers of its small inputs (spec-nlte-rh §2.3–2.10), with NumPy only.

All ``*.out`` files are XDR (big-endian): int32 ``>i4``, float64 ``>f8``; depth index 0 is the top; units
are SI (intensities in W m⁻² Hz⁻¹ sr⁻¹). Every reader checks that it consumed its file exactly.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = ["RhSpectrum", "RhRay", "RhGeometry", "RhPops", "RhLog", "read_spectrum", "read_ray",
           "read_geometry", "read_pops", "read_log", "write_wavetable", "read_wavetable", "write_keywords",
           "write_ray_input"]


class _Xdr:
    """Sequential big-endian reader over a byte buffer."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.buf = Path(path).read_bytes()
        self.pos = 0

    def ints(self, n: int) -> np.ndarray:
        a = np.frombuffer(self.buf, dtype=">i4", count=n, offset=self.pos)
        self.pos += 4 * n
        return a.astype(np.int64)

    def int(self) -> int:
        return int(self.ints(1)[0])

    def doubles(self, n: int) -> np.ndarray:
        if self.pos + 8 * n > len(self.buf):
            raise ValueError(f"{self.path}: truncated (wanted {n} doubles at byte {self.pos} of {len(self.buf)})")
        a = np.frombuffer(self.buf, dtype=">f8", count=n, offset=self.pos)
        self.pos += 8 * n
        return a.astype(np.float64)

    def string(self) -> str:
        self.int()                  # the length sent as an int
        n = self.int()              # the counted string's own length
        s = self.buf[self.pos:self.pos + n].decode("ascii", "replace")
        self.pos += (n + 3) // 4 * 4
        return s

    @property
    def left(self) -> int:
        return len(self.buf) - self.pos

    def done(self) -> None:
        if self.left:
            raise ValueError(f"{self.path}: {self.left} bytes left over after reading (unexpected layout)")


@dataclass
class RhSpectrum:
    """``spectrum.out``: wavelengths [nm] (vacuum unless ``vacuum_to_air``), I (nλ, nrays), optional Q, U, V."""

    wavelength: np.ndarray
    I: np.ndarray
    vacuum_to_air: bool
    air_limit: float
    Q: np.ndarray | None = None
    U: np.ndarray | None = None
    V: np.ndarray | None = None


def read_spectrum(path: str | os.PathLike, nrays: int) -> RhSpectrum:
    """Read ``spectrum.out`` (``nrays`` = the number of rays of the ``rhf1d`` run, from geometry.out)."""
    x = _Xdr(path)
    n = x.int()
    wl = x.doubles(n)
    I = x.doubles(n * nrays).reshape(n, nrays)
    v2a = bool(x.int())
    lim = float(x.doubles(1)[0])
    q = u = v = None
    if x.left:
        q, u, v = (x.doubles(n * nrays).reshape(n, nrays) for _ in range(3))
    x.done()
    return RhSpectrum(wl, I, v2a, lim, q, u, v)


@dataclass
class RhRay:
    """``spectrum_<mu>`` of ``solveray``: μ and I, Q, U, V (nλ) [W m⁻² Hz⁻¹ sr⁻¹] (Q, U, V None if absent)."""

    mu: float
    I: np.ndarray
    Q: np.ndarray | None = None
    U: np.ndarray | None = None
    V: np.ndarray | None = None

    def stokes(self) -> np.ndarray:
        """(4, nλ): I, Q, U, V (zeros for absent Q, U, V)."""
        z = np.zeros_like(self.I)
        return np.stack([self.I, z if self.Q is None else self.Q, z if self.U is None else self.U,
                         z if self.V is None else self.V])


def read_ray(path: str | os.PathLike, nspect: int, ndep: int) -> RhRay:
    """Read ``spectrum_<mu>`` (``nspect`` from spectrum.out, ``ndep`` from geometry.out)."""
    x = _Xdr(path)
    mu = float(x.doubles(1)[0])
    I = x.doubles(nspect)
    nsrc = x.int()
    for _ in range(nsrc):
        x.int()
        x.doubles(2 * ndep)
    q = u = v = None
    if x.left:
        q, u, v = (x.doubles(nspect) for _ in range(3))
    x.done()
    return RhRay(mu, I, q, u, v)


@dataclass
class RhGeometry:
    """``geometry.out`` (1-D): rays and depth scales, top first, SI."""

    mu: np.ndarray
    weights: np.ndarray
    height: np.ndarray       # m
    cmass: np.ndarray        # kg m⁻²
    tau_ref: np.ndarray      # τ at LAMBDA_REF
    vz: np.ndarray           # m s⁻¹

    @property
    def nrays(self) -> int:
        return int(self.mu.size)

    @property
    def ndep(self) -> int:
        return int(self.height.size)


def read_geometry(path: str | os.PathLike) -> RhGeometry:
    """Read ``geometry.out`` of a 1-D plane-parallel run."""
    x = _Xdr(path)
    topology = x.int()
    if topology != 0:
        raise ValueError(f"{path}: topology {topology}, only 1-D plane-parallel (0) is supported")
    nrays, ndep = x.int(), x.int()
    mu, w = x.doubles(nrays), x.doubles(nrays)
    h, cm, tau, vz = (x.doubles(ndep) for _ in range(4))
    x.done()
    return RhGeometry(mu, w, h, cm, tau, vz)


@dataclass
class RhPops:
    """``pops.<ID>.out``: NLTE populations n and LTE populations n* (nlevel, ndep) [m⁻³]."""

    atmos_id: str
    n: np.ndarray
    nstar: np.ndarray

    @property
    def b(self) -> np.ndarray:
        """Departure coefficients n/n* (nlevel, ndep)."""
        return self.n / self.nstar


def read_pops(path: str | os.PathLike) -> RhPops:
    """Read ``pops.<ID>.out``."""
    x = _Xdr(path)
    aid = x.string()
    nlev, nsp = x.int(), x.int()
    n = x.doubles(nlev * nsp).reshape(nlev, nsp)
    ns = x.doubles(nlev * nsp).reshape(nlev, nsp)
    x.done()
    return RhPops(aid, n, ns)


@dataclass
class RhLog:
    """What a driver needs from an ``rhf1d`` log."""

    iterations: int            # last "-- Iteration N" (0 when none)
    delta: dict[str, float]    # last "<ID>, delta = x" per atom ID
    errors: list[str]          # lines of error messages


_ITER = re.compile(r"--\s*Iteration\s+(\d+)")
_DELTA = re.compile(r"^\s*([A-Z][A-Za-z0-9+]{0,3})\s*,\s*delta\s*=\s*([-+0-9.eEdD]+)")


def read_log(path: str | os.PathLike) -> RhLog:
    """Parse an ``rhf1d`` log for the last iteration number and the last delta of each atom."""
    it, delta, errs = 0, {}, []
    p = Path(path)
    text = p.read_text(errors="replace") if p.exists() else ""
    for line in text.splitlines():
        m = _ITER.search(line)
        if m:
            it = int(m.group(1))
            continue
        m = _DELTA.match(line)
        if m:
            try:
                delta[m.group(1).upper()] = float(m.group(2).replace("D", "E").replace("d", "e"))
            except ValueError:
                pass
            continue
        if "ERROR" in line.upper():
            errs.append(line.strip())
    return RhLog(it, delta, errs)


def write_wavetable(path: str | os.PathLike, wavelength_vac_nm: np.ndarray) -> None:
    """RH ``WAVETABLE``: XDR int32 N then N float64 vacuum wavelengths [nm] (§2.8)."""
    wl = np.asarray(wavelength_vac_nm, dtype=np.float64).ravel()
    with open(path, "wb") as f:
        f.write(np.array([wl.size], dtype=">i4").tobytes())
        f.write(wl.astype(">f8").tobytes())


def read_wavetable(path: str | os.PathLike) -> np.ndarray:
    """Read an RH wavetable [nm]."""
    x = _Xdr(path)
    n = x.int()
    wl = x.doubles(n)
    x.done()
    return wl


def write_keywords(path: str | os.PathLike, keywords: Mapping[str, object]) -> None:
    """``keyword.input``: one ``KEY = VALUE`` per line (spaces around "=" required, no spaces in values,
    at most 159 characters)."""
    out = ["# written by pyinv"]
    for k, v in keywords.items():
        s = str(v)
        if isinstance(v, bool):
            s = "TRUE" if v else "FALSE"
        if not s or any(c.isspace() for c in s) or len(s) > 159:
            raise ValueError(f"RH keyword {k}: value {s!r} is empty, has spaces or exceeds 159 characters "
                             "(choose a shorter work directory without spaces)")
        out.append(f"{k} = {s}")
    Path(path).write_text("\n".join(out) + "\n")


def write_ray_input(path: str | os.PathLike, mu: float) -> None:
    """``ray.input`` for ``solveray``: μ and no extra source-function wavelengths."""
    if not (0.0 < mu <= 1.0):
        raise ValueError(f"mu must lie in (0, 1], got {mu}")
    Path(path).write_text(f"{mu:.6f}\n0\n")

"""The only module that talks to the compiled Fortran engine ``pyinv._engine``.

Every wrapper here converts its inputs to contiguous float64 / int32 arrays, calls one procedure of
``fortran/api.f90`` (module ``pyinv_api``) and turns a nonzero error code into an
:class:`EngineError` (a :class:`ValueError`) carrying the engine's message. The extension is imported
lazily, so ``import pyinv`` works (file readers, models, ...) even before the engine is built.
"""
from __future__ import annotations

import functools
from types import ModuleType

import numpy as np

__all__ = ["EngineError", "api", "check", "voigt", "voigt_derivatives", "planck"]


class EngineError(ValueError):
    """An error reported by the Fortran engine (bad input or a failed computation)."""

    def __init__(self, code: int, message: str, where: str = ""):
        self.code = int(code)
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{message} (engine error {self.code})")


@functools.lru_cache(maxsize=1)
def _module() -> ModuleType:
    try:
        from . import _engine  # type: ignore[attr-defined]
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "pyinv's compiled engine (pyinv._engine) is not available: install the package with "
            "`pip install .` (needs gfortran), or build it for development with tools/devbuild.sh"
        ) from exc
    return _engine


def api() -> ModuleType:
    """The f2py module object ``pyinv._engine.pyinv_api`` (all engine procedures)."""
    return _module().pyinv_api


def error_message(code: int) -> str:
    """The engine's text for an error code."""
    msg = api().engine_error_message(int(code))
    if isinstance(msg, (bytes, np.bytes_)):
        msg = msg.decode("ascii", "replace")
    return str(msg).strip()


def check(ierr: int, where: str = "") -> None:
    """Raise :class:`EngineError` when an engine call returned a nonzero code."""
    if int(ierr) != 0:
        raise EngineError(int(ierr), error_message(int(ierr)), where)


def f64(x, name: str = "array") -> np.ndarray:
    """``x`` as a C-contiguous float64 array (copying only when needed)."""
    arr = np.ascontiguousarray(x, dtype=np.float64)
    return arr


def f64_fortran(x) -> np.ndarray:
    """``x`` as a Fortran-ordered float64 array (what f2py passes without a copy)."""
    return np.asfortranarray(x, dtype=np.float64)


def voigt(a, v) -> tuple[np.ndarray, np.ndarray]:
    """Voigt and Faraday–Voigt functions.

    Parameters
    ----------
    a : array_like
        Damping parameter (dimensionless, ≥ 0).
    v : array_like
        Reduced frequency (Δλ/Δλ_D, dimensionless). Broadcast against ``a``.

    Returns
    -------
    H, F : ndarray
        ``H(a, v) = Re w(v + i a)`` (∫H dv = √π) and ``F(a, v) = Im w(v + i a) / 2`` (SIR's
        convention; the dispersion profile of the propagation matrix is 2F), with ``w`` the Faddeeva
        function. Relative accuracy better than 1e-7 for 1e-4 ≤ a ≤ 10, |v| ≤ 50.
    """
    a_b, v_b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(v, dtype=np.float64))
    shape = a_b.shape
    h, f, ierr = api().voigt_hf(f64(a_b.ravel()), f64(v_b.ravel()))
    check(ierr, "voigt (a must be >= 0 and v finite)")
    return h.reshape(shape), f.reshape(shape)


def voigt_derivatives(a, v) -> dict[str, np.ndarray]:
    """H, F and their partial derivatives ∂/∂v and ∂/∂a (see :func:`voigt`).

    Returns
    -------
    dict
        Keys ``H, F, dH_dv, dF_dv, dH_da, dF_da``, each shaped like the broadcast inputs.
    """
    a_b, v_b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(v, dtype=np.float64))
    shape = a_b.shape
    out = api().voigt_hf_deriv(f64(a_b.ravel()), f64(v_b.ravel()))
    check(out[-1], "voigt_derivatives (a must be >= 0 and v finite)")
    keys = ("H", "F", "dH_dv", "dF_dv", "dH_da", "dF_da")
    return {k: o.reshape(shape) for k, o in zip(keys, out[:-1])}


def planck(wavelength_A: float, T) -> tuple[np.ndarray, np.ndarray]:
    """Planck function B_λ(T) and its temperature derivative.

    Parameters
    ----------
    wavelength_A : float
        Wavelength [Å].
    T : array_like
        Temperature [K], > 0.

    Returns
    -------
    B, dB_dT : ndarray
        B_λ [erg s⁻¹ cm⁻² sr⁻¹ cm⁻¹] and ∂B_λ/∂T [same per K], shaped like ``T``.
    """
    t = np.asarray(T, dtype=np.float64)
    b, db, ierr = api().planck_bt(float(wavelength_A) * 1e-8, f64(t.ravel()))
    check(ierr, "planck")
    return b.reshape(t.shape), db.reshape(t.shape)

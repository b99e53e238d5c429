"""Loading the compiled engine ``pyinv._engine`` (instruction-set variant, version check) and what every
wrapper shares: :class:`EngineError`, :func:`api`, :func:`check` and the array conversions."""
from __future__ import annotations

import functools
from types import ModuleType

import numpy as np


class EngineError(ValueError):
    """An error reported by the Fortran engine (bad input or a failed computation)."""

    def __init__(self, code: int, message: str, where: str = ""):
        self.code = int(code)
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{message} (engine error {self.code})")


#: Instruction-set variants of the engine, best first, and their extension modules (meson.build): the
#: same Fortran sources compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2/FMA) and the portable baseline.
ISA_VARIANTS = ("v4", "v3", "baseline")
_ISA_MODULES = {"v4": "_engine_v4", "v3": "_engine_v3", "baseline": "_engine"}
#: CPU flags (/proc/cpuinfo names) each variant needs
_ISA_FLAGS = {"v3": {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"},
              "v4": {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm", "avx512f", "avx512bw",
                     "avx512cd", "avx512dq", "avx512vl"}}


def _cpu_supports(isa: str) -> bool:
    """Whether this CPU runs code built for ``isa`` (flags from /proc/cpuinfo, else numpy's CPU
    features)."""
    if isa == "baseline":
        return True
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    if flags:
        return _ISA_FLAGS[isa] <= flags
    try:  # other systems: numpy's runtime CPU dispatch knows the features
        from numpy._core._multiarray_umath import __cpu_features__ as feat
    except ImportError:  # pragma: no cover
        return False
    need = {"v3": ("AVX2", "FMA3", "F16C"), "v4": ("AVX2", "FMA3", "F16C", "AVX512_SKX")}[isa]
    return all(feat.get(k, False) for k in need)


@functools.lru_cache(maxsize=1)
def extension_module() -> ModuleType:
    """The engine extension: the best instruction-set variant that is built and that this CPU runs, or
    the one named by the environment variable PYINV_ENGINE_ISA (v4, v3 or baseline)."""
    import importlib
    import os

    forced = os.environ.get("PYINV_ENGINE_ISA", "").strip()
    if forced and forced not in ISA_VARIANTS:
        raise ImportError(f"PYINV_ENGINE_ISA={forced!r} is not one of {ISA_VARIANTS}")
    candidates = [forced] if forced else [v for v in ISA_VARIANTS if _cpu_supports(v)]
    if forced and not _cpu_supports(forced):
        raise ImportError(f"PYINV_ENGINE_ISA={forced!r}: this CPU lacks the instructions of that engine build")
    errors = []
    for isa in candidates:
        try:
            mod = importlib.import_module(f"{__package__.rpartition('.')[0]}.{_ISA_MODULES[isa]}")
        except ImportError as exc:
            errors.append(f"{_ISA_MODULES[isa]}: {exc}")
            continue
        check_engine_version(mod)
        mod.__pyinv_isa__ = isa
        return mod
    raise ImportError(  # pragma: no cover - depends on the installation
        "pyinv's compiled engine (pyinv._engine) is not available: install the package with "
        "`pip install .` (needs gfortran), or build it for development with tools/devbuild.sh"
        + ("; " + "; ".join(errors) if errors else ""))


def isa() -> str:
    """The instruction-set variant of the loaded engine: ``"v4"`` (x86-64-v4, AVX-512), ``"v3"``
    (x86-64-v3, AVX2/FMA) or ``"baseline"``."""
    return extension_module().__pyinv_isa__


#: Version of fortran/api.f90's interface that this Python code expects (meson.build's engine_api_version).
ENGINE_API_VERSION = 8

#: Version of the Python package (``pyinv.__version__`` is this one; pyproject.toml and meson.build carry it
#: too). The compiled engine must be built from the same version. It lives here, in a module that imports
#: nothing from pyinv at import time, so that every module may read it without importing the package itself.
PACKAGE_VERSION = "0.1.0"


def check_engine_version(module: ModuleType) -> tuple[str, int]:
    """Compare the compiled engine's version with the Python package's.

    Returns
    -------
    (engine version, engine API version)

    Raises
    ------
    ImportError
        Naming both versions, when the engine was built from another pyinv version or for another API
        (a stale build under newer Python code), or carries no version at all.
    """
    fn = getattr(getattr(module, "pyinv_api", None), "engine_version", None)
    if fn is None:
        raise ImportError(f"pyinv's compiled engine ({getattr(module, '__file__', module)}) carries no version "
                          f"(built from a pyinv older than the Python package {PACKAGE_VERSION}, API "
                          f"{ENGINE_API_VERSION}): reinstall with `pip install .` or rebuild it")
    version, api_version = fn()
    if isinstance(version, (bytes, np.bytes_)):
        version = version.decode("ascii", "replace")
    version, api_version = str(version).strip(), int(api_version)
    if version != PACKAGE_VERSION or api_version != ENGINE_API_VERSION:
        raise ImportError(f"pyinv's compiled engine is version {version} (API {api_version}) but the Python "
                          f"package is version {PACKAGE_VERSION} (API {ENGINE_API_VERSION}): a stale build; reinstall "
                          "with `pip install .` or rebuild it (tools/devbuild.sh)")
    return version, api_version


def api() -> ModuleType:
    """The f2py module object ``pyinv._engine.pyinv_api`` (all engine procedures)."""
    return extension_module().pyinv_api


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


def i32(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.int32)

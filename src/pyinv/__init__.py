"""pyinv: SIR-equivalent LTE Stokes synthesis and inversion with a modern-Fortran core.

Conventions used throughout the public API
------------------------------------------
* Stokes cubes are ``(ny, nx, 4, nλ)`` (I, Q, U, V), normalised to the HSRA disk-centre continuum at
  each region's wavelength, as in SIR.
* Model atmospheres are stratified in log τ₅₀₀, deepest point first (as in SIR files).
* Units: K, dyn cm⁻², cm/s for vmic and vlos (vlos > 0 is a redshift), G, degrees for the
  inclination γ and azimuth φ, km/s for the macroturbulence.
"""
from __future__ import annotations

import pkgutil as _pkgutil

# Lets a developer build of the extension (tools/devbuild.sh) sit beside the source tree.
__path__ = _pkgutil.extend_path(__path__, __name__)

from . import engine  # noqa: E402  (the extension itself is loaded lazily by engine)
from .engine import PACKAGE_VERSION as __version__  # noqa: E402
from .engine import EngineError, voigt, planck  # noqa: E402

from .atmosphere import Atmosphere, AtmosphereErrors  # noqa: E402
from .lines import LineList, SpectralLine, WavelengthGrid, zeeman_components  # noqa: E402
from .config import InversionConfig  # noqa: E402
from .defaults import default_abundances, default_lines  # noqa: E402
from .io.sir import (read_abundances, read_psf, read_sir_chi, read_sir_model, read_sir_profiles,  # noqa: E402
                     write_abundances, write_sir_chi, write_sir_model, write_sir_profiles)
from . import io, models  # noqa: E402
from .physics.synthesis import synthesize  # noqa: E402
from .physics.response import response_functions  # noqa: E402
from .physics import thermo  # noqa: E402
from .physics.thermo import hydrostatic  # noqa: E402
from .maps import InversionResult, SynthesisMap, invert, synthesize_map  # noqa: E402
from .physics import inversion  # noqa: E402
from .physics.inversion import invert_pixel, PixelResult  # noqa: E402
from .sir.dropin import run_sir  # noqa: E402

__all__ = ["__version__", "engine", "EngineError", "voigt", "planck",
           "Atmosphere", "AtmosphereErrors", "LineList", "SpectralLine", "WavelengthGrid", "zeeman_components",
           "InversionConfig", "default_lines", "default_abundances", "io", "models",
           "read_sir_model", "write_sir_model", "read_sir_profiles", "write_sir_profiles", "read_abundances",
           "write_abundances", "read_psf", "read_sir_chi", "write_sir_chi",
           "thermo", "hydrostatic", "synthesize", "response_functions", "invert", "InversionResult",
           "inversion", "invert_pixel", "PixelResult", "run_sir", "synthesize_map", "SynthesisMap", "nlte"]


def __getattr__(name: str):
    # pyinv.cnn (torch only to train), pyinv.synthetic and pyinv.nlte are imported on first use,
    # not by ``import pyinv``.
    if name in ("cnn", "synthetic", "nlte"):
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""File input/output: SIR text formats (:mod:`pyinv.io.sir`) and FITS cubes/maps (:mod:`pyinv.io.fits`).

The FITS functions need astropy and are imported on first use.
"""
from __future__ import annotations

from .sir import (SirProfiles, read_abundances, read_psf, read_sir_chi, read_sir_errors, read_sir_model,
                  read_sir_profiles, read_sir_rf, read_two_component_models, write_abundances, write_sir_chi,
                  write_sir_model, write_sir_profiles, write_sir_rf)

__all__ = ["SirProfiles", "read_abundances", "read_psf", "read_sir_chi", "read_sir_errors", "read_sir_model",
           "read_sir_profiles", "read_sir_rf", "read_two_component_models", "write_abundances", "write_sir_chi",
           "write_sir_model", "write_sir_profiles", "write_sir_rf", "read_stokes_cube", "write_stokes_cube",
           "write_result_maps", "read_result_maps"]


def __getattr__(name: str):
    if name in ("read_stokes_cube", "write_stokes_cube", "write_result_maps", "read_result_maps"):
        from . import fits
        return getattr(fits, name)
    raise AttributeError(f"module 'pyinv.io' has no attribute {name!r}")

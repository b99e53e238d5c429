"""The only package that talks to the compiled Fortran engine ``pyinv._engine``.

Every wrapper converts its inputs to contiguous float64 / int32 arrays, calls one procedure of
``fortran/api.f90`` (module ``pyinv_api``) and turns a nonzero error code into an :class:`EngineError`
(a :class:`ValueError`) carrying the engine's message. The extension is imported lazily, so
``import pyinv`` works (file readers, models, ...) even before the engine is built. The modules follow the
Fortran layout: :mod:`~pyinv.engine.core` (loading, versions, errors), :mod:`~pyinv.engine.thermo`,
:mod:`~pyinv.engine.synthesis`, :mod:`~pyinv.engine.inversion`; every public name is re-exported here.
"""
from .core import (  # noqa: F401
    extension_module,
    ENGINE_API_VERSION,
    EngineError,
    ISA_VARIANTS,
    PACKAGE_VERSION,
    api,
    check,
    check_engine_version,
    error_message,
    f64,
    f64_fortran,
    i32,
    isa,
)
from .thermo import (  # noqa: F401
    EOS_FIELDS,
    KAPPA_COMPONENTS,
    atomic_arrays,
    eos_arrays,
    hydrostatic_arrays,
    kappa_arrays,
    kappa_deriv_arrays,
    pe_from_pg_arrays,
    planck,
    voigt,
    voigt_derivatives,
)
from .synthesis import (  # noqa: F401
    LINE_INT_FIELDS,
    LINE_REAL_FIELDS,
    MODEL_COLUMNS,
    RF_VARIABLES,
    SETUP_LAYOUT_VERSION,
    SETUP_OPTIONS,
    Setup,
    convolve_stokes,
    formal_solution,
    hsra_continuum,
    model_array,
    pack_setup,
    synth_rf,
    synth_stokes,
    zeeman_engine,
)
from .inversion import (  # noqa: F401
    JAC_ANALYTIC,
    JAC_FINITE_DIFFERENCE,
    CycleResult,
    INFO_SLOTS,
    INV_SLOTS,
    N_HE_TERMS,
    RFMemo,
    RINFO_SLOTS,
    inv_allowed_nodes,
    inv_cycle,
    inv_he_pe_jacobian,
    inv_node_basis,
    inv_node_jacobian,
    inv_sigma,
    inv_svd_solve,
)

__all__ = ['JAC_ANALYTIC', 'JAC_FINITE_DIFFERENCE', 'extension_module', 'ENGINE_API_VERSION', 'EngineError', 'ISA_VARIANTS', 'PACKAGE_VERSION', 'api', 'check', 'check_engine_version', 'error_message', 'f64', 'f64_fortran', 'i32', 'isa', 'EOS_FIELDS', 'KAPPA_COMPONENTS', 'atomic_arrays', 'eos_arrays', 'hydrostatic_arrays', 'kappa_arrays', 'kappa_deriv_arrays', 'pe_from_pg_arrays', 'planck', 'voigt', 'voigt_derivatives', 'LINE_INT_FIELDS', 'LINE_REAL_FIELDS', 'MODEL_COLUMNS', 'RF_VARIABLES', 'SETUP_LAYOUT_VERSION', 'SETUP_OPTIONS', 'Setup', 'convolve_stokes', 'formal_solution', 'hsra_continuum', 'model_array', 'pack_setup', 'synth_rf', 'synth_stokes', 'zeeman_engine', 'CycleResult', 'INFO_SLOTS', 'INV_SLOTS', 'N_HE_TERMS', 'RFMemo', 'RINFO_SLOTS', 'inv_allowed_nodes', 'inv_cycle', 'inv_he_pe_jacobian', 'inv_node_basis', 'inv_node_jacobian', 'inv_sigma', 'inv_svd_solve']

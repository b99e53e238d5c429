"""The physics of one pixel, around the engine (``pyinv.engine`` is the only module that calls it).

* :mod:`~pyinv.physics.synthesis` — Stokes synthesis of model atmospheres (``pyinv.synthesize``): the
  engine set-up of a line list, wavelength grid, PSF, abundances and NLTE departures.
* :mod:`~pyinv.physics.response` — response functions (``pyinv.response_functions``).
* :mod:`~pyinv.physics.thermo` — equation of state, continuum opacities, hydrostatic equilibrium.
* :mod:`~pyinv.physics.mixing` — two components, filling factor and stray light on one pixel.
* :mod:`~pyinv.physics.inversion` — the inversion of one pixel in cycles (``pyinv.invert_pixel``), its
  stopping rules and the rescue.

A whole map goes through :mod:`pyinv.maps`, which calls these per pixel in worker processes.
"""

"""SIR compatibility: :mod:`~pyinv.sir.dropin` runs a SIR control file and its files as SIR would
(``pyinv sir``, ``pyinv.run_sir``). SIR's file formats themselves are read and written by :mod:`pyinv.io.sir`."""

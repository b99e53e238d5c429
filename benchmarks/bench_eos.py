"""Timing printout (no assertions) of the thermodynamics kernels: EOS, continuum opacity, P_e(P_g),
their derivatives, and hydrostatic equilibrium on a 53-point model.

    PYTHONPATH=<build>/site:src python benchmarks/bench_eos.py

Numbers before the 2025 speed-up (same 2-core dev machine, gfortran -O2 dev build):
    eos_solve 4.1 us/pt, kappa_continuum 1.1 us/pt, eos_solve_deriv 33 us/pt,
    kappa_continuum_deriv 43 us/pt, pe_from_pg 37 us/pt, hydrostatic_eq 13 ms per 53-point model.
(Times through the f2py batch wrappers, amortised over many points.)
"""
from __future__ import annotations

import time

import numpy as np

from pyinv import engine as E


def _eps():
    ab = np.zeros(92)
    vals = {1: 12.0, 2: 11.0, 3: 1.0, 4: 1.15, 5: 2.6, 6: 8.69, 7: 7.99, 8: 8.91, 9: 4.56, 10: 8.0,
            11: 6.28, 12: 7.53, 13: 6.43, 14: 7.50, 15: 5.45, 16: 7.21, 17: 5.5, 18: 6.58, 19: 5.05,
            20: 6.36, 21: 2.99, 22: 4.88, 23: 3.91, 24: 5.61, 25: 5.47, 26: 7.46, 27: 4.85, 28: 6.18}
    for z, v in vals.items():
        ab[z - 1] = v
    return 10.0 ** (ab - 12.0)


def _best(f, repeat=5):
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    eps = _eps()
    rng = np.random.default_rng(1)
    n = 20000
    t = rng.uniform(3500.0, 12000.0, n)
    pe = 10.0 ** rng.uniform(-2.0, 3.0, n)
    te = _best(lambda: E.eos_arrays(t, pe, eps)) / n
    tk = _best(lambda: E.kappa_arrays(5000.0, t, pe, eps)) / n - te
    nd = 2000
    ted = _best(lambda: E.eos_arrays(t[:nd], pe[:nd], eps, derivatives=True), 3) / nd
    tkd = _best(lambda: E.kappa_deriv_arrays(5000.0, t[:nd], pe[:nd], eps), 3) / nd
    pg = E.eos_arrays(t[:nd], pe[:nd], eps)[:, 21]
    tpg = _best(lambda: E.pe_from_pg_arrays(t[:nd], pg, eps), 3) / nd

    lt = np.round(np.arange(1.2, -4.01, -0.1), 10)
    tm = 4400.0 + 1800.0 * (1 + np.tanh(1.3 * (lt - 0.4))) / 2 + 1200.0 * np.clip(lt, 0, None)
    nrep = 50
    th = _best(lambda: [E.hydrostatic_arrays(lt, tm, 0.05, 0, 0.0, 1.0, eps) for _ in range(nrep)]) / nrep
    thg = _best(lambda: [E.hydrostatic_arrays(lt, tm, 0.05, 1, 0.8, 1.0, eps) for _ in range(nrep)]) / nrep

    print(f"eos_solve              {te * 1e6:8.3f} us per point")
    print(f"kappa_continuum        {tk * 1e6:8.3f} us per point (EOS excluded)")
    print(f"eos_solve_deriv        {ted * 1e6:8.3f} us per point")
    print(f"kappa_continuum_deriv  {tkd * 1e6:8.3f} us per point (EOS included)")
    print(f"pe_from_pg             {tpg * 1e6:8.3f} us per point (no guess)")
    print(f"hydrostatic_eq         {th * 1e3:8.3f} ms per {lt.size}-point model (Pe boundary)")
    print(f"hydrostatic_eq         {thg * 1e3:8.3f} ms per {lt.size}-point model (Pg boundary)")


if __name__ == "__main__":
    main()

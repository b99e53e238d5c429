"""Timing printout (no assertions) of the thermodynamics kernels: EOS, continuum opacity, P_e(P_g),
their derivatives, and hydrostatic equilibrium on a 53-point model.

    PYTHONPATH=<build>/site:src python benchmarks/bench_eos.py

Numbers BEFORE the speed-up (same 2-core dev machine, meson release build, same script):
    eos_solve 5.0 us/pt, kappa_continuum 1.5 us/pt, eos_solve_deriv 42 us/pt,
    kappa_continuum_deriv 41 us/pt, pe_from_pg 22 us/pt, hydrostatic_eq 17.4 ms (Pe boundary) and
    15.0 ms (Pg boundary) per 53-point model.  (The old algorithm is not kept reachable.)
(Times through the f2py batch wrappers, amortised over many points; the machine is shared, so expect
~20 % noise.)
"""
from __future__ import annotations

import time

import numpy as np

from pyinv import engine as E


def _eps():
    from pyinv.testing.data import thevenin_like_abundances

    return 10.0 ** (thevenin_like_abundances() - 12.0)


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

    pe0 = E.hydrostatic_arrays(lt, tm, 0.05, 0, 0.0, 1.0, eps)[0]
    tm2 = tm * (1.0 + 0.01 * np.sin(lt))   # an "LM step" of ~1 % in T
    thn = _best(lambda: [E.hydrostatic_arrays(lt, tm2, 0.05, 0, 0.0, 1.0, eps) for _ in range(nrep)]) / nrep
    thq = _best(lambda: [E.hydrostatic_arrays(lt, tm2, 0.05, 0, 0.0, 1.0, eps, pe_guess=pe0)
                         for _ in range(nrep)]) / nrep

    print(f"eos_solve              {te * 1e6:8.3f} us per point")
    print(f"kappa_continuum        {tk * 1e6:8.3f} us per point (EOS excluded)")
    print(f"eos_solve_deriv        {ted * 1e6:8.3f} us per point")
    print(f"kappa_continuum_deriv  {tkd * 1e6:8.3f} us per point (EOS included)")
    print(f"pe_from_pg             {tpg * 1e6:8.3f} us per point (no guess)")
    print(f"hydrostatic_eq         {th * 1e3:8.3f} ms per {lt.size}-point model (Pe boundary)")
    print(f"hydrostatic_eq         {thg * 1e3:8.3f} ms per {lt.size}-point model (Pg boundary)")
    print(f"hydrostatic_eq         {thn * 1e3:8.3f} ms after a 1 % T change, no guess")
    print(f"hydrostatic_eq         {thq * 1e3:8.3f} ms after a 1 % T change, pe_guess = previous Pe")


if __name__ == "__main__":
    main()

"""Benchmark study (issue 19): how much temperature information Ca II 8542 carries on bench_desire's pixels.

For each pixel of a bench_desire case (the same seed, pixels and truths as ``bench_desire.py``) it looks for
*twins*: atmospheres whose backend NLTE Stokes profiles (Lightweaver, b free: the statistical equilibrium
re-solved for every model) differ from the truth's by at most Δχ² = Σ (ΔStokes/σ)² ≤ 4 over the 4 × 101
points (Ca II 8542 ±1.5 Å at 30 mÅ, σ = 1e-3 as the benchmark's noise) — no inversion of these data can tell a
twin from the truth — and reports how far in T they are, as the rms over log τ −1 … −5.3.

* **Blind directions.** The backend Jacobian at the truth, by finite differences: T on 22 hat functions
  (knots every 0.3 dex from log τ₅₀₀ = 1.0 to −5.3; +50 K, P_e hydrostatic) and nuisance parameters (a
  constant v_LOS and a v_LOS gradient, +0.2 km/s; v_mic, +0.2 km/s; B, +50 G). The T changes of largest rms
  over log τ −1 … −5.3 per unit of linearised posterior precision (Fisher matrix JᵀJ/σ² with the nuisance
  parameters profiled out, plus a smoothness prior: squared exponential, 500 K, 0.5 dex — the features'
  scale, fixed before any run) are the leading solutions of a generalised eigenproblem; the first three
  (orthogonal in that rms) each get the largest amplitude whose *backend* Δχ² stays ≤ 4/3 (a scan at 25 …
  300 K rms), then all three are added with their nuisance compensation and the sum is shrunk until its
  backend Δχ² is ≤ 4; each direction alone within Δχ² ≤ 4 (from the same scan) is a twin too, and the larger
  distance counts. The linearised Δχ² is printed beside the backend's: the response is far from linear at
  these amplitudes (the backend run is the measurement).
* **Erased feature.** The truth with its T feature (truth − FAL C) removed above log τ = −3, −3.5, −4, −4.5,
  −5 (a 0.1-dex logistic step); the largest T rms with backend Δχ² ≤ 4.

Per pixel D = the larger twin distance found; whatever an inversion returns for a truth and its twin (the
same data), its error is ≥ D/2 on one of them, so the rms over the pixels of D/2 is a floor for any
inversion over the set and its twins — a lower bound: only a few directions are tried.

    PYTHONPATH=<build>/site:src python benchmarks/bench_desire_information.py --case novel [--pixels 10]
        [--seed 11] [--workers 2] [--cache DIR] [--json out.json]

``--cache`` keeps the Jacobians (``<case>_seed<seed>_p<pixel>.npz``) for reruns.
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

from _common import case_setup, code_version, lightweaver_missing, observed, perturbation, pin_threads, truth_model

pin_threads()   # before numpy: one thread per process
import numpy as np  # noqa: E402

SIGMA = 1e-3
#: T hats: knots every 0.3 dex over the backend grid
KNOTS = np.round(np.arange(1.0, -5.3 - 1e-9, -0.3), 2)
T_STEP = 50.0                                   # K
#: nuisance parameters: name -> (step in pyinv's units, step in the reported unit, weak prior sigma in that unit)
NUISANCE = {"v0": (2e4, 0.2, 3.0), "v1": (2e4, 0.2, 3.0), "vmic": (2e4, 0.2, 2.0), "B": (50.0, 50.0, 1000.0)}
#: smoothness prior of the blind direction (amplitude K, correlation length dex): the novel features' scale
PRIOR = (500.0, 0.5)
#: T rms over log tau -1 .. -5.3 [K] at which the blind direction is run through the backend
AMPLITUDES = (25.0, 50.0, 100.0, 150.0, 200.0, 300.0)
#: blind directions per pixel, each allowed DCHI2_MAX / N_DIRECTIONS; then all of them together
N_DIRECTIONS = 3
#: common factors tried on the combined twin until its dchi2 is within DCHI2_MAX
COMBINED_SHRINK = (1.0, 0.85, 0.7, 0.5, 0.35)
#: the heights above which a twin has the feature erased
ERASE_ABOVE = (-3.0, -3.5, -4.0, -4.5, -5.0)
#: two profiles are called indistinguishable when they differ by at most this sum of squares (in sigma^2) over
#: all 404 points: a change of 2 sigma in one number
DCHI2_MAX = 4.0

def hats(lt: np.ndarray) -> np.ndarray:
    """(ndep, nknots) hat functions on :data:`KNOTS` (:func:`pyinv.nlte.refine.hat_basis`, 0.3 dex)."""
    from pyinv.nlte.refine import hat_basis

    knots, H = hat_basis(lt, 0.3)
    if not np.allclose(knots, KNOTS):
        raise ValueError(f"the grid {lt[0]:g} .. {lt[-1]:g} does not give bench_desire's knots")
    return H


@functools.lru_cache(maxsize=None)
def setup(case: str):
    """:func:`_common.case_setup` once per process and case (it runs Lightweaver on FAL C)."""
    return case_setup(case)


def pixels(case: str, seed: int, n: int):
    """The first ``n`` pixels of bench_desire's ``case`` at ``seed``: (index, kind, truth model) — the same
    draws as the benchmark (the noise draw of each pixel advances the generator as there)."""
    lines, grid, regs, wl, lw, lt, base = setup(case)
    rng = np.random.default_rng(seed)
    out = []
    for p in range(n):
        pert, kind = perturbation(case, lt, rng, p, np.asarray(base.T))
        out.append((p, kind, truth_model(base, pert)))
        rng.normal(0, SIGMA, (4, grid.nwav))
    return out


def jacobian(case: str, seed: int, p: int, cache: Path | None) -> dict:
    """The backend Jacobian of pixel ``p`` (module docstring), from ``cache`` when it is there."""
    import pyinv
    f = None if cache is None else cache / f"{case}_seed{seed}_p{p}.npz"
    if f is not None and f.exists():
        z = np.load(f, allow_pickle=False)
        return {k: z[k] for k in z.files} | {"kind": str(z["kind"]), "cached": True}
    lines, grid, regs, wl, lw, lt, base = setup(case)
    _, kind, truth = pixels(case, seed, p + 1)[p]
    t0 = time.process_time()

    def observe(model):
        r = lw.synthesize(model, wl)
        if not r.ok:
            raise RuntimeError(f"pixel {p}: backend status {r.status}")
        return observed(r, model, lines, grid, regs)

    T = np.asarray(truth.T, dtype=float)
    F0 = observe(truth)
    H = hats(lt)
    cols = []
    for k in range(KNOTS.size):
        cols.append((observe(pyinv.hydrostatic(truth.with_columns(T=T + T_STEP * H[:, k]))) - F0).ravel() / T_STEP)
    v = np.asarray(truth.vlos, dtype=float) * np.ones_like(lt)
    vmic = np.asarray(truth.vmic, dtype=float) * np.ones_like(lt)
    B = np.asarray(truth.B, dtype=float) * np.ones_like(lt)
    pert = {"v0": {"vlos": v + NUISANCE["v0"][0]},
            "v1": {"vlos": v + NUISANCE["v1"][0] * (lt + 2.0) / 3.0},
            "vmic": {"vmic": vmic + NUISANCE["vmic"][0]},
            "B": {"B": B + NUISANCE["B"][0]}}
    for name, kw in pert.items():
        cols.append((observe(truth.with_columns(**kw)) - F0).ravel() / NUISANCE[name][1])
    out = {"J": np.array(cols).T, "F0": F0, "lt": lt, "T_true": T, "T_start": np.asarray(base.T, dtype=float),
           "vlos": v, "vmic": vmic, "B": B, "kind": kind, "cpu_s": time.process_time() - t0}
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        np.savez(f, **out)
    return out | {"cached": False}


def prior_precision(s: float, ell: float) -> np.ndarray:
    """Inverse prior covariance of the T coefficients (squared exponential, amplitude ``s`` [K], correlation
    length ``ell`` [dex]) and of the nuisance parameters (weak, :data:`NUISANCE`)."""
    from pyinv.nlte.refine import gp_precision

    n = len(NUISANCE)
    Q = np.zeros((KNOTS.size + n, KNOTS.size + n))
    Q[:KNOTS.size, :KNOTS.size] = gp_precision(KNOTS, s, ell)
    Q[KNOTS.size:, KNOTS.size:] = np.diag([1.0 / v[2] ** 2 for v in NUISANCE.values()])
    return Q


def blind_directions(jac: dict, k: int = N_DIRECTIONS, s: float = PRIOR[0], ell: float = PRIOR[1]) -> list:
    """The ``k`` T changes of largest rms over log τ −1 … −5.3 per unit of linearised posterior precision (data
    and smoothness prior, nuisance parameters profiled out): the leading solutions of the generalised
    eigenproblem (Hₘᵀ Hₘ / n) x = λ (F′ + P⁻¹) x, orthogonal in that rms (and, linearly, independent in Δχ²),
    each scaled to 100 K rms there, with its best nuisance compensation. Returns [(parameter vector: T
    coefficients [K] and nuisance in reported units, linear Δχ²)]."""
    J, lt = jac["J"], jac["lt"]
    nk = KNOTS.size
    F = J.T @ J / SIGMA ** 2
    Q = prior_precision(s, ell)
    Ftt, Ftn, Fnn = F[:nk, :nk], F[:nk, nk:], F[nk:, nk:] + Q[nk:, nk:]
    Fp = Ftt - Ftn @ np.linalg.solve(Fnn, Ftn.T)
    m = (lt <= -1.0) & (lt >= -5.3)
    Hm = hats(lt)[m]
    Li = np.linalg.inv(np.linalg.cholesky(Fp + Q[:nk, :nk]))
    _, vec = np.linalg.eigh(Li @ (Hm.T @ Hm / m.sum()) @ Li.T)
    out = []
    for j in range(1, k + 1):
        dc = Li.T @ vec[:, -j]
        dc *= 100.0 / np.sqrt(np.mean((Hm @ dc) ** 2))
        dT = hats(lt) @ dc
        if np.max(np.abs(dT)) != np.max(dT):
            dc = -dc
        x = np.concatenate([dc, -np.linalg.solve(Fnn, Ftn.T @ dc)])
        out.append((x, float(x @ F @ x)))
    return out


def twin_model(truth, jac: dict, x: np.ndarray | None = None, erase_above: float | None = None):
    """A twin of the truth: with the change ``x`` (:func:`blind_direction`) or with the T feature (truth − FAL C)
    erased above log τ = ``erase_above`` (a 0.1-dex logistic step), P_e hydrostatic."""
    import pyinv

    lt = jac["lt"]
    if erase_above is not None:
        up = 1.0 / (1.0 + np.exp((lt - erase_above) / 0.1))
        return pyinv.hydrostatic(truth.with_columns(T=jac["T_true"] - up * (jac["T_true"] - jac["T_start"])))
    nk = KNOTS.size
    dn = dict(zip(NUISANCE, x[nk:]))
    st = {k: NUISANCE[k][0] / NUISANCE[k][1] for k in NUISANCE}
    return pyinv.hydrostatic(truth.with_columns(
        T=jac["T_true"] + hats(lt) @ x[:nk],
        vlos=jac["vlos"] + st["v0"] * dn["v0"] + st["v1"] * dn["v1"] * (lt + 2.0) / 3.0,
        vmic=np.maximum(jac["vmic"] + st["vmic"] * dn["vmic"], 0.0),
        B=np.maximum(jac["B"] + dn["B"], 1.0)))


def dchi2(case: str, jac: dict, model) -> float:
    """Σ (ΔStokes/σ)² over all four parameters between the backend's profiles of ``model`` and of the truth."""
    lines, grid, regs, wl, lw, lt, base = setup(case)
    r = lw.synthesize(model, wl)
    if not r.ok:
        return float("nan")
    d = observed(r, model, lines, grid, regs) - jac["F0"]
    return float(np.sum(d ** 2) / SIGMA ** 2)


def indistinguishable(amps, d2, limit: float = DCHI2_MAX) -> float:
    """The largest amplitude [K] of ``amps`` (increasing) whose Δχ² stays within ``limit``, linear in log Δχ²
    between the scanned amplitudes (0 when the first already exceeds it)."""
    amps, d2 = np.asarray(amps, float), np.maximum(np.asarray(d2, float), 1e-12)
    if not np.isfinite(d2).all() or d2[0] > limit:
        return 0.0
    for i in range(1, amps.size):
        if d2[i] > limit:
            f = (np.log(limit) - np.log(d2[i - 1])) / (np.log(d2[i]) - np.log(d2[i - 1]))
            return float(amps[i - 1] + f * (amps[i] - amps[i - 1]))
    return float(amps[-1])


def study(task: tuple) -> dict:
    """One pixel: the Jacobian, the blind direction's amplitude scan and the erased-feature twins."""
    import warnings

    warnings.simplefilter("ignore")
    case, seed, p, cache = task
    jac = jacobian(case, seed, p, cache)
    _, _, truth = pixels(case, seed, p + 1)[p]
    lt = jac["lt"]
    m = (lt <= -1.0) & (lt >= -5.3)
    dirs = []
    for x, lin in blind_directions(jac):
        scan = [{"rms_K": amp, "dchi2_linear": lin * (amp / 100.0) ** 2,
                 "dchi2": dchi2(case, jac, twin_model(truth, jac, x * amp / 100.0))} for amp in AMPLITUDES]
        d = indistinguishable(AMPLITUDES, [sc["dchi2"] for sc in scan], DCHI2_MAX / N_DIRECTIONS)
        alone = indistinguishable(AMPLITUDES, [sc["dchi2"] for sc in scan], DCHI2_MAX)
        dT = hats(lt) @ x[:KNOTS.size]
        dirs.append({"dT_per_100K": {f"{z:g}": float(dT[np.argmin(np.abs(lt - z))]) for z in
                                     (0.0, -1.0, -2.0, -3.0, -3.5, -4.0, -4.5, -5.0, -5.3)},
                     "nuisance_per_100K": {k: float(v) for k, v in zip(NUISANCE, x[KNOTS.size:])},
                     "scan": scan, "amplitude_K": d, "alone_K": alone, "x": x})
    # all directions together, each at its amplitude; shrunk by a common factor until within DCHI2_MAX
    comb = {"tries": []}
    xs = sum(dd["x"] * dd["amplitude_K"] / 100.0 for dd in dirs)
    for f in COMBINED_SHRINK:
        tw = twin_model(truth, jac, xs * f)
        rms = float(np.sqrt(np.mean((np.asarray(tw.T) - jac["T_true"])[m] ** 2)))
        comb["tries"].append({"factor": f, "rms_K": rms, "dchi2": dchi2(case, jac, tw) if rms > 0 else 0.0})
        if comb["tries"][-1]["dchi2"] <= DCHI2_MAX:
            break
    ok_c = [t for t in comb["tries"] if t["dchi2"] <= DCHI2_MAX]
    comb["indistinguishable_K"] = max([t["rms_K"] for t in ok_c], default=0.0)
    best_alone = max(dd["alone_K"] for dd in dirs)
    for dd in dirs:
        dd.pop("x")
    erased = []
    for z in ERASE_ABOVE:
        tw = twin_model(truth, jac, erase_above=z)
        erased.append({"above": z, "rms_K": float(np.sqrt(np.mean((np.asarray(tw.T) - jac["T_true"])[m] ** 2))),
                       "dchi2": dchi2(case, jac, tw)})
    ok = [e for e in erased if e["dchi2"] <= DCHI2_MAX]
    return {"pixel": p, "kind": jac["kind"], "jacobian_cpu_s": float(jac["cpu_s"]),
            "blind": {"directions": dirs, "combined": comb, "alone_K": best_alone,
                      "indistinguishable_K": max(comb["indistinguishable_K"], best_alone)},
            "erased": erased, "erased_indistinguishable_K": max([e["rms_K"] for e in ok], default=0.0)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", choices=("ca", "novel", "unseen"), default="novel")
    ap.add_argument("--pixels", type=int, default=10)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=None, help="folder for the Jacobians (reused when present)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if lightweaver_missing():
        return 0
    tasks = [(args.case, args.seed, p, args.cache) for p in range(args.pixels)]
    t0 = time.perf_counter()
    if args.workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.workers) as pool:
            rows = pool.map(study, tasks, chunksize=1)
    else:
        rows = [study(t) for t in tasks]
    wall = time.perf_counter() - t0
    print(f"case {args.case}, seed {args.seed}: {len(rows)} pixels, Lightweaver NLTE (b free), sigma {SIGMA:g} on "
          f"I, Q, U, V; twins indistinguishable at dchi2 <= {DCHI2_MAX:g}; {wall:.0f} s wall")
    print(f"pixel kind                 | blind directions 1..{N_DIRECTIONS}: amplitude [K rms] within dchi2 "
          f"{DCHI2_MAX / N_DIRECTIONS:.3g} each (dchi2 at 100 K: backend / linear) | together: T rms (dchi2); the "
          f"largest one alone within {DCHI2_MAX:g} -> D [K] | "
          "feature erased above " + " / ".join(f"{z:g}" for z in ERASE_ABOVE) + ": T rms [K] (dchi2) -> E [K]")
    for r in rows:
        b = r["blind"]
        c = b["combined"]["tries"][-1]
        print(f"{r['pixel']:5d} {r['kind']:20s} | "
              + "; ".join(f"{d['amplitude_K']:3.0f} ({d['scan'][2]['dchi2']:.3g} / {d['scan'][2]['dchi2_linear']:.2g})"
                          for d in b["directions"])
              + f" | {c['rms_K']:4.0f} ({c['dchi2']:.3g}); one alone {b['alone_K']:4.0f} -> {b['indistinguishable_K']:4.0f} | "
              + " / ".join(f"{e['rms_K']:.0f} ({e['dchi2']:.3g})" for e in r["erased"])
              + f" -> {r['erased_indistinguishable_K']:4.0f}")

    def half_rms(distance):
        return float(np.sqrt(np.mean([(distance(r) / 2.0) ** 2 for r in rows])))

    summary = {"blind_half_rms_K": half_rms(lambda r: r["blind"]["indistinguishable_K"]),
               "erased_half_rms_K": half_rms(lambda r: r["erased_indistinguishable_K"]),
               "either_half_rms_K": half_rms(lambda r: max(r["blind"]["indistinguishable_K"],
                                                           r["erased_indistinguishable_K"]))}
    print("rms over the pixels of half the indistinguishable distance (the error that some inversion must make on "
          f"a truth or its twin): blind directions {summary['blind_half_rms_K']:.0f} K, erased feature "
          f"{summary['erased_half_rms_K']:.0f} K, the larger of the two {summary['either_half_rms_K']:.0f} K")
    if args.json:
        args.json.write_text(json.dumps({"code": code_version(), "case": args.case, "seed": args.seed,
                                         "sigma": SIGMA, "knots": KNOTS.tolist(), "prior": PRIOR,
                                         "dchi2_max": DCHI2_MAX, "wall_s": wall, "summary": summary,
                                         "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
